//! PyTorch `torch.save` files of state dicts, read without Python and without running
//! anything (see [`super::pickle`] for the refused pickle features):
//!
//! - the ZIP format (torch >= 1.6, arcface_torch's `.pth`): `<name>/data.pkl` pickles the
//!   state dict, each storage is the stored (uncompressed) entry `<name>/data/<key>`;
//! - the legacy format (facenet-pytorch's `pnet.pt`, ...): five things in a row, the
//!   pickled magic number `0x1950a86a20f9469cfc6c`, the pickled protocol version 1001, the
//!   pickled sys info (little endian only), the pickled state dict, the pickled list of
//!   storage keys; then for each key in that order an `i64` element count and the raw
//!   little-endian elements.
//!
//! Every tensor honours its storage offset, shape and strides (facenet-pytorch's linear
//! weights are stored column-major), every storage's declared element count must match the
//! bytes present, and no tensor larger than the file is allocated.
use std::collections::BTreeMap;
use std::path::Path;
use std::rc::Rc;

use super::file::SafetensorsFile;
use super::pickle::{StorageRef, TensorRef, TorchDtype, Value, read_pickle};
use crate::{ModelError, Result};

/// The legacy format's magic number.
const LEGACY_MAGIC: i128 = 0x1950a86a20f9469cfc6c;
/// The legacy format's protocol version.
const LEGACY_PROTOCOL: i128 = 1001;

/// One tensor of a state dict, contiguous (row-major), little-endian.
#[derive(Debug, Clone, PartialEq)]
pub struct TorchTensor {
    /// Element type.
    pub dtype: TorchDtype,
    /// Shape.
    pub shape: Vec<usize>,
    /// `shape.product() * dtype.size()` bytes.
    pub data: Vec<u8>,
}

/// Reads the state dict of a `torch.save` file (ZIP or legacy format), in the file's
/// key order.
///
/// # Errors
/// [`ModelError::MissingFile`]/[`ModelError::Io`] when unreadable,
/// [`ModelError::Pickle`] for a refused or malformed pickle, [`ModelError::Weights`] for
/// a file that is not a state dict of tensors, a storage whose declared size disagrees
/// with the bytes in the file, or a view outside its storage.
pub fn read_torch_file(path: &Path) -> Result<Vec<(String, TorchTensor)>> {
    let bytes = std::fs::read(path).map_err(|e| ModelError::open(path, "a torch.save file", e))?;
    read_torch_bytes(&bytes, path)
}

/// [`read_torch_file`] on bytes in memory; `path` names them in errors.
///
/// # Errors
/// As [`read_torch_file`].
pub fn read_torch_bytes(bytes: &[u8], path: &Path) -> Result<Vec<(String, TorchTensor)>> {
    if bytes.starts_with(b"PK\x03\x04") {
        read_zip(bytes, path)
    } else if bytes.starts_with(&[0x80, 0x02]) {
        read_legacy(bytes, path)
    } else {
        Err(ModelError::weights(
            path,
            "not a torch.save file: neither a ZIP archive nor a legacy pickle (protocol 2)",
        ))
    }
}

/// Reads a `torch.save` state dict and holds it as an in-memory safetensors file (same
/// keys and dtypes), so the remap tables and load reports of [`super::load`] apply.
///
/// # Errors
/// As [`read_torch_file`].
pub fn torch_as_safetensors(path: &Path) -> Result<Rc<SafetensorsFile>> {
    let tensors = read_torch_file(path)?;
    SafetensorsFile::from_bytes(path, to_safetensors_bytes(&tensors, path)?)
}

/// Serialises tensors as a safetensors file.
///
/// # Errors
/// [`ModelError::Weights`] when serialisation fails.
pub fn to_safetensors_bytes(tensors: &[(String, TorchTensor)], path: &Path) -> Result<Vec<u8>> {
    let views = tensors
        .iter()
        .map(|(k, t)| {
            safetensors::tensor::TensorView::new(t.dtype.safetensors(), t.shape.clone(), &t.data)
                .map(|v| (k.clone(), v))
        })
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| ModelError::weights(path, format!("cannot convert to safetensors: {e}")))?;
    safetensors::tensor::serialize(views, None)
        .map_err(|e| ModelError::weights(path, format!("cannot convert to safetensors: {e}")))
}

/// The `(key, tensor)` pairs of an unpickled state dict.
fn state_dict(value: Value, path: &Path) -> Result<Vec<(String, Rc<TensorRef>)>> {
    let Value::Dict(items) = value else {
        return Err(ModelError::weights(
            path,
            "the pickled object is not a state dict (a dict of tensors)",
        ));
    };
    let items = items.borrow();
    items
        .iter()
        .map(|(k, v)| match (k.as_str(), v) {
            (Some(k), Value::Tensor(t)) => Ok((k.to_string(), Rc::clone(t))),
            (Some(k), _) => Err(ModelError::weights(
                path,
                format!("state dict entry `{k}` is not a tensor"),
            )),
            _ => Err(ModelError::weights(path, "state dict key is not a string")),
        })
        .collect()
}

/// Copies the view `t` out of its storage's bytes (`storage.numel` elements).
fn gather(
    t: &TensorRef,
    storage: &[u8],
    file_len: usize,
    path: &Path,
    key: &str,
) -> Result<TorchTensor> {
    let es = t.storage.dtype.size();
    let bad = |m: String| ModelError::weights(path, format!("tensor `{key}`: {m}"));
    let numel = t
        .size
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| bad(format!("shape {:?} overflows", t.size)))?;
    let out_len = numel
        .checked_mul(es)
        .filter(|&n| n <= file_len)
        .ok_or_else(|| {
            bad(format!(
                "shape {:?} is larger than the whole file ({file_len} bytes)",
                t.size
            ))
        })?;
    let mut data = Vec::with_capacity(out_len);
    if numel > 0 {
        let last = t
            .size
            .iter()
            .zip(&t.stride)
            .try_fold(t.offset, |a, (&d, &s)| {
                (d - 1).checked_mul(s).and_then(|x| a.checked_add(x))
            });
        if last.is_none_or(|l| l >= t.storage.numel) {
            return Err(bad(format!(
                "offset {} shape {:?} stride {:?} reaches outside its storage `{}` of {} elements",
                t.offset, t.size, t.stride, t.storage.key, t.storage.numel
            )));
        }
        let mut index = vec![0usize; t.size.len()];
        for _ in 0..numel {
            let at: usize = t.offset
                + index
                    .iter()
                    .zip(&t.stride)
                    .map(|(i, s)| i * s)
                    .sum::<usize>();
            data.extend_from_slice(&storage[at * es..(at + 1) * es]);
            for d in (0..index.len()).rev() {
                index[d] += 1;
                if index[d] < t.size[d] {
                    break;
                }
                index[d] = 0;
            }
        }
    }
    Ok(TorchTensor {
        dtype: t.storage.dtype,
        shape: t.size.clone(),
        data,
    })
}

/// The storages the tensors use, one per key (a key used with two types is an error).
fn storages(
    tensors: &[(String, Rc<TensorRef>)],
    path: &Path,
) -> Result<BTreeMap<String, Rc<StorageRef>>> {
    let mut out: BTreeMap<String, Rc<StorageRef>> = BTreeMap::new();
    for (k, t) in tensors {
        let s = &t.storage;
        if let Some(prev) = out.get(&s.key) {
            if prev.dtype != s.dtype || prev.numel != s.numel {
                return Err(ModelError::weights(
                    path,
                    format!(
                        "tensor `{k}`: storage `{}` is declared twice with different types or sizes",
                        s.key
                    ),
                ));
            }
        } else {
            out.insert(s.key.clone(), Rc::clone(s));
        }
    }
    Ok(out)
}

fn read_legacy(bytes: &[u8], path: &Path) -> Result<Vec<(String, TorchTensor)>> {
    let mut pos = 0;
    let magic = read_pickle(bytes, &mut pos, path)?;
    if magic.as_int() != Some(LEGACY_MAGIC) {
        return Err(ModelError::weights(
            path,
            "not a legacy torch.save file: wrong magic number",
        ));
    }
    let protocol = read_pickle(bytes, &mut pos, path)?;
    if protocol.as_int() != Some(LEGACY_PROTOCOL) {
        return Err(ModelError::weights(
            path,
            format!("legacy torch.save protocol {protocol:?} is not supported (1001 expected)"),
        ));
    }
    if let Value::Dict(info) = read_pickle(bytes, &mut pos, path)? {
        let little = info
            .borrow()
            .iter()
            .find(|(k, _)| k.as_str() == Some("little_endian"))
            .map(|(_, v)| v.as_int() == Some(1));
        if little == Some(false) {
            return Err(ModelError::weights(
                path,
                "big-endian torch.save files are not supported",
            ));
        }
    }
    let tensors = state_dict(read_pickle(bytes, &mut pos, path)?, path)?;
    let Value::List(keys) = read_pickle(bytes, &mut pos, path)? else {
        return Err(ModelError::weights(
            path,
            "the legacy storage key list is missing",
        ));
    };
    let declared = storages(&tensors, path)?;
    let mut data: BTreeMap<String, &[u8]> = BTreeMap::new();
    for key in keys.borrow().iter() {
        let key = key
            .as_str()
            .ok_or_else(|| ModelError::weights(path, "a legacy storage key is not a string"))?;
        let s = declared.get(key).ok_or_else(|| {
            ModelError::weights(
                path,
                format!("storage `{key}` is listed but no tensor uses it"),
            )
        })?;
        let header = bytes.get(pos..pos + 8).ok_or_else(|| {
            ModelError::weights(
                path,
                format!("storage `{key}`: the file ends before its size"),
            )
        })?;
        let count = i64::from_le_bytes(header.try_into().expect("8 bytes"));
        pos += 8;
        if usize::try_from(count).ok() != Some(s.numel) {
            return Err(ModelError::weights(
                path,
                format!(
                    "storage `{key}`: the pickle declares {} elements, the data section {count}",
                    s.numel
                ),
            ));
        }
        let len = s
            .numel
            .checked_mul(s.dtype.size())
            .filter(|&n| n <= bytes.len() - pos);
        let len = len.ok_or_else(|| {
            ModelError::weights(
                path,
                format!(
                    "storage `{key}`: {} elements of {} bytes declared but only {} bytes remain in the file",
                    s.numel,
                    s.dtype.size(),
                    bytes.len() - pos
                ),
            )
        })?;
        data.insert(key.to_string(), &bytes[pos..pos + len]);
        pos += len;
    }
    if pos != bytes.len() {
        return Err(ModelError::weights(
            path,
            format!("{} bytes after the last storage", bytes.len() - pos),
        ));
    }
    tensors
        .iter()
        .map(|(k, t)| {
            let storage = data.get(&t.storage.key).ok_or_else(|| {
                ModelError::weights(
                    path,
                    format!(
                        "tensor `{k}`: storage `{}` is not in the file",
                        t.storage.key
                    ),
                )
            })?;
            Ok((k.clone(), gather(t, storage, bytes.len(), path, k)?))
        })
        .collect()
}

fn read_zip(bytes: &[u8], path: &Path) -> Result<Vec<(String, TorchTensor)>> {
    use std::io::Read;
    let zerr =
        |e: zip::result::ZipError| ModelError::weights(path, format!("bad ZIP archive: {e}"));
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(bytes)).map_err(zerr)?;
    let pkl = archive
        .file_names()
        .find(|n| n.ends_with("/data.pkl") && n.matches('/').count() == 1)
        .map(str::to_string)
        .ok_or_else(|| {
            ModelError::weights(
                path,
                "ZIP archive without `<name>/data.pkl`: not a torch.save file",
            )
        })?;
    let prefix = pkl.trim_end_matches("data.pkl").to_string();
    let mut read_entry = |name: &str, expected: Option<usize>| -> Result<Vec<u8>> {
        let mut entry = archive.by_name(name).map_err(zerr)?;
        if entry.compression() != zip::CompressionMethod::Stored {
            return Err(ModelError::weights(
                path,
                format!("`{name}` is compressed; torch.save stores entries uncompressed"),
            ));
        }
        let size = usize::try_from(entry.size()).unwrap_or(usize::MAX);
        if let Some(expected) = expected
            && size != expected
        {
            return Err(ModelError::weights(
                path,
                format!("`{name}` holds {size} bytes but the pickle declares {expected}"),
            ));
        }
        if size > bytes.len() {
            return Err(ModelError::weights(
                path,
                format!("`{name}` declares {size} bytes, more than the file"),
            ));
        }
        let mut out = Vec::with_capacity(size);
        entry
            .read_to_end(&mut out)
            .map_err(|e| ModelError::weights(path, format!("`{name}`: {e}")))?;
        Ok(out)
    };
    let pickle = read_entry(&pkl, None)?;
    let mut pos = 0;
    let tensors = state_dict(read_pickle(&pickle, &mut pos, path)?, path)?;
    let mut data: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    for (key, s) in storages(&tensors, path)? {
        if key.contains(['/', '\\']) || key == ".." {
            return Err(ModelError::weights(
                path,
                format!("storage key `{key}` is not a file name"),
            ));
        }
        let expected = s.numel.saturating_mul(s.dtype.size());
        let raw = read_entry(&format!("{prefix}data/{key}"), Some(expected))?;
        data.insert(key, raw);
    }
    tensors
        .iter()
        .map(|(k, t)| {
            Ok((
                k.clone(),
                gather(t, &data[&t.storage.key], bytes.len(), path, k)?,
            ))
        })
        .collect()
}
