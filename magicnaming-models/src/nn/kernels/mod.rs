//! Kernels of our own for the cubecl backends (`cuda`, `wgpu`), and precision rules that
//! need to know the device, used by the generic models without changing their
//! `B: Backend` bound.
//!
//! A model calls e.g. [`crate::nn::norm::group_norm_silu`], which asks [`group_norm`] here
//! first. When the tensors belong to a cubecl backend compiled in (burn's `Cuda` or
//! `Wgpu`, with or without fusion), the kernel runs and the result comes back as the
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
use burn::nn::GroupNorm;
use burn::nn::conv::Conv2d;
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;

pub mod cache;
#[cfg(feature = "kernels")]
mod conv2d;
#[cfg(feature = "kernels")]
mod dispatch;
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

/// `conv.forward(x)` for f16/bf16 tensors computed in f32 (burn's convolution on upcast
/// tensors, rounded once back), on cubecl devices without tensor-core instructions, where
/// burn's own f16 convolution would sum in f16.
///
/// `Err(x)` (untouched) elsewhere: other backends or devices, f32/f64 tensors, kernels
/// off or not compiled.
///
/// # Shapes
/// - `x`: `[N, C_in, H, W]` -> `[N, C_out, H_out, W_out]`
pub fn conv2d<B: Backend>(conv: &Conv2d<B>, x: Tensor<B, 4>) -> Result<Tensor<B, 4>, Tensor<B, 4>> {
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
