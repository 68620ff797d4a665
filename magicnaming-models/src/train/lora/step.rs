//! One LoRA training step, as the loop of diffusers' `train_text_to_image_lora_sdxl.py`:
//! latents sampled from the VAE's distribution and scaled, noise added at per-sample
//! timesteps with the model's betas, the UNet's prediction against the noise (or the
//! velocity) by mean squared error in f32, gradients of the adapters only, global-norm
//! clipping as `torch.nn.utils.clip_grad_norm_`, and an AdamW step.
use burn::module::ParamId;
use burn::optim::{GradientsParams, Optimizer};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{DType, ElementConversion, Tensor, TensorData};

use crate::nn::precision::cast;
use crate::schedulers::NoiseSchedule;
use crate::unet::UNet2DConditionModel;
use crate::{ModelError, Result};

/// Everything random or precomputed that one step consumes.
#[derive(Debug, Clone)]
pub struct StepInputs<B: Backend> {
    /// The VAE's latent mean, unscaled, `[B, C, h, w]`.
    pub latent_mean: Tensor<B, 4>,
    /// The VAE's latent standard deviation, `[B, C, h, w]`.
    pub latent_std: Tensor<B, 4>,
    /// Standard-normal draw of the latent sample, `[B, C, h, w]`.
    pub latent_eps: Tensor<B, 4>,
    /// Standard-normal noise added at `timesteps`, `[B, C, h, w]`.
    pub noise: Tensor<B, 4>,
    /// One training timestep per sample.
    pub timesteps: Vec<usize>,
    /// Prompt embeddings with the names spliced in, `[B, 77, D]`.
    pub prompt_embeds: Tensor<B, 3>,
    /// Pooled prompt embeddings, `[B, P]`.
    pub text_embeds: Tensor<B, 2>,
    /// SDXL micro-conditioning `[B, 6]`: original size, crop top-left, target size.
    pub time_ids: Tensor<B, 2>,
}

/// The loss of a step and its gradients (adapters only, before clipping).
pub struct StepGradients {
    /// Mean squared error.
    pub loss: f64,
    /// The adapters' gradients.
    pub grads: GradientsParams,
}

/// The step's loss (forward only): latents `(mean + std * eps - shift) * scale`, noised at
/// the timesteps, the UNet's prediction against the target by mean squared error in f32.
///
/// # Shapes
/// - output: `[1]`
///
/// # Errors
/// Inputs that do not fit the model (shapes, timesteps).
pub fn lora_loss<B: Backend>(
    unet: &UNet2DConditionModel<B>,
    schedule: &NoiseSchedule,
    scaling_factor: f64,
    shift_factor: Option<f64>,
    inputs: StepInputs<B>,
) -> Result<Tensor<B, 1>> {
    let StepInputs {
        latent_mean,
        latent_std,
        latent_eps,
        noise,
        timesteps,
        prompt_embeds,
        text_embeds,
        time_ids,
    } = inputs;
    let mut latents = latent_mean + latent_std * latent_eps;
    if let Some(shift) = shift_factor {
        latents = latents.sub_scalar(shift);
    }
    let latents = latents.mul_scalar(scaling_factor);
    let noisy = schedule.add_noise(latents.clone(), noise.clone(), &timesteps)?;
    let target = schedule.target(latents, noise, &timesteps)?;
    let device = noisy.device();
    let t: Vec<f32> = timesteps.iter().map(|&t| t as f32).collect();
    let t = Tensor::<B, 1>::from_data(TensorData::new(t, [timesteps.len()]), &device);
    let pred = unet.forward(noisy, t, prompt_embeds, text_embeds, time_ids)?;
    let diff = cast(pred, DType::F32) - cast(target, DType::F32);
    Ok((diff.clone() * diff).mean())
}

/// Forward and backward of one step.
///
/// # Errors
/// As [`lora_loss`].
pub fn lora_gradients<B: AutodiffBackend>(
    unet: &UNet2DConditionModel<B>,
    schedule: &NoiseSchedule,
    scaling_factor: f64,
    shift_factor: Option<f64>,
    inputs: StepInputs<B>,
) -> Result<StepGradients> {
    let loss = lora_loss(unet, schedule, scaling_factor, shift_factor, inputs)?;
    let value: f64 = loss.clone().into_scalar().elem();
    let grads = GradientsParams::from_grads(loss.backward(), unet);
    Ok(StepGradients { loss: value, grads })
}

/// The global L2 norm of the gradients of `ids` (2-D parameters).
pub fn grad_norm<B: AutodiffBackend>(grads: &GradientsParams, ids: &[ParamId]) -> f64 {
    ids.iter()
        .filter_map(|id| grads.get::<B::InnerBackend, 2>(*id))
        .map(|g| (g.clone() * g).sum().into_scalar().elem::<f64>())
        .sum::<f64>()
        .sqrt()
}

/// `clip_grad_norm_(params, max_norm)`: scales every gradient by
/// `max_norm / (norm + 1e-6)` when that is below 1; returns the norm before clipping.
pub fn clip_grad_norm<B: AutodiffBackend>(
    grads: &mut GradientsParams,
    ids: &[ParamId],
    max_norm: f64,
) -> f64 {
    let norm = grad_norm::<B>(grads, ids);
    let scale = max_norm / (norm + 1e-6);
    if scale < 1.0 {
        for id in ids {
            if let Some(g) = grads.remove::<B::InnerBackend, 2>(*id) {
                grads.register(*id, g.mul_scalar(scale));
            }
        }
    }
    norm
}

/// What a step reports.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepReport {
    /// The batch's loss.
    pub loss: f64,
    /// The gradient norm before clipping.
    pub grad_norm: f64,
}

/// One optimisation step: gradients, clipping (when `max_grad_norm` is set), AdamW.
///
/// # Errors
/// As [`lora_gradients`]; a non-finite loss.
#[allow(clippy::too_many_arguments)]
pub fn lora_step<B: AutodiffBackend, O: Optimizer<UNet2DConditionModel<B>, B>>(
    unet: UNet2DConditionModel<B>,
    optim: &mut O,
    schedule: &NoiseSchedule,
    scaling_factor: f64,
    shift_factor: Option<f64>,
    inputs: StepInputs<B>,
    ids: &[ParamId],
    lr: f64,
    max_grad_norm: Option<f64>,
) -> Result<(UNet2DConditionModel<B>, StepReport)> {
    let StepGradients { loss, mut grads } =
        lora_gradients(&unet, schedule, scaling_factor, shift_factor, inputs)?;
    if !loss.is_finite() {
        return Err(ModelError::InvalidInput(format!(
            "training diverged: loss {loss} (lower --lr)"
        )));
    }
    let grad_norm = match max_grad_norm {
        Some(max) => clip_grad_norm::<B>(&mut grads, ids, max),
        None => grad_norm::<B>(&grads, ids),
    };
    Ok((optim.step(lr, unet, grads), StepReport { loss, grad_norm }))
}
