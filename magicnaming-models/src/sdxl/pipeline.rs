//! The SDXL text-to-image pipeline with name prepending: diffusers'
//! `StableDiffusionXLPipeline.__call__`, plus MagicNaming's name prepending
//! (`docs/METHOD.md`, (c)). It only
//! orchestrates; every network lives in its own module.
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use magicnaming_core::prepend;
use magicnaming_core::rng::SplitMix64;

use super::load_options::LoadOptions;
use super::lora::{Component, LoraFusion, ModelNames};
use super::options::GenerateOptions;
use super::output::GenerateOutput;
use super::text_encoders::SdxlTextEncoders;
use crate::schedulers::{Scheduler, SchedulerConfig};
use crate::unet::UNet2DConditionModel;
use crate::vae::AutoencoderKL;
use crate::weights::{Precision, SdxlSource};
use crate::{ModelError, Result};

/// SDXL: text encoders, UNet, VAE and the scheduler configuration.
///
/// ```no_run
/// use magicnaming_models::sdxl::{GenerateOptions, SdxlPipeline, SdxlSource};
/// type B = burn::backend::NdArray<f32>;
/// let source = SdxlSource::from_path("stable-diffusion-xl-base-1.0", None)?;
/// let pipeline = SdxlPipeline::<B>::load(&source, &Default::default())?;
/// let out = pipeline.generate(&GenerateOptions::new("a lighthouse at dusk"))?;
/// out.save_png("lighthouse.png")?;
/// # Ok::<(), magicnaming_models::ModelError>(())
/// ```
#[derive(Debug)]
pub struct SdxlPipeline<B: Backend> {
    /// Tokenizers and text encoders.
    pub text: SdxlTextEncoders<B>,
    /// The denoiser.
    pub unet: UNet2DConditionModel<B>,
    /// The autoencoder.
    pub vae: AutoencoderKL<B>,
    /// `scheduler/scheduler_config.json` (SDXL base's for a single file without one).
    pub scheduler_config: SchedulerConfig,
    /// Where the model was loaded from.
    pub source: SdxlSource,
    /// The LoRAs fused into the weights, as `name:scale, ...` (empty without).
    pub loras: String,
}

impl<B: Backend> SdxlPipeline<B> {
    /// The UNet's noise prediction at step `i` of `scheduler`'s schedule. With
    /// `guidance`, classifier-free guidance: the latents are doubled, the conditioning
    /// holds the unconditional halves first, and the two predictions combine as
    /// `uncond + guidance * (cond - uncond)`.
    ///
    /// # Shapes
    /// - `latents`: `[N, C, h, w]`
    /// - `encoder_states`, `text_embeds`, `time_ids`: batch `2N` with guidance, `N` without
    /// - output: `[N, C, h, w]`
    ///
    /// # Errors
    /// A step outside the schedule, or conditioning that does not fit the UNet.
    #[allow(clippy::too_many_arguments)]
    pub fn predict_noise(
        &self,
        scheduler: &dyn Scheduler<B>,
        latents: &Tensor<B, 4>,
        i: usize,
        encoder_states: &Tensor<B, 3>,
        text_embeds: &Tensor<B, 2>,
        time_ids: &Tensor<B, 2>,
        guidance: Option<f64>,
    ) -> Result<Tensor<B, 4>> {
        let t = *scheduler.timesteps().get(i).ok_or_else(|| {
            ModelError::InvalidInput(format!(
                "step {i} of a {}-step schedule",
                scheduler.timesteps().len()
            ))
        })?;
        let input = match guidance {
            Some(_) => Tensor::cat(vec![latents.clone(), latents.clone()], 0),
            None => latents.clone(),
        };
        let input = scheduler.scale_model_input(input, i)?;
        let pred = self.unet.forward(
            input,
            t,
            encoder_states.clone(),
            text_embeds.clone(),
            time_ids.clone(),
        )?;
        Ok(match guidance {
            Some(g) => {
                let [n, c, h, w] = pred.dims();
                let uncond = pred.clone().slice([0..n / 2, 0..c, 0..h, 0..w]);
                let cond = pred.slice([n / 2..n, 0..c, 0..h, 0..w]);
                uncond.clone() + (cond - uncond).mul_scalar(g)
            }
            None => pred,
        })
    }

    /// Loads every component of a diffusers folder or single-file checkpoint, in
    /// [`Precision::Auto`]: f16 weights run in f16 on a backend with f16 (the VAE in f32
    /// when its configuration says `force_upcast`), f32 otherwise.
    pub fn load(source: &SdxlSource, device: &B::Device) -> Result<Self> {
        Self::load_as(source, device, Precision::Auto)
    }

    /// [`Self::load`] with the weights' float type chosen by `precision`. Latents,
    /// scheduler arithmetic and guidance stay f32 whatever the weights' type.
    pub fn load_as(source: &SdxlSource, device: &B::Device, precision: Precision) -> Result<Self> {
        Self::load_with(
            source,
            device,
            &LoadOptions::default().with_precision(precision),
        )
    }

    /// [`Self::load_as`] in `options.precision` with `options.loras` fused into the UNet
    /// and both text encoders. Every LoRA module is matched and its shape checked before
    /// any weight changes (and before the VAE loads).
    ///
    /// # Errors
    /// As [`Self::load_as`]; LoRAs that do not fit the model (see [`LoraFusion::plan`]).
    pub fn load_with(
        source: &SdxlSource,
        device: &B::Device,
        options: &LoadOptions,
    ) -> Result<Self> {
        let precision = options.precision;
        let scheduler_config = scheduler_config(source)?;
        let mut text = SdxlTextEncoders::load_as(source, device, precision)?;
        let mut unet = UNet2DConditionModel::load_as(source, device, precision)?;
        if !options.loras.is_empty() {
            let mut names = ModelNames::default();
            names.add_unet(&unet);
            text.add_names(&mut names);
            let fusion = LoraFusion::plan(&options.loras, &names, options.ignore_unmatched)?;
            text = text.fuse(&fusion)?;
            unet = fusion.fuse(unet, Component::Unet)?;
        }
        let pipeline = Self {
            text,
            unet,
            vae: AutoencoderKL::load_as(source, device, precision)?,
            scheduler_config,
            source: source.clone(),
            loras: options.lora_summary(),
        };
        let (unet_d, text_d) = (
            pipeline.unet.config().cross_attention_dim[0],
            pipeline.text.token_dim(),
        );
        if unet_d != text_d {
            return Err(ModelError::config(
                source.display_path(),
                format!(
                    "the UNet's cross_attention_dim {unet_d} differs from the text encoders' width {text_d}"
                ),
            ));
        }
        Ok(pipeline)
    }

    /// Pixels per latent cell (8 for SDXL).
    pub fn vae_scale_factor(&self) -> usize {
        self.vae.config().downscale_factor()
    }

    /// Checks `options` before any work: sizes, steps, guidance, latents and name shapes.
    pub fn check(&self, options: &GenerateOptions<B>) -> Result<()> {
        let bad = |m: String| Err(ModelError::InvalidInput(m));
        let f = self.vae_scale_factor().max(8);
        if options.width == 0
            || options.height == 0
            || !options.width.is_multiple_of(f)
            || !options.height.is_multiple_of(f)
        {
            return bad(format!(
                "width {} and height {} must be positive multiples of {f}",
                options.width, options.height
            ));
        }
        if options.steps == 0 {
            return bad("steps must be at least 1".into());
        }
        if !options.guidance.is_finite() {
            return bad(format!("guidance must be finite, got {}", options.guidance));
        }
        let shape = self.latent_shape(options);
        if let Some(l) = &options.init_latents
            && l.dims() != shape
        {
            return bad(format!(
                "init latents have shape {:?}, expected {shape:?} for {}x{}",
                l.dims(),
                options.width,
                options.height
            ));
        }
        if let Some(n) = &options.name
            && n.dim() != self.text.token_dim()
        {
            return bad(format!(
                "the name has {}-d tokens, the model's prompt embeddings are {}-d",
                n.dim(),
                self.text.token_dim()
            ));
        }
        if let Some(noise) = &options.step_noise
            && (noise.len() < options.steps || noise.iter().any(|n| n.dims() != shape))
        {
            return bad(format!(
                "step noise: expected {} tensors of shape {shape:?}",
                options.steps
            ));
        }
        Ok(())
    }

    fn latent_shape(&self, options: &GenerateOptions<B>) -> [usize; 4] {
        let f = self.vae_scale_factor();
        [
            1,
            self.unet.config().in_channels,
            options.height / f,
            options.width / f,
        ]
    }

    /// Runs the pipeline.
    ///
    /// # Shapes
    /// - output: `image` `[1, 3, height, width]` in `[0, 1]`, `latents` `[1, C, height / f,
    ///   width / f]` (`f` = [`Self::vae_scale_factor`])
    ///
    /// # Errors
    /// Options that [`Self::check`] refuses (before any work); a scheduler that cannot be
    /// built; non-finite values.
    pub fn generate(&self, options: &GenerateOptions<B>) -> Result<GenerateOutput<B>> {
        self.generate_with_progress(options, |_, _| {})
    }

    /// [`Self::generate`], calling `progress(done, total)` after each denoising step.
    ///
    /// # Errors
    /// As [`Self::generate`].
    pub fn generate_with_progress(
        &self,
        options: &GenerateOptions<B>,
        mut progress: impl FnMut(usize, usize),
    ) -> Result<GenerateOutput<B>> {
        self.check(options)?;
        let device = self.text.text_encoder.final_layer_norm.gamma.device();
        let cfg = options.guidance > 1.0;

        // 1. Encode the prompt and the negative prompt.
        let positive = self.text.encode_prompt(&[&options.prompt])?;
        let negative_texts = options.negative_prompt.as_deref().map(|n| [n]);
        let negative = self
            .text
            .encode_negative_prompt(negative_texts.as_ref().map(|n| &n[..]), 1)?;

        // 2. Prepend the name to the prompt embeddings (not to the negative ones).
        let prompt_embeds = match &options.name {
            Some(name) => prepend(positive.prompt_embeds, name)?,
            None => positive.prompt_embeds,
        };

        // 3. Timesteps.
        let mut scheduler = self.scheduler_config.build::<B>(options.scheduler)?;
        scheduler.set_timesteps(options.steps)?;
        let timesteps = scheduler.timesteps().to_vec();

        // 4. Initial latents: N(0, 1) from a host generator seeded with `seed`, which
        //    goes on to give the stochastic schedulers' noise (step 6), so a seed gives the
        //    same image on every backend and concurrent runs cannot disturb each other.
        let mut rng = SplitMix64(options.seed);
        let shape = self.latent_shape(options);
        let latents = match &options.init_latents {
            Some(l) => l.clone(),
            None => host_normal(&mut rng, shape, &device),
        };
        let mut latents = latents.mul_scalar(scheduler.init_noise_sigma());

        // 5. Added time ids: (original size, crop top-left, target size), (h, w) order.
        let size = (options.height, options.width);
        let (oh, ow) = options.original_size.unwrap_or(size);
        let (th, tw) = options.target_size.unwrap_or(size);
        let (ct, cl) = options.crop_top_left;
        let ids: Vec<f32> = [oh, ow, ct, cl, th, tw].iter().map(|&v| v as f32).collect();
        let time_ids = Tensor::<B, 2>::from_data(TensorData::new(ids, [1, 6]), &device);
        let (encoder_states, text_embeds, time_ids) = if cfg {
            (
                Tensor::cat(vec![negative.prompt_embeds, prompt_embeds], 0),
                Tensor::cat(
                    vec![negative.pooled_prompt_embeds, positive.pooled_prompt_embeds],
                    0,
                ),
                Tensor::cat(vec![time_ids.clone(), time_ids], 0),
            )
        } else {
            (prompt_embeds, positive.pooled_prompt_embeds, time_ids)
        };

        // 6. Denoising loop with classifier-free guidance.
        for i in 0..timesteps.len() {
            let noise_pred = self.predict_noise(
                scheduler.as_ref(),
                &latents,
                i,
                &encoder_states,
                &text_embeds,
                &time_ids,
                cfg.then_some(options.guidance),
            )?;
            let noise = match &options.step_noise {
                Some(n) => Some(n[i].clone()),
                None if scheduler.needs_noise() => {
                    Some(host_normal(&mut rng, latents.dims(), &device))
                }
                None => None,
            };
            latents = scheduler.step(noise_pred, i, latents, noise)?;
            progress(i + 1, timesteps.len());
        }

        // 7. Decode.
        let image = self.vae.decode(self.vae.unscale_latents(latents.clone()))?;
        let image = (image.mul_scalar(0.5).add_scalar(0.5)).clamp(0.0, 1.0);
        Ok(GenerateOutput {
            latents,
            image,
            text: self.settings(options),
        })
    }

    /// The settings of a run as PNG text chunks (see [`GenerateOutput::text`]).
    pub fn settings(&self, options: &GenerateOptions<B>) -> Vec<(String, String)> {
        let scheduler = match options.scheduler.or(self.scheduler_config.native_kind()) {
            Some(kind) => kind.name().to_string(),
            None => self.scheduler_config.class_name().unwrap_or("").to_string(),
        };
        let mut text = vec![
            ("prompt", options.prompt.clone()),
            (
                "negative_prompt",
                options.negative_prompt.clone().unwrap_or_default(),
            ),
            ("seed", options.seed.to_string()),
            ("steps", options.steps.to_string()),
            ("guidance", options.guidance.to_string()),
            ("scheduler", scheduler),
            (
                "precision",
                format!("{:?}", self.unet.dtype()).to_lowercase(),
            ),
            ("model", self.source.display_path().display().to_string()),
            (
                "software",
                format!("magicnaming {}", env!("CARGO_PKG_VERSION")),
            ),
        ];
        if let Some(name) = &options.name {
            text.push(("name", name.source().to_string()));
        }
        if !self.loras.is_empty() {
            text.push(("loras", self.loras.clone()));
        }
        text.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
    }
}

/// A tensor of N(0, 1) values from the host generator `rng`, in the device's default float
/// type.
fn host_normal<B: Backend>(
    rng: &mut SplitMix64,
    shape: [usize; 4],
    device: &B::Device,
) -> Tensor<B, 4> {
    let n = shape.iter().product();
    Tensor::from_data(TensorData::new(rng.normal_f32(n), shape), device)
}

/// The model's `scheduler/scheduler_config.json`; SDXL base's for a single file without a
/// configuration folder.
///
/// # Errors
/// A diffusers folder without the file; a file that does not parse.
pub fn scheduler_config(source: &SdxlSource) -> Result<SchedulerConfig> {
    match source.component_file("scheduler", "scheduler_config.json") {
        Some(p) => SchedulerConfig::from_file(&p),
        None => {
            if let SdxlSource::Diffusers { root, .. } = source {
                return Err(ModelError::MissingFile {
                    path: root.join("scheduler/scheduler_config.json"),
                    what: "the scheduler configuration".into(),
                });
            }
            Ok(SchedulerConfig::sdxl_base())
        }
    }
}
