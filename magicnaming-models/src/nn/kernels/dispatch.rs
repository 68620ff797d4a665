//! Recognising a cubecl backend from a generic `B: Backend` and running our kernels on
//! its tensors: plain `CubeBackend<R, ..>` tensors are `CubeTensor<R>`, fused ones
//! (`Fusion<CubeBackend<R, ..>>`, burn's default `Cuda` / `Wgpu`) are
//! `FusionTensor<FusionCubeRuntime<R>>`, for each runtime `R` compiled in.
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

use super::downcast::downcast;

/// The plain backend whose handles a fusion stream of runtime `R` holds (the float and
/// int element types do not matter: handles carry their own dtype).
type Plain<R> = CubeBackend<R, f32, i32, u8>;
type Fused<R> = FusionTensor<FusionCubeRuntime<R>>;

/// One of our kernels: float tensors of one runtime in, one float tensor out, with the
/// settings it needs in `self`.
pub(super) trait CubeOp: Clone + fmt::Debug + Send + Sync + 'static {
    /// Name of the operation in the fusion stream.
    fn id(&self) -> &'static str;
    /// Runs the kernel on `inputs` (in the order given to [`launch`]).
    fn run<R: CubeRuntime>(&self, inputs: Vec<CubeTensor<R>>) -> CubeTensor<R>;
}

/// Runs `op` on `inputs` (same backend `B`, at least one) when `B` is a cubecl backend
/// compiled in; the output has shape `out_shape` and the first input's dtype. Otherwise
/// the inputs come back untouched.
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
            return Ok(downcast(op.run(cube)).expect("CubeTensor<R> is B's primitive here"));
        }
        Err(inputs) => inputs,
    };
    match downcast::<_, Vec<Fused<R>>>(inputs) {
        Ok(fused) => {
            let y = register(op.clone(), fused, out_shape.clone());
            Ok(downcast(y).expect("FusionTensor<R> is B's primitive here"))
        }
        Err(inputs) => Err(inputs),
    }
}

/// Whether `t` lives on a cubecl device (a runtime compiled in, plain or fused) whose
/// features list no tensor-core instructions (cmma/mma).
pub(super) fn on_device_without_tensor_cores<B: Backend>(t: B::FloatTensorPrimitive) -> bool {
    #[cfg(feature = "cuda")]
    let t = match lacks_tensor_cores::<B, cubecl::cuda::CudaRuntime>(t) {
        Ok(lacks) => return lacks,
        Err(t) => t,
    };
    #[cfg(feature = "wgpu")]
    let t = match lacks_tensor_cores::<B, cubecl::wgpu::WgpuRuntime>(t) {
        Ok(lacks) => return lacks,
        Err(t) => t,
    };
    let _ = t;
    false
}

/// `Ok(no cmma/mma)` when `t` is runtime `R`'s, else `t` back.
fn lacks_tensor_cores<B: Backend, R: CubeRuntime>(
    t: B::FloatTensorPrimitive,
) -> Result<bool, B::FloatTensorPrimitive> {
    let lacks = |client: &ComputeClient<R>| {
        let matmul = &client.properties().features.matmul;
        matmul.cmma.is_empty() && matmul.mma.is_empty()
    };
    let t = match downcast::<_, CubeTensor<R>>(t) {
        Ok(cube) => return Ok(lacks(&cube.client)),
        Err(t) => t,
    };
    match downcast::<_, Fused<R>>(t) {
        Ok(fused) => Ok(lacks(&R::client(fused.client.device()))),
        Err(t) => Err(t),
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
