//! The training loop: AdamW, warmup + cosine learning rate, MSE, global-norm gradient
//! clipping, periodic validation into `metrics.jsonl`, atomic checkpoints and exact
//! resume (weights, optimizer state, step and data order).
use std::io::Write;
use std::path::{Path, PathBuf};

use burn::module::{AutodiffModule, Module, ParamId};
use burn::optim::{AdamWConfig, GradientsParams, Optimizer};
use burn::record::{FullPrecisionSettings, NamedMpkFileRecorder};
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{ElementConversion, Tensor, TensorData};
use magicnaming_core::{HeadActivation, NameHead, NameHeadConfig};
use serde::{Deserialize, Serialize};

use super::dataset::{Dataset, Split};
use super::metrics::{evaluate, ValMetrics};
use super::schedule::LrSchedule;
use super::SplitMix64;
use crate::{ModelError, Result};

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

/// One line of `metrics.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricsLine {
    /// Steps done.
    pub step: usize,
    /// Learning rate of the last step.
    pub lr: f64,
    /// Mean training loss since the previous line.
    pub train_loss: f64,
    /// Validation MSE.
    pub val_loss: Option<f64>,
    /// Validation cosine.
    pub val_cosine: Option<f64>,
    /// Validation top-1 retrieval.
    pub val_top1: Option<f64>,
}

/// What a finished run reports.
#[derive(Debug, Clone)]
pub struct TrainSummary {
    /// Steps done in all.
    pub steps: usize,
    /// The metrics lines, first to last.
    pub metrics: Vec<MetricsLine>,
}

#[derive(Debug, Serialize, Deserialize)]
struct CheckpointState {
    step: usize,
    config: TrainConfig,
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
fn batch_rows(train: &[usize], batch: usize, seed: u64, step: usize) -> Vec<usize> {
    let per_epoch = train.len().div_ceil(batch);
    let (epoch, index) = (step / per_epoch, step % per_epoch);
    let mut order = train.to_vec();
    SplitMix64(seed ^ (epoch as u64).wrapping_mul(0xA076_1D64_78BD_642F)).shuffle(&mut order);
    order[index * batch..((index + 1) * batch).min(order.len())].to_vec()
}

/// Every parameter of the head: its id, and whether it is a 2-D weight (else a bias).
fn param_ids<B: AutodiffBackend>(head: &NameHead<B>) -> Vec<(ParamId, bool)> {
    let mut ids = Vec::new();
    for layer in &head.layers {
        ids.push((layer.weight.id, true));
        if let Some(b) = &layer.bias {
            ids.push((b.id, false));
        }
    }
    ids
}

/// Multiplies every gradient by `scale` (`ids` from [`param_ids`]).
fn scale_grads<B: AutodiffBackend>(
    grads: &mut GradientsParams,
    ids: &[(ParamId, bool)],
    scale: f64,
) {
    for &(id, is_weight) in ids {
        if is_weight {
            if let Some(g) = grads.remove::<B::InnerBackend, 2>(id) {
                grads.register(id, g.mul_scalar(scale));
            }
        } else if let Some(g) = grads.remove::<B::InnerBackend, 1>(id) {
            grads.register(id, g.mul_scalar(scale));
        }
    }
}

fn global_clip<B: AutodiffBackend>(head: &NameHead<B>, grads: &mut GradientsParams, max_norm: f64) {
    let ids = param_ids(head);
    let mut sq = 0f64;
    for (id, is_weight) in &ids {
        sq += if *is_weight {
            grads
                .get::<B::InnerBackend, 2>(*id)
                .map(|g| (g.clone() * g).sum().into_scalar().elem::<f64>())
        } else {
            grads
                .get::<B::InnerBackend, 1>(*id)
                .map(|g| (g.clone() * g).sum().into_scalar().elem::<f64>())
        }
        .unwrap_or(0.0);
    }
    let norm = sq.sqrt();
    // torch.nn.utils.clip_grad_norm_: scale by max_norm / (norm + 1e-6) when above.
    let scale = max_norm / (norm + 1e-6);
    if scale < 1.0 {
        scale_grads::<B>(grads, &ids, scale);
    }
}

/// Adds the gradients of `from` into `into`, moving them to `device` (data parallelism:
/// what burn's `MultiGradientsParams` does inside `step_multi`, done here so that global
/// clipping sees the summed gradient).
fn accumulate<B: AutodiffBackend>(
    into: &mut GradientsParams,
    mut from: GradientsParams,
    ids: &[(ParamId, bool)],
    device: &B::Device,
) {
    fn add<B: burn::tensor::backend::Backend, const D: usize>(
        into: &mut GradientsParams,
        from: &mut GradientsParams,
        id: ParamId,
        device: &B::Device,
    ) {
        if let Some(g) = from.remove::<B, D>(id) {
            let g = g.to_device(device);
            let sum = match into.remove::<B, D>(id) {
                Some(acc) => acc + g,
                None => g,
            };
            into.register(id, sum);
        }
    }
    for &(id, is_weight) in ids {
        if is_weight {
            add::<B::InnerBackend, 2>(into, &mut from, id, device);
        } else {
            add::<B::InnerBackend, 1>(into, &mut from, id, device);
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

/// One optimisation step on `rows`; returns the new head and the batch loss. With
/// several `devices` (the first holds the head and the optimizer), the batch is split
/// into contiguous shards, one per device; each shard's loss is weighted by its share of
/// the batch, so the summed gradient is the full batch's (data parallelism).
pub fn train_step<B: AutodiffBackend, O: Optimizer<NameHead<B>, B>>(
    head: NameHead<B>,
    optim: &mut O,
    dataset: &Dataset,
    rows: &[usize],
    lr: f64,
    grad_clip_norm: Option<f64>,
    devices: &[B::Device],
) -> (NameHead<B>, f64) {
    let (e, k, d) = (
        dataset.embed_dim(),
        dataset.index.num_tokens,
        dataset.index.token_dim,
    );
    let main = &devices[0];
    let shards = rows.len().min(devices.len()).max(1);
    let ids = param_ids(&head);
    let mut grads = GradientsParams::new();
    let mut value = 0f64;
    for (i, device) in devices.iter().enumerate().take(shards) {
        let part = &rows[i * rows.len() / shards..(i + 1) * rows.len() / shards];
        let b = part.len();
        let replica = if shards == 1 {
            head.clone()
        } else {
            head.clone().fork(device)
        };
        let x =
            Tensor::<B, 2>::from_data(TensorData::new(dataset.gather_embeds(part), [b, e]), device);
        let y = Tensor::<B, 3>::from_data(
            TensorData::new(dataset.gather_names(part), [b, k, d]),
            device,
        );
        let mut loss = replica.loss(replica.forward(x), y);
        if shards > 1 {
            loss = loss.mul_scalar(b as f64 / rows.len() as f64);
        }
        value += loss.clone().into_scalar().elem::<f64>();
        let shard_grads = GradientsParams::from_grads(loss.backward(), &replica);
        accumulate::<B>(&mut grads, shard_grads, &ids, main);
    }
    if let Some(max) = grad_clip_norm {
        global_clip(&head, &mut grads, max);
    }
    (optim.step(lr, head, grads), value)
}

fn recorder() -> NamedMpkFileRecorder<FullPrecisionSettings> {
    NamedMpkFileRecorder::new()
}

/// The optimizer of a run (torch.optim.AdamW semantics).
pub fn adamw(config: &TrainConfig) -> AdamWConfig {
    // torch.optim.AdamW defaults: betas (0.9, 0.999), eps 1e-8.
    AdamWConfig::new()
        .with_weight_decay(config.weight_decay as f32)
        .with_epsilon(1e-8)
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
        let state: CheckpointState =
            serde_json::from_value(crate::clip::config::read_json(&state_path)?)
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
    B::seed(device, config.seed);
    let mut head = head_config(&config, dataset).init::<B>(device)?;
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
        metrics = read_metrics(&metrics_path)?
            .into_iter()
            .filter(|m| m.step <= start)
            .collect();
        log::info!("resuming at step {start} of {}", plan.total);
    }
    rewrite_metrics(&metrics_path, &metrics)?;
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
            append_metrics(&metrics_path, &line)?;
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

fn checkpoint<B: AutodiffBackend, O: Optimizer<NameHead<B>, B>>(
    out: &Path,
    head: &NameHead<B>,
    optim: &O,
    state: &CheckpointState,
    dataset: &Dataset,
) -> Result<()> {
    let tmp = out.join("checkpoint.tmp");
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(|e| ModelError::io(&tmp, e))?;
    head.clone()
        .save_file(tmp.join("head"), &recorder())
        .map_err(|e| ModelError::weights(tmp.join("head.mpk"), e.to_string()))?;
    burn::record::Recorder::<B>::record(&recorder(), optim.to_record(), tmp.join("optim"))
        .map_err(|e| ModelError::weights(tmp.join("optim.mpk"), e.to_string()))?;
    let json = serde_json::to_vec_pretty(state).expect("state serialises");
    magicnaming_core::write_atomic(&tmp.join("state.json"), &json)?;
    let ckpt = out.join("checkpoint");
    let old = out.join("checkpoint.old");
    let _ = std::fs::remove_dir_all(&old);
    if ckpt.exists() {
        std::fs::rename(&ckpt, &old).map_err(|e| ModelError::io(&ckpt, e))?;
    }
    std::fs::rename(&tmp, &ckpt).map_err(|e| ModelError::io(&tmp, e))?;
    let _ = std::fs::remove_dir_all(&old);
    crate::train::export::write_encoder(out, &head.valid(), dataset, &state.config)
}

fn read_metrics(path: &Path) -> Result<Vec<MetricsLine>> {
    match std::fs::read_to_string(path) {
        Ok(text) => text
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                serde_json::from_str(l)
                    .map_err(|e| ModelError::config(path, format!("bad metrics line {l:?}: {e}")))
            })
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(ModelError::io(path, e)),
    }
}

fn rewrite_metrics(path: &Path, lines: &[MetricsLine]) -> Result<()> {
    let mut text = String::new();
    for l in lines {
        text.push_str(&serde_json::to_string(l).expect("serialises"));
        text.push('\n');
    }
    Ok(magicnaming_core::write_atomic(path, text.as_bytes())?)
}

fn append_metrics(path: &PathBuf, line: &MetricsLine) -> Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(path)
        .map_err(|e| ModelError::io(path, e))?;
    writeln!(f, "{}", serde_json::to_string(line).expect("serialises"))
        .map_err(|e| ModelError::io(path, e))?;
    f.sync_data().map_err(|e| ModelError::io(path, e))
}
