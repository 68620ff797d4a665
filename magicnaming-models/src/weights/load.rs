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
    // At most this much converted data is held beside the model (see `load_in_batches`).
    const BATCH_BYTES: usize = 512 << 20;
    load_in_batches(module, file, mapped, what, DType::from(dtype), BATCH_BYTES)
}

/// [`load_module_as`] with the tensors some parameter takes converted and applied in
/// batches of about `batch_bytes` (as f32).
fn load_in_batches<B: Backend, M: ModuleSnapshot<B>>(
    module: &mut M,
    file: &Rc<SafetensorsFile>,
    mapped: Vec<Mapped>,
    what: &str,
    dtype: DType,
    batch_bytes: usize,
) -> Result<()> {
    for m in &mapped {
        if file.entry(&m.source).is_none() {
            return Err(ModelError::weights(
                file.path(),
                format!("{what}: no tensor `{}`", m.source),
            ));
        }
    }
    // The tensors some parameter takes go in batches of about `batch_bytes`: each batch
    // is converted several tensors at a time over the cores (element type, the table's
    // transform and Linear's transpose in one pass per tensor), then applied, so that at
    // most one batch is held beside the model (on a GPU the host copies are freed once
    // uploaded; on the CPU each buffer becomes its parameter).
    let params = module_params(module);
    let source_of: BTreeMap<String, String> = mapped
        .iter()
        .map(|m| (m.target.clone(), m.source.clone()))
        .collect();
    let wanted: Vec<&Mapped> = mapped
        .iter()
        .filter(|m| params.targets.contains(&m.target))
        .collect();
    let bytes = |m: &Mapped| {
        file.entry(&m.source)
            .map_or(0, |e| 4 * e.shape.iter().product::<usize>())
    };
    let mut batches: Vec<Vec<&Mapped>> = vec![Vec::new()];
    let mut held = 0;
    for m in wanted {
        if held > 0 && held + bytes(m) > batch_bytes {
            batches.push(Vec::new());
            held = 0;
        }
        held += bytes(m);
        batches.last_mut().expect("one batch at least").push(m);
    }
    let mut problems = Vec::new();
    let mut applied: HashSet<String> = HashSet::new();
    let mut errors: Vec<String> = Vec::new();
    let mut missing: Option<BTreeSet<String>> = None;
    for batch in batches {
        let jobs: Vec<Job<'_>> = batch
            .iter()
            .map(|m| Job {
                source: &m.source,
                transform: &m.transform,
                linear: params.linear.contains(&m.target),
            })
            .collect();
        let converted = convert_all(&**file, &jobs, dtype);
        let mut snapshots = Vec::with_capacity(batch.len());
        let mut transposed = HashSet::new();
        for ((m, job), data) in batch.iter().zip(&jobs).zip(converted) {
            let data = match data {
                Ok(data) => data,
                Err(e) => {
                    problems.push(format!("tensor `{}` {e}", m.source));
                    continue;
                }
            };
            let shape = data.shape.clone();
            if job.linear && shape.len() == 2 {
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
        }
        let adapter = PyTorchLayout {
            transposed: Arc::new(transposed),
        };
        let result = module.apply(snapshots, None, Some(Box::new(adapter)), false);
        errors.extend(result.errors.iter().map(|e| e.to_string()));
        applied.extend(result.applied);
        // A parameter is missing when no batch had it.
        let now: BTreeSet<String> = result.missing.into_iter().map(|(p, _)| p).collect();
        missing = Some(match missing {
            None => now,
            Some(before) => before.intersection(&now).cloned().collect(),
        });
    }
    let applied: HashSet<&str> = applied.iter().map(String::as_str).collect();
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
    for msg in &errors {
        let named = source_of
            .iter()
            .find(|(t, _)| msg.contains(t.as_str()))
            .map(|(_, s)| format!(" (stored as `{s}`)"))
            .unwrap_or_default();
        problems.push(format!("{msg}{named}"));
    }
    let missing: BTreeSet<String> = missing
        .unwrap_or_default()
        .into_iter()
        // A norm parameter is looked up under both names; count it once.
        .filter(|p| !errors.iter().any(|e| e.contains(p.as_str())))
        .collect();
    if !missing.is_empty() {
        problems.push(format!(
            "missing tensors for module parameters: {}",
            missing
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    let unused: Vec<String> = source_of
        .iter()
        .filter(|(t, _)| !used(t) && !errors.iter().any(|e| e.contains(t.as_str())))
        .map(|(t, s)| format!("`{s}` (as {t})"))
        .collect();
    if !unused.is_empty() {
        problems.push(format!("unused tensors: {}", unused.join(", ")));
    }
    if problems.is_empty() {
        log::debug!(
            "{what}: loaded {} tensors from {}",
            applied.len(),
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
        && module_type(containers).is_some_and(|c| c == "Struct:Linear")
}

/// The innermost user-defined module of a container stack (burn-store's `module_type`).
fn module_type(containers: &[String]) -> Option<&String> {
    containers
        .iter()
        .rev()
        .find(|c| c.starts_with("Struct:") || c.starts_with("Enum:"))
}

/// A module's float parameters as burn-store's applier spells their paths.
struct ModuleParams {
    /// Every parameter's path, plus the PyTorch name (`weight` / `bias`) of each norm
    /// layer's `gamma` / `beta`, under which tables list them.
    targets: HashSet<String>,
    /// The Linear weights among them.
    linear: HashSet<String>,
}

/// The float parameters of `module`, found without materialising any of them.
fn module_params<B: Backend, M: Module<B>>(module: &M) -> ModuleParams {
    struct Visitor {
        path: Vec<String>,
        containers: Vec<String>,
        found: ModuleParams,
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
            let path = self.path.join(".");
            if is_linear_weight(&self.containers, &self.path, D) {
                self.found.linear.insert(path.clone());
            }
            if let (Some(container), Some(name)) = (module_type(&self.containers), self.path.last())
            {
                let alias = PyTorchToBurnAdapter.get_alternative_param_name(name, container);
                if let (Some(alias), Some(stem)) = (alias, path.strip_suffix(name.as_str())) {
                    self.found.targets.insert(format!("{stem}{alias}"));
                }
            }
            self.found.targets.insert(path);
        }
    }
    let mut visitor = Visitor {
        path: Vec::new(),
        containers: Vec::new(),
        found: ModuleParams {
            targets: HashSet::new(),
            linear: HashSet::new(),
        },
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

#[cfg(test)]
mod tests {
    use burn::module::Module;
    use burn::nn::{LayerNorm, LayerNormConfig, Linear, LinearConfig};
    use burn::tensor::backend::Backend;
    use burn::tensor::{DType, TensorData};

    use super::{Mapped, load_in_batches};
    use crate::weights::SafetensorsFile;
    use crate::weights::write::f32_safetensors;

    type B = burn::backend::Flex;

    #[derive(Module, Debug)]
    struct Tiny<B: Backend> {
        proj: Linear<B>,
        norm: LayerNorm<B>,
        out: Linear<B>,
    }

    fn tiny() -> Tiny<B> {
        let device = Default::default();
        Tiny {
            proj: LinearConfig::new(3, 3).init(&device),
            norm: LayerNormConfig::new(3).init(&device),
            out: LinearConfig::new(3, 2).init(&device),
        }
    }

    fn values(n: usize, k: usize) -> Vec<f32> {
        (0..n).map(|i| (i * 7 + k) as f32 * 0.25).collect()
    }

    /// Loads `keys` (stored name, module path) of a file holding every tensor of `Tiny`
    /// plus one the module lacks, in batches of `batch_bytes`.
    fn load(keys: &[(&str, &str)], batch_bytes: usize) -> Result<Tiny<B>, String> {
        let stored = [
            ("p.w", values(9, 1), vec![3, 3]),
            ("p.b", values(3, 2), vec![3]),
            ("n.w", values(3, 3), vec![3]),
            ("n.b", values(3, 4), vec![3]),
            ("o.w", values(6, 5), vec![2, 3]),
            ("o.b", values(2, 6), vec![2]),
            ("extra", values(2, 7), vec![2]),
        ];
        let bytes = f32_safetensors(&stored, &[]).expect("valid tensors");
        let file = SafetensorsFile::from_bytes("tiny.safetensors", bytes).expect("valid file");
        let mapped = keys.iter().map(|(s, t)| Mapped::new(*t, *s)).collect();
        let mut module = tiny();
        load_in_batches(&mut module, &file, mapped, "tiny", DType::F32, batch_bytes)
            .map(|()| module)
            .map_err(|e| e.to_string())
    }

    const ALL: [(&str, &str); 6] = [
        ("p.w", "proj.weight"),
        ("p.b", "proj.bias"),
        ("n.w", "norm.weight"),
        ("n.b", "norm.bias"),
        ("o.w", "out.weight"),
        ("o.b", "out.bias"),
    ];

    #[test]
    fn one_batch_per_tensor_loads_and_reports_as_one_batch_does() {
        // 1 byte: every tensor its own batch (and its own `apply`); 1 GiB: one batch.
        let (split, whole) = (load(&ALL, 1).unwrap(), load(&ALL, 1 << 30).unwrap());
        for m in [&split, &whole] {
            // A square Linear weight, stored `[out, in]`, is held transposed as `[in, out]`.
            let w = values(9, 1);
            let t: Vec<f32> = (0..9).map(|k| w[(k % 3) * 3 + k / 3]).collect();
            m.proj
                .weight
                .val()
                .into_data()
                .assert_eq(&TensorData::new(t, [3, 3]), true);
            let gamma = m.norm.gamma.val().into_data();
            gamma.assert_eq(&TensorData::new(values(3, 3), [3]), true);
            let ob = m.out.bias.as_ref().expect("bias").val().into_data();
            ob.assert_eq(&TensorData::new(values(2, 6), [2]), true);
        }
        // A parameter left without a tensor and a tensor no parameter takes: the same
        // report, naming both, whatever the batches.
        let mut keys = ALL[..5].to_vec();
        keys.push(("extra", "extra.weight"));
        let (split, whole) = (
            load(&keys, 1).unwrap_err(),
            load(&keys, 1 << 30).unwrap_err(),
        );
        assert_eq!(split, whole);
        assert!(
            split.contains("missing tensors for module parameters: out.bias"),
            "{split}"
        );
        assert!(
            split.contains("unused tensors: `extra` (as extra.weight)"),
            "{split}"
        );
    }
}
