//! `DDIMScheduler` (diffusers 0.42.1, `scheduling_ddim.py`): denoising diffusion implicit
//! models (arXiv:2010.02502), deterministic for `eta = 0` (the SDXL pipeline's default).
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::common::{self, BetaParams};
use super::config::{BetaSchedule, PredictionType, TimestepSpacing};
use super::scheduler::{Scheduler, SchedulerKind, check_index, check_shape, required_noise};
use crate::ModelError;

/// The diffusers class name.
pub const CLASS_NAME: &str = SchedulerKind::Ddim.class_name();

/// `DDIMScheduler`'s `__init__` arguments (diffusers names and defaults).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DdimConfig {
    /// Training timesteps (1000).
    pub num_train_timesteps: usize,
    /// First beta.
    pub beta_start: f64,
    /// Last beta.
    pub beta_end: f64,
    /// How betas go from `beta_start` to `beta_end`.
    pub beta_schedule: BetaSchedule,
    /// Explicit betas, overriding the schedule.
    pub trained_betas: Option<Vec<f64>>,
    /// Clamp the predicted clean sample to `[-clip_sample_range, clip_sample_range]`
    /// (diffusers' default is true; SDXL's config sets false).
    pub clip_sample: bool,
    /// After the last step use `alphas_cumprod = 1` (else the first training value).
    pub set_alpha_to_one: bool,
    /// Added to `leading` timesteps (1 for SDXL).
    pub steps_offset: i64,
    /// What the model predicts.
    pub prediction_type: PredictionType,
    /// Dynamic thresholding (not supported: must be false).
    pub thresholding: bool,
    /// Thresholding quantile (unused without thresholding).
    pub dynamic_thresholding_ratio: f64,
    /// Clamp range of `clip_sample`.
    pub clip_sample_range: f64,
    /// Thresholding bound (unused without thresholding).
    pub sample_max_value: f64,
    /// How inference timesteps are spaced.
    pub timestep_spacing: TimestepSpacing,
    /// Rescale betas to zero terminal SNR (arXiv:2305.08891).
    pub rescale_betas_zero_snr: bool,
}

/// diffusers' defaults for `DDIMScheduler`.
pub(crate) fn defaults() -> Value {
    json!({
        "num_train_timesteps": 1000, "beta_start": 0.0001, "beta_end": 0.02,
        "beta_schedule": "linear", "trained_betas": null, "clip_sample": true,
        "set_alpha_to_one": true, "steps_offset": 0, "prediction_type": "epsilon",
        "thresholding": false, "dynamic_thresholding_ratio": 0.995, "clip_sample_range": 1.0,
        "sample_max_value": 1.0, "timestep_spacing": "leading", "rescale_betas_zero_snr": false
    })
}

/// `DDIMScheduler`, stepped with `eta` (0 unless set with [`DdimScheduler::with_eta`]).
#[derive(Debug, Clone)]
pub struct DdimScheduler {
    config: DdimConfig,
    alphas_cumprod: Vec<f32>,
    final_alpha_cumprod: f32,
    eta: f64,
    timesteps: Vec<f64>,
}

impl DdimScheduler {
    /// Builds the scheduler (training tables); unsupported options are errors.
    pub fn new(config: DdimConfig) -> crate::Result<Self> {
        if config.thresholding {
            return Err(ModelError::InvalidInput(format!(
                "{CLASS_NAME}: thresholding is not supported"
            )));
        }
        if config.num_train_timesteps < 2 {
            return Err(ModelError::InvalidInput(format!(
                "{CLASS_NAME}: num_train_timesteps < 2"
            )));
        }
        let params = BetaParams {
            num_train_timesteps: config.num_train_timesteps,
            beta_start: config.beta_start,
            beta_end: config.beta_end,
            beta_schedule: config.beta_schedule,
            trained_betas: config.trained_betas.as_deref(),
            rescale_betas_zero_snr: config.rescale_betas_zero_snr,
        };
        let alphas_cumprod = common::alphas_cumprod(&params, false)?;
        let final_alpha_cumprod = if config.set_alpha_to_one {
            1.0
        } else {
            alphas_cumprod[0]
        };
        Ok(Self {
            config,
            alphas_cumprod,
            final_alpha_cumprod,
            eta: 0.0,
            timesteps: vec![],
        })
    }

    /// Sets diffusers' `step(..., eta=eta)`: the weight of fresh noise (0 = deterministic DDIM,
    /// 1 = DDPM-like). Negative or non-finite values are errors.
    pub fn with_eta(mut self, eta: f64) -> crate::Result<Self> {
        if !(eta.is_finite() && eta >= 0.0) {
            return Err(ModelError::InvalidInput(format!(
                "{CLASS_NAME}: eta must be >= 0, got {eta}"
            )));
        }
        self.eta = eta;
        Ok(self)
    }

    /// The configuration.
    pub fn config(&self) -> &DdimConfig {
        &self.config
    }

    fn alpha_cumprod_at(&self, t: i64) -> crate::Result<f64> {
        usize::try_from(t)
            .ok()
            .and_then(|t| self.alphas_cumprod.get(t))
            .map(|&a| a as f64)
            .ok_or_else(|| {
                ModelError::InvalidInput(format!(
                    "{CLASS_NAME}: timestep {t} outside the training range"
                ))
            })
    }
}

impl<B: Backend> Scheduler<B> for DdimScheduler {
    fn class_name(&self) -> &'static str {
        CLASS_NAME
    }

    fn set_timesteps(&mut self, n: usize) -> crate::Result<()> {
        let cfg = &self.config;
        let num_train = cfg.num_train_timesteps;
        common::check_steps(CLASS_NAME, n, num_train)?;
        self.timesteps = match cfg.timestep_spacing {
            TimestepSpacing::Linspace => common::np_linspace(0.0, (num_train - 1) as f64, n)
                .into_iter()
                .rev()
                .map(f64::round_ties_even)
                .collect(),
            TimestepSpacing::Leading => {
                let ratio = num_train / n;
                (0..n)
                    .rev()
                    .map(|i| (i * ratio) as f64 + cfg.steps_offset as f64)
                    .collect()
            }
            TimestepSpacing::Trailing => {
                common::np_arange_down(num_train as f64, num_train as f64 / n as f64)
                    .into_iter()
                    .map(|t| t.round_ties_even() - 1.0)
                    .collect()
            }
        };
        Ok(())
    }

    fn timesteps(&self) -> &[f64] {
        &self.timesteps
    }

    fn sigmas(&self) -> Option<&[f64]> {
        None
    }

    fn init_noise_sigma(&self) -> f64 {
        1.0
    }

    fn needs_noise(&self) -> bool {
        self.eta > 0.0
    }

    fn scale_model_input(&self, sample: Tensor<B, 4>, i: usize) -> crate::Result<Tensor<B, 4>> {
        check_index(CLASS_NAME, i, self.timesteps.len())?;
        Ok(sample)
    }

    fn step(
        &mut self,
        model_output: Tensor<B, 4>,
        i: usize,
        sample: Tensor<B, 4>,
        noise: Option<Tensor<B, 4>>,
    ) -> crate::Result<Tensor<B, 4>> {
        check_index(CLASS_NAME, i, self.timesteps.len())?;
        check_shape("model_output", &model_output, &sample)?;
        let cfg = &self.config;
        let t = self.timesteps[i] as i64;
        // diffusers steps back by num_train // n whatever the spacing.
        let prev_t = t - (cfg.num_train_timesteps / self.timesteps.len()) as i64;
        let alpha_t = self.alpha_cumprod_at(t)?;
        let alpha_prev = if prev_t >= 0 {
            self.alpha_cumprod_at(prev_t)?
        } else {
            self.final_alpha_cumprod as f64
        };
        let beta_t = 1.0 - alpha_t;
        let (pred_original, pred_epsilon) = match cfg.prediction_type {
            PredictionType::Epsilon => (
                (sample.clone() - model_output.clone().mul_scalar(beta_t.sqrt()))
                    .div_scalar(alpha_t.sqrt()),
                model_output,
            ),
            PredictionType::Sample => (
                model_output.clone(),
                (sample.clone() - model_output.mul_scalar(alpha_t.sqrt()))
                    .div_scalar(beta_t.sqrt()),
            ),
            PredictionType::VPrediction => (
                sample.clone().mul_scalar(alpha_t.sqrt())
                    - model_output.clone().mul_scalar(beta_t.sqrt()),
                model_output.mul_scalar(alpha_t.sqrt()) + sample.clone().mul_scalar(beta_t.sqrt()),
            ),
        };
        let pred_original = if cfg.clip_sample {
            let r = cfg.clip_sample_range;
            pred_original.clamp(-r, r)
        } else {
            pred_original
        };
        let variance = ((1.0 - alpha_prev) / beta_t) * (1.0 - alpha_t / alpha_prev);
        let std_dev = self.eta * variance.sqrt();
        let direction = pred_epsilon.mul_scalar((1.0 - alpha_prev - std_dev * std_dev).sqrt());
        let prev = pred_original.mul_scalar(alpha_prev.sqrt()) + direction;
        if self.eta > 0.0 {
            let noise = required_noise(CLASS_NAME, noise, &sample)?;
            return Ok(prev + noise.mul_scalar(std_dev));
        }
        Ok(prev)
    }
}
