//! Per-channel operations of the face models: BatchNorm with its running statistics
//! (eval mode) and PReLU, alone or one after the other (the modules stay burn's
//! [`BatchNorm`] / [`PRelu`], so checkpoint keys and records are unchanged).
//!
//! Eval BatchNorm is `x * scale + shift` per channel with `scale = gamma / sqrt(var +
//! eps)` and `shift = beta - mean * scale`, whatever the backend (burn's `BatchNorm`
//! module uses batch statistics on autodiff backends). On burn-flex the transform and the
//! PReLU run as one pass of our own ([`super::kernels::channel_affine_prelu`]); elsewhere
//! as burn's broadcast ops and `prelu`.
use burn::nn::{BatchNorm, PRelu};
use burn::tensor::Tensor;
use burn::tensor::activation;
use burn::tensor::backend::Backend;

use super::kernels::channel_affine_prelu;

/// The per-channel `(scale, shift)` of `bn` with its running statistics.
fn affine<B: Backend>(bn: &BatchNorm<B>) -> (Tensor<B, 1>, Tensor<B, 1>) {
    let scale = bn.gamma.val() / (bn.running_var.value() + bn.epsilon).sqrt();
    let shift = bn.beta.val() - bn.running_mean.value() * scale.clone();
    (scale, shift)
}

/// `x * scale + shift` per channel, then PReLU with `alpha`, each when given.
fn forward<B: Backend, const D: usize>(
    x: Tensor<B, D>,
    affine: Option<(Tensor<B, 1>, Tensor<B, 1>)>,
    alpha: Option<Tensor<B, 1>>,
) -> Tensor<B, D> {
    let x = match channel_affine_prelu(x, affine.clone(), alpha.clone()) {
        Ok(y) => return y,
        Err(x) => x,
    };
    let x = match affine {
        Some((scale, shift)) => {
            let mut shape = [1usize; D];
            shape[1] = x.dims()[1];
            x * scale.reshape(shape) + shift.reshape(shape)
        }
        None => x,
    };
    match alpha {
        Some(alpha) => activation::prelu(x, alpha),
        None => x,
    }
}

/// BatchNorm with the running statistics (eval mode), whatever the backend.
///
/// # Shapes
/// - `x`: `[N, C, ...]` -> same
pub fn batch_norm_eval<B: Backend, const D: usize>(
    bn: &BatchNorm<B>,
    x: Tensor<B, D>,
) -> Tensor<B, D> {
    forward(x, Some(affine(bn)), None)
}

/// `prelu.forward(batch_norm_eval(bn, x))`.
///
/// # Shapes
/// - `x`: `[N, C, ...]` -> same
pub fn batch_norm_prelu<B: Backend, const D: usize>(
    bn: &BatchNorm<B>,
    prelu: &PRelu<B>,
    x: Tensor<B, D>,
) -> Tensor<B, D> {
    forward(x, Some(affine(bn)), Some(prelu.alpha.val()))
}

/// `prelu.forward(x)`.
///
/// # Shapes
/// - `x`: `[N, C, ...]` -> same
pub fn prelu<B: Backend, const D: usize>(prelu: &PRelu<B>, x: Tensor<B, D>) -> Tensor<B, D> {
    forward(x, None, Some(prelu.alpha.val()))
}
