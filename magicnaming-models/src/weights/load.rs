//! Remap tables and loading: a format's table maps stored keys (plus a transform) to burn
//! module paths, and [`load_module_as`] applies them through burn-store's
//! [`PyTorchToBurnAdapter`], reporting missing keys, unused keys and shape mismatches.
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::rc::Rc;

use burn::module::ParamId;
use burn::tensor::backend::Backend;
use burn::tensor::{DType, FloatDType, TensorData};
use burn_store::{
    ModuleAdapter, ModuleSnapshot, PyTorchToBurnAdapter, TensorSnapshot, TensorSnapshotError,
};
use safetensors::Dtype;

use crate::{ModelError, Result};

use super::dtype::{Precision, stored_dtype};
use super::file::SafetensorsFile;

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
/// for them on `device` (see [`Precision::resolve`]).
pub fn load_module_auto<B: Backend, M: ModuleSnapshot<B>>(
    module: &mut M,
    file: &Rc<SafetensorsFile>,
    mapped: Vec<Mapped>,
    what: &str,
    precision: Precision,
    device: &B::Device,
) -> Result<()> {
    let dtype = precision.resolve::<B>(mapped_dtype(file, &mapped), device)?;
    log::debug!("{what}: weights in {dtype:?}");
    load_module_as(module, file, mapped, what, dtype)
}

/// The most common float type of the `mapped` tensors as stored in `file` (see
/// [`stored_dtype`]).
pub fn mapped_dtype(file: &SafetensorsFile, mapped: &[Mapped]) -> Dtype {
    stored_dtype(
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
    let result = module.apply(snapshots, None, Some(Box::new(PyTorchLayout)), false);
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

/// burn-store's [`PyTorchToBurnAdapter`] (Linear weights transposed from PyTorch's
/// `[out, in]` to burn's `[in, out]`, norm parameters renamed), with the transpose of f32
/// weights done in cache-sized tiles: burn-store's copies element by element, which took
/// most of an SDXL UNet's load time.
#[derive(Debug, Clone, Default)]
struct PyTorchLayout;

impl ModuleAdapter for PyTorchLayout {
    fn adapt(&self, snapshot: &TensorSnapshot) -> TensorSnapshot {
        let linear_weight = snapshot.module_type().as_deref() == Some("Struct:Linear")
            && snapshot
                .path_stack
                .as_ref()
                .and_then(|p| p.last())
                .is_some_and(|name| name == "weight")
            && snapshot.shape.len() == 2
            && snapshot.dtype == DType::F32;
        if !linear_weight {
            return PyTorchToBurnAdapter.adapt(snapshot);
        }
        let (rows, cols) = (snapshot.shape[0], snapshot.shape[1]);
        let data_fn = snapshot.clone_data_fn();
        let transposed = Rc::new(
            move || -> std::result::Result<TensorData, TensorSnapshotError> {
                let data = data_fn()?;
                let values = data
                    .as_slice::<f32>()
                    .map_err(|e| TensorSnapshotError::DataError(format!("{e:?}")))?;
                Ok(TensorData::new(
                    transpose_tiled(values, rows, cols),
                    [cols, rows],
                ))
            },
        );
        TensorSnapshot::from_closure(
            transposed,
            snapshot.dtype,
            vec![cols, rows].into(),
            snapshot.path_stack.clone().unwrap_or_default(),
            snapshot.container_stack.clone().unwrap_or_default(),
            snapshot.tensor_id.unwrap_or_default(),
        )
    }

    fn get_alternative_param_name(&self, param_name: &str, container_type: &str) -> Option<String> {
        PyTorchToBurnAdapter.get_alternative_param_name(param_name, container_type)
    }

    fn clone_box(&self) -> Box<dyn ModuleAdapter> {
        Box::new(self.clone())
    }
}

/// The `[cols, rows]` transpose of a row-major `[rows, cols]` matrix, in 32 x 32 tiles so
/// that reads and writes both stay within a few cache lines; large matrices are split by
/// output rows over the available cores.
fn transpose_tiled(values: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    const TILE: usize = 32;
    let mut out = vec![0f32; rows * cols];
    if rows == 0 || cols == 0 {
        return out;
    }
    // Output rows `j0..j0 + block.len() / rows` are input columns of the same numbers.
    let fill = |j0: usize, block: &mut [f32]| {
        let width = block.len() / rows;
        for i0 in (0..rows).step_by(TILE) {
            for i in i0..(i0 + TILE).min(rows) {
                let src = &values[i * cols + j0..i * cols + j0 + width];
                for (dj, &v) in src.iter().enumerate() {
                    block[dj * rows + i] = v;
                }
            }
        }
    };
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let per = cols.div_ceil(threads).next_multiple_of(TILE);
    if threads == 1 || rows * cols < 1 << 20 {
        for (b, block) in out.chunks_mut(TILE * rows).enumerate() {
            fill(b * TILE, block);
        }
        return out;
    }
    std::thread::scope(|scope| {
        for (p, part) in out.chunks_mut(per * rows).enumerate() {
            let fill = &fill;
            scope.spawn(move || {
                for (b, block) in part.chunks_mut(TILE * rows).enumerate() {
                    fill(p * per + b * TILE, block);
                }
            });
        }
    });
    out
}

/// Keys of `file` under `prefix`, with the prefix stripped.
pub fn keys_under<'a>(
    file: &'a SafetensorsFile,
    prefix: &'a str,
) -> impl Iterator<Item = (&'a str, &'a str)> + 'a {
    file.keys()
        .filter_map(move |k| k.strip_prefix(prefix).map(|rest| (k, rest)))
}

/// `target <- source`, reshaping a stored 1x1 convolution `[o, i, 1, 1]` (or a 1-D one
/// `[o, i, 1]`) to `[o, i]` when `target` is one of the Linear weights that diffusers'
/// other layouts keep as convolutions (`linear_suffixes`).
pub fn linear_or_conv(
    target: String,
    source: &str,
    shape: &[usize],
    linear_suffixes: &[&str],
) -> Mapped {
    let is_linear = linear_suffixes.iter().any(|s| target.ends_with(s));
    if is_linear && shape.len() > 2 && shape[2..].iter().all(|&d| d == 1) {
        Mapped::with(target, source, Transform::Reshape(shape[..2].to_vec()))
    } else {
        Mapped::new(target, source)
    }
}

#[cfg(test)]
mod tests {
    use super::transpose_tiled;

    #[test]
    fn tiled_transpose_is_a_transpose() {
        // Sizes around and across the tile edge.
        for (rows, cols) in [
            (1, 1),
            (3, 70),
            (64, 33),
            (65, 1),
            (1100, 1000),
            (1000, 1100),
        ] {
            let values: Vec<f32> = (0..rows * cols).map(|v| v as f32).collect();
            let t = transpose_tiled(&values, rows, cols);
            for i in 0..rows {
                for j in 0..cols {
                    assert_eq!(
                        t[j * rows + i],
                        values[i * cols + j],
                        "{rows}x{cols} at {i},{j}"
                    );
                }
            }
        }
    }
}
