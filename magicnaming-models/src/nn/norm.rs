//! GroupNorm and LayerNorm forwards for every model here (the modules stay burn's
//! [`GroupNorm`] / [`LayerNorm`], so checkpoint keys and records are unchanged).
//!
//! An f32 (or f64) input goes through the module's own `forward`, unchanged. An f16 or
//! bf16 input is normalised in f32 and cast back, as PyTorch's f16 kernels accumulate in
//! f32: burn's GroupNorm sums the squares of each group in the input's type, and at
//! SDXL's first level a group holds `320 / 32 * 128 * 128 = 163840` values, whose sum of
//! squares overflows f16's 65504 (`tests/models/norm.rs` shows burn's f16 result going wrong
//! where this one stays within f16 rounding).
//!
//! On the cubecl backends (`cuda`, `wgpu` features) GroupNorm, and GroupNorm followed by
//! SiLU, run as our own kernel instead ([`super::kernels::group_norm`]: f32 statistics,
//! one rounding to the input's type, no casts of the input or the parameters).
use burn::module::Module;
use burn::nn::{GroupNorm, LayerNorm};
use burn::tensor::activation::silu;
use burn::tensor::backend::Backend;
use burn::tensor::{DType, Tensor};

use super::precision::forward_in_f32;

/// Whether `dtype` is normalised in f32 (the half-precision types).
fn needs_f32(dtype: DType) -> bool {
    matches!(dtype, DType::F16 | DType::BF16)
}

/// `forward(module, x)`, or for an f16/bf16 `x` the same in f32, cast back.
fn forward_f32<B: Backend, M: Module<B>, const D: usize>(
    module: &M,
    x: Tensor<B, D>,
    forward: impl Fn(&M, Tensor<B, D>) -> Tensor<B, D>,
) -> Tensor<B, D> {
    if needs_f32(x.dtype()) {
        forward_in_f32(module, x, forward)
    } else {
        forward(module, x)
    }
}

/// GroupNorm, then SiLU when `then_silu`: our kernel where it applies, else burn's module
/// with f32 statistics for f16/bf16.
fn group_norm_then<B: Backend, const D: usize>(
    norm: &GroupNorm<B>,
    x: Tensor<B, D>,
    then_silu: bool,
) -> Tensor<B, D> {
    match super::kernels::group_norm(norm, x, then_silu) {
        Ok(y) => y,
        Err(x) => {
            let y = forward_f32(norm, x, |n, x| n.forward(x));
            if then_silu { silu(y) } else { y }
        }
    }
}

/// `norm.forward(x)`, with f32 statistics for an f16/bf16 `x` (cast back).
///
/// # Shapes
/// - `x`: `[B, C, ...]` -> same (and the same float type)
pub fn group_norm<B: Backend, const D: usize>(
    norm: &GroupNorm<B>,
    x: Tensor<B, D>,
) -> Tensor<B, D> {
    group_norm_then(norm, x, false)
}

/// `silu(norm.forward(x))` (diffusers' `nonlinearity(norm(x))` in ResnetBlock2D and
/// before `conv_out`), fused into one kernel on the cubecl backends.
///
/// # Shapes
/// - `x`: `[B, C, ...]` -> same (and the same float type)
pub fn group_norm_silu<B: Backend, const D: usize>(
    norm: &GroupNorm<B>,
    x: Tensor<B, D>,
) -> Tensor<B, D> {
    group_norm_then(norm, x, true)
}

/// `norm.forward(x)` (burn's fused LayerNorm op), in f32 for an f16/bf16 `x` (cast back).
///
/// # Shapes
/// - `x`: `[..., d_model]` -> same (and the same float type)
pub fn layer_norm<B: Backend, const D: usize>(
    norm: &LayerNorm<B>,
    x: Tensor<B, D>,
) -> Tensor<B, D> {
    forward_f32(norm, x, |n, x| n.forward(x))
}
