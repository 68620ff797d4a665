//! Kernels of our own for the cubecl backends (`cuda`, `wgpu`) and for burn-flex (the
//! default CPU backend), and precision rules that need to know the device, used by the
//! generic models without changing their `B: Backend` bound.
//!
//! A model calls e.g. [`crate::nn::norm::group_norm_silu`], which asks [`group_norm`] here
//! first. When the tensors belong to a backend with a path here (a cubecl backend compiled
//! in, burn's `Cuda` or `Wgpu`, with or without fusion; burn-flex for [`conv2d`],
//! [`channel_affine_prelu`] and [`linear`]), it runs and the result comes back as the
//! model's own tensor type; otherwise the input is handed back unchanged (`Err`) and the
//! caller takes burn's generic ops (ndarray, autodiff, flex, ...). The backend is
//! recognised by the concrete type of its tensor primitive (`core::any::Any`), so no
//! trait bound spreads through the model code. Under fusion the kernel is registered as
//! a custom operation of the fusion stream, in order with the fused ops around it.
//!
//! [`set_enabled`]`(false)` turns them off at run time (benchmarks compare both paths on
//! one device; tests compare against burn's own ops on the same backend).
//!
//! [`cache`] sets where the cubecl backends keep compiled kernels and autotune results.
use burn::nn::conv::Conv2d;
use burn::nn::{GroupNorm, Linear};
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;

pub mod cache;
#[cfg(feature = "kernels")]
mod conv2d;
#[cfg(feature = "kernels")]
mod dispatch;
#[cfg(any(feature = "kernels", feature = "flex"))]
mod downcast;
#[cfg(feature = "flex")]
mod flex;
#[cfg(feature = "flex")]
mod flex_channel;
#[cfg(feature = "flex")]
mod flex_conv2d;
#[cfg(feature = "flex")]
mod flex_linear;
#[cfg(feature = "kernels")]
mod group_norm;
mod switch;

pub use switch::{COMPILED, enabled, set_enabled};

/// `norm.forward(x)`, then SiLU when `silu`, in one fused kernel on a cubecl backend;
/// statistics and affine transform in f32 for every float type, the result in `x`'s type.
///
/// `Err(x)` (untouched) when no kernel applies: another backend, kernels off or not
/// compiled, a module without affine parameters, f64 tensors, or a channel count that
/// does not match the module (the caller's generic path reports that).
///
/// # Shapes
/// - `x`: `[N, C, ...]` -> same
pub fn group_norm<B: Backend, const D: usize>(
    norm: &GroupNorm<B>,
    x: Tensor<B, D>,
    silu: bool,
) -> Result<Tensor<B, D>, Tensor<B, D>> {
    #[cfg(feature = "kernels")]
    {
        group_norm::forward(norm, x, silu)
    }
    #[cfg(not(feature = "kernels"))]
    {
        let _ = (norm, silu);
        Err(x)
    }
}

/// `conv.forward(x)` by a path of our own where burn's falls short:
/// - f32 tensors on burn-flex (one group, `Valid` or explicit padding): im2col over bands
///   of output rows and one `gemm` product per band written into the NCHW output,
///   spread over burn-flex's threads (`flex_conv2d`);
/// - f16/bf16 tensors on cubecl devices without tensor-core instructions: burn's
///   convolution on upcast tensors, rounded once back, where burn's own f16 convolution
///   would sum in f16.
///
/// `Err(x)` (untouched) elsewhere: other backends, devices, dtypes or settings, kernels
/// off or not compiled.
///
/// # Shapes
/// - `x`: `[N, C_in, H, W]` -> `[N, C_out, H_out, W_out]`
pub fn conv2d<B: Backend>(conv: &Conv2d<B>, x: Tensor<B, 4>) -> Result<Tensor<B, 4>, Tensor<B, 4>> {
    #[cfg(feature = "flex")]
    let x = match flex_conv2d::forward(conv, x) {
        Ok(y) => return Ok(y),
        Err(x) => x,
    };
    #[cfg(feature = "kernels")]
    {
        conv2d::forward(conv, x)
    }
    #[cfg(not(feature = "kernels"))]
    {
        let _ = conv;
        Err(x)
    }
}

/// `x * scale + shift` per channel (axis 1), then PReLU with per-channel (or one shared)
/// slope `alpha`, either part optional, in one pass over f32 tensors on burn-flex, where
/// burn-flex's broadcast ops walk `[1, C, 1, 1]` operands element by element on one
/// thread.
///
/// `Err(x)` (untouched) elsewhere: other backends or dtypes, parameters of another length
/// than `C` (the caller's generic path reports that), kernels off.
///
/// # Shapes
/// - `x`: `[N, C, ...]` -> same; `scale`, `shift`: `[C]`; `alpha`: `[C]` or `[1]`
pub fn channel_affine_prelu<B: Backend, const D: usize>(
    x: Tensor<B, D>,
    affine: Option<(Tensor<B, 1>, Tensor<B, 1>)>,
    alpha: Option<Tensor<B, 1>>,
) -> Result<Tensor<B, D>, Tensor<B, D>> {
    #[cfg(feature = "flex")]
    {
        flex_channel::forward(x, affine, alpha)
    }
    #[cfg(not(feature = "flex"))]
    {
        let _ = (affine, alpha);
        Err(x)
    }
}

/// `linear.forward(x)` for f32 tensors on burn-flex as one `gemm` product over all leading
/// axes, the bias accumulated into it (burn-flex runs one product per batch entry, then
/// adds the bias in a second pass).
///
/// `Err(x)` (untouched) elsewhere: other backends or dtypes, an input whose last axis is
/// not the layer's input size (the caller's generic path reports that), kernels off.
///
/// # Shapes
/// - `x`: `[..., d_input]` -> `[..., d_output]`
pub fn linear<B: Backend, const D: usize>(
    linear: &Linear<B>,
    x: Tensor<B, D>,
) -> Result<Tensor<B, D>, Tensor<B, D>> {
    #[cfg(feature = "flex")]
    {
        flex_linear::forward(linear, x)
    }
    #[cfg(not(feature = "flex"))]
    {
        let _ = linear;
        Err(x)
    }
}
