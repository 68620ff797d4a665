//! Our CubeCL kernels (GroupNorm + SiLU, f16 Conv2d with f32 accumulation) against exact
//! references and burn's own ops, on the `wgpu` backend
//! (on a machine without a GPU, Mesa's lavapipe runs it on the CPU). Not part of the
//! default test run (it needs `--features wgpu` and a Vulkan device):
//!
//!     cargo test --release -p magicnaming-models --features wgpu --test kernels
//!
//! Both of burn's wgpu backends are covered: `Wgpu` (fusion, burn's default, where the
//! kernel is a custom operation of the fusion stream) and the plain `CubeBackend`.
#![cfg(feature = "wgpu")]

use std::sync::Mutex;

use burn::backend::wgpu::{CubeBackend, Wgpu, WgpuRuntime};
use burn::backend::NdArray;
use burn::module::Param;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{GroupNorm, GroupNormConfig, PaddingConfig2d};
use burn::tensor::activation::silu;
use burn::tensor::backend::Backend;
use burn::tensor::{DType, FloatDType, Tensor, TensorData};
use half::f16;
use magicnaming_models::norm::{group_norm, group_norm_silu};
use magicnaming_models::precision::cast_module;
use magicnaming_models::{conv, kernels};

type Fused = Wgpu;
type Plain = CubeBackend<WgpuRuntime, f32, i32, u32>;

/// `kernels::set_enabled` is process-wide; tests that depend on it take this lock.
static KERNELS_SWITCH: Mutex<()> = Mutex::new(());

/// Deterministic values in [-1, 1) (an LCG: the same on every backend and run).
fn noise(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// One GroupNorm case: shape, groups, and the input's mean and spread.
#[derive(Clone, Debug)]
struct Case {
    shape: Vec<usize>,
    groups: usize,
    offset: f32,
    scale: f32,
}

impl Case {
    fn new(shape: &[usize], groups: usize, offset: f32, scale: f32) -> Self {
        Self {
            shape: shape.to_vec(),
            groups,
            offset,
            scale,
        }
    }
    fn channels(&self) -> usize {
        self.shape[1]
    }
    fn input(&self) -> Vec<f32> {
        noise(self.shape.iter().product(), 7)
            .into_iter()
            .map(|v| self.offset + self.scale * v)
            .collect()
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

fn values<B: Backend, const D: usize>(x: Tensor<B, D>) -> Vec<f32> {
    x.cast(FloatDType::F32).into_data().to_vec::<f32>().unwrap()
}

fn round_f16(v: &[f32]) -> Vec<f32> {
    v.iter().map(|&x| f16::from_f32(x).to_f32()).collect()
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

fn max_excess(got: &[f32], want: &[f32], tol: impl Fn(f32) -> f32) -> (f32, f32) {
    assert_eq!(got.len(), want.len());
    let mut worst = (f32::NEG_INFINITY, 0.0);
    for (&g, &w) in got.iter().zip(want) {
        assert!(g.is_finite(), "non-finite output {g}");
        let d = (g - w).abs();
        if d - tol(w) > worst.0 {
            worst = (d - tol(w), d);
        }
    }
    let max = got
        .iter()
        .zip(want)
        .map(|(g, w)| (g - w).abs())
        .fold(0f32, f32::max);
    eprintln!(
        "max abs diff {max:.2e} (at the value nearest its bound: {:.2e})",
        worst.1
    );
    worst
}

fn cases() -> Vec<(Case, usize)> {
    vec![
        // SDXL-like: 32 groups of 2 channels, one chunk per group.
        (Case::new(&[2, 64, 8, 8], 32, 0.0, 2.0), 4),
        // Odd spatial size, a group shorter than a cube's reads.
        (Case::new(&[1, 96, 5, 7], 32, 0.3, 1.0), 4),
        // 5760 values per group: three chunks, the last one partial; mean far from 0
        // (the shifted sums must not cancel).
        (Case::new(&[2, 320, 24, 24], 32, 50.0, 0.5), 4),
        // One group (the VAE attention's GroupNorm has 32; this checks groups = 1).
        (Case::new(&[1, 8, 40, 40], 1, -3.0, 4.0), 4),
        // Rank 3: the transformer's GroupNorm over [B, C, tokens].
        (Case::new(&[2, 64, 77], 32, 0.0, 1.0), 3),
    ]
}

#[test]
fn f32_group_norm_matches_the_definition_on_both_wgpu_backends() {
    let _lock = KERNELS_SWITCH.lock().unwrap_or_else(|e| e.into_inner());
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
    let _lock = KERNELS_SWITCH.lock().unwrap_or_else(|e| e.into_inner());
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
    let _lock = KERNELS_SWITCH.lock().unwrap_or_else(|e| e.into_inner());
    let case = Case::new(&[2, 64, 16, 16], 32, 0.0, 1.0);
    let (gamma, beta) = case.params();
    let dev = Default::default();
    let norm = module::<Fused>(&case, &gamma, &beta, &dev);
    let x = tensor::<Fused, 4>(&case, &case.input(), &dev);
    // Element-wise ops before and after are fused by burn; the kernel sits between.
    let y = group_norm_silu(&norm, x.clone() * 2.0 + 1.0) * 3.0 - x.clone();
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
    let _lock = KERNELS_SWITCH.lock().unwrap_or_else(|e| e.into_inner());
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
    let ours = values(group_norm_silu(&norm, x.clone()));

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

// ---------------------------------------------------------------------------------------
// Conv2d with f32 accumulation (f16/bf16 on devices without tensor-core instructions).

/// One convolution case.
#[derive(Clone, Debug)]
struct ConvCase {
    /// `[N, C_in, H, W]`
    input: [usize; 4],
    c_out: usize,
    kernel: usize,
    stride: usize,
    /// top, left, bottom, right (burn's `PaddingConfig2d::Explicit` order)
    pad: [usize; 4],
    dilation: usize,
    groups: usize,
    bias: bool,
}

impl ConvCase {
    fn weight_shape(&self) -> [usize; 4] {
        let cin_g = self.input[1] / self.groups;
        [self.c_out, cin_g, self.kernel, self.kernel]
    }
    fn out_hw(&self) -> [usize; 2] {
        let span = self.dilation * (self.kernel - 1) + 1;
        let [_, _, h, w] = self.input;
        [
            (h + self.pad[0] + self.pad[2] - span) / self.stride + 1,
            (w + self.pad[1] + self.pad[3] - span) / self.stride + 1,
        ]
    }
    /// Inputs in [-1, 1); weights scaled by 1/sqrt(fan in), as trained convolutions are.
    fn data(&self) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
        let ws = self.weight_shape();
        let fan_in = (ws[1] * ws[2] * ws[3]) as f32;
        let x = round_f16(&noise(self.input.iter().product(), 3));
        let w = noise(ws.iter().product(), 5)
            .iter()
            .map(|v| v / fan_in.sqrt())
            .collect::<Vec<_>>();
        let b = noise(self.c_out, 9)
            .iter()
            .map(|v| 0.1 * v)
            .collect::<Vec<_>>();
        (x, round_f16(&w), round_f16(&b))
    }
    fn module<B: Backend>(&self, w: &[f32], b: &[f32], dev: &B::Device) -> Conv2d<B> {
        let [c_out, _, k, _] = self.weight_shape();
        let mut conv = Conv2dConfig::new([self.input[1], c_out], [k, k])
            .with_stride([self.stride; 2])
            .with_dilation([self.dilation; 2])
            .with_groups(self.groups)
            .with_bias(self.bias)
            .with_padding(PaddingConfig2d::Explicit(
                self.pad[0],
                self.pad[1],
                self.pad[2],
                self.pad[3],
            ))
            .init::<B>(dev);
        conv.weight = Param::from_tensor(Tensor::from_data(
            TensorData::new(w.to_vec(), self.weight_shape()),
            dev,
        ));
        if self.bias {
            conv.bias = Some(Param::from_tensor(Tensor::from_floats(b, dev)));
        }
        conv
    }
}

/// The convolution in f64 from its definition, and for each output the sum of the
/// products' magnitudes (what bounds the rounding error of a sum).
fn conv_reference(case: &ConvCase, x: &[f32], w: &[f32], b: &[f32]) -> (Vec<f32>, Vec<f64>) {
    let [n, c_in, h, wd] = case.input;
    let [c_out, cin_g, k, _] = case.weight_shape();
    let [oh, ow] = case.out_hw();
    let cout_g = c_out / case.groups;
    let mut out = Vec::with_capacity(n * c_out * oh * ow);
    let mut mags = Vec::with_capacity(out.capacity());
    for ni in 0..n {
        for oc in 0..c_out {
            let g = oc / cout_g;
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut acc = if case.bias { b[oc] as f64 } else { 0.0 };
                    let mut mag = acc.abs();
                    for icl in 0..cin_g {
                        let ic = g * cin_g + icl;
                        for ky in 0..k {
                            for kx in 0..k {
                                let iy = (oy * case.stride + ky * case.dilation) as isize
                                    - case.pad[0] as isize;
                                let ix = (ox * case.stride + kx * case.dilation) as isize
                                    - case.pad[1] as isize;
                                if iy < 0 || ix < 0 || iy >= h as isize || ix >= wd as isize {
                                    continue;
                                }
                                let xv = x[((ni * c_in + ic) * h + iy as usize) * wd + ix as usize];
                                let wv = w[((oc * cin_g + icl) * k + ky) * k + kx];
                                acc += xv as f64 * wv as f64;
                                mag += (xv as f64 * wv as f64).abs();
                            }
                        }
                    }
                    out.push(acc as f32);
                    mags.push(mag);
                }
            }
        }
    }
    (out, mags)
}

fn conv_cases() -> Vec<ConvCase> {
    let base = ConvCase {
        input: [2, 16, 9, 7],
        c_out: 8,
        kernel: 3,
        stride: 1,
        pad: [1, 1, 1, 1],
        dilation: 1,
        groups: 1,
        bias: true,
    };
    vec![
        base.clone(),
        // Downsample2D: stride 2, and its asymmetric (0, 0, 1, 1) padding variant.
        ConvCase {
            input: [1, 8, 10, 10],
            stride: 2,
            ..base.clone()
        },
        ConvCase {
            input: [1, 8, 10, 10],
            stride: 2,
            pad: [0, 0, 1, 1],
            ..base.clone()
        },
        // 1x1 shortcut / quant conv, no bias.
        ConvCase {
            input: [1, 32, 6, 6],
            c_out: 16,
            kernel: 1,
            pad: [0; 4],
            bias: false,
            ..base.clone()
        },
        // Dilation and groups (not in SDXL, but the module allows them).
        ConvCase {
            input: [1, 8, 9, 9],
            c_out: 6,
            pad: [2; 4],
            dilation: 2,
            groups: 2,
            ..base.clone()
        },
        // SDXL's widest level: 1280 x 3 x 3 = 11520 products per output.
        ConvCase {
            input: [1, 1280, 6, 6],
            c_out: 8,
            ..base
        },
    ]
}

/// Whether the wgpu device has tensor-core instructions (then the kernel stays out).
fn wgpu_has_tensor_cores() -> bool {
    use cubecl::Runtime;
    let client = WgpuRuntime::client(&Default::default());
    let matmul = &client.properties().features.matmul;
    !matmul.cmma.is_empty() || !matmul.mma.is_empty()
}

fn run_conv<B: Backend>(case: &ConvCase, dtype: FloatDType) -> Result<Vec<f32>, ()> {
    let dev = Default::default();
    let (x, w, b) = case.data();
    let conv = cast_module(case.module::<B>(&w, &b, &dev), dtype);
    let x = Tensor::<B, 4>::from_data(TensorData::new(x, case.input.to_vec()), &dev).cast(dtype);
    kernels::conv2d(&conv, x).map(values).map_err(|_| ())
}

#[test]
fn f16_conv2d_accumulates_in_f32_on_devices_without_tensor_cores() {
    let _lock = KERNELS_SWITCH.lock().unwrap_or_else(|e| e.into_inner());
    let tensor_cores = wgpu_has_tensor_cores();
    for case in conv_cases() {
        let (x, w, b) = case.data();
        let (want, mags) = conv_reference(&case, &x, &w, &b);
        for (name, got) in [
            ("Wgpu", run_conv::<Fused>(&case, FloatDType::F16)),
            ("CubeBackend", run_conv::<Plain>(&case, FloatDType::F16)),
        ] {
            if tensor_cores {
                assert!(
                    got.is_err(),
                    "{name}: the kernel must leave tensor-core devices to burn"
                );
                continue;
            }
            let got = got.unwrap_or_else(|_| panic!("{name}: the kernel must take {case:?}"));
            // One rounding of the f32 sum to f16 (2^-11 relative) plus the f32 sum's own
            // rounding, bounded by 2^-24 per addition of the products' magnitudes; 1e-5 of
            // that magnitude covers 11520 additions with a margin, while a sum kept in f16
            // (2^-11 per addition) is off by 1e-3 of it.
            let mut worst = 0f64;
            for ((&g, &r), &m) in got.iter().zip(&want).zip(&mags) {
                let bound = r.abs() as f64 * 2f64.powi(-11) + 1e-5 * m + 1e-7;
                worst = worst.max((g as f64 - r as f64).abs() / bound);
            }
            eprintln!("{name} {case:?}: worst error / bound {worst:.3}");
            assert!(
                worst <= 1.0,
                "{name} {case:?}: error {worst:.2} x the bound"
            );
        }
    }
}

#[test]
fn conv2d_kernel_leaves_f32_and_disabled_runs_to_burn() {
    let _lock = KERNELS_SWITCH.lock().unwrap_or_else(|e| e.into_inner());
    let case = conv_cases().remove(0);
    assert!(
        run_conv::<Fused>(&case, FloatDType::F32).is_err(),
        "f32 convs stay burn's"
    );
    kernels::set_enabled(false);
    let off = run_conv::<Fused>(&case, FloatDType::F16).is_err();
    kernels::set_enabled(true);
    assert!(off, "set_enabled(false) must hand the tensor back");
}

#[test]
fn conv2d_through_the_layer_matches_burns_f32_conv_on_the_cpu() {
    let _lock = KERNELS_SWITCH.lock().unwrap_or_else(|e| e.into_inner());
    // The public entry (`conv::conv2d`) in an f16 model on wgpu against burn's reference
    // op in f32 on ndarray, from the same f16-representable data.
    let case = conv_cases().remove(5);
    let (x, w, b) = case.data();
    let (dev, cpu) = (Default::default(), Default::default());
    let conv16 = cast_module(case.module::<Fused>(&w, &b, &dev), FloatDType::F16);
    let x16 = Tensor::<Fused, 4>::from_data(TensorData::new(x.clone(), case.input.to_vec()), &dev)
        .cast(FloatDType::F16);
    let ours = values(conv::conv2d(&conv16, x16.clone()));
    let conv_cpu = case.module::<NdArray>(&w, &b, &cpu);
    let x_cpu = Tensor::<NdArray, 4>::from_data(TensorData::new(x, case.input.to_vec()), &cpu);
    let burn_cpu = values(conv_cpu.forward(x_cpu));
    kernels::set_enabled(false);
    let burn_f16 = values(conv::conv2d(&conv16, x16)); // burn's own f16 conv on wgpu
    kernels::set_enabled(true);
    let max = |a: &[f32]| {
        a.iter()
            .zip(&burn_cpu)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max)
    };
    let scale = burn_cpu.iter().fold(0f32, |m, v| m.max(v.abs()));
    eprintln!(
        "vs burn f32 on ndarray (max |y| {scale:.2}): ours f16 {:.2e}, burn's f16 conv on wgpu {:.2e}",
        max(&ours),
        max(&burn_f16)
    );
    // Outputs here are at most ~2 in size: one f16 rounding is <= 2^-11 * 2 ~ 1e-3; the
    // f32 sums differ from ndarray's by ~1e-6.
    assert!(
        max(&ours) <= 1.1e-3,
        "ours f16 vs burn f32: {:.2e}",
        max(&ours)
    );
}
