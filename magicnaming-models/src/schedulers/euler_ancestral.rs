//! `EulerAncestralDiscreteScheduler` (diffusers 0.42.1,
//! `scheduling_euler_ancestral_discrete.py`): an Euler step down to `sigma_down`, then fresh
//! noise of standard deviation `sigma_up` (k-diffusion's `sample_euler_ancestral`, eta 1).
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::common::{self, BetaParams};
use super::config::{BetaSchedule, PredictionType, TimestepSpacing};
use super::euler::{euler_init_noise_sigma, spaced_timesteps};
use super::scheduler::{Scheduler, SchedulerKind, check_index, check_shape, required_noise};
use crate::ModelError;

/// The diffusers class name.
pub const CLASS_NAME: &str = SchedulerKind::EulerAncestral.class_name();

/// `EulerAncestralDiscreteScheduler`'s `__init__` arguments (diffusers names and defaults).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EulerAncestralDiscreteConfig {
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
    /// What the model predicts (`epsilon` or `v_prediction`; diffusers rejects `sample`).
    pub prediction_type: PredictionType,
    /// How inference timesteps are spaced.
    pub timestep_spacing: TimestepSpacing,
    /// Added to `leading` timesteps (1 for SDXL).
    pub steps_offset: i64,
    /// Rescale betas to zero terminal SNR (arXiv:2305.08891).
    pub rescale_betas_zero_snr: bool,
}

/// diffusers' defaults for `EulerAncestralDiscreteScheduler`.
pub(crate) fn defaults() -> Value {
    json!({
        "num_train_timesteps": 1000, "beta_start": 0.0001, "beta_end": 0.02,
        "beta_schedule": "linear", "trained_betas": null, "prediction_type": "epsilon",
        "timestep_spacing": "linspace", "steps_offset": 0, "rescale_betas_zero_snr": false
    })
}

/// `EulerAncestralDiscreteScheduler`. Every step is stochastic (see the module docs of
/// [`super`] for where the noise comes from).
#[derive(Debug, Clone)]
pub struct EulerAncestralDiscreteScheduler {
    config: EulerAncestralDiscreteConfig,
    train_sigmas: Vec<f32>,
    timesteps: Vec<f64>,
    sigmas: Vec<f64>,
}

impl EulerAncestralDiscreteScheduler {
    /// Builds the scheduler (training tables); unsupported options are errors.
    pub fn new(config: EulerAncestralDiscreteConfig) -> crate::Result<Self> {
        if config.prediction_type == PredictionType::Sample {
            return Err(ModelError::InvalidInput(format!(
                "{CLASS_NAME}: prediction_type \"sample\" is not implemented (in diffusers either)"
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
        let train_sigmas = common::train_sigmas(&common::alphas_cumprod(&params, true)?);
        Ok(Self {
            config,
            train_sigmas,
            timesteps: vec![],
            sigmas: vec![],
        })
    }

    /// The configuration.
    pub fn config(&self) -> &EulerAncestralDiscreteConfig {
        &self.config
    }
}

impl<B: Backend> Scheduler<B> for EulerAncestralDiscreteScheduler {
    fn class_name(&self) -> &'static str {
        CLASS_NAME
    }

    fn set_timesteps(&mut self, n: usize) -> crate::Result<()> {
        let cfg = &self.config;
        common::check_steps(CLASS_NAME, n, cfg.num_train_timesteps)?;
        let timesteps = spaced_timesteps(
            cfg.timestep_spacing,
            cfg.num_train_timesteps,
            n,
            cfg.steps_offset,
        );
        let mut sigmas: Vec<f64> = timesteps
            .iter()
            .map(|&t| common::np_interp_index(t, &self.train_sigmas))
            .collect();
        sigmas.push(0.0);
        self.sigmas = sigmas.into_iter().map(common::f32_round).collect();
        self.timesteps = timesteps;
        Ok(())
    }

    fn timesteps(&self) -> &[f64] {
        &self.timesteps
    }

    fn sigmas(&self) -> Option<&[f64]> {
        Some(&self.sigmas)
    }

    fn init_noise_sigma(&self) -> f64 {
        if self.sigmas.is_empty() {
            let max = self
                .train_sigmas
                .iter()
                .copied()
                .fold(f32::NEG_INFINITY, f32::max) as f64;
            return euler_init_noise_sigma(&[max], self.config.timestep_spacing);
        }
        euler_init_noise_sigma(&self.sigmas, self.config.timestep_spacing)
    }

    fn needs_noise(&self) -> bool {
        true
    }

    fn scale_model_input(&self, sample: Tensor<B, 4>, i: usize) -> crate::Result<Tensor<B, 4>> {
        check_index(CLASS_NAME, i, self.timesteps.len())?;
        Ok(common::scale_by_sigma(sample, self.sigmas[i]))
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
        let noise = required_noise(CLASS_NAME, noise, &sample)?;
        let sigma = self.sigmas[i];
        // (`new` rejects `sample` prediction for Euler ancestral, as diffusers raises.)
        let pred_original = common::sigma_pred_original(
            self.config.prediction_type,
            model_output,
            sample.clone(),
            sigma,
        );
        let (from, to) = (sigma, self.sigmas[i + 1]);
        let sigma_up = (to * to * (from * from - to * to) / (from * from)).sqrt();
        // Mathematically to^4 / from^2 >= 0; the clamp only stops rounding from making a NaN.
        let sigma_down = (to * to - sigma_up * sigma_up).max(0.0).sqrt();
        let derivative = (sample.clone() - pred_original).div_scalar(sigma);
        let dt = sigma_down - sigma;
        Ok(sample + derivative.mul_scalar(dt) + noise.mul_scalar(sigma_up))
    }
}
