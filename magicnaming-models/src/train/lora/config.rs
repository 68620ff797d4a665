//! Settings of a LoRA run, with the defaults of diffusers'
//! `train_text_to_image_lora_sdxl.py` where it has one.
use serde::{Deserialize, Serialize};

use crate::nn::attention::LORA_PROJECTIONS;
use crate::{ModelError, Result};

/// Which name is prepended to each image's caption.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NameSource {
    /// The person's text-coded name stored in the dataset (the ground truth).
    Text,
    /// The name encoder's prediction from the image's embeddings.
    Predicted,
}

/// What the UNet is trained to predict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PredictionChoice {
    /// As the model's scheduler configuration says.
    Model,
    /// The noise.
    Epsilon,
    /// The velocity.
    V,
}

/// The file layout of the saved LoRA.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LoraFormat {
    /// kohya / A1111: `lora_unet_<SGM name>.lora_down.weight`, `.lora_up.weight`, `.alpha`.
    Kohya,
    /// diffusers / PEFT: `unet.<path>.lora_A.weight`, `.lora_B.weight`, the adapter
    /// configuration in the metadata.
    Diffusers,
}

impl LoraFormat {
    /// The file name a run writes into its output folder.
    pub fn file_name(self) -> &'static str {
        match self {
            Self::Kohya => "lora.safetensors",
            Self::Diffusers => "pytorch_lora_weights.safetensors",
        }
    }
}

/// Settings of a LoRA run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoraTrainConfig {
    /// Rank `r`.
    pub rank: usize,
    /// `alpha` (`None`: the rank, as the diffusers script).
    pub alpha: Option<f64>,
    /// Projections adapted in every attention layer of the UNet.
    pub targets: Vec<String>,
    /// Training resolution (square).
    pub resolution: usize,
    /// Optimizer steps; when `None`, `epochs` passes over the images.
    pub steps: Option<usize>,
    /// Passes over the images (used when `steps` is `None`).
    pub epochs: usize,
    /// Images per step.
    pub batch: usize,
    /// Peak learning rate.
    pub lr: f64,
    /// Warmup steps (`None`: 5% of the steps, at most 500).
    pub warmup_steps: Option<usize>,
    /// AdamW decoupled weight decay.
    pub weight_decay: f64,
    /// Global gradient norm clip (`max_grad_norm`).
    pub max_grad_norm: Option<f64>,
    /// Caption of images without one in the manifest.
    pub caption: String,
    /// Which names are prepended.
    pub names: NameSource,
    /// Training target.
    pub prediction: PredictionChoice,
    /// Seed of the adapters' initialisation, the data order, noise and timesteps.
    pub seed: u64,
    /// Write a metrics line every this many steps (and at the end).
    pub log_every: usize,
    /// Checkpoint (and write the LoRA file) every this many steps (and at the end).
    pub checkpoint_every: usize,
    /// Held-out loss every this many steps (a multiple of `log_every`; `None`: never):
    /// the mean loss over the first 8 images at 5 fixed timesteps with fixed noise, the
    /// same draws every time, so its curve shows learning without the step loss' noise.
    pub eval_every: Option<usize>,
    /// Saved file layout.
    pub format: LoraFormat,
}

impl Default for LoraTrainConfig {
    fn default() -> Self {
        Self {
            rank: 4,
            alpha: None,
            targets: LORA_PROJECTIONS.iter().map(|s| s.to_string()).collect(),
            resolution: 1024,
            steps: None,
            epochs: 1,
            batch: 1,
            lr: 1e-4,
            warmup_steps: None,
            weight_decay: 1e-2,
            max_grad_norm: Some(1.0),
            caption: "a photo of a person".into(),
            names: NameSource::Text,
            prediction: PredictionChoice::Model,
            seed: 0,
            log_every: 1,
            checkpoint_every: 500,
            eval_every: None,
            format: LoraFormat::Kohya,
        }
    }
}

impl LoraTrainConfig {
    /// `alpha`, defaulting to the rank.
    pub fn alpha(&self) -> f64 {
        self.alpha.unwrap_or(self.rank as f64)
    }

    /// Checks the values that do not depend on the model or the data.
    ///
    /// # Errors
    /// [`ModelError::InvalidInput`] naming the setting.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(ModelError::InvalidInput(m));
        if self.rank == 0 {
            return bad("--rank must be at least 1".into());
        }
        if !(self.alpha() > 0.0 && self.alpha().is_finite()) {
            return bad(format!("--alpha must be > 0, got {}", self.alpha()));
        }
        if self.targets.is_empty() {
            return bad("--targets names no projection".into());
        }
        if let Some(t) = self
            .targets
            .iter()
            .find(|t| !LORA_PROJECTIONS.contains(&t.as_str()))
        {
            return bad(format!(
                "--targets: {t:?} matches no module; the UNet's attention projections are {}",
                LORA_PROJECTIONS.join(", ")
            ));
        }
        if self.resolution == 0 || !self.resolution.is_multiple_of(8) {
            return bad(format!(
                "--resolution must be a positive multiple of 8, got {}",
                self.resolution
            ));
        }
        if self.batch == 0 {
            return bad("--batch must be at least 1".into());
        }
        if self.steps == Some(0) || (self.steps.is_none() && self.epochs == 0) {
            return bad("zero training steps".into());
        }
        if !(self.lr > 0.0 && self.lr.is_finite()) {
            return bad(format!("--lr must be > 0, got {}", self.lr));
        }
        if self.log_every == 0 || self.checkpoint_every == 0 || self.eval_every == Some(0) {
            return bad("log, checkpoint and eval intervals must be at least 1".into());
        }
        for (what, every) in [
            ("checkpoint", Some(self.checkpoint_every)),
            ("eval", self.eval_every),
        ] {
            if let Some(n) = every
                && !n.is_multiple_of(self.log_every)
            {
                return bad(format!(
                    "the {what} interval ({n}) must be a multiple of the log interval ({})",
                    self.log_every
                ));
            }
        }
        if let Some(m) = self.max_grad_norm
            && !(m > 0.0 && m.is_finite())
        {
            return bad(format!("max_grad_norm must be > 0, got {m}"));
        }
        Ok(())
    }
}
