//! Our f16 Conv2d rule (computed in f32 on devices without tensor cores) against the
//! f64 definition and burn's own ops, on the `wgpu` backend (lavapipe on a machine
//! without a GPU). Not part of the default test run (`--features wgpu`, a Vulkan device):
//!
//!     cargo test --release -p magicnaming-models --features wgpu --test kernels_conv
#![cfg(feature = "wgpu")]

use burn::backend::NdArray;
use burn::module::Param;
use burn::nn::PaddingConfig2d;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::tensor::backend::Backend;
use burn::tensor::{FloatDType, Tensor, TensorData};
use magicnaming_models::nn::precision::cast_module;
use magicnaming_models::nn::{conv, kernels};

mod kernels_common;
use kernels_common::{Fused, Plain, lock, noise, round_f16, values, wgpu_has_tensor_cores};

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

fn run_conv<B: Backend>(case: &ConvCase, dtype: FloatDType) -> Result<Vec<f32>, ()> {
    let dev = Default::default();
    let (x, w, b) = case.data();
    let conv = cast_module(case.module::<B>(&w, &b, &dev), dtype);
    let x = Tensor::<B, 4>::from_data(TensorData::new(x, case.input.to_vec()), &dev).cast(dtype);
    kernels::conv2d(&conv, x).map(values).map_err(|_| ())
}

#[test]
fn f16_conv2d_accumulates_in_f32_on_devices_without_tensor_cores() {
    let _lock = lock();
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
    let _lock = lock();
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
    let _lock = lock();
    // The public entry (`conv::conv2d`) in an f16 model on wgpu against burn's reference
    // op in f32 on ndarray, from the same f16-representable data.
    if wgpu_has_tensor_cores() {
        eprintln!("skipped: on tensor-core devices burn's own convolution runs");
        return;
    }
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
