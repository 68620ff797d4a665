//! Weight loading for every supported format.
//!
//! A checkpoint is read as safetensors (memory-mapped; F32, F16, BF16 and F64 tensors),
//! each format's remap table (one module per format) turns its keys into the burn module
//! paths, which follow transformers'/diffusers' names, and the tensors are applied through
//! burn-store's [`PyTorchToBurnAdapter`] (Linear transposition, norm `gamma`/`beta`).
//! After loading, missing keys, unused keys and shape mismatches are errors that name
//! the keys.
pub mod clip_text;
pub mod clip_vision;
pub mod clip_vision_arch;
pub mod unet;
pub mod vae;
pub mod write;

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use burn::module::ParamId;
use burn::tensor::backend::Backend;
use burn::tensor::{DType, FloatDType, TensorData};
use burn_store::{ModuleSnapshot, PyTorchToBurnAdapter, TensorSnapshot, TensorSnapshotError};
use safetensors::{Dtype, SafeTensors};

use crate::{ModelError, Result};

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
    shards: Vec<(PathBuf, memmap2::Mmap)>,
    entries: BTreeMap<String, TensorEntry>,
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

/// Memory-maps one `.safetensors` file and reads its header.
fn map_file(path: &Path) -> Result<(memmap2::Mmap, Vec<(String, TensorEntry)>)> {
    let file = std::fs::File::open(path)
        .map_err(|e| ModelError::open(path, "a safetensors weights file", e))?;
    // SAFETY: the file is opened read-only; like every mmap-based loader (candle,
    // safetensors' own), we rely on it not being truncated while mapped.
    let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| ModelError::io(path, e))?;
    let (header_len, meta) = SafeTensors::read_metadata(&map)
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
    Ok((map, entries))
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
        let (map, entries) = map_file(&path)?;
        Ok(Rc::new(Self {
            shards: vec![(path.clone(), map)],
            path,
            entries: entries.into_iter().collect(),
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
            let (mmap, shard_entries) = map_file(&shard_path)?;
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
        let bytes = &self.shards[entry.shard].1[entry.start..entry.end];
        let values: Vec<f32> = match entry.dtype {
            Dtype::F32 => bytes
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            Dtype::F16 => bytes
                .chunks_exact(2)
                .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            Dtype::BF16 => bytes
                .chunks_exact(2)
                .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            Dtype::F64 => bytes
                .chunks_exact(8)
                .map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")) as f32)
                .collect(),
            other => {
                return Err(ModelError::weights(
                    &self.shards[entry.shard].0,
                    format!("tensor `{key}` has dtype {other:?}; a float tensor was expected"),
                ))
            }
        };
        Ok((values, entry.shape.clone()))
    }
}

/// How a stored tensor becomes the tensor a module parameter expects (in PyTorch layout;
/// Linear transposition and norm renaming are left to [`PyTorchToBurnAdapter`]).
#[derive(Debug, Clone, PartialEq)]
pub enum Transform {
    /// As stored.
    Identity,
    /// Chunk `index` of `count` equal chunks along dim 0 (open_clip's fused `in_proj`).
    Chunk {
        /// Which chunk.
        index: usize,
        /// How many chunks.
        count: usize,
    },
    /// A 2-D transpose (open_clip stores `text_projection` as `[hidden, proj]`).
    Transpose,
    /// Reshape to this shape (1x1 convolutions stored where Linear weights are expected).
    Reshape(Vec<usize>),
}

/// One entry of a remap table: module path <- stored key (+ transform).
#[derive(Debug, Clone)]
pub struct Mapped {
    /// Path in the burn module (`encoder.layers.0.self_attn.q_proj.weight`).
    pub target: String,
    /// Key in the file.
    pub source: String,
    /// Transformation applied to the stored tensor.
    pub transform: Transform,
}

impl Mapped {
    /// A tensor used as stored.
    pub fn new(target: impl Into<String>, source: impl Into<String>) -> Self {
        Self {
            target: target.into(),
            source: source.into(),
            transform: Transform::Identity,
        }
    }

    /// A tensor that needs `transform`.
    pub fn with(
        target: impl Into<String>,
        source: impl Into<String>,
        transform: Transform,
    ) -> Self {
        Self {
            target: target.into(),
            source: source.into(),
            transform,
        }
    }
}

fn apply_transform(
    values: Vec<f32>,
    shape: Vec<usize>,
    t: &Transform,
) -> std::result::Result<(Vec<f32>, Vec<usize>), String> {
    match t {
        Transform::Identity => Ok((values, shape)),
        Transform::Chunk { index, count } => {
            let rows = shape.first().copied().unwrap_or(0);
            if rows % count != 0 {
                return Err(format!(
                    "dim 0 of shape {shape:?} does not split into {count} chunks"
                ));
            }
            let per = rows / count;
            let inner: usize = shape[1..].iter().product();
            let start = index * per * inner;
            let mut s = shape.clone();
            s[0] = per;
            Ok((values[start..start + per * inner].to_vec(), s))
        }
        Transform::Transpose => {
            if shape.len() != 2 {
                return Err(format!("cannot transpose shape {shape:?}"));
            }
            let (r, c) = (shape[0], shape[1]);
            let mut out = vec![0f32; r * c];
            for i in 0..r {
                for j in 0..c {
                    out[j * r + i] = values[i * c + j];
                }
            }
            Ok((out, vec![c, r]))
        }
        Transform::Reshape(target) => {
            if target.iter().product::<usize>() != values.len() {
                return Err(format!("cannot reshape {shape:?} to {target:?}"));
            }
            Ok((values, target.clone()))
        }
    }
}

/// Loads `mapped` tensors of `file` into `module`, as f32 (see [`load_module_as`]).
pub fn load_module<B: Backend, M: ModuleSnapshot<B>>(
    module: &mut M,
    file: &Rc<SafetensorsFile>,
    mapped: Vec<Mapped>,
    what: &str,
) -> Result<()> {
    load_module_as(module, file, mapped, what, FloatDType::F32)
}

/// Loads `mapped` tensors of `file` into `module` in the float type `precision` picks
/// for them on `device` (see [`crate::precision::Precision::resolve`]).
pub fn load_module_auto<B: Backend, M: ModuleSnapshot<B>>(
    module: &mut M,
    file: &Rc<SafetensorsFile>,
    mapped: Vec<Mapped>,
    what: &str,
    precision: crate::precision::Precision,
    device: &B::Device,
) -> Result<()> {
    let dtype = precision.resolve::<B>(mapped_dtype(file, &mapped), device)?;
    log::debug!("{what}: weights in {dtype:?}");
    load_module_as(module, file, mapped, what, dtype)
}

/// The most common float type of the `mapped` tensors as stored in `file` (see
/// [`crate::precision::stored_dtype`]).
pub fn mapped_dtype(file: &SafetensorsFile, mapped: &[Mapped]) -> Dtype {
    crate::precision::stored_dtype(
        mapped
            .iter()
            .filter_map(|m| file.entry(&m.source).map(|e| &e.dtype)),
    )
}

/// Loads `mapped` tensors of `file` into `module`, every parameter in `dtype`. Stored
/// values are converted: f16 files load exactly in f16 or f32, f32/bf16 files loaded in
/// f16 are rounded (as `torch_dtype=torch.float16` does), and a tensor with values
/// beyond f16's range (65504) is then an error naming it rather than a tensor of inf.
///
/// `scope` lists every key of the file the module is responsible for: any of them that
/// no parameter used is an error, as is any module parameter left without a tensor and
/// any shape mismatch, all named in one message. `ignored` keys (buffers such as
/// `position_ids` or `logit_scale`) are allowed to stay unused.
pub fn load_module_as<B: Backend, M: ModuleSnapshot<B>>(
    module: &mut M,
    file: &Rc<SafetensorsFile>,
    mapped: Vec<Mapped>,
    what: &str,
    dtype: FloatDType,
) -> Result<()> {
    let dtype = DType::from(dtype);
    let mut snapshots = Vec::with_capacity(mapped.len());
    let mut source_of: BTreeMap<String, String> = BTreeMap::new();
    for m in mapped {
        let entry = file.entry(&m.source).ok_or_else(|| {
            ModelError::weights(file.path(), format!("{what}: no tensor `{}`", m.source))
        })?;
        let shape = entry.shape.clone();
        // The shape after the transform, computed without reading data.
        let shape_after = match &m.transform {
            Transform::Identity => shape.clone(),
            Transform::Chunk { count, .. } => {
                let mut s = shape.clone();
                if let Some(first) = s.first_mut() {
                    *first /= (*count).max(1);
                }
                s
            }
            Transform::Transpose => shape.iter().rev().copied().collect(),
            Transform::Reshape(t) => t.clone(),
        };
        let (f, source, transform) = (Rc::clone(file), m.source.clone(), m.transform.clone());
        let data_fn = Rc::new(
            move || -> std::result::Result<TensorData, TensorSnapshotError> {
                let (values, shape) = f
                    .read_f32(&source)
                    .map_err(|e| TensorSnapshotError::DataError(e.to_string()))?;
                let (values, shape) = apply_transform(values, shape, &transform)
                    .map_err(|e| TensorSnapshotError::DataError(format!("`{source}`: {e}")))?;
                if dtype == DType::F16 {
                    let max = values.iter().fold(0f32, |m, v| m.max(v.abs()));
                    if max > f32::from(half::f16::MAX) {
                        return Err(TensorSnapshotError::DataError(format!(
                            "`{source}` has values up to {max:e}, beyond f16's range: load it in f32 or bf16"
                        )));
                    }
                }
                let data = TensorData::new(values, shape);
                Ok(if dtype == DType::F32 {
                    data
                } else {
                    data.convert_dtype(dtype)
                })
            },
        );
        let path: Vec<String> = m.target.split('.').map(str::to_string).collect();
        snapshots.push(TensorSnapshot::from_closure(
            data_fn,
            dtype,
            shape_after.into(),
            path,
            Vec::new(),
            ParamId::new(),
        ));
        source_of.insert(m.target, m.source);
    }
    let result = module.apply(snapshots, None, Some(Box::new(PyTorchToBurnAdapter)), false);
    let applied: HashSet<&str> = result.applied.iter().map(String::as_str).collect();
    let used = |target: &str| {
        applied.contains(target)
            || [(".weight", ".gamma"), (".bias", ".beta")]
                .iter()
                .any(|(from, to)| {
                    target
                        .strip_suffix(from)
                        .is_some_and(|stem| applied.contains(format!("{stem}{to}").as_str()))
                })
    };
    let mut problems = Vec::new();
    for e in &result.errors {
        let msg = e.to_string();
        let named = source_of
            .iter()
            .find(|(t, _)| msg.contains(t.as_str()))
            .map(|(_, s)| format!(" (stored as `{s}`)"))
            .unwrap_or_default();
        problems.push(format!("{msg}{named}"));
    }
    let missing: BTreeSet<&str> = result
        .missing
        .iter()
        .map(|(p, _)| p.as_str())
        .filter(|p| {
            // A norm parameter is looked up under both names; count it once.
            !result.errors.iter().any(|e| e.to_string().contains(*p))
        })
        .collect();
    if !missing.is_empty() {
        problems.push(format!(
            "missing tensors for module parameters: {}",
            missing.iter().copied().collect::<Vec<_>>().join(", ")
        ));
    }
    let unused: Vec<String> = source_of
        .iter()
        .filter(|(t, _)| {
            !used(t)
                && !result
                    .errors
                    .iter()
                    .any(|e| e.to_string().contains(t.as_str()))
        })
        .map(|(t, s)| format!("`{s}` (as {t})"))
        .collect();
    if !unused.is_empty() {
        problems.push(format!("unused tensors: {}", unused.join(", ")));
    }
    if problems.is_empty() {
        log::debug!(
            "{what}: loaded {} tensors from {}",
            result.applied.len(),
            file.path().display()
        );
        Ok(())
    } else {
        Err(ModelError::weights(
            file.path(),
            format!("{what}: {}", problems.join("; ")),
        ))
    }
}

/// Keys of `file` under `prefix`, with the prefix stripped.
pub fn keys_under<'a>(
    file: &'a SafetensorsFile,
    prefix: &'a str,
) -> impl Iterator<Item = (&'a str, &'a str)> + 'a {
    file.keys()
        .filter_map(move |k| k.strip_prefix(prefix).map(|rest| (k, rest)))
}
