//! The trained encoder folder, in the format `NameEncoder::load` reads
//! (`config.json` + `head.safetensors`, see [`crate::name_encoder`]), with the towers
//! the dataset was embedded with and the crop of each photo they saw.
use std::path::{Path, PathBuf};

use burn::tensor::backend::Backend;
use magicnaming_core::NameHead;

use super::config::{TrainConfig, head_config};
use super::dataset::Dataset;
use crate::name_encoder::{NameEncoderConfig, TowerRef, save_head};
use crate::{ModelError, Result};

/// Tower path written when a dataset records none (synthetic data): loading such an
/// encoder for images fails on this path, by name.
pub const NO_TOWER: &str = "(no tower: the dataset was not embedded from images)";

fn tower(dataset: &Dataset, key: &str) -> TowerRef {
    let path = dataset
        .index
        .source
        .get(key)
        .and_then(|v| v.as_str())
        .unwrap_or(NO_TOWER);
    TowerRef::path(PathBuf::from(path))
}

/// Writes the encoder folder `out` (config.json + head.safetensors) for a head trained
/// on `dataset`.
pub fn write_encoder<B: Backend>(
    out: &Path,
    head: &NameHead<B>,
    dataset: &Dataset,
    train: &TrainConfig,
) -> Result<()> {
    let dims: [usize; 2] = dataset
        .index
        .embed_dims
        .as_slice()
        .try_into()
        .map_err(|_| {
            ModelError::InvalidInput(format!(
                "an encoder has two towers; the dataset has embed_dims {:?}",
                dataset.index.embed_dims
            ))
        })?;
    save_head(head, &out.join("head.safetensors"))?;
    let config = NameEncoderConfig {
        tower_l: tower(dataset, "tower_l"),
        tower_g: tower(dataset, "tower_g"),
        head: head_config(train, dataset),
        image_embed_dims: dims,
        input_crop: dataset.index.input_crop,
    };
    let mut json = config.to_json();
    json["trained_on"] = dataset.dir.display().to_string().into();
    let bytes = serde_json::to_vec_pretty(&json).expect("serialises");
    Ok(magicnaming_core::write_atomic(
        &out.join("config.json"),
        &bytes,
    )?)
}
