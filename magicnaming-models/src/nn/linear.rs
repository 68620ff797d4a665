//! The Linear forward of the CLIP towers and text encoders (the modules stay burn's
//! [`Linear`], so checkpoint keys and records are unchanged): burn's own op, except f32
//! on burn-flex, where [`super::kernels::linear`] runs one product over all leading axes
//! with the bias folded in.
use burn::nn::Linear;
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;

/// `layer.forward(x)`, by our own path on burn-flex (see the module docs).
///
/// # Shapes
/// - `x`: `[..., d_input]` -> `[..., d_output]`
pub fn linear<B: Backend, const D: usize>(layer: &Linear<B>, x: Tensor<B, D>) -> Tensor<B, D> {
    match super::kernels::linear(layer, x) {
        Ok(y) => y,
        Err(x) => layer.forward(x),
    }
}
