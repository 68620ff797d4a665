//! The Conv2d forward every model here uses (the modules stay burn's [`Conv2d`], so
//! checkpoint keys and records are unchanged): burn's own op, except where
//! [`super::kernels::conv2d`] has a path of its own: f32 on burn-flex (im2col + `gemm`
//! over bands of output rows; the UNet step 1.5x and the VAE decode 1.9x faster than on
//! burn-flex's op, `docs/BENCHMARKS.md`), and f16/bf16 on
//! a cubecl device without tensor cores (burn's op in f32, cast back, because burn's f16
//! convolution there sums in f16).
use burn::nn::conv::Conv2d;
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;

/// `conv.forward(x)`, by our own path on burn-flex (f32) and in f32 for half-precision
/// tensors on cubecl devices without tensor cores (see the module docs).
///
/// # Shapes
/// - `x`: `[N, C_in, H, W]` -> `[N, C_out, H_out, W_out]`
pub fn conv2d<B: Backend>(conv: &Conv2d<B>, x: Tensor<B, 4>) -> Tensor<B, 4> {
    match super::kernels::conv2d(conv, x) {
        Ok(y) => y,
        Err(x) => conv.forward(x),
    }
}
