//! GroupNorm and LayerNorm forwards for every model here (the modules stay burn's
//! [`GroupNorm`] / [`LayerNorm`], so checkpoint keys and records are unchanged).
//!
//! Two things differ from calling the modules' own `forward`:
//! - **f32 statistics.** An input that is not f32 is normalised in f32 and cast back, as
//!   PyTorch's f16 kernels accumulate in f32: a GroupNorm sum over `C/32 * H * W`
//!   values (163840 at SDXL's first level) overflows f16's 65504.
//! - **Two-stage group reduction.** burn's `GroupNorm` reduces each group in one
//!   reduction of `C/G * H * W` elements with only `B * G` outputs (64 for SDXL): on
//!   CUDA that shape measured 83 ms at `[2, 320, 128, 128]` against PyTorch's 0.14 ms
//!   (`../shared/perf/`). Here each group is split into `K` chunks: `B * G * K` partial
//!   sums (thousands of parallel outputs), then `K` of them per group. Same two-pass
//!   arithmetic (mean, then the mean of centred squares: no `E[x^2] - E[x]^2`
//!   cancellation); only the summation order changes.
use burn::nn::{GroupNorm, LayerNorm};
use burn::tensor::backend::Backend;
use burn::tensor::{DType, FloatDType, Tensor};

use crate::precision::{cast, cast_module};

/// Groups longer than this are reduced in two stages.
const SPLIT_ABOVE: usize = 4096;

/// The chunk count for a group of `n` values: the divisor of `n` closest to `sqrt(n)`
/// from below, 1 (no split) for short groups or when `n` has no divisor >= 16 there.
pub fn group_chunks(n: usize) -> usize {
    if n <= SPLIT_ABOVE {
        return 1;
    }
    let mut k = (n as f64).sqrt() as usize;
    while k >= 16 {
        if n.is_multiple_of(k) {
            return k;
        }
        k -= 1;
    }
    1
}

/// Sums `x` `[R, n]` over its last dimension in two stages of `k` chunks.
///
/// # Shapes
/// - `x`: `[R, n]` -> `[R, 1]`
fn sum_rows<B: Backend>(x: Tensor<B, 2>, k: usize) -> Tensor<B, 2> {
    let [r, n] = x.dims();
    if k <= 1 {
        return x.sum_dim(1);
    }
    x.reshape([r, k, n / k])
        .sum_dim(2)
        .sum_dim(1)
        .reshape([r, 1])
}

/// GroupNorm of `x` with `norm`'s groups, epsilon and affine parameters (diffusers'
/// `nn.GroupNorm`), computed in f32 for a non-f32 `x` and with the two-stage reduction.
///
/// # Shapes
/// - `x`: `[B, C, ...]` -> same (and the same float type)
pub fn group_norm<B: Backend, const D: usize>(
    norm: &GroupNorm<B>,
    x: Tensor<B, D>,
) -> Tensor<B, D> {
    let dtype = x.dtype();
    let x = cast(x, DType::F32);
    let shape = x.shape();
    let dims = x.dims();
    let (b, c, g) = (dims[0], dims[1], norm.num_groups);
    let n = shape.num_elements() / (b * g);
    let k = group_chunks(n);
    let rows = x.reshape([b * g, n]);
    let mean = sum_rows(rows.clone(), k).div_scalar(n as f64);
    let centred = rows - mean;
    let var = sum_rows(centred.clone().square(), k).div_scalar(n as f64);
    let normed = (centred / var.add_scalar(norm.epsilon).sqrt()).reshape(dims);
    let out = match (&norm.gamma, &norm.beta) {
        (Some(gamma), Some(beta)) if norm.affine => {
            let mut affine = [1; D];
            affine[1] = c;
            normed * cast(gamma.val(), DType::F32).reshape(affine)
                + cast(beta.val(), DType::F32).reshape(affine)
        }
        _ => normed,
    };
    cast(out, dtype)
}

/// `norm.forward(x)` (burn's fused LayerNorm op), in f32 for a non-f32 `x`.
///
/// # Shapes
/// - `x`: `[..., d_model]` -> same (and the same float type)
pub fn layer_norm<B: Backend, const D: usize>(
    norm: &LayerNorm<B>,
    x: Tensor<B, D>,
) -> Tensor<B, D> {
    let dtype = x.dtype();
    if dtype == DType::F32 {
        return norm.forward(x);
    }
    let norm = cast_module(norm.clone(), FloatDType::F32);
    cast(norm.forward(x.cast(FloatDType::F32)), dtype)
}
