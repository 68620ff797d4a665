//! `warmup`: runs once everything a generation needs at one shape (both text encoders,
//! the UNet at a latent size and batch, the scheduler, the VAE decode), so that a GPU
//! backend compiles its kernels and tunes them into the kernel cache (`--kernel-cache`);
//! a later `generate` at that shape, or a second warmup, finds them there.
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use magicnaming_core::rng::SplitMix64;
use magicnaming_models::nn::kernels::cache::KernelCacheConfig;
use magicnaming_models::sdxl::{LoadOptions, SdxlPipeline};
use magicnaming_models::Precision;

use crate::args::{ModelArgs, PrecisionArg};
use crate::device::Job;

/// Arguments of `warmup`.
#[derive(Args, Debug)]
pub struct WarmupArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Image size in pixels (square; a multiple of the UNet's downsampling).
    #[arg(long, default_value_t = 1024)]
    resolution: usize,
    /// Float type of the weights, as `generate --precision` (warm up the one you will
    /// generate with: kernels are compiled and tuned per type).
    #[arg(long, value_enum, default_value_t = PrecisionArg::F16)]
    dtype: PrecisionArg,
    /// UNet batch: 2 is one image with classifier-free guidance (as `generate`), 1 one
    /// image without; an even batch is guided, an odd one is not.
    #[arg(long, default_value_t = 2)]
    batch: usize,
    /// Denoising steps (UNet forwards).
    #[arg(long, default_value_t = 1)]
    steps: usize,
    /// The prompt of the text-encoder stage.
    #[arg(long, default_value = "a photo of a person")]
    prompt: String,
}

/// Stage timings, in order.
struct Stages {
    bar: ProgressBar,
    done: Vec<(String, Duration)>,
}

impl Stages {
    fn new(total: usize) -> Self {
        // Drawn only on a terminal (indicatif hides itself otherwise).
        let bar = ProgressBar::new(total as u64).with_style(
            ProgressStyle::with_template("warmup {pos}/{len} [{bar:30}] {elapsed} {msg}")
                .expect("valid template")
                .progress_chars("=> "),
        );
        Self {
            bar,
            done: Vec::new(),
        }
    }

    /// Runs one stage: `f`, then the device synchronised, timed together.
    fn run<B: Backend, T>(
        &mut self,
        device: &B::Device,
        name: &str,
        f: impl FnOnce() -> Result<T>,
    ) -> Result<T> {
        self.bar.set_message(name.to_string());
        let t0 = Instant::now();
        let out = f().with_context(|| format!("warmup stage `{name}`"))?;
        B::sync(device).map_err(|e| anyhow!("synchronising the device: {e:?}"))?;
        self.done.push((name.to_string(), t0.elapsed()));
        self.bar.inc(1);
        Ok(out)
    }
}

impl Job for WarmupArgs {
    fn run<B: Backend>(self, device: B::Device) -> Result<()> {
        if self.resolution == 0 || !self.resolution.is_multiple_of(8) {
            bail!(
                "--resolution {}: must be a positive multiple of 8",
                self.resolution
            );
        }
        if self.batch == 0 || self.steps == 0 {
            bail!("--batch and --steps must be at least 1");
        }
        // A --dtype the backend lacks is refused by the loader, before any weights are read.
        let precision = Precision::from(self.dtype);
        let source = self.model.source()?;
        let started = Instant::now();
        let mut stages = Stages::new(3 + self.steps);
        let load = LoadOptions::default().with_precision(precision);
        let pipeline = stages.run::<B, _>(&device, "load", || {
            SdxlPipeline::<B>::load_with(&source, &device, &load)
                .with_context(|| format!("loading {}", self.model.model.display()))
        })?;
        let res = self.resolution;
        let f = pipeline.vae_scale_factor();
        let c = pipeline.unet.config();
        let down = f << (c.levels() - 1);
        if !res.is_multiple_of(down) {
            bail!("--resolution {res}: must be a multiple of {down} for this UNet");
        }
        let (pos, neg) = stages.run::<B, _>(&device, "text encoders", || {
            let pos = pipeline.text.encode_prompt(&[self.prompt.as_str()])?;
            let neg = pipeline.text.encode_negative_prompt(None, 1)?;
            Ok((pos, neg))
        })?;
        // As the pipeline: an even batch is guided (negative halves first), an odd one not.
        let guided = self.batch.is_multiple_of(2);
        let images = if guided { self.batch / 2 } else { self.batch };
        let rep3 = |t: Tensor<B, 3>| t.repeat_dim(0, images);
        let rep2 = |t: Tensor<B, 2>| t.repeat_dim(0, images);
        let (states, pooled) = if guided {
            (
                Tensor::cat(vec![rep3(neg.prompt_embeds), rep3(pos.prompt_embeds)], 0),
                Tensor::cat(
                    vec![
                        rep2(neg.pooled_prompt_embeds),
                        rep2(pos.pooled_prompt_embeds),
                    ],
                    0,
                ),
            )
        } else {
            (rep3(pos.prompt_embeds), rep2(pos.pooled_prompt_embeds))
        };
        let ids: Vec<f32> = [res, res, 0, 0, res, res]
            .repeat(self.batch)
            .iter()
            .map(|&v| v as f32)
            .collect();
        let time_ids = Tensor::<B, 2>::from_data(TensorData::new(ids, [self.batch, 6]), &device);
        let mut scheduler = pipeline.scheduler_config.build::<B>(None)?;
        scheduler.set_timesteps(self.steps)?;
        let timesteps = scheduler.timesteps().to_vec();
        let l = res / f;
        // N(0, 1) from the host generator, as the pipeline draws it (also the noise of a
        // stochastic scheduler's steps).
        let mut rng = SplitMix64(0);
        let shape = [images, c.in_channels, l, l];
        let mut normal = || {
            let n = shape.iter().product();
            Tensor::<B, 4>::from_data(TensorData::new(rng.normal_f32(n), shape), &device)
        };
        let mut latents = normal().mul_scalar(scheduler.init_noise_sigma());
        for i in 0..timesteps.len() {
            let name = format!("UNet step {}/{}", i + 1, timesteps.len());
            latents = stages.run::<B, _>(&device, &name, || {
                let pred = pipeline.predict_noise(
                    scheduler.as_ref(),
                    &latents,
                    i,
                    &states,
                    &pooled,
                    &time_ids,
                    guided.then_some(5.0),
                )?;
                let noise = scheduler.needs_noise().then(&mut normal);
                Ok(scheduler.step(pred, i, latents.clone(), noise)?)
            })?;
        }
        stages.run::<B, _>(&device, "VAE decode", || {
            let image = pipeline
                .vae
                .decode(pipeline.vae.unscale_latents(latents.clone()))?;
            Ok(image.mul_scalar(0.5).add_scalar(0.5).clamp(0.0, 1.0))
        })?;
        stages.bar.finish_and_clear();
        println!(
            "warmup {res}x{res} (latents {l}x{l}), batch {}, {} step(s), {} on {}",
            self.batch,
            self.steps,
            format!("{:?}", self.dtype).to_lowercase(),
            B::name(&device)
        );
        for (name, d) in &stages.done {
            println!("  {name:<16} {:>9.3} s", d.as_secs_f64());
        }
        println!(
            "  {:<16} {:>9.3} s",
            "total",
            started.elapsed().as_secs_f64()
        );
        match KernelCacheConfig::applied() {
            Some(cache) => println!("kernel cache: {cache}"),
            None => println!("kernel cache: none (this backend compiles no kernels)"),
        }
        Ok(())
    }
}
