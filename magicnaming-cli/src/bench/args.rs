//! The arguments of `bench` and their checks.
use std::path::PathBuf;

use anyhow::{bail, Result};
use burn::tensor::FloatDType;
use clap::{Args, ValueEnum};

/// What `bench` can time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Component {
    /// Both text encoders, one prompt.
    Text,
    /// One UNet step at batch 2.
    Unet,
    /// The VAE decode of one latent.
    Vae,
    /// A whole image through the pipeline.
    Image,
    /// The CLIP image towers.
    Towers,
    /// GroupNorm + SiLU at the UNet's three level shapes (batch 2): burn's module, our
    /// generic path, our kernel. Not in the default set.
    Norms,
    /// 3x3 convolutions at the UNet's three level shapes (batch 2): burn's, and
    /// `conv::conv2d` where our rule applies (f16 in f32 without tensor cores). Not in
    /// the default set.
    Convs,
    /// Faces: MTCNN detection on --face-image (whole, then the pyramid and P-Net alone)
    /// and IResNet-50 at --face-batch. Not in the default set.
    Faces,
    /// Fusing a rank-32 LoRA on every UNet Linear (open, check, match, fuse). Not in the
    /// default set.
    Lora,
    /// One LoRA training step at batch 1 (rank 4 on every attention projection): forward,
    /// backward, clipping, AdamW. Not in the default set.
    LoraStep,
}

/// Float type of the models and activations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DtypeArg {
    /// 32-bit floats.
    F32,
    /// 16-bit floats (GPU backends).
    F16,
    /// bfloat16 (GPU backends).
    Bf16,
}

impl From<DtypeArg> for FloatDType {
    fn from(d: DtypeArg) -> Self {
        match d {
            DtypeArg::F32 => FloatDType::F32,
            DtypeArg::F16 => FloatDType::F16,
            DtypeArg::Bf16 => FloatDType::BF16,
        }
    }
}

/// Arguments of `bench`.
#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Real SDXL model (diffusers folder or single .safetensors); random weights without it.
    #[arg(long)]
    pub(super) model: Option<PathBuf>,
    /// Diffusers-style folder of configurations: with --model as `generate`'s; without,
    /// random weights of these sizes (default: SDXL base's presets).
    #[arg(long)]
    pub(super) config: Option<PathBuf>,
    /// Image tower, repeatable: vit-l-14, vit-bigg-14 (presets, random weights), a
    /// configuration .json (random weights), or a tower folder / .safetensors.
    #[arg(long = "tower")]
    pub(super) towers: Vec<String>,
    /// Components to time, comma-separated.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "text,unet,vae,image,towers"
    )]
    pub(super) components: Vec<Component>,
    /// Image side in pixels (latents are side / 8 for SDXL).
    #[arg(long, default_value_t = 1024)]
    pub(super) resolution: usize,
    /// Denoising steps of the whole image.
    #[arg(long, default_value_t = 30)]
    pub(super) steps: usize,
    /// Guidance scale of the whole image (> 1: batch-2 UNet calls).
    #[arg(long, default_value_t = 5.0)]
    pub(super) guidance: f64,
    /// Images per image-tower call.
    #[arg(long, default_value_t = 64)]
    pub(super) tower_batch: usize,
    /// Photo of the faces component's detection rows, used at its size (f32, 8-bit RGB).
    #[arg(long)]
    pub(super) face_image: Option<PathBuf>,
    /// Aligned 112 x 112 crops per IResNet-50 call (faces component).
    #[arg(long, default_value_t = 32)]
    pub(super) face_batch: usize,
    /// burn's activation checkpointing in the lora-step component (balanced: memory-bound
    /// operations recomputed in the backward pass).
    #[arg(long)]
    pub(super) balanced_checkpointing: bool,
    /// Untimed runs first (the whole image: one when > 0, its steps repeat the UNet's).
    #[arg(long, default_value_t = 2)]
    pub(super) warmup: usize,
    /// Timed runs per component.
    #[arg(long, default_value_t = 10)]
    pub(super) iters: usize,
    /// Timed runs of the whole image (default: --iters).
    #[arg(long)]
    pub(super) image_iters: Option<usize>,
    /// Stop a component's timed runs once it has taken this many seconds (warm-ups
    /// included), after at least one; for time-limited machines.
    #[arg(long)]
    pub(super) budget_s: Option<f64>,
    /// Float type of the weights (and so of each model's activations); inputs, latents and
    /// the scheduler stay f32, and a `force_upcast` VAE (SDXL's) decodes in f32 under f16,
    /// as in `generate`.
    #[arg(long, value_enum, default_value_t = DtypeArg::F32)]
    pub(super) dtype: DtypeArg,
    /// The prompt of the text encoders and the whole image.
    #[arg(long, default_value = "a photograph of an astronaut riding a horse")]
    pub(super) prompt: String,
    /// Seed of the random weights and inputs.
    #[arg(long, default_value_t = 0)]
    pub(super) seed: u64,
    /// Also write the results as JSON.
    #[arg(long)]
    pub(super) json: Option<PathBuf>,
    /// Run burn's ops where we have kernels of our own (`magicnaming_models::nn::kernels`,
    /// cubecl backends only), to measure what the kernels change.
    #[arg(long)]
    pub(super) no_kernels: bool,
}

impl BenchArgs {
    /// Checks that need no model, before any work.
    pub(super) fn check(&self) -> Result<()> {
        if self.resolution == 0 || !self.resolution.is_multiple_of(8) {
            bail!(
                "--resolution {}: must be a positive multiple of 8",
                self.resolution
            );
        }
        if self.steps == 0 || self.iters == 0 || self.tower_batch == 0 {
            bail!("--steps, --iters and --tower-batch must be at least 1");
        }
        if self.image_iters == Some(0) {
            bail!("--image-iters must be at least 1");
        }
        if let Some(json) = &self.json {
            crate::outputs::check_output_file(json, &[])?;
        }
        if self.budget_s.is_some_and(|b| b.is_nan() || b < 0.0) {
            bail!("--budget-s must be a number of seconds >= 0");
        }
        if self.has(Component::Faces) && (self.face_image.is_none() || self.face_batch == 0) {
            bail!("the faces component needs --face-image and a --face-batch of at least 1");
        }
        if let Some(c) = self.config.as_ref().filter(|c| !c.is_dir()) {
            bail!("--config {}: not a folder", c.display());
        }
        Ok(())
    }

    /// Warm-ups, timed runs and time budget of a component.
    pub(super) fn plan(&self) -> (usize, usize, Option<f64>) {
        (self.warmup, self.iters, self.budget_s)
    }

    /// The float type of --dtype.
    pub(super) fn float(&self) -> FloatDType {
        self.dtype.into()
    }

    /// Whether --components names `c`.
    pub(super) fn has(&self, c: Component) -> bool {
        self.components.contains(&c)
    }
}
