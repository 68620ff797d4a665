//! 2-D convolution of f16/bf16 tensors in f32, on cubecl devices without tensor-core
//! (cmma/mma) instructions.
//!
//! Those are lavapipe and every GPU behind burn's default wgpu compiler (WGSL exposes no
//! cooperative matrices). There burn-cubecl's convolution autotune can only pick
//! `conv_direct` (or im2col for 1x1), which sums the `C_in * kh * kw` products in the
//! tensors' own type: at SDXL's 1280 channels that is 11520 f16 additions per output,
//! and the tiny f16 pipeline on wgpu (lavapipe) ended 1.04% of max |x| from diffusers.
//! Here the input and parameters are cast to f32, burn's (autotuned) convolution runs in
//! f32, and the result is rounded once back, as PyTorch's f16 convolutions accumulate in
//! f32: 0.19% (README, "Backends").
//!
//! On lavapipe this path (casts + burn's f32 convolution) is also faster than burn's f16
//! `conv_direct` and than a direct f32-accumulating kernel (`docs/BENCHMARKS.md`,
//! `bench --components convs`).
//!
//! On devices with cmma/mma (CUDA) burn's autotune runs unchanged: it chooses per shape,
//! by speed, among implicit-GEMM convolutions (f32 accumulation) and `conv_direct` (f16
//! accumulation), so nothing here guarantees CUDA's f16 accuracy: measure it with
//! `tools/bench/check_precision.py` (`docs/BENCHMARKS.md`).
use burn::nn::conv::Conv2d;
use burn::tensor::backend::Backend;
use burn::tensor::{DType, Tensor};

use super::dispatch::on_device_without_tensor_cores;
use super::downcast::primitive;
use super::switch::enabled;
use crate::nn::precision::forward_in_f32;

/// See [`super::conv2d`].
pub(super) fn forward<B: Backend>(
    conv: &Conv2d<B>,
    x: Tensor<B, 4>,
) -> Result<Tensor<B, 4>, Tensor<B, 4>> {
    let dtype = x.dtype();
    let applies = enabled()
        && matches!(dtype, DType::F16 | DType::BF16)
        && on_device_without_tensor_cores::<B>(primitive(conv.weight.val()));
    if !applies {
        return Err(x);
    }
    Ok(forward_in_f32(conv, x, |c, x| c.forward(x)))
}
