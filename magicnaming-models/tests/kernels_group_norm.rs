//! Our GroupNorm (+ SiLU) kernel against the f64 definition and burn's own ops, on the
//! `wgpu` backend (on a machine without a GPU, Mesa's lavapipe runs it on the CPU). Not
//! part of the default test run (it needs `--features wgpu` and a Vulkan device):
//!
//!     cargo test --release -p magicnaming-models --features wgpu --test kernels_group_norm
//!
//! Both of burn's wgpu backends are covered: `Wgpu` (fusion, burn's default, where the
//! kernel is a custom operation of the fusion stream) and the plain `CubeBackend`.
#![cfg(feature = "wgpu")]

use burn::backend::NdArray;
use burn::module::Param;
use burn::nn::{GroupNorm, GroupNormConfig};
use burn::tensor::activation::silu;
use burn::tensor::backend::Backend;
use burn::tensor::{DType, FloatDType, Tensor, TensorData};
use magicnaming_models::nn::kernels;
use magicnaming_models::nn::norm::{group_norm, group_norm_silu};
use magicnaming_models::nn::precision::cast_module;

mod kernels_common;
use kernels_common::{Fused, Plain, lock, max_excess, noise, round_f16, values};

/// One GroupNorm case: shape, groups, and the input's mean and spread.
#[derive(Clone, Debug)]
struct Case {
    shape: Vec<usize>,
    groups: usize,
    offset: f32,
    scale: f32,
    /// The first value of every group, when set (an outlier there is the shift `K` of
    /// the kernel's statistics).
    corner: Option<f32>,
}

impl Case {
    fn new(shape: &[usize], groups: usize, offset: f32, scale: f32) -> Self {
        Self {
            shape: shape.to_vec(),
            groups,
            offset,
            scale,
            corner: None,
        }
    }
    fn with_corner(mut self, value: f32) -> Self {
        self.corner = Some(value);
        self
    }
    fn channels(&self) -> usize {
        self.shape[1]
    }
    fn input(&self) -> Vec<f32> {
        let mut x: Vec<f32> = noise(self.shape.iter().product(), 7)
            .into_iter()
            .map(|v| self.offset + self.scale * v)
            .collect();
        if let Some(corner) = self.corner {
            let per_group = x.len() / (self.shape[0] * self.groups);
            x.iter_mut().step_by(per_group).for_each(|v| *v = corner);
        }
        x
    }
    /// gamma in [0.5, 1.5), beta in [-0.5, 0.5).
    fn params(&self) -> (Vec<f32>, Vec<f32>) {
        let c = self.channels();
        let gamma = noise(c, 11).into_iter().map(|v| 1.0 + 0.5 * v).collect();
        let beta = noise(c, 13).into_iter().map(|v| 0.5 * v).collect();
        (gamma, beta)
    }
}

/// GroupNorm (+ SiLU) in f64, written out from the definition (biased variance).
fn reference(case: &Case, x: &[f32], gamma: &[f32], beta: &[f32], silu: bool) -> Vec<f32> {
    let (n, c) = (case.shape[0], case.channels());
    let spatial: usize = case.shape[2..].iter().product();
    let per_group = c / case.groups * spatial;
    let eps = 1e-5f64;
    let mut out = vec![0f32; x.len()];
    for g in 0..n * case.groups {
        let vals = &x[g * per_group..(g + 1) * per_group];
        let mean = vals.iter().map(|&v| v as f64).sum::<f64>() / per_group as f64;
        let var = vals.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / per_group as f64;
        let rstd = 1.0 / (var + eps).sqrt();
        for i in 0..per_group {
            let idx = g * per_group + i;
            let ch = (idx / spatial) % c;
            let mut v = (x[idx] as f64 - mean) * rstd * gamma[ch] as f64 + beta[ch] as f64;
            if silu {
                v /= 1.0 + (-v).exp();
            }
            out[idx] = v as f32;
        }
    }
    out
}

fn module<B: Backend>(case: &Case, gamma: &[f32], beta: &[f32], dev: &B::Device) -> GroupNorm<B> {
    let mut norm = GroupNormConfig::new(case.groups, case.channels())
        .with_epsilon(1e-5)
        .init::<B>(dev);
    norm.gamma = Some(Param::from_tensor(Tensor::from_floats(gamma, dev)));
    norm.beta = Some(Param::from_tensor(Tensor::from_floats(beta, dev)));
    norm
}

fn tensor<B: Backend, const D: usize>(case: &Case, x: &[f32], dev: &B::Device) -> Tensor<B, D> {
    Tensor::from_data(TensorData::new(x.to_vec(), case.shape.clone()), dev)
}

/// Runs `case` through the kernel on backend `B` (f32 or f16), checks that the kernel
/// (not the generic path) ran and returns the output as f32.
fn run<B: Backend, const D: usize>(case: &Case, dtype: FloatDType, silu: bool) -> Vec<f32> {
    let dev = Default::default();
    let (gamma, beta) = case.params();
    let norm = cast_module(module::<B>(case, &gamma, &beta, &dev), dtype);
    let x = tensor::<B, D>(case, &case.input(), &dev).cast(dtype);
    let out = kernels::group_norm(&norm, x, silu)
        .unwrap_or_else(|_| panic!("the kernel must take {case:?} on {}", B::name(&dev)));
    assert_eq!(
        out.dtype(),
        DType::from(dtype),
        "output keeps the input's type"
    );
    values(out)
}

fn cases() -> Vec<(Case, usize)> {
    vec![
        // SDXL-like: 32 groups of 2 channels, one chunk per group.
        (Case::new(&[2, 64, 8, 8], 32, 0.0, 2.0), 4),
        // Odd spatial size, a group shorter than a cube's reads.
        (Case::new(&[1, 96, 5, 7], 32, 0.3, 1.0), 4),
        // 5760 values per group: three chunks, the last one partial; mean far from 0.
        (Case::new(&[2, 320, 24, 24], 32, 50.0, 0.5), 4),
        // Each group's first value an outlier 300 away from the rest: sums of squares
        // around it (E[(x-K)^2] - E[x-K]^2 = 9e4 - ...) would lose ~4 of f32's 7 digits
        // against the variance of ~16, ~2e-2 at the largest outputs (~110); chunk-wise
        // deviations merged with Chan's formula do not.
        (
            Case::new(&[2, 320, 24, 24], 32, 0.0, 1.0).with_corner(300.0),
            4,
        ),
        // One group (the VAE attention's GroupNorm has 32; this checks groups = 1).
        (Case::new(&[1, 8, 40, 40], 1, -3.0, 4.0), 4),
        // Rank 3: the transformer's GroupNorm over [B, C, tokens].
        (Case::new(&[2, 64, 77], 32, 0.0, 1.0), 3),
    ]
}

#[test]
fn f32_group_norm_matches_the_definition_on_both_wgpu_backends() {
    let _lock = lock();
    for (case, rank) in cases() {
        let (gamma, beta) = case.params();
        for silu in [false, true] {
            let want = reference(&case, &case.input(), &gamma, &beta, silu);
            let outs = match rank {
                3 => [
                    run::<Fused, 3>(&case, FloatDType::F32, silu),
                    run::<Plain, 3>(&case, FloatDType::F32, silu),
                ],
                _ => [
                    run::<Fused, 4>(&case, FloatDType::F32, silu),
                    run::<Plain, 4>(&case, FloatDType::F32, silu),
                ],
            };
            for got in outs {
                // f32 inputs near 50 are rounded by 4e-6; divided by a spread of 0.29 that
                // is 1.3e-5 after normalisation, and f32 sums of up to 5760 terms add about
                // as much again. 1e-4 keeps a margin while a wrong mean, variance, channel
                // or group index shows up as 1e-2 or more.
                let (excess, d) = max_excess(&got, &want, |_| 1e-4);
                assert!(excess <= 0.0, "{case:?} silu={silu}: max abs diff {d:.2e}");
            }
        }
    }
}

#[test]
fn f16_group_norm_rounds_once_from_f32_statistics() {
    let _lock = lock();
    let mut all = cases();
    // 40960 values per group of spread ~3: their sum of squares (~1.2e5) is past f16's
    // 65504, where an f16 reduction overflows.
    all.push((Case::new(&[1, 320, 64, 64], 32, 0.0, 5.0), 4));
    for (case, rank) in all {
        if case.offset.abs() > 10.0 {
            continue; // f16 cannot hold 50 +- 0.5 to better than 0.03: nothing to test
        }
        let (gamma, beta) = case.params();
        // The kernel sees f16-rounded inputs and parameters: so does the reference.
        let x = round_f16(&case.input());
        let want = reference(&case, &x, &round_f16(&gamma), &round_f16(&beta), true);
        let got = match rank {
            3 => run::<Fused, 3>(&case, FloatDType::F16, true),
            _ => run::<Fused, 4>(&case, FloatDType::F16, true),
        };
        // One rounding to f16 (10 fraction bits): at most 2^-11 relative; 1e-4 absolute
        // covers the f32 arithmetic before it and f16's subnormals near 0.
        let (excess, d) = max_excess(&got, &want, |w| w.abs() * 2f32.powi(-11) + 1e-4);
        assert!(excess <= 0.0, "{case:?}: max abs diff {d:.2e}");
    }
}

#[test]
fn the_kernel_runs_in_order_inside_a_fused_stream() {
    let _lock = lock();
    let case = Case::new(&[2, 64, 16, 16], 32, 0.0, 1.0);
    let (gamma, beta) = case.params();
    let dev = Default::default();
    let norm = module::<Fused>(&case, &gamma, &beta, &dev);
    let x = tensor::<Fused, 4>(&case, &case.input(), &dev);
    // Element-wise ops before and after are fused by burn; the kernel sits between.
    let y = kernels::group_norm(&norm, x.clone() * 2.0 + 1.0, true)
        .unwrap_or_else(|_| panic!("the kernel must take a tensor made by fused ops"))
        * 3.0
        - x.clone();
    let shifted: Vec<f32> = case.input().iter().map(|v| v * 2.0 + 1.0).collect();
    let want: Vec<f32> = reference(&case, &shifted, &gamma, &beta, true)
        .iter()
        .zip(case.input())
        .map(|(r, x)| r * 3.0 - x)
        .collect();
    // As the f32 test (1e-4), times 3 for the scaling after the kernel.
    let (excess, d) = max_excess(&values(y), &want, |_| 3e-4);
    assert!(excess <= 0.0, "max abs diff {d:.2e}");
}

#[test]
fn kernels_agree_with_burns_ops_and_can_be_turned_off() {
    let _lock = lock();
    let case = Case::new(&[2, 320, 16, 16], 32, 0.5, 2.0);
    let (gamma, beta) = case.params();
    let dev = Default::default();
    let cpu = Default::default();
    let norm = module::<Fused>(&case, &gamma, &beta, &dev);
    let norm_cpu = module::<NdArray>(&case, &gamma, &beta, &cpu);
    let x = tensor::<Fused, 4>(&case, &case.input(), &dev);
    let x_cpu = tensor::<NdArray, 4>(&case, &case.input(), &cpu);

    // burn's own ops on the CPU (ndarray: no kernel of ours there).
    assert!(kernels::group_norm(&norm_cpu, x_cpu.clone(), true).is_err());
    let burn_cpu = values(silu(norm_cpu.forward(x_cpu)));
    let ours = kernels::group_norm(&norm, x.clone(), true)
        .unwrap_or_else(|_| panic!("the kernel must run on wgpu"));
    let ours = values(ours);

    kernels::set_enabled(false);
    let refused = kernels::group_norm(&norm, x.clone(), true).is_err();
    let burn_gpu = values(group_norm_silu(&norm, x)); // burn's ops on wgpu
    kernels::set_enabled(true);
    assert!(refused, "set_enabled(false) must hand the tensor back");

    // f32 throughout: the three agree to f32 rounding of sums over 2560 values
    // (about 1e-6 relative); 2e-5 absolute on outputs of a few units.
    for (name, other) in [("ndarray", &burn_cpu), ("wgpu without kernels", &burn_gpu)] {
        let (excess, d) = max_excess(&ours, other, |_| 2e-5);
        assert!(
            excess <= 0.0,
            "ours vs burn on {name}: max abs diff {d:.2e}"
        );
    }
    // And the same goes for the non-SiLU entry point.
    let x = tensor::<Fused, 4>(&case, &case.input(), &dev);
    let plain = values(group_norm(&norm, x));
    let want = reference(&case, &case.input(), &gamma, &beta, false);
    let (excess, d) = max_excess(&plain, &want, |_| 1e-4);
    assert!(
        excess <= 0.0,
        "group_norm vs the definition: max abs diff {d:.2e}"
    );
}
