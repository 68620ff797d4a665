//! A run's state on disk: atomic checkpoints (weights, optimizer state, step and
//! configuration) and `metrics.jsonl`.
use std::io::Write;
use std::path::{Path, PathBuf};

use burn::module::{AutodiffModule, Module};
use burn::optim::Optimizer;
use burn::record::{FullPrecisionSettings, NamedMpkFileRecorder};
use burn::tensor::backend::AutodiffBackend;
use magicnaming_core::NameHead;
use serde::{Deserialize, Serialize};

use super::config::TrainConfig;
use super::dataset::Dataset;
use crate::{ModelError, Result};

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

#[derive(Debug, Serialize, Deserialize)]
pub(super) struct CheckpointState {
    pub(super) step: usize,
    pub(super) config: TrainConfig,
}

pub(crate) fn recorder() -> NamedMpkFileRecorder<FullPrecisionSettings> {
    NamedMpkFileRecorder::new()
}

pub(super) fn checkpoint<B: AutodiffBackend, O: Optimizer<NameHead<B>, B>>(
    out: &Path,
    head: &NameHead<B>,
    optim: &O,
    state: &CheckpointState,
    dataset: &Dataset,
) -> Result<()> {
    let tmp = start_checkpoint(out)?;
    head.clone()
        .save_file(tmp.join("head"), &recorder())
        .map_err(|e| ModelError::weights(tmp.join("head.mpk"), e.to_string()))?;
    burn::record::Recorder::<B>::record(&recorder(), optim.to_record(), tmp.join("optim"))
        .map_err(|e| ModelError::weights(tmp.join("optim.mpk"), e.to_string()))?;
    let json = serde_json::to_vec_pretty(state).expect("state serialises");
    magicnaming_core::write_atomic(&tmp.join("state.json"), &json)?;
    commit_checkpoint(out)?;
    super::export::write_encoder(out, &head.valid(), dataset, &state.config)
}

/// The lines of a JSON Lines log (none when the file does not exist).
pub(crate) fn read_jsonl<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Vec<T>> {
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

/// Replaces a JSON Lines log with `lines`, atomically.
pub(crate) fn rewrite_jsonl<T: Serialize>(path: &Path, lines: &[T]) -> Result<()> {
    let mut text = String::new();
    for l in lines {
        text.push_str(&serde_json::to_string(l).expect("serialises"));
        text.push('\n');
    }
    Ok(magicnaming_core::write_atomic(path, text.as_bytes())?)
}

/// Appends one line to a JSON Lines log and syncs it.
pub(crate) fn append_jsonl<T: Serialize>(path: &Path, line: &T) -> Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(path)
        .map_err(|e| ModelError::io(path, e))?;
    writeln!(f, "{}", serde_json::to_string(line).expect("serialises"))
        .map_err(|e| ModelError::io(path, e))?;
    f.sync_data().map_err(|e| ModelError::io(path, e))
}

/// A fresh `out/checkpoint.tmp` to write a checkpoint into.
pub(crate) fn start_checkpoint(out: &Path) -> Result<PathBuf> {
    let tmp = out.join("checkpoint.tmp");
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(|e| ModelError::io(&tmp, e))?;
    Ok(tmp)
}

/// Makes the complete `out/checkpoint.tmp` the checkpoint: the old one is moved aside,
/// the new one renamed into place, the old one removed (a kill at any point leaves a
/// complete checkpoint under `checkpoint` or `checkpoint.old`).
pub(crate) fn commit_checkpoint(out: &Path) -> Result<()> {
    let (tmp, ckpt, old) = (
        out.join("checkpoint.tmp"),
        out.join("checkpoint"),
        out.join("checkpoint.old"),
    );
    let _ = std::fs::remove_dir_all(&old);
    if ckpt.exists() {
        std::fs::rename(&ckpt, &old).map_err(|e| ModelError::io(&ckpt, e))?;
    }
    std::fs::rename(&tmp, &ckpt).map_err(|e| ModelError::io(&tmp, e))?;
    let _ = std::fs::remove_dir_all(&old);
    Ok(())
}
