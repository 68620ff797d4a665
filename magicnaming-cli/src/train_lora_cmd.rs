//! `train-lora`: fine-tune the UNet with LoRA on a dataset's images, each with its caption
//! and its person's name spliced in.
use std::path::PathBuf;

use anyhow::Result;
use burn::backend::autodiff::checkpoint::strategy::BalancedCheckpointing;
use burn::backend::Autodiff;
use burn::tensor::backend::Backend;
use clap::{Args, ValueEnum};
use magicnaming_models::train::lora::{
    train_lora, LoraFormat, LoraSources, LoraTrainConfig, NameSource, PredictionChoice,
};

use crate::device::Job;
use crate::outputs::check_output_dir;

/// Which names are prepended.
#[derive(ValueEnum, Clone, Copy, Debug)]
pub enum NamesArg {
    /// The dataset's text-coded names (ground truth).
    Text,
    /// The encoder's predictions from each image (needs --encoder).
    Predicted,
}

/// The training target.
#[derive(ValueEnum, Clone, Copy, Debug)]
pub enum PredictionArg {
    /// The noise.
    Epsilon,
    /// The velocity (v-prediction).
    V,
}

/// What burn's autodiff keeps for the backward pass.
#[derive(ValueEnum, Clone, Copy, Debug)]
pub enum CheckpointingArg {
    /// Every activation the backward pass needs.
    None,
    /// burn's `BalancedCheckpointing`: memory-bound operations (element-wise, norms) are
    /// recomputed in the backward pass instead of kept.
    Balanced,
}

/// Output file layout.
#[derive(ValueEnum, Clone, Copy, Debug)]
pub enum FormatArg {
    /// kohya / A1111 (`lora.safetensors`).
    Kohya,
    /// diffusers / PEFT (`pytorch_lora_weights.safetensors`).
    Diffusers,
}

/// Arguments of `train-lora`.
#[derive(Args, Debug)]
pub struct TrainLoraArgs {
    /// SDXL model: diffusers folder or single-file checkpoint.
    #[arg(long)]
    model: PathBuf,
    /// Configuration folder for a single file of non-standard size.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Dataset folder written by `dataset build` (its images must be at hand).
    #[arg(long)]
    dataset: PathBuf,
    /// Output folder: the LoRA file, metrics.jsonl, checkpoint/.
    #[arg(long)]
    out: PathBuf,
    /// LoRA rank.
    #[arg(long, default_value_t = 4)]
    rank: usize,
    /// LoRA alpha (default: the rank).
    #[arg(long)]
    alpha: Option<f64>,
    /// Attention projections to adapt, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "to_q,to_k,to_v,to_out.0")]
    targets: Vec<String>,
    /// Training resolution (square; images are resized on their shorter side and
    /// centre-cropped; smaller images are upscaled with a warning).
    #[arg(long, default_value_t = 1024)]
    resolution: usize,
    /// Optimizer steps (default: --epochs passes over the images).
    #[arg(long, conflicts_with = "epochs")]
    steps: Option<usize>,
    /// Passes over the images when --steps is not given.
    #[arg(long, default_value_t = 1)]
    epochs: usize,
    /// Images per step.
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Peak learning rate (AdamW; linear warmup then cosine decay).
    #[arg(long, default_value_t = 1e-4)]
    lr: f64,
    /// Warmup steps (default: 5% of the steps, at most 500).
    #[arg(long)]
    warmup: Option<usize>,
    /// Global gradient-norm clip (0 disables).
    #[arg(long, default_value_t = 1.0)]
    max_grad_norm: f64,
    /// Caption of images the dataset's manifest gives none.
    #[arg(long, default_value = "a photo of a person")]
    caption: String,
    /// Names prepended to the captions.
    #[arg(long, value_enum, default_value = "text")]
    names: NamesArg,
    /// Name encoder folder (with --names predicted).
    #[arg(long)]
    encoder: Option<PathBuf>,
    /// Training target (default: the model's scheduler configuration's).
    #[arg(long, value_enum)]
    prediction: Option<PredictionArg>,
    /// Seed of the adapters, the data order, noise and timesteps.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Write a metrics line every N steps.
    #[arg(long, default_value_t = 1)]
    log_every: usize,
    /// Checkpoint (and write the LoRA file) every N steps (a multiple of --log-every).
    #[arg(long, default_value_t = 500)]
    checkpoint_every: usize,
    /// Held-out loss every N steps (a multiple of --log-every; fixed images, timesteps and
    /// noise, so the curve shows learning without the step loss' noise).
    #[arg(long)]
    eval_every: Option<usize>,
    /// Output layout.
    #[arg(long, value_enum, default_value = "kohya")]
    format: FormatArg,
    /// Activation checkpointing: trade compute for activation memory.
    #[arg(long, value_enum, default_value = "none")]
    checkpointing: CheckpointingArg,
    /// Continue from <out>/checkpoint exactly (adapters, optimizer, step, data order).
    #[arg(long)]
    resume: bool,
}

impl TrainLoraArgs {
    fn config(&self) -> LoraTrainConfig {
        LoraTrainConfig {
            rank: self.rank,
            alpha: self.alpha,
            targets: self.targets.iter().map(|t| t.trim().to_string()).collect(),
            resolution: self.resolution,
            steps: self.steps,
            epochs: self.epochs,
            batch: self.batch,
            lr: self.lr,
            warmup_steps: self.warmup,
            max_grad_norm: (self.max_grad_norm > 0.0).then_some(self.max_grad_norm),
            caption: self.caption.clone(),
            names: match self.names {
                NamesArg::Text => NameSource::Text,
                NamesArg::Predicted => NameSource::Predicted,
            },
            prediction: match self.prediction {
                None => PredictionChoice::Model,
                Some(PredictionArg::Epsilon) => PredictionChoice::Epsilon,
                Some(PredictionArg::V) => PredictionChoice::V,
            },
            seed: self.seed,
            log_every: self.log_every,
            checkpoint_every: self.checkpoint_every,
            eval_every: self.eval_every,
            format: match self.format {
                FormatArg::Kohya => LoraFormat::Kohya,
                FormatArg::Diffusers => LoraFormat::Diffusers,
            },
            ..LoraTrainConfig::default()
        }
    }
}

impl Job for TrainLoraArgs {
    fn run<B: Backend>(self, device: B::Device) -> Result<()> {
        let config = self.config();
        config.validate()?;
        if matches!(self.names, NamesArg::Predicted) && self.encoder.is_none() {
            anyhow::bail!("--names predicted needs --encoder <DIR>");
        }
        check_output_dir(&self.out)?;
        let sources = LoraSources {
            model: self.model.clone(),
            config: self.config.clone(),
            dataset: self.dataset.clone(),
            encoder: self.encoder.clone(),
        };
        let summary = match self.checkpointing {
            CheckpointingArg::None => {
                train_lora::<Autodiff<B>>(&sources, &self.out, &config, self.resume, &device)?
            }
            CheckpointingArg::Balanced => train_lora::<Autodiff<B, BalancedCheckpointing>>(
                &sources,
                &self.out,
                &config,
                self.resume,
                &device,
            )?,
        };
        if let Some(last) = summary.metrics.last() {
            println!("{}", serde_json::to_string(last)?);
        }
        if summary.upscaled > 0 {
            log::warn!(
                "{} of {} images were smaller than --resolution and were upscaled",
                summary.upscaled,
                summary.images
            );
        }
        log::info!(
            "LoRA ({} modules) written to {}",
            summary.modules,
            summary.file.display()
        );
        Ok(())
    }
}
