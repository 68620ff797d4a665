//! `head.safetensors`: the name head's weights in PyTorch layout.
use std::path::Path;

use burn::tensor::backend::Backend;
use magicnaming_core::{NameHead, NameHeadConfig};

use crate::weights::write::f32_safetensors;
use crate::weights::{Mapped, SafetensorsFile, load_module};
use crate::{ModelError, Result};

/// Value of the `format` metadata of `head.safetensors`.
pub const HEAD_FORMAT: &str = "magicnaming-name-head";

/// Loads `head.safetensors` into a head built from `config`.
///
/// # Errors
/// A missing file; missing, unused or misshaped tensors (named).
pub fn load_head<B: Backend>(
    path: &Path,
    config: &NameHeadConfig,
    device: &B::Device,
) -> Result<NameHead<B>> {
    let file = SafetensorsFile::open(path)?;
    let mut head = config.init::<B>(device)?;
    let mapped = file.keys().map(|k| Mapped::new(k, k)).collect();
    load_module(&mut head, &file, mapped, "name head")?;
    Ok(head)
}

/// Serialises a head's weights as `head.safetensors` bytes (PyTorch layout, f32).
pub fn head_to_safetensors_bytes<B: Backend>(head: &NameHead<B>) -> Result<Vec<u8>> {
    let mut tensors = Vec::new();
    let names: Vec<(String, String)> = (0..head.layers.len())
        .map(|i| (format!("layers.{i}.weight"), format!("layers.{i}.bias")))
        .collect();
    for (layer, (w_name, b_name)) in head.layers.iter().zip(&names) {
        // burn keeps Linear weights as [in, out]; PyTorch as [out, in].
        let w = layer.weight.val().transpose();
        let dims = w.dims().to_vec();
        tensors.push((w_name.as_str(), w.into_data().iter::<f32>().collect(), dims));
        if let Some(b) = &layer.bias {
            let b = b.val();
            let dims = b.dims().to_vec();
            tensors.push((b_name.as_str(), b.into_data().iter::<f32>().collect(), dims));
        }
    }
    f32_safetensors(&tensors, &[("format", HEAD_FORMAT)]).map_err(ModelError::InvalidInput)
}

/// Writes a head's weights to `path` (normally `<encoder>/head.safetensors`), atomically
/// (temporary file, then rename): the one writer of `head.safetensors`.
///
/// # Errors
/// A head without f32 parameters; a file that cannot be written.
pub fn save_head<B: Backend>(head: &NameHead<B>, path: &Path) -> Result<()> {
    Ok(magicnaming_core::write_atomic(
        path,
        &head_to_safetensors_bytes(head)?,
    )?)
}
