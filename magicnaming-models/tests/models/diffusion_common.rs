//! Helpers shared by the UNet and VAE parity tests (fixtures by
//! tools/reference/make_diffusion_fixtures.py; the single file by
//! tools/reference/make_pipeline_fixtures.py).
#![allow(dead_code)] // unet and vae use different subsets
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::module::{ModuleVisitor, Param};
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;

pub use crate::common::{B, Reference, read_all, write_f32};
use crate::common::{metadata, read_all_stored_f32};

/// f32 CPU against PyTorch f32: the required bound. The tiny models' outputs are O(0.3-2)
/// after ~30 layers; reordered float32 sums give errors around 1e-6.
pub const TOL: f32 = 1e-4;

pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/diffusion")
}

/// The complete tiny SDXL diffusers folder: `unet/` is UNet A, `vae/` the VAE of the
/// references here.
pub fn tiny_sdxl() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/text/tiny-sdxl")
}

/// The same model as one single-file checkpoint (LDM keys for UNet A and the VAE, fp16,
/// next to the `conditioner.*` text encoders the UNet and VAE loaders must ignore).
pub fn single_file() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/pipeline/tiny-sdxl-single.safetensors")
}

/// A reference file of this folder (float32 tensors only).
pub fn reference(name: &str) -> Reference {
    let path = fixtures().join(name);
    Reference {
        tensors: read_all_stored_f32(&path),
        meta: metadata(&path),
    }
}

/// Max abs difference, after checking the shape.
pub fn max_diff<const D: usize>(
    what: &str,
    got: Tensor<B, D>,
    want: &(Vec<f32>, Vec<usize>),
) -> f32 {
    assert_eq!(got.dims().to_vec(), want.1, "{what}: shape");
    let got = got.into_data().to_vec::<f32>().unwrap();
    got.iter()
        .zip(&want.0)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max)
}

pub fn assert_close<const D: usize>(
    what: &str,
    got: Tensor<B, D>,
    want: &(Vec<f32>, Vec<usize>),
) -> f32 {
    let max = max_diff(what, got, want);
    println!("{what}: max abs diff {max:.3e}");
    assert!(max <= TOL, "{what}: max abs diff {max} > {TOL}");
    max
}

/// Parameter paths and shapes of a module in PyTorch naming and layout (Linear weights
/// `[out, in]`, norm `weight`/`bias`), read without initialising the (lazy) parameters.
#[derive(Default)]
pub struct ParamShapes {
    path: Vec<String>,
    containers: Vec<String>,
    pub shapes: BTreeMap<String, Vec<usize>>,
}

impl<Bk: Backend> ModuleVisitor<Bk> for ParamShapes {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.path.push(name.to_string());
        self.containers.push(container_type.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
        self.containers.pop();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<Bk, D>>) {
        let owner = self
            .containers
            .last()
            .map(String::as_str)
            .unwrap_or_default();
        let mut shape = param.lazy_shape().to_vec();
        let mut path = self.path.clone();
        let last = path.last_mut().expect("a parameter has a name");
        if owner == "Struct:Linear" && last == "weight" {
            shape.reverse();
        }
        if owner.ends_with("Norm") {
            match last.as_str() {
                "gamma" => *last = "weight".into(),
                "beta" => *last = "bias".into(),
                _ => {}
            }
        }
        self.shapes.insert(path.join("."), shape);
    }
}

/// `sdxl_keys.json` section `name`: key -> shape.
pub fn sdxl_keys(name: &str) -> BTreeMap<String, Vec<usize>> {
    let text = std::fs::read_to_string(fixtures().join("sdxl_keys.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    serde_json::from_value(v[name].clone()).unwrap()
}

/// `dir/<component>/` with the tiny SDXL folder's `<component>/config.json` copied in.
pub fn component_folder(dir: &Path, component: &str) -> PathBuf {
    let folder = dir.join(component);
    std::fs::create_dir(&folder).unwrap();
    std::fs::copy(
        tiny_sdxl().join(component).join("config.json"),
        folder.join("config.json"),
    )
    .unwrap();
    folder
}

/// Copies a weights file with one tensor removed and one unknown tensor added.
pub fn corrupt(src: &Path, dst: &Path, remove: &str, add: &str) {
    let mut all = read_all(src);
    assert!(all.remove(remove).is_some(), "{remove}");
    all.insert(add.to_string(), (vec![0.5; 3], vec![3]));
    write_f32(dst, &all);
}
