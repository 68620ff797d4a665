//! `EulerDiscreteScheduler` (diffusers 0.42.1, `scheduling_euler_discrete.py`): Euler steps
//! of the probability-flow ODE in sigma space (Karras et al. 2022, Algorithm 2, with
//! `s_churn = 0` as the SDXL pipeline calls it). SDXL base's own scheduler.
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::common::{self, BetaParams};
use super::config::{
    BetaSchedule, FinalSigmasType, InterpolationType, PredictionType, TimestepSpacing, TimestepType,
};
use super::scheduler::{Scheduler, SchedulerKind, check_index, check_shape};
use crate::ModelError;

/// The diffusers class name.
pub const CLASS_NAME: &str = SchedulerKind::Euler.class_name();

/// `EulerDiscreteScheduler`'s `__init__` arguments (diffusers names and defaults).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EulerDiscreteConfig {
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
    /// What the model predicts.
    pub prediction_type: PredictionType,
    /// How sigmas are placed between training timesteps.
    pub interpolation_type: InterpolationType,
    /// Replace the sigmas by a Karras (rho = 7) ramp between their extremes.
    pub use_karras_sigmas: bool,
    /// Exponential sigmas (not supported: must be false).
    pub use_exponential_sigmas: bool,
    /// Beta-distribution sigmas (not supported: must be false).
    pub use_beta_sigmas: bool,
    /// Lower end of the Karras ramp (default: the smallest sigma).
    pub sigma_min: Option<f64>,
    /// Upper end of the Karras ramp (default: the largest sigma).
    pub sigma_max: Option<f64>,
    /// How inference timesteps are spaced.
    pub timestep_spacing: TimestepSpacing,
    /// Discrete or continuous (`0.25 ln sigma`, with v-prediction) timesteps.
    pub timestep_type: TimestepType,
    /// Added to `leading` timesteps (1 for SDXL).
    pub steps_offset: i64,
    /// Rescale betas to zero terminal SNR (arXiv:2305.08891).
    pub rescale_betas_zero_snr: bool,
    /// Sigma after the last step.
    pub final_sigmas_type: FinalSigmasType,
}

/// diffusers' defaults for `EulerDiscreteScheduler`.
pub(crate) fn defaults() -> Value {
    json!({
        "num_train_timesteps": 1000, "beta_start": 0.0001, "beta_end": 0.02,
        "beta_schedule": "linear", "trained_betas": null, "prediction_type": "epsilon",
        "interpolation_type": "linear", "use_karras_sigmas": false,
        "use_exponential_sigmas": false, "use_beta_sigmas": false, "sigma_min": null,
        "sigma_max": null, "timestep_spacing": "linspace", "timestep_type": "discrete",
        "steps_offset": 0, "rescale_betas_zero_snr": false, "final_sigmas_type": "zero"
    })
}

/// Float32 timesteps of the Euler schedulers for a spacing (`linspace`, `leading`,
/// `trailing`), as `set_timesteps` computes them (shared with Euler ancestral).
pub(crate) fn spaced_timesteps(
    spacing: TimestepSpacing,
    num_train: usize,
    n: usize,
    steps_offset: i64,
) -> Vec<f64> {
    let ts: Vec<f64> = match spacing {
        TimestepSpacing::Linspace => common::np_linspace(0.0, (num_train - 1) as f64, n)
            .into_iter()
            .rev()
            .collect(),
        TimestepSpacing::Leading => {
            let ratio = num_train / n;
            (0..n)
                .rev()
                .map(|i| ((i * ratio) as f32 + steps_offset as f32) as f64)
                .collect()
        }
        TimestepSpacing::Trailing => {
            common::np_arange_down(num_train as f64, num_train as f64 / n as f64)
                .into_iter()
                .map(|t| (t.round_ties_even() as f32 - 1.0) as f64)
                .collect()
        }
    };
    ts.into_iter().map(common::f32_round).collect()
}

/// `init_noise_sigma` of the Euler schedulers: the largest sigma, or `sqrt(max^2 + 1)` for
/// `leading` spacing.
pub(crate) fn euler_init_noise_sigma(sigmas: &[f64], spacing: TimestepSpacing) -> f64 {
    let max = sigmas.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    match spacing {
        TimestepSpacing::Linspace | TimestepSpacing::Trailing => max,
        TimestepSpacing::Leading => (max * max + 1.0).sqrt(),
    }
}

/// `EulerDiscreteScheduler`.
#[derive(Debug, Clone)]
pub struct EulerDiscreteScheduler {
    config: EulerDiscreteConfig,
    /// Training sigma table (float32, index = training timestep).
    train_sigmas: Vec<f32>,
    alphas_cumprod: Vec<f32>,
    timesteps: Vec<f64>,
    sigmas: Vec<f64>,
}

impl EulerDiscreteScheduler {
    /// Builds the scheduler (training tables); unsupported options are errors.
    pub fn new(config: EulerDiscreteConfig) -> crate::Result<Self> {
        let unsupported =
            |what: &str| ModelError::InvalidInput(format!("{CLASS_NAME}: {what} is not supported"));
        if config.use_exponential_sigmas || config.use_beta_sigmas {
            return Err(unsupported("use_exponential_sigmas / use_beta_sigmas"));
        }
        if config.num_train_timesteps < 2 {
            return Err(unsupported("num_train_timesteps < 2"));
        }
        let alphas_cumprod = common::alphas_cumprod(&config.beta_params(), true)?;
        let train_sigmas = common::train_sigmas(&alphas_cumprod);
        Ok(Self {
            config,
            train_sigmas,
            alphas_cumprod,
            timesteps: vec![],
            sigmas: vec![],
        })
    }

    /// The configuration.
    pub fn config(&self) -> &EulerDiscreteConfig {
        &self.config
    }

    fn max_train_sigma(&self) -> f64 {
        self.train_sigmas
            .iter()
            .copied()
            .fold(f32::NEG_INFINITY, f32::max) as f64
    }
}

impl EulerDiscreteConfig {
    pub(crate) fn beta_params(&self) -> BetaParams<'_> {
        BetaParams {
            num_train_timesteps: self.num_train_timesteps,
            beta_start: self.beta_start,
            beta_end: self.beta_end,
            beta_schedule: self.beta_schedule,
            trained_betas: self.trained_betas.as_deref(),
            rescale_betas_zero_snr: self.rescale_betas_zero_snr,
        }
    }
}

impl<B: Backend> Scheduler<B> for EulerDiscreteScheduler {
    fn class_name(&self) -> &'static str {
        CLASS_NAME
    }

    fn set_timesteps(&mut self, n: usize) -> crate::Result<()> {
        let cfg = &self.config;
        common::check_steps(CLASS_NAME, n, cfg.num_train_timesteps)?;
        let mut timesteps = spaced_timesteps(
            cfg.timestep_spacing,
            cfg.num_train_timesteps,
            n,
            cfg.steps_offset,
        );
        let table = &self.train_sigmas;
        let mut sigmas: Vec<f64> = match cfg.interpolation_type {
            InterpolationType::Linear => timesteps
                .iter()
                .map(|&t| common::np_interp_index(t, table))
                .collect(),
            InterpolationType::LogLinear => {
                // torch.linspace(log(s[-1]), log(s[0]), n + 1).exp(), float32 throughout.
                let (hi, lo) = (table[table.len() - 1].ln() as f64, table[0].ln() as f64);
                common::torch_linspace_f32(hi, lo, n + 1)
                    .into_iter()
                    .map(|l| l.exp() as f64)
                    .collect()
            }
        };
        if cfg.use_karras_sigmas {
            let sigma_min = cfg.sigma_min.unwrap_or(sigmas[sigmas.len() - 1]);
            let sigma_max = cfg.sigma_max.unwrap_or(sigmas[0]);
            sigmas = common::karras_sigmas(sigma_min, sigma_max, n);
            let log_sigmas = common::log_sigmas(table);
            timesteps = sigmas
                .iter()
                .map(|&s| common::f32_round(common::sigma_to_t(s, &log_sigmas)))
                .collect();
        }
        let last = match cfg.final_sigmas_type {
            FinalSigmasType::Zero => 0.0,
            FinalSigmasType::SigmaMin => {
                ((1.0f32 - self.alphas_cumprod[0]) / self.alphas_cumprod[0]).sqrt() as f64
            }
        };
        sigmas.push(last);
        self.sigmas = sigmas.into_iter().map(common::f32_round).collect();
        if cfg.timestep_type == TimestepType::Continuous
            && cfg.prediction_type == PredictionType::VPrediction
        {
            timesteps = self.sigmas[..self.sigmas.len() - 1]
                .iter()
                .map(|&s| (0.25f32 * (s as f32).ln()) as f64)
                .collect();
        }
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
            // Before set_timesteps diffusers uses the training sigmas.
            return euler_init_noise_sigma(&[self.max_train_sigma()], self.config.timestep_spacing);
        }
        euler_init_noise_sigma(&self.sigmas, self.config.timestep_spacing)
    }

    fn needs_noise(&self) -> bool {
        false
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
        _noise: Option<Tensor<B, 4>>,
    ) -> crate::Result<Tensor<B, 4>> {
        check_index(CLASS_NAME, i, self.timesteps.len())?;
        check_shape("model_output", &model_output, &sample)?;
        let sigma = self.sigmas[i];
        let pred_original = common::sigma_pred_original(
            self.config.prediction_type,
            model_output,
            sample.clone(),
            sigma,
        );
        let derivative = (sample.clone() - pred_original).div_scalar(sigma);
        let dt = self.sigmas[i + 1] - sigma;
        Ok(sample + derivative.mul_scalar(dt))
    }
}
