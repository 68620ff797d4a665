//! Helpers shared by the parity tests: reading a reference `.safetensors` written by
//! tools/reference/ (its F32 tensors and its string metadata).
#![allow(dead_code)] // each test binary uses a different subset

use std::collections::HashMap;
use std::path::Path;

use burn::backend::NdArray;
use burn::tensor::{Tensor, TensorData};

/// The CPU backend the parity tests run on.
pub type B = NdArray<f32>;

/// The F32 tensors (values, shape) and the metadata of a reference file.
pub struct Reference {
    /// Tensors by name; other dtypes are left out.
    pub tensors: HashMap<String, (Vec<f32>, Vec<usize>)>,
    /// The header's `__metadata__`.
    pub meta: HashMap<String, String>,
}

impl Reference {
    /// Reads `path`, panicking with the path on any problem (test fixtures).
    pub fn load(path: &Path) -> Self {
        let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let tensors = st
            .tensors()
            .into_iter()
            .filter(|(_, v)| v.dtype() == safetensors::Dtype::F32)
            .map(|(k, v)| {
                let vals = v
                    .data()
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect();
                (k, (vals, v.shape().to_vec()))
            })
            .collect();
        let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
        Self {
            tensors,
            meta: meta.metadata().clone().unwrap_or_default(),
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
