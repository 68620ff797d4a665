//! Support shared by every test module: reading reference `.safetensors` files (written by
//! tools/reference/) through the library's own reader (`weights::SafetensorsFile`), the
//! raw bytes of a file for bit-exact comparisons, and small comparison helpers.
#![allow(dead_code)] // each test module uses a different subset

use std::collections::BTreeMap;
use std::path::Path;

use burn::tensor::{Tensor, TensorData};
use magicnaming_models::weights::SafetensorsFile;
use safetensors::Dtype;

/// The CPU backend the parity tests run on: burn-flex, the default CPU backend
/// (`ndarray.rs` runs the main parity checks on burn-ndarray too).
pub type B = burn::backend::Flex;

/// Float tensors by name: values (as f32) and shape.
pub type Tensors = BTreeMap<String, (Vec<f32>, Vec<usize>)>;

fn open(path: &Path) -> std::rc::Rc<SafetensorsFile> {
    SafetensorsFile::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The tensors of `path` whose stored dtype passes `keep`, read as f32 by the library.
fn read_where(path: &Path, keep: impl Fn(Dtype) -> bool) -> Tensors {
    let file = open(path);
    file.keys()
        .filter(|k| keep(file.entry(k).expect("listed key").dtype))
        .map(|k| {
            let t = file
                .read_f32(k)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            (k.to_string(), t)
        })
        .collect()
}

/// Every floating-point tensor of a safetensors file as f32 (F16/BF16/F64 converted);
/// integer tensors (the text encoder's int64 `position_ids` buffer) are left out.
pub fn read_all(path: &Path) -> Tensors {
    read_where(path, |d| {
        matches!(d, Dtype::F32 | Dtype::F16 | Dtype::BF16 | Dtype::F64)
    })
}

/// Every tensor of `path`, each of which must be stored as F32.
pub fn read_all_stored_f32(path: &Path) -> Tensors {
    read_where(path, |d| {
        assert_eq!(d, Dtype::F32, "{}: a non-F32 tensor", path.display());
        true
    })
}

/// One tensor, which must be stored as F32.
pub fn read_f32(path: &Path, key: &str) -> (Vec<f32>, Vec<usize>) {
    let file = open(path);
    let entry = file
        .entry(key)
        .unwrap_or_else(|| panic!("{}: no tensor {key}", path.display()));
    assert_eq!(entry.dtype, Dtype::F32, "{}: {key}", path.display());
    file.read_f32(key).unwrap()
}

/// The header's `__metadata__` (empty when absent).
pub fn metadata(path: &Path) -> BTreeMap<String, String> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    meta.metadata()
        .clone()
        .unwrap_or_default()
        .into_iter()
        .collect()
}

/// Each tensor's dtype, shape and stored bytes, and the metadata: what two files must share
/// to be equal bit for bit (whatever their header order).
pub type RawFile = (
    BTreeMap<String, (Dtype, Vec<usize>, Vec<u8>)>,
    BTreeMap<String, String>,
);

/// The raw content of a safetensors file, for bit-exact comparisons (integer tensors too).
pub fn raw_tensors(path: &Path) -> RawFile {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let tensors = st
        .tensors()
        .into_iter()
        .map(|(k, v)| (k, (v.dtype(), v.shape().to_vec(), v.data().to_vec())))
        .collect();
    (tensors, metadata(path))
}

/// Writes `tensors` as an F32 safetensors file (the library's writer).
pub fn write_f32(path: &Path, tensors: &Tensors) {
    let list: Vec<_> = tensors
        .iter()
        .map(|(k, (v, s))| (k.as_str(), v.clone(), s.clone()))
        .collect();
    let bytes = magicnaming_models::weights::write::f32_safetensors(&list, &[]).unwrap();
    std::fs::write(path, bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
}

/// The F32 tensors (values, shape) and the metadata of a reference file.
pub struct Reference {
    /// Tensors by name; other dtypes are left out.
    pub tensors: Tensors,
    /// The header's `__metadata__`.
    pub meta: BTreeMap<String, String>,
}

impl Reference {
    /// Reads `path`, panicking with the path on any problem (test fixtures).
    pub fn load(path: &Path) -> Self {
        Self {
            tensors: read_where(path, |d| d == Dtype::F32),
            meta: metadata(path),
        }
    }

    /// One tensor, panicking with its name when absent.
    pub fn get(&self, key: &str) -> &(Vec<f32>, Vec<usize>) {
        self.tensors
            .get(key)
            .unwrap_or_else(|| panic!("reference has no {key}"))
    }

    /// One tensor on the CPU backend.
    pub fn tensor<const D: usize>(&self, key: &str) -> Tensor<B, D> {
        self.tensor_on::<B, D>(key)
    }

    /// One tensor on backend `Q`'s default device.
    pub fn tensor_on<Q: burn::tensor::backend::Backend, const D: usize>(
        &self,
        key: &str,
    ) -> Tensor<Q, D> {
        let (v, s) = self.get(key);
        Tensor::from_data(TensorData::new(v.clone(), s.clone()), &Default::default())
    }

    /// A metadata entry parsed as JSON.
    pub fn json<T: serde::de::DeserializeOwned>(&self, key: &str) -> T {
        serde_json::from_str(
            self.meta
                .get(key)
                .unwrap_or_else(|| panic!("no metadata {key}")),
        )
        .unwrap()
    }

    /// How many tensors start with `prefix`.
    pub fn count(&self, prefix: &str) -> usize {
        self.tensors
            .keys()
            .filter(|k| k.starts_with(prefix))
            .count()
    }
}

/// Largest absolute difference between two equally long slices.
pub fn max_abs_diff(got: &[f32], want: &[f32]) -> f32 {
    assert_eq!(got.len(), want.len(), "lengths differ");
    got.iter()
        .zip(want)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max)
}
