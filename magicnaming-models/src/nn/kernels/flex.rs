//! What the burn-flex paths share: moving tensors between a generic `B: Backend` and
//! burn-flex's `FlexTensor`, and an output buffer that several workers write.
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorPrimitive};
use burn_flex::FlexTensor;

use super::downcast::{downcast, primitive};

/// `x`'s burn-flex tensor, or `x` back when `B` is not burn-flex.
pub(super) fn to_flex<B: Backend, const D: usize>(
    x: Tensor<B, D>,
) -> Result<FlexTensor, Tensor<B, D>> {
    downcast::<_, FlexTensor>(primitive(x))
        .map_err(|x| Tensor::from_primitive(TensorPrimitive::Float(x)))
}

/// A module parameter's burn-flex tensor, once its input was found on burn-flex
/// ([`to_flex`]): a module and its input share one backend.
pub(super) fn param<B: Backend, const D: usize>(t: Tensor<B, D>) -> FlexTensor {
    downcast::<_, FlexTensor>(primitive(t)).expect("the module's parameters are on x's backend")
}

/// A burn-flex tensor as `B`'s, once `B` was found to be burn-flex ([`to_flex`]).
pub(super) fn from_flex<B: Backend, const D: usize>(t: FlexTensor) -> Tensor<B, D> {
    let t = downcast(t).expect("B's float primitive is FlexTensor here");
    Tensor::from_primitive(TensorPrimitive::Float(t))
}

/// An output pointer shared by workers that each write their own part of it.
#[derive(Clone, Copy)]
pub(super) struct Output(pub(super) *mut f32);
// SAFETY: the parts the workers write are disjoint (distinct images, rows or columns).
unsafe impl Send for Output {}
unsafe impl Sync for Output {}

impl Output {
    /// The pointer `offset` elements on (a method, so that closures capture the whole
    /// `Output` rather than its raw-pointer field).
    ///
    /// # Safety
    /// `offset` is within the output buffer.
    pub(super) unsafe fn at(self, offset: usize) -> *mut f32 {
        // SAFETY: the caller keeps `offset` within the buffer.
        unsafe { self.0.add(offset) }
    }
}
