//! What to generate: [`GenerateOptions`], SDXL base's defaults with builder methods.
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;
use magicnaming_core::NameEmbedding;

use crate::schedulers::SchedulerKind;

/// What to generate. Defaults are SDXL base's (30 steps, guidance 5.0, 1024 x 1024,
/// Euler).
///
/// ```
/// use magicnaming_models::schedulers::SchedulerKind;
/// use magicnaming_models::sdxl::GenerateOptions;
/// type B = burn::backend::NdArray<f32>;
/// let options = GenerateOptions::<B>::new("a photo of a person surfing")
///     .with_negative_prompt("blurry")
///     .with_size(1024, 768)
///     .with_steps(25)
///     .with_seed(7)
///     .with_scheduler(SchedulerKind::DpmPp2mKarras);
/// assert_eq!((options.width, options.height, options.guidance), (1024, 768, 5.0));
/// ```
#[derive(Debug, Clone)]
pub struct GenerateOptions<B: Backend> {
    /// The prompt.
    pub prompt: String,
    /// The negative prompt; `None` gives zeros when the model says
    /// `force_zeros_for_empty_prompt` (as diffusers).
    pub negative_prompt: Option<String>,
    /// A name to prepend to the prompt embeddings (`docs/METHOD.md`, (c)).
    pub name: Option<NameEmbedding<B>>,
    /// Denoising steps.
    pub steps: usize,
    /// Classifier-free guidance scale (no guidance at <= 1).
    pub guidance: f64,
    /// Image width in pixels.
    pub width: usize,
    /// Image height in pixels.
    pub height: usize,
    /// Seed of the initial latents and of stochastic schedulers' noise, drawn on the host
    /// ([`magicnaming_core::rng::SplitMix64`], Box-Muller): the same values on every
    /// backend.
    pub seed: u64,
    /// Scheduler; `None` uses the model's own.
    pub scheduler: Option<SchedulerKind>,
    /// Initial latents `[1, C, H/f, W/f]`, treated like diffusers' `latents=`
    /// (multiplied by the scheduler's initial noise sigma).
    pub init_latents: Option<Tensor<B, 4>>,
    /// Noise for each step of a stochastic scheduler (as diffusers drew it); drawn from
    /// the seeded host generator when `None`.
    pub step_noise: Option<Vec<Tensor<B, 4>>>,
    /// SDXL micro-conditioning `(height, width)`; the image size when `None`.
    pub original_size: Option<(usize, usize)>,
    /// SDXL micro-conditioning crop top-left `(top, left)`.
    pub crop_top_left: (usize, usize),
    /// SDXL micro-conditioning `(height, width)`; the image size when `None`.
    pub target_size: Option<(usize, usize)>,
}

impl<B: Backend> GenerateOptions<B> {
    /// SDXL base's defaults for `prompt`.
    pub fn new(prompt: impl Into<String>) -> Self {
        Self {
            prompt: prompt.into(),
            negative_prompt: None,
            name: None,
            steps: 30,
            guidance: 5.0,
            width: 1024,
            height: 1024,
            seed: 0,
            scheduler: None,
            init_latents: None,
            step_noise: None,
            original_size: None,
            crop_top_left: (0, 0),
            target_size: None,
        }
    }

    /// With a negative prompt.
    pub fn with_negative_prompt(mut self, negative_prompt: impl Into<String>) -> Self {
        self.negative_prompt = Some(negative_prompt.into());
        self
    }

    /// With a name prepended to the prompt embeddings.
    pub fn with_name(mut self, name: NameEmbedding<B>) -> Self {
        self.name = Some(name);
        self
    }

    /// With an image size in pixels (multiples of the VAE's scale factor, 8 for SDXL).
    pub fn with_size(mut self, width: usize, height: usize) -> Self {
        self.width = width;
        self.height = height;
        self
    }

    /// With a number of denoising steps.
    pub fn with_steps(mut self, steps: usize) -> Self {
        self.steps = steps;
        self
    }

    /// With a classifier-free guidance scale.
    pub fn with_guidance(mut self, guidance: f64) -> Self {
        self.guidance = guidance;
        self
    }

    /// With a seed.
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// With a scheduler other than the model's own.
    pub fn with_scheduler(mut self, scheduler: SchedulerKind) -> Self {
        self.scheduler = Some(scheduler);
        self
    }
}
