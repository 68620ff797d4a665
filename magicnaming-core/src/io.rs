//! `.safetensors` files of names (with `std`): one f32 tensor `name` `[K, D]` plus
//! metadata (format, token count, dimension, source). Writes go to a temporary file that
//! is renamed into place, so a failed save never leaves half a file.
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::string::{String, ToString};
use std::vec::Vec;

use burn::tensor::{Tensor, TensorData, backend::Backend};
use safetensors::{Dtype, SafeTensors};

use crate::{NameEmbedding, NameError, Result};

/// Name of the tensor that holds the token vectors.
pub const NAME_TENSOR: &str = "name";
/// Value of the `format` metadata entry.
pub const NAME_FORMAT: &str = "magicnaming-name";

fn bad(path: &Path, message: impl Into<String>) -> NameError {
    NameError::BadFile {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

impl<B: Backend> NameEmbedding<B> {
    /// Serialises the name to `.safetensors` bytes.
    pub fn to_safetensors_bytes(&self) -> Result<Vec<u8>> {
        let [k, d] = self.tokens().dims();
        let values: Vec<f32> = self.tokens().to_data().iter::<f32>().collect();
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        let view = safetensors::tensor::TensorView::new(Dtype::F32, std::vec![k, d], &bytes)
            .map_err(|e| NameError::InvalidConfig(e.to_string()))?;
        let metadata: HashMap<String, String> = [
            ("format", NAME_FORMAT.to_string()),
            ("tokens", k.to_string()),
            ("dim", d.to_string()),
            ("source", self.source().to_string()),
        ]
        .into_iter()
        .map(|(a, b)| (a.to_string(), b))
        .collect();
        safetensors::serialize([(NAME_TENSOR, view)], Some(metadata))
            .map_err(|e| NameError::InvalidConfig(e.to_string()))
    }

    /// Saves the name atomically (temporary file in the same folder, then rename).
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let bytes = self.to_safetensors_bytes()?;
        write_atomic(path, &bytes)
    }

    /// Parses a name from `.safetensors` bytes; `path` only names the source in errors.
    ///
    /// # Errors
    /// [`NameError::BadFile`] naming the tensor, dtype or shape at fault, or
    /// [`NameError::NonFinite`].
    pub fn from_safetensors_bytes(bytes: &[u8], path: &Path, device: &B::Device) -> Result<Self> {
        let st = SafeTensors::deserialize(bytes)
            .map_err(|e| bad(path, std::format!("not a safetensors file: {e}")))?;
        let view = st.tensor(NAME_TENSOR).map_err(|_| {
            let names: Vec<String> = st.names().into_iter().map(|n| n.to_string()).collect();
            bad(
                path,
                std::format!("no tensor `{NAME_TENSOR}` (found: {names:?})"),
            )
        })?;
        if view.dtype() != Dtype::F32 {
            return Err(bad(
                path,
                std::format!(
                    "tensor `{NAME_TENSOR}` has dtype {:?}; a name is stored as F32",
                    view.dtype()
                ),
            ));
        }
        let shape = view.shape().to_vec();
        if shape.len() != 2 {
            return Err(bad(
                path,
                std::format!("tensor `{NAME_TENSOR}` has shape {shape:?}; a name is [K, D]"),
            ));
        }
        let values: Vec<f32> = view
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        let tokens =
            Tensor::<B, 2>::from_data(TensorData::new(values, [shape[0], shape[1]]), device);
        let (_, meta) = SafeTensors::read_metadata(bytes)
            .map_err(|e| bad(path, std::format!("unreadable header: {e}")))?;
        let source = meta
            .metadata()
            .as_ref()
            .and_then(|m| m.get("source").cloned())
            .unwrap_or_else(|| path.display().to_string());
        NameEmbedding::new(tokens, source).map_err(|e| match e {
            NameError::NonFinite { .. } => NameError::NonFinite {
                what: std::format!("tensor `{NAME_TENSOR}` of {}", path.display()),
            },
            other => bad(path, other.to_string()),
        })
    }

    /// Loads a name saved by [`NameEmbedding::save`] (or any file with an F32 `name`
    /// tensor of rank 2).
    pub fn load(path: impl AsRef<Path>, device: &B::Device) -> Result<Self> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|source| NameError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_safetensors_bytes(&bytes, path, device)
    }
}

/// Writes `bytes` to `path` through a temporary sibling file and a rename, so readers
/// never see a partial file and a failure leaves nothing behind.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let io_err = |p: &Path, source| NameError::Io {
        path: p.to_path_buf(),
        source,
    };
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let file_name = path
        .file_name()
        .ok_or_else(|| bad(path, "output path has no file name"))?;
    let tmp = dir.join(std::format!(
        ".{}.tmp-{}",
        file_name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp).map_err(|e| io_err(&tmp, e))?;
        f.write_all(bytes).map_err(|e| io_err(&tmp, e))?;
        f.sync_all().map_err(|e| io_err(&tmp, e))?;
        std::fs::rename(&tmp, path).map_err(|e| io_err(path, e))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}
