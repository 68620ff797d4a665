//! The SDXL components: both text encoders, one UNet step, the VAE decode and a whole
//! image through the pipeline.
use anyhow::{anyhow, bail, Context, Result};
use burn::tensor::backend::Backend;
use burn::tensor::{Distribution, Tensor, TensorData};
use magicnaming_models::sdxl::{GenerateOptions, SdxlPipeline};

use super::args::{BenchArgs, Component};
use super::models::Models;
use super::report::Recorder;
use super::timing::{build_log, materialise, time_runs};

impl BenchArgs {
    /// Text encoders, UNet step, VAE decode and whole image; each model is freed as soon
    /// as nothing later needs it.
    pub(super) fn bench_sdxl<B: Backend>(
        &self,
        models: &Models,
        device: &B::Device,
        rec: &mut Recorder,
    ) -> Result<()> {
        let (res, from) = (self.resolution, models.describe());
        let vae_config = models.vae_config()?;
        let f = vae_config.downscale_factor();
        let image = self.has(Component::Image);
        let normal = Distribution::Normal(0.0, 1.0);
        let mut text = None;
        if self.has(Component::Text) || image {
            let t0 = build_log("the text encoders", &from);
            let mut enc = models
                .text::<B>(device)
                .context("building the text encoders")?;
            let (te, n1) = materialise(enc.text_encoder, self.float(), device)?;
            let (te2, n2) = materialise(enc.text_encoder_2, self.float(), device)?;
            (enc.text_encoder, enc.text_encoder_2) = (te, te2);
            let n = n1 + n2;
            text = Some((enc, (t0.elapsed().as_secs_f64(), n)));
        }
        if let (true, Some((enc, built))) = (self.has(Component::Text), &text) {
            // As a guided pipeline: the prompt, and the unconditional embeddings.
            let r = time_runs::<B, _>(device, self.plan(), || {
                let pos = enc.encode_prompt(&[self.prompt.as_str()])?;
                let neg = enc.encode_negative_prompt(None, 1)?;
                Ok((pos, neg))
            })?;
            let what = "both text encoders, 1 prompt + unconditional".to_string();
            rec.push("text", what, *built, r)?;
        }
        if !image {
            text = None; // frees its memory before the UNet is built
        }
        let mut unet = None;
        if self.has(Component::Unet) || image {
            let t0 = build_log("the UNet", &from);
            let u = models.unet::<B>(device).context("building the UNet")?;
            let (u, n) = materialise(u, self.float(), device)?;
            let built = (t0.elapsed().as_secs_f64(), n);
            if self.has(Component::Unet) {
                let c = u.config();
                let down = f << (c.levels() - 1);
                if res % down != 0 {
                    bail!("--resolution {res}: must be a multiple of {down} for this UNet");
                }
                let l = res / f;
                // The UNet's own widths: prompt embeddings, pooled embedding.
                let token_dim = c.cross_attention_dim[0];
                let pooled_dim = c
                    .projection_class_embeddings_input_dim
                    .checked_sub(6 * c.addition_time_embed_dim)
                    .filter(|&p| p > 0)
                    .ok_or_else(|| anyhow!("the UNet takes no 6 SDXL time ids"))?;
                let sample = Tensor::<B, 4>::random([2, c.in_channels, l, l], normal, device);
                let ctx = Tensor::<B, 3>::random([2, 77, token_dim], normal, device);
                let pooled = Tensor::<B, 2>::random([2, pooled_dim], normal, device);
                let ids = [res, res, 0, 0, res, res].map(|v| v as f32);
                let ids: Vec<f32> = ids.iter().chain(ids.iter()).copied().collect();
                let time_ids = Tensor::<B, 2>::from_data(TensorData::new(ids, [2, 6]), device);
                let r = time_runs::<B, _>(device, self.plan(), || {
                    let (s, c, p, t) = (
                        sample.clone(),
                        ctx.clone(),
                        pooled.clone(),
                        time_ids.clone(),
                    );
                    Ok(u.forward(s, 500.0f64, c, p, t)?)
                })?;
                let what = format!("one UNet step, batch 2 (guidance), latents {l}x{l}");
                rec.push("unet", what, built, r)?;
            }
            if image {
                unet = Some(u);
            }
        }
        let mut vae = None;
        if self.has(Component::Vae) || image {
            let t0 = build_log("the VAE", &from);
            let v = models.vae::<B>(device).context("building the VAE")?;
            // SDXL's VAE decodes in f32 under f16 (force_upcast), as in the pipeline.
            let (v, n) = materialise(v, vae_config.run_dtype(self.float()), device)?;
            let built = (t0.elapsed().as_secs_f64(), n);
            if self.has(Component::Vae) {
                let l = res / f;
                let z =
                    Tensor::<B, 4>::random([1, vae_config.latent_channels, l, l], normal, device);
                let r = time_runs::<B, _>(device, self.plan(), || {
                    Ok(v.decode(v.unscale_latents(z.clone()))?)
                })?;
                let what = format!("VAE decode, {l}x{l} -> {res}x{res}");
                rec.push("vae", what, built, r)?;
            }
            if image {
                vae = Some(v);
            }
        }
        if let (Some((text, _)), Some(unet), Some(vae)) = (text, unet, vae) {
            let pipeline = SdxlPipeline {
                text,
                unet,
                vae,
                scheduler_config: models.scheduler()?,
                source: models.source(),
                loras: String::new(),
            };
            let mut options = GenerateOptions::<B>::new(self.prompt.clone());
            options.steps = self.steps;
            options.guidance = self.guidance;
            options.width = res;
            options.height = res;
            options.seed = self.seed;
            pipeline.check(&options)?;
            let iters = self.image_iters.unwrap_or(self.iters);
            let r = time_runs::<B, _>(device, (self.warmup.min(1), iters, self.budget_s), || {
                Ok(pipeline.generate(&options)?)
            })?;
            let what = format!(
                "whole image {res}x{res}, {} steps, guidance {}, default scheduler",
                self.steps, self.guidance
            );
            rec.push("image", what, (0.0, 0), r)?;
        }
        Ok(())
    }
}
