//! Recognising a backend's tensor type from a generic `B: Backend` (`core::any::Any`),
//! shared by the cubecl dispatch and the burn-flex paths.
use core::any::Any;

use burn::tensor::Tensor;
use burn::tensor::backend::Backend;

/// `value` as a `U` when `T` and `U` are the same type; otherwise `value` back.
pub(super) fn downcast<T: 'static, U: 'static>(value: T) -> Result<U, T> {
    let mut slot = Some(value);
    if let Some(target) = (&mut slot as &mut dyn Any).downcast_mut::<Option<U>>() {
        // `target` is `slot`, which was filled above.
        return Ok(target.take().expect("slot was filled above"));
    }
    Err(slot.expect("slot is only taken on the Ok path"))
}

/// The float primitive of a tensor (dequantised if quantised).
pub(super) fn primitive<B: Backend, const D: usize>(t: Tensor<B, D>) -> B::FloatTensorPrimitive {
    t.into_primitive().tensor()
}
