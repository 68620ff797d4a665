//! `DPMSolverMultistepScheduler` (diffusers 0.42.1, `scheduling_dpmsolver_multistep.py`)
//! with `algorithm_type: dpmsolver++` and solver order 1 or 2: "DPM++ 2M", and with
//! `use_karras_sigmas: true` "DPM++ 2M Karras" (arXiv:2211.01095).
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::common::{self, BetaParams};
use super::config::{BetaSchedule, FinalSigmasType, PredictionType, TimestepSpacing};
use super::scheduler::{Scheduler, SchedulerKind, check_index, check_shape};
use crate::ModelError;

/// The diffusers class name.
pub const CLASS_NAME: &str = SchedulerKind::DpmPp2mKarras.class_name();

/// The second-order update rule (`solver_type`; diffusers maps `logrho`, `bh1` and `bh2`
/// to `midpoint`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SolverType {
    /// `midpoint` (the default).
    #[serde(alias = "logrho", alias = "bh1", alias = "bh2")]
    Midpoint,
    /// `heun`.
    Heun,
}

/// `DPMSolverMultistepScheduler`'s `__init__` arguments (diffusers names and defaults), plus
/// the `sigma_min` / `sigma_max` that diffusers reads from the config when present.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DpmSolverMultistepConfig {
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
    /// Multistep order (1 or 2 supported; "2M" is 2).
    pub solver_order: usize,
    /// What the model predicts (`epsilon`, `v_prediction`, `sample`).
    pub prediction_type: PredictionType,
    /// Dynamic thresholding (not supported: must be false).
    pub thresholding: bool,
    /// Thresholding quantile (unused without thresholding).
    pub dynamic_thresholding_ratio: f64,
    /// Thresholding bound (unused without thresholding).
    pub sample_max_value: f64,
    /// `dpmsolver++` (the only one supported).
    pub algorithm_type: String,
    /// Second-order update rule.
    pub solver_type: SolverType,
    /// First-order final step(s) for fewer than 15 steps.
    pub lower_order_final: bool,
    /// First-order final step always.
    pub euler_at_final: bool,
    /// Karras (rho = 7) sigmas between the training extremes.
    pub use_karras_sigmas: bool,
    /// Exponential sigmas (not supported: must be false).
    pub use_exponential_sigmas: bool,
    /// Beta-distribution sigmas (not supported: must be false).
    pub use_beta_sigmas: bool,
    /// Uniform-lambda steps (not supported: must be false).
    pub use_lu_lambdas: bool,
    /// Flow-matching sigmas (not supported: must be false).
    pub use_flow_sigmas: bool,
    /// Flow shift (unused without flow sigmas).
    pub flow_shift: f64,
    /// Sigma after the last step.
    pub final_sigmas_type: FinalSigmasType,
    /// Timesteps whose log-SNR is below this are not used.
    pub lambda_min_clipped: f64,
    /// Learned-variance outputs (not supported: must be null).
    pub variance_type: Option<String>,
    /// How inference timesteps are spaced.
    pub timestep_spacing: TimestepSpacing,
    /// Added to `leading` timesteps.
    pub steps_offset: i64,
    /// Rescale betas to zero terminal SNR (arXiv:2305.08891).
    pub rescale_betas_zero_snr: bool,
    /// Dynamic shifting (not supported: must be false).
    pub use_dynamic_shifting: bool,
    /// Lower end of the Karras ramp when the config carries one (not an `__init__` argument;
    /// diffusers reads it with `hasattr(self.config, "sigma_min")`).
    #[serde(default)]
    pub sigma_min: Option<f64>,
    /// Upper end of the Karras ramp when the config carries one (as `sigma_min`).
    #[serde(default)]
    pub sigma_max: Option<f64>,
}

/// diffusers' defaults for `DPMSolverMultistepScheduler` (`lambda_min_clipped` = -inf is
/// stood in for by `f64::MIN`, which clips nothing either).
pub(crate) fn defaults() -> Value {
    json!({
        "num_train_timesteps": 1000, "beta_start": 0.0001, "beta_end": 0.02,
        "beta_schedule": "linear", "trained_betas": null, "solver_order": 2,
        "prediction_type": "epsilon", "thresholding": false, "dynamic_thresholding_ratio": 0.995,
        "sample_max_value": 1.0, "algorithm_type": "dpmsolver++", "solver_type": "midpoint",
        "lower_order_final": true, "euler_at_final": false, "use_karras_sigmas": false,
        "use_exponential_sigmas": false, "use_beta_sigmas": false, "use_lu_lambdas": false,
        "use_flow_sigmas": false, "flow_shift": 1.0, "final_sigmas_type": "zero",
        "lambda_min_clipped": f64::MIN, "variance_type": null, "timestep_spacing": "linspace",
        "steps_offset": 0, "rescale_betas_zero_snr": false, "use_dynamic_shifting": false
    })
}

/// `DPMSolverMultistepScheduler` (dpmsolver++, order <= 2). Steps must be taken in order
/// `0, 1, ..` after [`Scheduler::set_timesteps`]: it keeps the previous model output.
#[derive(Debug, Clone)]
pub struct DpmSolverMultistepScheduler<B: Backend> {
    config: DpmSolverMultistepConfig,
    alphas_cumprod: Vec<f32>,
    train_sigmas: Vec<f32>,
    timesteps: Vec<f64>,
    sigmas: Vec<f64>,
    /// The previous step's data prediction (x0), for the second-order update.
    previous: Option<Tensor<B, 4>>,
    next_index: usize,
}

impl<B: Backend> DpmSolverMultistepScheduler<B> {
    /// Builds the scheduler (training tables); unsupported options are errors.
    pub fn new(config: DpmSolverMultistepConfig) -> crate::Result<Self> {
        let unsupported = |what: String| {
            ModelError::InvalidInput(format!("{CLASS_NAME}: {what} is not supported"))
        };
        if config.algorithm_type != "dpmsolver++" {
            return Err(unsupported(format!(
                "algorithm_type {:?} (only \"dpmsolver++\")",
                config.algorithm_type
            )));
        }
        if !(1..=2).contains(&config.solver_order) {
            return Err(unsupported(format!(
                "solver_order {} (only 1 and 2)",
                config.solver_order
            )));
        }
        let flags = [
            ("thresholding", config.thresholding),
            ("use_exponential_sigmas", config.use_exponential_sigmas),
            ("use_beta_sigmas", config.use_beta_sigmas),
            ("use_lu_lambdas", config.use_lu_lambdas),
            ("use_flow_sigmas", config.use_flow_sigmas),
            ("use_dynamic_shifting", config.use_dynamic_shifting),
            ("variance_type", config.variance_type.is_some()),
        ];
        if let Some((name, _)) = flags.iter().find(|(_, on)| *on) {
            return Err(unsupported(name.to_string()));
        }
        if config.num_train_timesteps < 2 {
            return Err(unsupported("num_train_timesteps < 2".into()));
        }
        let params = BetaParams {
            num_train_timesteps: config.num_train_timesteps,
            beta_start: config.beta_start,
            beta_end: config.beta_end,
            beta_schedule: config.beta_schedule,
            trained_betas: config.trained_betas.as_deref(),
            rescale_betas_zero_snr: config.rescale_betas_zero_snr,
        };
        let alphas_cumprod = common::alphas_cumprod(&params, true)?;
        let train_sigmas = common::train_sigmas(&alphas_cumprod);
        Ok(Self {
            config,
            alphas_cumprod,
            train_sigmas,
            timesteps: vec![],
            sigmas: vec![],
            previous: None,
            next_index: 0,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &DpmSolverMultistepConfig {
        &self.config
    }

    /// `N - searchsorted(flip(lambda_t), lambda_min_clipped)`, lambda_t in float32.
    fn last_timestep(&self) -> usize {
        let clip = self.config.lambda_min_clipped;
        let clipped = self
            .alphas_cumprod
            .iter()
            .filter(|&&ac| ((ac.sqrt().ln() - (1.0f32 - ac).sqrt().ln()) as f64) < clip)
            .count();
        self.config.num_train_timesteps - clipped
    }

    /// `(alpha_t, sigma_t, lambda_t)` of a sigma (`_sigma_to_alpha_sigma_t`).
    fn alpha_sigma_lambda(sigma: f64) -> (f64, f64, f64) {
        let alpha = 1.0 / (sigma * sigma + 1.0).sqrt();
        let sigma_t = sigma * alpha;
        (alpha, sigma_t, alpha.ln() - sigma_t.ln())
    }
}

impl<B: Backend> Scheduler<B> for DpmSolverMultistepScheduler<B> {
    fn class_name(&self) -> &'static str {
        CLASS_NAME
    }

    fn set_timesteps(&mut self, n: usize) -> crate::Result<()> {
        let cfg = &self.config;
        common::check_steps(CLASS_NAME, n, cfg.num_train_timesteps)?;
        let last = self.last_timestep();
        if last == 0 {
            return Err(ModelError::InvalidInput(format!(
                "{CLASS_NAME}: lambda_min_clipped removes every timestep"
            )));
        }
        let mut timesteps: Vec<f64> = match cfg.timestep_spacing {
            TimestepSpacing::Linspace => {
                let mut t: Vec<f64> = common::np_linspace(0.0, (last - 1) as f64, n + 1)
                    .into_iter()
                    .map(f64::round_ties_even)
                    .rev()
                    .collect();
                t.pop();
                t
            }
            TimestepSpacing::Leading => {
                let ratio = last / (n + 1);
                (1..=n)
                    .rev()
                    .map(|i| (i * ratio) as f64 + cfg.steps_offset as f64)
                    .collect()
            }
            TimestepSpacing::Trailing => {
                let ratio = cfg.num_train_timesteps as f64 / n as f64;
                common::np_arange_down(last as f64, ratio)
                    .into_iter()
                    .map(|t| t.round_ties_even() - 1.0)
                    .collect()
            }
        };
        let table = &self.train_sigmas;
        let mut sigmas: Vec<f64> = if cfg.use_karras_sigmas {
            let sigma_min = cfg.sigma_min.unwrap_or(table[0] as f64);
            let sigma_max = cfg.sigma_max.unwrap_or(table[table.len() - 1] as f64);
            let sigmas = common::karras_sigmas(sigma_min, sigma_max, n);
            let log_sigmas = common::log_sigmas(table);
            let round = cfg.beta_schedule != BetaSchedule::SquaredcosCapV2;
            // Rounded (np.round), else truncated by the int64 cast.
            timesteps = sigmas
                .iter()
                .map(|&s| common::sigma_to_t(s, &log_sigmas))
                .map(|t| {
                    if round {
                        t.round_ties_even()
                    } else {
                        t.trunc()
                    }
                })
                .collect();
            sigmas
        } else {
            timesteps
                .iter()
                .map(|&t| common::np_interp_index(t, table))
                .collect()
        };
        sigmas.push(match cfg.final_sigmas_type {
            FinalSigmasType::Zero => 0.0,
            FinalSigmasType::SigmaMin => table[0] as f64,
        });
        self.sigmas = sigmas.into_iter().map(common::f32_round).collect();
        self.timesteps = timesteps;
        self.previous = None;
        self.next_index = 0;
        Ok(())
    }

    fn timesteps(&self) -> &[f64] {
        &self.timesteps
    }

    fn sigmas(&self) -> Option<&[f64]> {
        Some(&self.sigmas)
    }

    fn init_noise_sigma(&self) -> f64 {
        1.0
    }

    fn needs_noise(&self) -> bool {
        false
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
        _noise: Option<Tensor<B, 4>>,
    ) -> crate::Result<Tensor<B, 4>> {
        let n = self.timesteps.len();
        check_index(CLASS_NAME, i, n)?;
        check_shape("model_output", &model_output, &sample)?;
        if i != self.next_index {
            return Err(ModelError::InvalidInput(format!(
                "{CLASS_NAME}: steps must be taken in order; expected step {}, got {i}",
                self.next_index
            )));
        }
        let cfg = &self.config;
        // convert_model_output: the data prediction x0.
        let (alpha_s0, sigma_s0, lambda_s0) = Self::alpha_sigma_lambda(self.sigmas[i]);
        let x0 = match cfg.prediction_type {
            PredictionType::Epsilon => {
                (sample.clone() - model_output.mul_scalar(sigma_s0)).div_scalar(alpha_s0)
            }
            PredictionType::Sample => model_output,
            PredictionType::VPrediction => {
                sample.clone().mul_scalar(alpha_s0) - model_output.mul_scalar(sigma_s0)
            }
        };
        let lower_order_final = i == n - 1
            && (cfg.euler_at_final
                || (cfg.lower_order_final && n < 15)
                || cfg.final_sigmas_type == FinalSigmasType::Zero);
        let previous = self.previous.replace(x0.clone());
        let (alpha_t, sigma_t, lambda_t) = Self::alpha_sigma_lambda(self.sigmas[i + 1]);
        let h = lambda_t - lambda_s0;
        let phi = alpha_t * ((-h).exp() - 1.0);
        // sigma_t / sigma_s0 * sample - alpha_t (e^-h - 1) D0 (+ the second-order term).
        let first = sample.mul_scalar(sigma_t / sigma_s0) - x0.clone().mul_scalar(phi);
        let out = match previous {
            Some(m1) if cfg.solver_order == 2 && !lower_order_final => {
                let (_, _, lambda_s1) = Self::alpha_sigma_lambda(self.sigmas[i - 1]);
                let r0 = (lambda_s0 - lambda_s1) / h;
                let d1 = (x0 - m1).mul_scalar(1.0 / r0);
                match cfg.solver_type {
                    SolverType::Midpoint => first - d1.mul_scalar(0.5 * phi),
                    SolverType::Heun => {
                        first + d1.mul_scalar(alpha_t * (((-h).exp() - 1.0) / h + 1.0))
                    }
                }
            }
            _ => first,
        };
        self.next_index += 1;
        Ok(out)
    }
}
