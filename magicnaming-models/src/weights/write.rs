//! Writing f32 tensors as `.safetensors` bytes (image embeddings, name-head weights).
use std::collections::HashMap;

use safetensors::Dtype;
use safetensors::tensor::TensorView;

/// One tensor to write: name, row-major values, shape.
pub type F32Tensor<'a> = (&'a str, Vec<f32>, Vec<usize>);

/// Serialises f32 tensors (little-endian) with string metadata.
///
/// # Errors
/// A shape whose element count differs from the values', or a duplicate name.
pub fn f32_safetensors(
    tensors: &[F32Tensor<'_>],
    metadata: &[(&str, &str)],
) -> Result<Vec<u8>, String> {
    let bytes: Vec<(String, Vec<u8>, Vec<usize>)> = tensors
        .iter()
        .map(|(name, values, shape)| {
            if shape.iter().product::<usize>() != values.len() {
                return Err(format!(
                    "tensor `{name}`: {} values for shape {shape:?}",
                    values.len()
                ));
            }
            Ok((
                name.to_string(),
                values.iter().flat_map(|v| v.to_le_bytes()).collect(),
                shape.clone(),
            ))
        })
        .collect::<Result<_, _>>()?;
    let views = bytes
        .iter()
        .map(|(name, data, shape)| {
            TensorView::new(Dtype::F32, shape.clone(), data)
                .map(|v| (name.clone(), v))
                .map_err(|e| format!("tensor `{name}`: {e}"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let meta: HashMap<String, String> = metadata
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    safetensors::serialize(views, Some(meta)).map_err(|e| e.to_string())
}
