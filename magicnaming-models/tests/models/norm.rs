//! `norm::group_norm` / `norm::layer_norm` against burn's own modules (the reference ops):
//! identical in f32, and f32 statistics for f16 inputs where an f16 reduction overflows
//! (burn-flex runs f16 on the CPU).
use burn::backend::Flex;
use burn::module::Param;
use burn::nn::{GroupNorm, GroupNormConfig, LayerNormConfig};
use burn::tensor::backend::Backend;
use burn::tensor::{DType, Distribution, FloatDType, Tensor};
use magicnaming_models::nn::norm::{group_norm, layer_norm};
use magicnaming_models::nn::precision::cast_module;

use crate::common::{B, max_abs_diff};

fn norm_with_random_affine<Bk: Backend>(groups: usize, channels: usize) -> GroupNorm<Bk> {
    let device = Default::default();
    let mut norm = GroupNormConfig::new(groups, channels)
        .with_epsilon(1e-5)
        .init::<Bk>(&device);
    let g = Tensor::random([channels], Distribution::Uniform(0.5, 1.5), &device);
    let b = Tensor::random([channels], Distribution::Normal(0.0, 0.5), &device);
    norm.gamma = Some(Param::from_tensor(g));
    norm.beta = Some(Param::from_tensor(b));
    norm
}

fn values<Bk: Backend, const D: usize>(x: Tensor<Bk, D>) -> Vec<f32> {
    x.cast(FloatDType::F32).into_data().to_vec::<f32>().unwrap()
}

#[test]
fn f32_inputs_take_burns_group_norm_unchanged() {
    let device = Default::default();
    let norm = norm_with_random_affine::<B>(32, 320);
    let x = Tensor::<B, 4>::random([1, 320, 16, 16], Distribution::Normal(3.0, 2.0), &device);
    assert_eq!(
        values(group_norm(&norm, x.clone())),
        values(norm.forward(x))
    );
}

#[test]
fn f16_inputs_are_normalised_with_f32_statistics() {
    type F = Flex;
    let device = Default::default();
    let norm32 = norm_with_random_affine::<F>(32, 320);
    let norm16 = cast_module(norm32.clone(), FloatDType::F16);
    // Activations ~ +-300 (SDXL's decoder reaches thousands): squares pass f16's 65504.
    let x = Tensor::<F, 4>::random([1, 320, 32, 32], Distribution::Normal(0.0, 300.0), &device);
    let want = values(norm32.forward(x.clone()));
    let x16 = x.cast(FloatDType::F16);
    let naive = values(norm16.forward(x16.clone()));
    assert!(
        naive.iter().any(|v| !v.is_finite()) || max_abs_diff(&naive, &want) > 0.1,
        "burn's f16 GroupNorm was expected to overflow here (else this test proves nothing)"
    );
    let out = group_norm(&norm16, x16);
    assert_eq!(out.dtype(), DType::F16, "the output keeps the input's type");
    let d = max_abs_diff(&values(out), &want);
    eprintln!("f16 group norm vs f32: max abs diff {d:.2e}");
    // f16 rounding of the input (4.9e-4 relative, on normalised values up to ~5) and of
    // the output (half an ulp, 2e-3 for |y| < 8): measured 5.3e-3; 1e-2 bounds it. An
    // overflowed statistic gives NaN or O(1) errors.
    assert!(d < 1e-2, "{d}");
}

#[test]
fn layer_norm_f16_matches_f32() {
    type F = Flex;
    let device = Default::default();
    let norm32 = LayerNormConfig::new(1280).init::<F>(&device);
    let norm16 = cast_module(norm32.clone(), FloatDType::F16);
    let x = Tensor::<F, 3>::random([2, 7, 1280], Distribution::Normal(0.0, 400.0), &device);
    let want = values(norm32.forward(x.clone()));
    let out = layer_norm(&norm16, x.clone().cast(FloatDType::F16));
    assert_eq!(out.dtype(), DType::F16);
    let d = max_abs_diff(&values(out), &want);
    eprintln!("f16 layer norm vs f32: max abs diff {d:.2e}");
    // As above: f16 rounding of O(1) outputs.
    assert!(d < 1e-2, "{d}");
    // f32 inputs take burn's op unchanged.
    assert_eq!(
        values(layer_norm(&norm32, x.clone())),
        values(norm32.forward(x))
    );
}
