//! Remap tables and loading: a format's table maps stored keys (plus a transform) to burn
//! module paths, and [`load_module_as`] applies them through burn-store's
//! [`PyTorchToBurnAdapter`], reporting missing keys, unused keys and shape mismatches.
use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::rc::Rc;
use std::sync::Arc;

use burn::module::{Module, ModuleVisitor, Param, ParamId};
use burn::tensor::backend::Backend;
use burn::tensor::{DType, FloatDType, Tensor, TensorData};
use burn_store::{
    ModuleAdapter, ModuleSnapshot, PyTorchToBurnAdapter, TensorSnapshot, TensorSnapshotError,
};
use safetensors::Dtype;

use crate::{ModelError, Result};

pub use super::convert::Transform;
use super::convert::{Job, convert_all};
use super::dtype::{Precision, stored_dtype};
use super::file::SafetensorsFile;

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
    for m in &mapped {
        if file.entry(&m.source).is_none() {
            return Err(ModelError::weights(
                file.path(),
                format!("{what}: no tensor `{}`", m.source),
            ));
        }
    }
    // Every tensor is converted (and Linear weights transposed) before burn-store applies
    // them, several at a time over the cores; each buffer then moves into its parameter.
    let linear_paths = linear_weight_paths(module);
    let jobs: Vec<Job<'_>> = mapped
        .iter()
        .map(|m| Job {
            source: &m.source,
            transform: &m.transform,
            linear: linear_paths.contains(&m.target),
        })
        .collect();
    let converted = convert_all(&**file, &jobs, dtype);
    let linear: Vec<bool> = jobs.iter().map(|j| j.linear).collect();
    let mut snapshots = Vec::with_capacity(mapped.len());
    let mut source_of: BTreeMap<String, String> = BTreeMap::new();
    let mut transposed = HashSet::new();
    for ((m, data), job_linear) in mapped.into_iter().zip(converted).zip(linear) {
        let data = data
            .map_err(|e| ModelError::weights(file.path(), format!("{what}: `{}` {e}", m.source)))?;
        let shape = data.shape.clone();
        if job_linear && shape.len() == 2 {
            transposed.insert(m.target.clone());
        }
        let slot = Cell::new(Some(data));
        let data_fn = Rc::new(
            move || -> std::result::Result<TensorData, TensorSnapshotError> {
                slot.take().ok_or_else(|| {
                    TensorSnapshotError::DataError("tensor applied twice".to_string())
                })
            },
        );
        let path: Vec<String> = m.target.split('.').map(str::to_string).collect();
        snapshots.push(TensorSnapshot::from_closure(
            data_fn,
            dtype,
            shape,
            path,
            Vec::new(),
            ParamId::new(),
        ));
        source_of.insert(m.target, m.source);
    }
    let adapter = PyTorchLayout {
        transposed: Arc::new(transposed),
    };
    let result = module.apply(snapshots, None, Some(Box::new(adapter)), false);
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
/// `[out, in]` to burn's `[in, out]`, norm parameters renamed), except for the Linear
/// weights [`convert_all`] already transposed (`transposed`, by module path).
#[derive(Debug, Clone, Default)]
struct PyTorchLayout {
    transposed: Arc<HashSet<String>>,
}

impl ModuleAdapter for PyTorchLayout {
    fn adapt(&self, snapshot: &TensorSnapshot) -> TensorSnapshot {
        let (containers, path) = (
            snapshot.container_stack.as_deref().unwrap_or_default(),
            snapshot.path_stack.as_deref().unwrap_or_default(),
        );
        if is_linear_weight(containers, path, snapshot.shape.len())
            && self.transposed.contains(&path.join("."))
        {
            snapshot.clone()
        } else {
            PyTorchToBurnAdapter.adapt(snapshot)
        }
    }

    fn get_alternative_param_name(&self, param_name: &str, container_type: &str) -> Option<String> {
        PyTorchToBurnAdapter.get_alternative_param_name(param_name, container_type)
    }

    fn clone_box(&self) -> Box<dyn ModuleAdapter> {
        Box::new(self.clone())
    }
}

/// Whether a parameter is a Linear layer's 2-D weight: the innermost user-defined module
/// around it (burn-store's `module_type`) is a `Linear` and it is called `weight`.
fn is_linear_weight(containers: &[String], path: &[String], rank: usize) -> bool {
    rank == 2
        && path.last().is_some_and(|name| name == "weight")
        && containers
            .iter()
            .rev()
            .find(|c| c.starts_with("Struct:") || c.starts_with("Enum:"))
            .is_some_and(|c| c == "Struct:Linear")
}

/// The paths of `module`'s Linear weights (as burn-store's applier spells them), found
/// without materialising any parameter.
fn linear_weight_paths<B: Backend, M: Module<B>>(module: &M) -> HashSet<String> {
    struct Visitor {
        path: Vec<String>,
        containers: Vec<String>,
        found: HashSet<String>,
    }
    impl<B: Backend> ModuleVisitor<B> for Visitor {
        fn enter_module(&mut self, name: &str, container_type: &str) {
            self.path.push(name.to_string());
            self.containers.push(container_type.to_string());
        }
        fn exit_module(&mut self, _name: &str, _container_type: &str) {
            self.path.pop();
            self.containers.pop();
        }
        fn visit_float<const D: usize>(&mut self, _param: &Param<Tensor<B, D>>) {
            if is_linear_weight(&self.containers, &self.path, D) {
                self.found.insert(self.path.join("."));
            }
        }
    }
    let mut visitor = Visitor {
        path: Vec::new(),
        containers: Vec::new(),
        found: HashSet::new(),
    };
    module.visit(&mut visitor);
    visitor.found
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
