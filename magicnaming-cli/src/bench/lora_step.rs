//! One LoRA training step (what `train-lora` repeats): the UNet frozen with rank-4
//! adapters on every attention projection, batch 1 at latents `resolution / 8`, the noise
//! added at timestep 500, forward, backward, global-norm clipping and AdamW. The
//! process's peak memory is reset before the timed runs (Linux `clear_refs`), so the
//! reported peak is the step's (the frozen weights included).
use anyhow::{Context, Result};
use burn::backend::autodiff::checkpoint::strategy::BalancedCheckpointing;
use burn::backend::Autodiff;
use burn::module::Module;
use burn::optim::AdamWConfig;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Distribution, Tensor, TensorData};
use magicnaming_models::schedulers::{NoiseSchedule, SchedulerConfig};
use magicnaming_models::sdxl::pipeline::scheduler_config;
use magicnaming_models::train::lora::adapters::adapter_param_ids;
use magicnaming_models::train::lora::{inject, lora_step, StepInputs};
use magicnaming_models::unet::UNet2DConditionModel;

use super::args::BenchArgs;
use super::lora::status_bytes;
use super::models::Models;
use super::report::Recorder;
use super::timing::{build_log, materialise, time_runs};

/// The adapters' rank (and alpha), the diffusers script's default.
const RANK: usize = 4;

impl BenchArgs {
    /// Builds the UNet with adapters, times training steps (with burn's balanced
    /// activation checkpointing when asked).
    pub(super) fn bench_lora_step<B: Backend>(
        &self,
        models: &Models,
        device: &B::Device,
        rec: &mut Recorder,
    ) -> Result<()> {
        if self.balanced_checkpointing {
            self.lora_step_on::<B, Autodiff<B, BalancedCheckpointing>>(models, device, rec)
        } else {
            self.lora_step_on::<B, Autodiff<B>>(models, device, rec)
        }
    }

    fn lora_step_on<B: Backend, A: AutodiffBackend<InnerBackend = B>>(
        &self,
        models: &Models,
        device: &B::Device,
        rec: &mut Recorder,
    ) -> Result<()> {
        let device: &A::Device = &device_of::<B, A>(device);
        let from = models.describe();
        let t0 = build_log("the UNet", &from);
        let unet = models.unet::<A>(device).context("building the UNet")?;
        let (unet, n) = materialise(unet, self.float(), device)?;
        let built = (t0.elapsed().as_secs_f64(), n);
        let targets: Vec<String> = ["to_q", "to_k", "to_v", "to_out.0"]
            .map(String::from)
            .to_vec();
        let (mut unet, paths) = inject(
            unet.no_grad(),
            &targets,
            RANK,
            RANK as f64,
            self.seed,
            None,
            device,
        )?;
        let ids = adapter_param_ids(&mut unet);
        let schedule = NoiseSchedule::from_config(&match models {
            Models::Files(source) => scheduler_config(source)?,
            Models::Random(_) => SchedulerConfig::sdxl_base(),
        })?;
        let c = unet.config().clone();
        let vae = models.vae_config()?;
        let l = self.resolution / vae.downscale_factor();
        let normal = Distribution::Normal(0.0, 1.0);
        let token_dim = c.cross_attention_dim[0];
        let pooled_dim = c.projection_class_embeddings_input_dim - 6 * c.addition_time_embed_dim;
        let latent = |d| Tensor::<A, 4>::random([1, c.in_channels, l, l], d, device);
        let res = self.resolution as f32;
        let inputs = StepInputs::<A> {
            latent_mean: latent(normal),
            latent_std: latent(Distribution::Uniform(0.05, 0.15)),
            latent_eps: latent(normal),
            noise: latent(normal),
            timesteps: vec![500],
            prompt_embeds: Tensor::random([1, 77, token_dim], normal, device),
            text_embeds: Tensor::random([1, pooled_dim], normal, device),
            time_ids: Tensor::from_data(
                TensorData::new(vec![res, res, 0.0, 0.0, res, res], [1, 6]),
                device,
            ),
        };
        let mut optim = AdamWConfig::new()
            .with_weight_decay(1e-2)
            .with_epsilon(1e-8)
            .init::<A, UNet2DConditionModel<A>>();
        let rss_before = status_bytes("VmRSS:");
        let reset = std::fs::write("/proc/self/clear_refs", "5").is_ok();
        let mut model = Some(unet);
        let r = time_runs::<A, _>(device, self.plan(), || {
            let (next, report) = lora_step(
                model.take().expect("kept between runs"),
                &mut optim,
                &schedule,
                vae.scaling_factor,
                vae.shift_factor,
                inputs.clone(),
                &ids,
                1e-4,
                Some(1.0),
            )?;
            model = Some(next);
            Ok(report.loss)
        })?;
        let peak = status_bytes("VmHWM:").filter(|_| reset);
        let gb = |b: Option<u64>| b.map_or("?".into(), |b| format!("{:.2} GB", b as f64 / 1e9));
        let what = format!(
            "one LoRA training step (rank {RANK}, {} adapters), batch 1, latents {l}x{l}: \
             forward, backward, clip, AdamW{}; RSS before {}, peak during {}",
            paths.len(),
            if self.balanced_checkpointing {
                ", balanced checkpointing"
            } else {
                ""
            },
            gb(rss_before),
            gb(peak)
        );
        log::info!("{what}");
        rec.push("lora-step", what, built, r)
    }
}

/// The autodiff backend's device for the inner backend's (the same device: autodiff
/// wraps the inner backend's tensors).
fn device_of<B: Backend, A: AutodiffBackend<InnerBackend = B>>(device: &B::Device) -> A::Device {
    let probe = Tensor::<B, 1>::zeros([1], device);
    Tensor::<A, 1>::from_inner(probe).device()
}
