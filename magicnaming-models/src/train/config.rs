//! Training settings, the head they build and the optimizer they configure.

use burn::optim::AdamWConfig;
use magicnaming_core::{HeadActivation, NameHeadConfig};
use serde::{Deserialize, Serialize};

use super::dataset::Dataset;

/// Training settings. Defaults suit a few dozen images as well as a large set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    /// Optimizer steps; when `None`, `epochs` passes over the training images.
    pub steps: Option<usize>,
    /// Passes over the training images (used when `steps` is `None`).
    pub epochs: usize,
    /// Images per step; `None`: 32, or the training set if smaller.
    pub batch_size: Option<usize>,
    /// Peak learning rate.
    pub lr: f64,
    /// Final learning rate of the cosine decay.
    pub min_lr: f64,
    /// Warmup steps; `None`: 5% of the steps, at most 500.
    pub warmup_steps: Option<usize>,
    /// AdamW decoupled weight decay.
    pub weight_decay: f64,
    /// Clip the global gradient norm to this value (`None`: no clipping).
    pub grad_clip_norm: Option<f64>,
    /// Seed of the initial weights and the data order.
    pub seed: u64,
    /// Validate and write a metrics line every this many steps (and at the end).
    pub eval_every: usize,
    /// Checkpoint every this many steps (a multiple of `eval_every`; and at the end).
    pub checkpoint_every: usize,
    /// Hidden widths of the head (the paper's FC x 3 is two).
    pub hidden_dims: Vec<usize>,
    /// Activation of the head.
    pub activation: HeadActivation,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            steps: None,
            epochs: 100,
            batch_size: None,
            lr: 1e-3,
            min_lr: 0.0,
            warmup_steps: None,
            weight_decay: 1e-2,
            grad_clip_norm: Some(1.0),
            seed: 0,
            eval_every: 50,
            checkpoint_every: 500,
            hidden_dims: vec![2048, 2048],
            activation: HeadActivation::Gelu,
        }
    }
}

/// Head configuration for a dataset.
pub fn head_config(config: &TrainConfig, dataset: &Dataset) -> NameHeadConfig {
    NameHeadConfig::new(dataset.embed_dim())
        .with_hidden_dims(config.hidden_dims.clone())
        .with_activation(config.activation)
        .with_num_tokens(dataset.index.num_tokens)
        .with_token_dim(dataset.index.token_dim)
}

/// The optimizer of a run (torch.optim.AdamW semantics).
pub fn adamw(config: &TrainConfig) -> AdamWConfig {
    // torch.optim.AdamW defaults: betas (0.9, 0.999), eps 1e-8.
    AdamWConfig::new()
        .with_weight_decay(config.weight_decay as f32)
        .with_epsilon(1e-8)
}
