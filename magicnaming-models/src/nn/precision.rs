//! Casts between float types: tensors, whole modules, and an f32 detour for ops that
//! lose precision in f16. Which type weights load in is [`crate::weights::Precision`].
//!
//! Mixed precision follows PyTorch's kernels: a model runs in its weights' type, its
//! inputs are cast to it at the model's boundary and its outputs cast back, normalisation
//! layers compute in f32 ([`crate::nn::norm`]), and the
//! timestep embeddings are built in f32 and cast, as diffusers casts `t_emb` to the
//! sample's dtype.
use burn::module::{Module, ModuleMapper, Param};
use burn::tensor::backend::Backend;
use burn::tensor::{DType, FloatDType, Tensor};

/// Casts `x` to `dtype` (a no-op when it already has it).
pub fn cast<B: Backend, const D: usize>(x: Tensor<B, D>, dtype: DType) -> Tensor<B, D> {
    if x.dtype() == dtype {
        x
    } else {
        x.cast(float_dtype(dtype))
    }
}

/// The [`FloatDType`] of a float [`DType`] (f32 for anything that is not a float type).
pub fn float_dtype(dtype: DType) -> FloatDType {
    match dtype {
        DType::F64 => FloatDType::F64,
        DType::F16 => FloatDType::F16,
        DType::BF16 => FloatDType::BF16,
        _ => FloatDType::F32,
    }
}

/// A [`ModuleMapper`] that casts every float parameter to one type.
#[derive(Debug, Clone, Copy)]
pub struct CastParams(pub FloatDType);

impl<B: Backend> ModuleMapper<B> for CastParams {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let dtype = DType::from(self.0);
        param.map(|t| cast(t, dtype))
    }
}

/// `module` with every float parameter cast to `dtype`.
pub fn cast_module<B: Backend, M: Module<B>>(module: M, dtype: FloatDType) -> M {
    module.map(&mut CastParams(dtype))
}

/// `forward(module, x)` run in f32: the module's parameters and `x` cast to f32, the
/// result cast back to `x`'s type (what PyTorch's half-precision kernels do by
/// accumulating in f32). Used where burn's own op would lose precision in f16.
pub(crate) fn forward_in_f32<B: Backend, M: Module<B>, const D: usize>(
    module: &M,
    x: Tensor<B, D>,
    forward: impl Fn(&M, Tensor<B, D>) -> Tensor<B, D>,
) -> Tensor<B, D> {
    let dtype = x.dtype();
    let module = cast_module(module.clone(), FloatDType::F32);
    cast(forward(&module, x.cast(FloatDType::F32)), dtype)
}
