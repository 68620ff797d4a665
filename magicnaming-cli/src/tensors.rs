//! Writing named f32 tensors to `.safetensors` (atomically) and reading them back.
use std::collections::HashMap;
use std::path::Path;

use anyhow::{Context, Result};

/// Writes raw f32 little-endian buffers with their shapes.
pub fn save_raw(
    path: &Path,
    tensors: Vec<(String, Vec<usize>, Vec<u8>)>,
    metadata: &[(&str, String)],
) -> Result<()> {
    let views = tensors
        .iter()
        .map(|(n, s, b)| {
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b)
                .map(|v| (n.clone(), v))
        })
        .collect::<std::result::Result<Vec<_>, _>>()?;
    let meta: HashMap<String, String> = metadata
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    let bytes = safetensors::serialize(views, Some(meta))?;
    magicnaming_core::write_atomic(path, &bytes)
        .with_context(|| format!("writing {}", path.display()))
}

/// Reads one F32 tensor `name` of `path`, checking its rank.
pub fn load_f32(path: &Path, name: &str, rank: usize) -> Result<(Vec<f32>, Vec<usize>)> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let st = safetensors::SafeTensors::deserialize(&bytes)
        .with_context(|| format!("{}: not a safetensors file", path.display()))?;
    let view = st
        .tensor(name)
        .with_context(|| format!("{}: no tensor `{name}`", path.display()))?;
    anyhow::ensure!(
        view.dtype() == safetensors::Dtype::F32,
        "{}: tensor `{name}` is {:?}, expected F32",
        path.display(),
        view.dtype()
    );
    anyhow::ensure!(
        view.shape().len() == rank,
        "{}: tensor `{name}` has shape {:?}, expected rank {rank}",
        path.display(),
        view.shape()
    );
    let values = view
        .data()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    Ok((values, view.shape().to_vec()))
}
