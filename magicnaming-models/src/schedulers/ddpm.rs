//! The training half of diffusers' `DDPMScheduler`: `add_noise` and `get_velocity` over
//! the model's training noise table, which training scripts build from the model's own
//! `scheduler_config.json` (`DDPMScheduler.from_pretrained(model, subfolder="scheduler")`:
//! only the betas and `prediction_type` matter here).
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};

use super::common;
use super::config::{PredictionType, SchedulerConfig};
use crate::{ModelError, Result};

/// `alphas_cumprod` and the prediction type of a model's scheduler configuration.
#[derive(Debug, Clone)]
pub struct NoiseSchedule {
    alphas_cumprod: Vec<f32>,
    /// What the model predicts (the training target).
    pub prediction_type: PredictionType,
}

impl NoiseSchedule {
    /// The table `DDPMScheduler.from_config(config)` builds (float32, as diffusers; no
    /// terminal clamp).
    ///
    /// # Errors
    /// A configuration whose betas cannot be built (see [`SchedulerConfig`]).
    pub fn from_config(config: &SchedulerConfig) -> Result<Self> {
        let c = config.euler_discrete()?;
        Ok(Self {
            alphas_cumprod: common::alphas_cumprod(&c.beta_params(), false)?,
            prediction_type: c.prediction_type,
        })
    }

    /// `num_train_timesteps`: timesteps are drawn from `0..` this.
    pub fn num_train_timesteps(&self) -> usize {
        self.alphas_cumprod.len()
    }

    /// Per-sample `(sqrt(ac[t]), sqrt(1 - ac[t]))` as `[B, 1, 1, 1]` tensors, computed in
    /// float32 as diffusers does.
    fn coefficients<B: Backend>(
        &self,
        timesteps: &[usize],
        device: &B::Device,
    ) -> Result<(Tensor<B, 4>, Tensor<B, 4>)> {
        let n = self.num_train_timesteps();
        if let Some(&t) = timesteps.iter().find(|&&t| t >= n) {
            return Err(ModelError::InvalidInput(format!(
                "timestep {t} outside 0..{n}"
            )));
        }
        let b = timesteps.len();
        let a: Vec<f32> = timesteps
            .iter()
            .map(|&t| self.alphas_cumprod[t].sqrt())
            .collect();
        let s: Vec<f32> = timesteps
            .iter()
            .map(|&t| (1.0f32 - self.alphas_cumprod[t]).sqrt())
            .collect();
        let t = |v: Vec<f32>| Tensor::from_data(TensorData::new(v, [b, 1, 1, 1]), device);
        Ok((t(a), t(s)))
    }

    /// `add_noise`: `sqrt(ac[t]) x0 + sqrt(1 - ac[t]) noise`, one timestep per sample.
    ///
    /// # Shapes
    /// - `x0`, `noise`: `[B, C, h, w]`; `timesteps`: `B` values
    /// - output: `[B, C, h, w]`
    ///
    /// # Errors
    /// A timestep outside the table.
    pub fn add_noise<B: Backend>(
        &self,
        x0: Tensor<B, 4>,
        noise: Tensor<B, 4>,
        timesteps: &[usize],
    ) -> Result<Tensor<B, 4>> {
        let (a, s) = self.coefficients::<B>(timesteps, &x0.device())?;
        Ok(x0 * a + noise * s)
    }

    /// The training target: `noise` (epsilon), `get_velocity`'s
    /// `sqrt(ac[t]) noise - sqrt(1 - ac[t]) x0` (v_prediction), or `x0` (sample).
    ///
    /// # Shapes
    /// - `x0`, `noise`: `[B, C, h, w]`; `timesteps`: `B` values
    /// - output: `[B, C, h, w]`
    ///
    /// # Errors
    /// A timestep outside the table.
    pub fn target<B: Backend>(
        &self,
        x0: Tensor<B, 4>,
        noise: Tensor<B, 4>,
        timesteps: &[usize],
    ) -> Result<Tensor<B, 4>> {
        match self.prediction_type {
            PredictionType::Epsilon => Ok(noise),
            PredictionType::Sample => Ok(x0),
            PredictionType::VPrediction => {
                let (a, s) = self.coefficients::<B>(timesteps, &x0.device())?;
                Ok(noise * a - x0 * s)
            }
        }
    }
}
