//! The training loop: AdamW, warmup + cosine learning rate, MSE, global-norm gradient
//! clipping, periodic validation into `metrics.jsonl`, atomic checkpoints and exact
//! resume (weights, optimizer state, step and data order).
use std::path::Path;

use burn::module::{AutodiffModule, Module};
use burn::optim::Optimizer;
use burn::tensor::backend::AutodiffBackend;
use magicnaming_core::NameHead;

use super::checkpoint::*;
use super::config::{TrainConfig, adamw, head_config};
use super::dataset::{Dataset, Split};
use super::metrics::{ValMetrics, evaluate};
use super::rng::SplitMix64;
use super::schedule::LrSchedule;
use super::step::*;
use crate::{ModelError, Result};

/// What a finished run reports.
#[derive(Debug, Clone)]
pub struct TrainSummary {
    /// Steps done in all.
    pub steps: usize,
    /// The metrics lines, first to last.
    pub metrics: Vec<MetricsLine>,
}

/// The resolved plan of a run.
struct Plan {
    batch: usize,
    total: usize,
    schedule: LrSchedule,
}

fn plan(config: &TrainConfig, n_train: usize) -> Result<Plan> {
    if n_train == 0 {
        return Err(ModelError::InvalidInput(
            "the dataset has no training images".into(),
        ));
    }
    if config.eval_every == 0
        || config.checkpoint_every == 0
        || !config.checkpoint_every.is_multiple_of(config.eval_every)
    {
        return Err(ModelError::InvalidInput(format!(
            "checkpoint_every ({}) must be a positive multiple of eval_every ({})",
            config.checkpoint_every, config.eval_every
        )));
    }
    if !(config.lr > 0.0 && config.lr.is_finite()) {
        return Err(ModelError::InvalidInput(format!(
            "learning rate must be > 0, got {}",
            config.lr
        )));
    }
    let batch = config.batch_size.unwrap_or(32).clamp(1, n_train);
    let total = config
        .steps
        .unwrap_or(n_train.div_ceil(batch) * config.epochs);
    if total == 0 {
        return Err(ModelError::InvalidInput("zero training steps".into()));
    }
    let warmup = config
        .warmup_steps
        .unwrap_or((total / 20).min(500))
        .min(total);
    Ok(Plan {
        batch,
        total,
        schedule: LrSchedule {
            lr: config.lr,
            warmup_steps: warmup,
            total_steps: total,
            min_lr: config.min_lr,
        },
    })
}

/// Rows of step `step`: epoch `e` visits the training rows in a permutation seeded by
/// `(seed, e)`, in consecutive batches (the last one may be short).
pub(crate) fn batch_rows(train: &[usize], batch: usize, seed: u64, step: usize) -> Vec<usize> {
    let per_epoch = train.len().div_ceil(batch);
    let (epoch, index) = (step / per_epoch, step % per_epoch);
    let mut order = train.to_vec();
    SplitMix64(seed ^ (epoch as u64).wrapping_mul(0xA076_1D64_78BD_642F)).shuffle(&mut order);
    order[index * batch..((index + 1) * batch).min(order.len())].to_vec()
}

/// Trains a head on `dataset`, writing `out/` (a complete encoder folder, `metrics.jsonl`
/// and `checkpoint/`). With `resume`, continues from `out/checkpoint` exactly as an
/// uninterrupted run would (the checkpoint's configuration is used).
pub fn train<B: AutodiffBackend>(
    dataset: &Dataset,
    out: &Path,
    config: &TrainConfig,
    resume: bool,
    devices: &[B::Device],
) -> Result<TrainSummary> {
    let device = devices
        .first()
        .ok_or_else(|| ModelError::InvalidInput("training needs at least one device".into()))?;
    if devices.len() > 1 {
        log::info!(
            "data parallel over {} devices; the first holds the weights",
            devices.len()
        );
    }
    std::fs::create_dir_all(out).map_err(|e| ModelError::io(out, e))?;
    let ckpt = out.join("checkpoint");
    let (config, start) = if resume {
        let state_path = ckpt.join("state.json");
        let state: CheckpointState = serde_json::from_value(crate::json::read_json(&state_path)?)
            .map_err(|e| ModelError::config(&state_path, e.to_string()))?;
        if state.config != *config {
            log::warn!(
                "--resume: continuing with the checkpoint's settings, not the ones given now"
            );
        }
        (state.config, state.step)
    } else {
        (config.clone(), 0)
    };
    let train_rows = dataset.rows(Split::Train);
    let plan = plan(&config, train_rows.len())?;
    let mut head = head_config(&config, dataset).init_seeded::<B>(config.seed, device)?;
    let mut optim = adamw(&config).init::<B, NameHead<B>>();
    let metrics_path = out.join("metrics.jsonl");
    let mut metrics = Vec::new();
    if resume {
        head = head
            .load_file(ckpt.join("head"), &recorder(), device)
            .map_err(|e| ModelError::weights(ckpt.join("head.mpk"), e.to_string()))?;
        let record = burn::record::Recorder::<B>::load(&recorder(), ckpt.join("optim"), device)
            .map_err(|e| ModelError::weights(ckpt.join("optim.mpk"), e.to_string()))?;
        optim = optim.load_record(record);
        metrics = read_jsonl::<MetricsLine>(&metrics_path)?
            .into_iter()
            .filter(|m| m.step <= start)
            .collect();
        log::info!("resuming at step {start} of {}", plan.total);
    }
    rewrite_jsonl(&metrics_path, &metrics)?;
    let (mut loss_sum, mut loss_count) = (0f64, 0usize);
    for step in start..plan.total {
        let rows = batch_rows(&train_rows, plan.batch, config.seed, step);
        let lr = plan.schedule.at(step);
        let (next, loss) = train_step(
            head,
            &mut optim,
            dataset,
            &rows,
            lr,
            config.grad_clip_norm,
            devices,
        );
        head = next;
        if !loss.is_finite() {
            return Err(ModelError::InvalidInput(format!(
                "training diverged at step {}: loss {loss} (lower --lr)",
                step + 1
            )));
        }
        loss_sum += loss;
        loss_count += 1;
        let done = step + 1;
        if done % config.eval_every == 0 || done == plan.total {
            let ValMetrics {
                val_loss,
                val_cosine,
                val_top1,
            } = evaluate(&head.valid(), dataset, device);
            let line = MetricsLine {
                step: done,
                lr,
                train_loss: loss_sum / loss_count as f64,
                val_loss,
                val_cosine,
                val_top1,
            };
            log::info!(
                "step {done}/{}: {}",
                plan.total,
                serde_json::to_string(&line).expect("serialises")
            );
            append_jsonl(&metrics_path, &line)?;
            metrics.push(line);
            (loss_sum, loss_count) = (0.0, 0);
        }
        if done % config.checkpoint_every == 0 || done == plan.total {
            checkpoint(
                out,
                &head,
                &optim,
                &CheckpointState {
                    step: done,
                    config: config.clone(),
                },
                dataset,
            )?;
        }
    }
    Ok(TrainSummary {
        steps: plan.total,
        metrics,
    })
}
