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

pub(super) fn recorder() -> NamedMpkFileRecorder<FullPrecisionSettings> {
    NamedMpkFileRecorder::new()
}

pub(super) fn checkpoint<B: AutodiffBackend, O: Optimizer<NameHead<B>, B>>(
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
    super::export::write_encoder(out, &head.valid(), dataset, &state.config)
}

pub(super) fn read_metrics(path: &Path) -> Result<Vec<MetricsLine>> {
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

pub(super) fn rewrite_metrics(path: &Path, lines: &[MetricsLine]) -> Result<()> {
    let mut text = String::new();
    for l in lines {
        text.push_str(&serde_json::to_string(l).expect("serialises"));
        text.push('\n');
    }
    Ok(magicnaming_core::write_atomic(path, text.as_bytes())?)
}

pub(super) fn append_metrics(path: &PathBuf, line: &MetricsLine) -> Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(path)
        .map_err(|e| ModelError::io(path, e))?;
    writeln!(f, "{}", serde_json::to_string(line).expect("serialises"))
        .map_err(|e| ModelError::io(path, e))?;
    f.sync_data().map_err(|e| ModelError::io(path, e))
}
