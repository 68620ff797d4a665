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
