//! `train` and `eval`.
use std::path::PathBuf;

use anyhow::Result;
use burn::backend::Autodiff;
use burn::tensor::backend::Backend;
use clap::Args;
use magicnaming_models::name_encoder::{load_head, NameEncoderConfig};
use magicnaming_models::train::{evaluate, train, Dataset, TrainConfig};

use crate::device::Job;
use crate::outputs::check_output_dir;

/// Arguments of `train`.
#[derive(Args, Debug)]
pub struct TrainArgs {
    /// Dataset folder written by `dataset build`.
    #[arg(long)]
    dataset: PathBuf,
    /// Output encoder folder (also holds metrics.jsonl and checkpoint/).
    #[arg(long)]
    out: PathBuf,
    /// Optimizer steps (default: --epochs passes over the training images).
    #[arg(long)]
    steps: Option<usize>,
    /// Passes over the training images when --steps is not given.
    #[arg(long, default_value_t = TrainConfig::default().epochs)]
    epochs: usize,
    /// Images per step (default: 32, or the training set if smaller).
    #[arg(long)]
    batch: Option<usize>,
    /// Peak learning rate (AdamW; linear warmup then cosine decay).
    #[arg(long, default_value_t = TrainConfig::default().lr)]
    lr: f64,
    /// Warmup steps (default: 5% of the steps, at most 500).
    #[arg(long)]
    warmup: Option<usize>,
    /// AdamW weight decay.
    #[arg(long, default_value_t = TrainConfig::default().weight_decay)]
    weight_decay: f64,
    /// Global gradient-norm clip (0 disables).
    #[arg(long, default_value_t = 1.0)]
    grad_clip: f64,
    /// Seed of the initial weights and data order.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Validate and log every N steps.
    #[arg(long, default_value_t = TrainConfig::default().eval_every)]
    eval_every: usize,
    /// Checkpoint every N steps (a multiple of --eval-every).
    #[arg(long, default_value_t = TrainConfig::default().checkpoint_every)]
    checkpoint_every: usize,
    /// Hidden widths of the head, comma-separated (FC x 3 = two widths).
    #[arg(long, value_delimiter = ',', default_values_t = TrainConfig::default().hidden_dims)]
    hidden_dims: Vec<usize>,
    /// Continue from <out>/checkpoint exactly (weights, optimizer, step, data order).
    #[arg(long)]
    resume: bool,
}

impl Job for TrainArgs {
    fn run<B: Backend>(self, device: B::Device) -> Result<()> {
        self.run_on::<B>(vec![device])
    }

    /// Several devices (`--device cuda:0,cuda:1`): data parallel, the batch split across them.
    fn run_on<B: Backend>(self, devices: Vec<B::Device>) -> Result<()> {
        check_output_dir(&self.out)?;
        let dataset = Dataset::load(&self.dataset)?;
        let config = TrainConfig {
            steps: self.steps,
            epochs: self.epochs,
            batch_size: self.batch,
            lr: self.lr,
            warmup_steps: self.warmup,
            weight_decay: self.weight_decay,
            grad_clip_norm: (self.grad_clip > 0.0).then_some(self.grad_clip),
            seed: self.seed,
            eval_every: self.eval_every,
            checkpoint_every: self.checkpoint_every,
            hidden_dims: self.hidden_dims,
            ..TrainConfig::default()
        };
        let summary = train::<Autodiff<B>>(&dataset, &self.out, &config, self.resume, &devices)?;
        if let Some(last) = summary.metrics.last() {
            println!("{}", serde_json::to_string(last)?);
        }
        log::info!("encoder written to {}", self.out.display());
        Ok(())
    }
}

/// Arguments of `eval`.
#[derive(Args, Debug)]
pub struct EvalArgs {
    /// Encoder folder (config.json + head.safetensors).
    #[arg(long)]
    encoder: PathBuf,
    /// Dataset folder.
    #[arg(long)]
    dataset: PathBuf,
}

impl Job for EvalArgs {
    fn run<B: Backend>(self, device: B::Device) -> Result<()> {
        // Only the head is needed: the dataset holds image embeddings already.
        let config = NameEncoderConfig::from_file(&self.encoder.join("config.json"))?;
        let head = load_head::<B>(
            &self.encoder.join("head.safetensors"),
            &config.head,
            &device,
        )?;
        let dataset = Dataset::load(&self.dataset)?;
        println!(
            "{}",
            serde_json::to_string(&evaluate(&head, &dataset, &device))?
        );
        Ok(())
    }
}
