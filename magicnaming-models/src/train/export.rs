//! The trained encoder folder: `config.json` (towers, head configuration, dims) and
//! `head.safetensors` (PyTorch layout: `layers.N.weight` `[out, in]`, `layers.N.bias`).
use std::path::Path;

use burn::tensor::backend::Backend;
use burn_store::{BurnToPyTorchAdapter, ModuleSnapshot, PyTorchToBurnAdapter, SafetensorsStore};
use magicnaming_core::{NameHead, NameHeadConfig};
use serde_json::json;

use super::dataset::Dataset;
use super::trainer::TrainConfig;
use crate::{ModelError, Result};

/// Format tag of an encoder's `config.json`.
pub const ENCODER_FORMAT: &str = "magicnaming-encoder";

/// Writes `head.safetensors` atomically.
pub fn save_head<B: Backend>(head: &NameHead<B>, path: &Path) -> Result<()> {
    let mut store = SafetensorsStore::from_bytes(None).with_to_adapter(BurnToPyTorchAdapter);
    head.save_into(&mut store)
        .map_err(|e| ModelError::weights(path, e.to_string()))?;
    let bytes = store
        .get_bytes()
        .map_err(|e| ModelError::weights(path, e.to_string()))?;
    Ok(magicnaming_core::write_atomic(path, &bytes)?)
}

/// Loads `head.safetensors` into a head built from `config`; every tensor must match.
pub fn load_head<B: Backend>(
    config: &NameHeadConfig,
    path: &Path,
    device: &B::Device,
) -> Result<NameHead<B>> {
    let mut head = config.init::<B>(device)?;
    let bytes = std::fs::read(path).map_err(|e| ModelError::io(path, e))?;
    let mut store =
        SafetensorsStore::from_bytes(Some(bytes)).with_from_adapter(PyTorchToBurnAdapter);
    let result = head
        .load_from(&mut store)
        .map_err(|e| ModelError::weights(path, e.to_string()))?;
    if !result.errors.is_empty() || !result.missing.is_empty() || !result.unused.is_empty() {
        return Err(ModelError::weights(
            path,
            format!(
                "head does not match its configuration: errors {:?}, missing {:?}, unused {:?}",
                result
                    .errors
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>(),
                result.missing.iter().map(|(p, _)| p).collect::<Vec<_>>(),
                result.unused
            ),
        ));
    }
    Ok(head)
}

/// Writes the encoder folder `out` (config.json + head.safetensors) for a head trained
/// on `dataset`; the towers are the ones the dataset was embedded with.
pub fn write_encoder<B: Backend>(
    out: &Path,
    head: &NameHead<B>,
    dataset: &Dataset,
    train: &TrainConfig,
) -> Result<()> {
    save_head(head, &out.join("head.safetensors"))?;
    let src = &dataset.index.source;
    let config = json!({
        "format": ENCODER_FORMAT,
        "tower_l": src.get("tower_l").cloned().unwrap_or(serde_json::Value::Null),
        "tower_g": src.get("tower_g").cloned().unwrap_or(serde_json::Value::Null),
        "head": {
            "input_dim": dataset.embed_dim(),
            "hidden_dims": train.hidden_dims,
            "activation": train.activation,
            "num_tokens": dataset.index.num_tokens,
            "token_dim": dataset.index.token_dim,
        },
        "num_tokens": dataset.index.num_tokens,
        "token_dim": dataset.index.token_dim,
        "image_embed_dims": dataset.index.embed_dims,
        "trained_on": dataset.dir.display().to_string(),
    });
    let bytes = serde_json::to_vec_pretty(&config).expect("serialises");
    Ok(magicnaming_core::write_atomic(
        &out.join("config.json"),
        &bytes,
    )?)
}
