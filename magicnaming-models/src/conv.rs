//! The Conv2d forward every model here uses (the modules stay burn's [`Conv2d`], so
//! checkpoint keys and records are unchanged): burn's own op, or on a cubecl device
//! without tensor cores, for f16/bf16 tensors, our kernel that accumulates in f32
//! ([`crate::kernels::conv2d`]).
use burn::nn::conv::Conv2d;
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

/// `conv.forward(x)`, with f32 accumulation for half-precision tensors everywhere.
///
/// # Shapes
/// - `x`: `[N, C_in, H, W]` -> `[N, C_out, H_out, W_out]`
pub fn conv2d<B: Backend>(conv: &Conv2d<B>, x: Tensor<B, 4>) -> Tensor<B, 4> {
    match crate::kernels::conv2d(conv, x) {
        Ok(y) => y,
        Err(x) => conv.forward(x),
    }
}
