//! A safetensors checkpoint on disk: one memory-mapped file or a sharded one read through
//! its `*.safetensors.index.json`, with each tensor's dtype, shape and place.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use safetensors::{Dtype, SafeTensors};

use crate::{ModelError, Result};

use super::convert::{StoredTensors, converted, element_width};

/// One tensor's place in a safetensors file (or in one shard of a sharded checkpoint).
#[derive(Debug, Clone)]
pub struct TensorEntry {
    /// Stored element type.
    pub dtype: Dtype,
    /// Shape.
    pub shape: Vec<usize>,
    shard: usize,
    start: usize,
    end: usize,
}

/// A memory-mapped safetensors checkpoint with its parsed header(s): one `.safetensors`
/// file, or a sharded one read through its `*.safetensors.index.json` (transformers' and
/// diffusers' `save_pretrained` shard at 10 GB / 5 GB: an fp32 SDXL UNet is two shards).
pub struct SafetensorsFile {
    path: PathBuf,
    shards: Vec<(PathBuf, Bytes)>,
    entries: BTreeMap<String, TensorEntry>,
    metadata: BTreeMap<String, String>,
}

impl std::fmt::Debug for SafetensorsFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "SafetensorsFile({}, {} tensors in {} file(s))",
            self.path.display(),
            self.entries.len(),
            self.shards.len()
        )
    }
}

/// The bytes of one safetensors file: memory-mapped, owned (converted from another
/// format) or built into the binary.
enum Bytes {
    Mapped(memmap2::Mmap),
    Owned(Vec<u8>),
    Static(&'static [u8]),
}

impl std::ops::Deref for Bytes {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            Self::Mapped(m) => m,
            Self::Owned(v) => v,
            Self::Static(s) => s,
        }
    }
}

/// Memory-maps one `.safetensors` file and reads its header.
fn map_file(path: &Path) -> Result<(Bytes, Header)> {
    let file = std::fs::File::open(path)
        .map_err(|e| ModelError::open(path, "a safetensors weights file", e))?;
    // SAFETY: the file is opened read-only; like every mmap-based loader (candle,
    // safetensors' own), we rely on it not being truncated while mapped.
    let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| ModelError::io(path, e))?;
    let entries = read_entries(path, &map)?;
    Ok((Bytes::Mapped(map), entries))
}

/// A safetensors header: the tensor entries and the `__metadata__` strings.
type Header = (Vec<(String, TensorEntry)>, BTreeMap<String, String>);

/// The tensor entries and metadata of a safetensors file's header.
fn read_entries(path: &Path, bytes: &[u8]) -> Result<Header> {
    let (header_len, meta) = SafeTensors::read_metadata(bytes)
        .map_err(|e| ModelError::weights(path, format!("not a valid safetensors file: {e}")))?;
    let base = 8 + header_len;
    let entries = meta
        .tensors()
        .into_iter()
        .map(|(name, info)| {
            let entry = TensorEntry {
                dtype: info.dtype,
                shape: info.shape.clone(),
                shard: 0,
                start: base + info.data_offsets.0,
                end: base + info.data_offsets.1,
            };
            (name, entry)
        })
        .collect();
    let metadata = meta
        .metadata()
        .as_ref()
        .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        .unwrap_or_default();
    Ok((entries, metadata))
}

impl SafetensorsFile {
    /// Opens and validates a `.safetensors` file, or the shards a
    /// `*.safetensors.index.json` names (then every tensor of every shard is in the
    /// checkpoint; a shard that is missing, a tensor the index puts in a shard that lacks
    /// it, or a tensor stored twice is an error).
    pub fn open(path: impl AsRef<Path>) -> Result<Rc<Self>> {
        let path = path.as_ref().to_path_buf();
        if path.to_string_lossy().ends_with(".index.json") {
            return Self::open_sharded(path);
        }
        let (map, (entries, metadata)) = map_file(&path)?;
        Ok(Rc::new(Self {
            shards: vec![(path.clone(), map)],
            path,
            entries: entries.into_iter().collect(),
            metadata,
        }))
    }

    /// A safetensors file held in memory (converted from another format, or built into
    /// the binary with `include_bytes!`); `path` names it in messages.
    ///
    /// # Errors
    /// [`ModelError::Weights`] when the bytes are not a valid safetensors file.
    pub fn from_bytes(path: impl Into<PathBuf>, bytes: Vec<u8>) -> Result<Rc<Self>> {
        Self::from_storage(path.into(), Bytes::Owned(bytes))
    }

    /// [`SafetensorsFile::from_bytes`] for bytes that live as long as the program.
    ///
    /// # Errors
    /// [`ModelError::Weights`] when the bytes are not a valid safetensors file.
    pub fn from_static(path: impl Into<PathBuf>, bytes: &'static [u8]) -> Result<Rc<Self>> {
        Self::from_storage(path.into(), Bytes::Static(bytes))
    }

    fn from_storage(path: PathBuf, bytes: Bytes) -> Result<Rc<Self>> {
        let (entries, metadata) = read_entries(&path, &bytes)?;
        Ok(Rc::new(Self {
            shards: vec![(path.clone(), bytes)],
            path,
            entries: entries.into_iter().collect(),
            metadata,
        }))
    }

    fn open_sharded(index: PathBuf) -> Result<Rc<Self>> {
        let text = std::fs::read_to_string(&index)
            .map_err(|e| ModelError::open(&index, "a sharded checkpoint's index", e))?;
        let json: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| ModelError::weights(&index, format!("not valid JSON: {e}")))?;
        let map = json
            .get("weight_map")
            .and_then(serde_json::Value::as_object)
            .ok_or_else(|| ModelError::weights(&index, "no `weight_map` object"))?;
        let dir = index.parent().unwrap_or(Path::new("."));
        let mut shard_names: Vec<&str> = Vec::new();
        let mut wanted: Vec<(&str, &str)> = Vec::with_capacity(map.len());
        for (key, file) in map {
            // Shards sit beside the index: a bare file name, as save_pretrained writes.
            let file = file
                .as_str()
                .filter(|f| !f.is_empty() && !f.contains(['/', '\\']) && *f != "..")
                .ok_or_else(|| {
                    ModelError::weights(
                        &index,
                        format!("`weight_map.{key}` is not a file name beside the index: {file}"),
                    )
                })?;
            if !shard_names.contains(&file) {
                shard_names.push(file);
            }
            wanted.push((key, file));
        }
        if shard_names.is_empty() {
            return Err(ModelError::weights(&index, "`weight_map` is empty"));
        }
        let mut shards = Vec::with_capacity(shard_names.len());
        let mut entries: BTreeMap<String, TensorEntry> = BTreeMap::new();
        for (i, name) in shard_names.iter().enumerate() {
            let shard_path = dir.join(name);
            let (mmap, (shard_entries, _)) = map_file(&shard_path)?;
            for (key, mut entry) in shard_entries {
                entry.shard = i;
                if entries.contains_key(&key) {
                    return Err(ModelError::weights(
                        &shard_path,
                        format!("tensor `{key}` is stored in more than one shard"),
                    ));
                }
                entries.insert(key, entry);
            }
            shards.push((shard_path, mmap));
        }
        for (key, file) in wanted {
            let at = shard_names.iter().position(|n| *n == file).expect("listed");
            if entries.get(key).map(|e| e.shard) != Some(at) {
                return Err(ModelError::weights(
                    &shards[at].0,
                    format!("the index puts tensor `{key}` in this shard, which lacks it"),
                ));
            }
        }
        log::debug!(
            "{}: {} tensors in {} shards",
            index.display(),
            entries.len(),
            shards.len()
        );
        Ok(Rc::new(Self {
            path: index,
            shards,
            entries,
            metadata: BTreeMap::new(),
        }))
    }

    /// The file's path (the index of a sharded checkpoint).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// All tensor names, sorted.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(String::as_str)
    }

    /// The header's `__metadata__` strings (empty for a sharded checkpoint).
    pub fn metadata(&self) -> &BTreeMap<String, String> {
        &self.metadata
    }

    /// Header entry of one tensor.
    pub fn entry(&self, key: &str) -> Option<&TensorEntry> {
        self.entries.get(key)
    }

    /// Reads a floating-point tensor, converted to f32.
    ///
    /// # Errors
    /// Unknown key, or an integer/bool dtype.
    pub fn read_f32(&self, key: &str) -> Result<(Vec<f32>, Vec<usize>)> {
        let entry = self.entries.get(key).ok_or_else(|| {
            ModelError::weights(&self.path, format!("no tensor `{key}` in the file"))
        })?;
        let width = element_width(entry.dtype).map_err(|e| {
            ModelError::weights(&self.shards[entry.shard].0, format!("tensor `{key}` {e}"))
        })?;
        let bytes = &self.shards[entry.shard].1[entry.start..entry.end];
        Ok((
            converted(entry.dtype, bytes, bytes.len() / width, Vec::new()),
            entry.shape.clone(),
        ))
    }
}

impl StoredTensors for SafetensorsFile {
    fn raw(&self, key: &str) -> Option<(&[u8], Dtype, &[usize])> {
        let entry = self.entries.get(key)?;
        let bytes = &self.shards[entry.shard].1[entry.start..entry.end];
        Some((bytes, entry.dtype, &entry.shape))
    }
}

/// `(key, shape)` of every tensor of a file.
pub fn file_entries(file: &SafetensorsFile) -> Vec<(String, Vec<usize>)> {
    file.keys()
        .map(|k| {
            (
                k.to_string(),
                file.entry(k).map(|e| e.shape.clone()).unwrap_or_default(),
            )
        })
        .collect()
}
