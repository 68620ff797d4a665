//! Recognising a cubecl backend from a generic `B: Backend` and running our kernels on
//! its tensors: plain `CubeBackend<R, ..>` tensors are `CubeTensor<R>`, fused ones
//! (`Fusion<CubeBackend<R, ..>>`, burn's default `Cuda` / `Wgpu`) are
//! `FusionTensor<FusionCubeRuntime<R>>`, for each runtime `R` compiled in.
use core::any::Any;
use core::fmt;
use core::marker::PhantomData;

use burn::tensor::backend::Backend;
use burn::tensor::{Shape, Tensor, TensorPrimitive};
use burn_cubecl::fusion::FusionCubeRuntime;
use burn_cubecl::tensor::CubeTensor;
use burn_cubecl::{CubeBackend, CubeRuntime};
use burn_fusion::stream::{Operation, OperationStreams};
use burn_fusion::{FusionRuntime, FusionTensor};
use burn_ir::{CustomOpIr, HandleContainer, OperationIr, OperationOutput, TensorIr};
use cubecl::prelude::ComputeClient;

/// The plain backend whose handles a fusion stream of runtime `R` holds (the float and
/// int element types do not matter: handles carry their own dtype).
type Plain<R> = CubeBackend<R, f32, i32, u8>;
type Fused<R> = FusionTensor<FusionCubeRuntime<R>>;

/// One of our kernels: float tensors of one runtime in, one float tensor out, with the
/// settings it needs in `self`.
pub(super) trait CubeOp: Clone + fmt::Debug + Send + Sync + 'static {
    /// Name of the operation in the fusion stream.
    fn id(&self) -> &'static str;
    /// Whether the kernel is the one to run on this device (e.g. only where burn's own
    /// op would lose precision).
    fn applies<R: CubeRuntime>(&self, client: &ComputeClient<R>) -> bool;
    /// Runs the kernel on `inputs` (in the order given to [`launch`]).
    fn run<R: CubeRuntime>(&self, inputs: Vec<CubeTensor<R>>) -> CubeTensor<R>;
}

/// `value` as a `U` when `T` and `U` are the same type; otherwise `value` back.
fn downcast<T: 'static, U: 'static>(value: T) -> Result<U, T> {
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

/// Runs `op` on `inputs` (same backend `B`) when `B` is a cubecl backend compiled in and
/// `op` applies there; the output has shape `out_shape` and the first input's dtype.
/// Otherwise the inputs come back untouched.
pub(super) fn launch<B: Backend, O: CubeOp, const D: usize>(
    op: O,
    inputs: Vec<B::FloatTensorPrimitive>,
    out_shape: Shape,
) -> Result<Tensor<B, D>, Vec<B::FloatTensorPrimitive>> {
    let wrap = |y| Tensor::from_primitive(TensorPrimitive::Float(y));
    #[cfg(feature = "cuda")]
    let inputs = match on_runtime::<B, O, cubecl::cuda::CudaRuntime>(&op, inputs, &out_shape) {
        Ok(y) => return Ok(wrap(y)),
        Err(inputs) => inputs,
    };
    #[cfg(feature = "wgpu")]
    let inputs = match on_runtime::<B, O, cubecl::wgpu::WgpuRuntime>(&op, inputs, &out_shape) {
        Ok(y) => return Ok(wrap(y)),
        Err(inputs) => inputs,
    };
    #[cfg(not(any(feature = "cuda", feature = "wgpu")))]
    let _ = (op, out_shape, wrap);
    Err(inputs)
}

/// Runs `op` when `B`'s tensors are runtime `R`'s (plain or fused).
fn on_runtime<B: Backend, O: CubeOp, R: CubeRuntime>(
    op: &O,
    inputs: Vec<B::FloatTensorPrimitive>,
    out_shape: &Shape,
) -> Result<B::FloatTensorPrimitive, Vec<B::FloatTensorPrimitive>> {
    let inputs = match downcast::<_, Vec<CubeTensor<R>>>(inputs) {
        Ok(cube) => {
            if cube.is_empty() || !op.applies(&cube[0].client) {
                return Err(downcast(cube).expect("the same type as above"));
            }
            return Ok(downcast(op.run(cube)).expect("CubeTensor<R> is B's primitive here"));
        }
        Err(inputs) => inputs,
    };
    match downcast::<_, Vec<Fused<R>>>(inputs) {
        Ok(fused) => {
            let applies = fused
                .first()
                .is_some_and(|x| op.applies(&R::client(x.client.device())));
            if !applies {
                return Err(downcast(fused).expect("the same type as above"));
            }
            let y = register(op.clone(), fused, out_shape.clone());
            Ok(downcast(y).expect("FusionTensor<R> is B's primitive here"))
        }
        Err(inputs) => Err(inputs),
    }
}

/// A kernel as a custom operation of the fusion stream.
struct FusedOp<R, O> {
    desc: CustomOpIr,
    op: O,
    _runtime: PhantomData<fn() -> R>,
}

impl<R, O: fmt::Debug> fmt::Debug for FusedOp<R, O> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FusedOp")
            .field("desc", &self.desc)
            .field("op", &self.op)
            .finish()
    }
}

impl<R: CubeRuntime, O: CubeOp> Operation<FusionCubeRuntime<R>> for FusedOp<R, O> {
    fn execute(
        &self,
        handles: &mut HandleContainer<<FusionCubeRuntime<R> as FusionRuntime>::FusionHandle>,
    ) {
        let inputs = self
            .desc
            .inputs
            .iter()
            .map(|t| handles.get_float_tensor::<Plain<R>>(t))
            .collect();
        let y = self.op.run(inputs);
        handles.register_float_tensor::<Plain<R>>(&self.desc.outputs[0].id, y);
    }
}

/// Queues `op` on the fusion stream of its inputs (after the ops that make them).
fn register<R: CubeRuntime, O: CubeOp>(op: O, inputs: Vec<Fused<R>>, out_shape: Shape) -> Fused<R> {
    let client = inputs[0].client.clone();
    let dtype = inputs[0].dtype;
    let streams = OperationStreams::with_inputs(inputs.iter());
    let out = TensorIr::uninit(client.create_empty_handle(), out_shape, dtype);
    let irs: Vec<TensorIr> = inputs.into_iter().map(|t| t.into_ir()).collect();
    let desc = CustomOpIr::new(op.id(), &irs, &[out]);
    let fused = FusedOp::<R, O> {
        desc: desc.clone(),
        op,
        _runtime: PhantomData,
    };
    client
        .register(streams, OperationIr::Custom(desc), fused)
        .output()
}
