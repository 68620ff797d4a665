//! 2-D convolution of f16/bf16 tensors with f32 accumulation, for devices without
//! tensor-core (cmma/mma) instructions.
//!
//! There burn-cubecl's convolution autotune can only pick `conv_direct`, which sums the
//! `C_in * kh * kw` products in the tensors' own type: at SDXL's 1280 channels that is
//! 11520 f16 additions per output, and the tiny f16 pipeline on wgpu (lavapipe) ended
//! 1.04% of max |x| from diffusers, against 0.21% with f32 convolutions (README). This
//! kernel sums in f32 and rounds once, as PyTorch's f16 convolutions do. Where tensor
//! cores exist (CUDA), burn's implicit-GEMM candidates accumulate in f32 already and
//! this kernel stays out of the way.
//!
//! One unit per output value, NCHW: `bias[oc] + sum over (ic, ky, kx) of
//! x[n, ic, oy*sy + ky*dy - top, ox*sx + kx*dx - left] * w[oc, ic, ky, kx]`, zero padding.
use burn::nn::conv::Conv2d;
use burn::nn::PaddingConfig2d;
use burn::tensor::backend::Backend;
use burn::tensor::{DType, Shape, Tensor as BurnTensor, TensorPrimitive};
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::ops::numeric::empty_device_dtype;
use burn_cubecl::tensor::CubeTensor;
use burn_cubecl::CubeRuntime;
use cubecl::{calculate_cube_count_elemwise, prelude::*};

use super::dispatch::{launch, primitive, CubeOp};
use super::enabled;

#[cube(launch)]
fn conv2d_direct<F: Float>(
    input: &Tensor<F>,
    weight: &Tensor<F>,
    bias: &Tensor<F>,
    output: &mut Tensor<F>,
    stride_y: u32,
    stride_x: u32,
    dilation_y: u32,
    dilation_x: u32,
    pad_top: u32,
    pad_left: u32,
    groups: u32,
    #[comptime] has_bias: bool,
    #[define(F)] _dtype: StorageType,
) {
    let idx = ABSOLUTE_POS;
    if idx >= output.len() {
        terminate!();
    }
    let (c_out, out_h, out_w) = (output.shape(1), output.shape(2), output.shape(3));
    let (c_in, in_h, in_w) = (input.shape(1), input.shape(2), input.shape(3));
    let (c_in_group, k_h, k_w) = (weight.shape(1), weight.shape(2), weight.shape(3));

    let ox = idx % out_w;
    let oy = (idx / out_w) % out_h;
    let oc = (idx / (out_w * out_h)) % c_out;
    let n = idx / (out_w * out_h * c_out);
    let group = oc / (c_out / groups as usize);

    let y0 = (oy * stride_y as usize) as i32 - pad_top as i32;
    let x0 = (ox * stride_x as usize) as i32 - pad_left as i32;
    let (dy, dx) = (dilation_y as i32, dilation_x as i32);
    let (h, w) = (in_h as i32, in_w as i32);

    let mut acc = 0.0f32;
    for icl in 0..c_in_group {
        let in_base = (n * c_in + group * c_in_group + icl) * in_h * in_w;
        let w_base = (oc * c_in_group + icl) * k_h * k_w;
        for ky in 0..k_h {
            let iy = y0 + ky as i32 * dy;
            if iy >= 0 && iy < h {
                let row = in_base + iy as usize * in_w;
                let w_row = w_base + ky * k_w;
                for kx in 0..k_w {
                    let ix = x0 + kx as i32 * dx;
                    if ix >= 0 && ix < w {
                        acc += f32::cast_from(input[row + ix as usize])
                            * f32::cast_from(weight[w_row + kx]);
                    }
                }
            }
        }
    }
    if has_bias {
        acc += f32::cast_from(bias[oc]);
    }
    output[idx] = F::cast_from(acc);
}

/// Convolution settings; inputs `[x, weight]` or `[x, weight, bias]`.
#[derive(Clone, Copy, Debug)]
struct Conv2dOp {
    stride: [usize; 2],
    dilation: [usize; 2],
    /// Zero padding before the first row and column (after the last: implied by `out`).
    pad: [usize; 2],
    /// Output height and width.
    out: [usize; 2],
    groups: usize,
}

impl CubeOp for Conv2dOp {
    fn id(&self) -> &'static str {
        "magicnaming_conv2d_f32_accumulation"
    }

    /// Only on devices without cmma/mma instructions (see the module docs).
    fn applies<R: CubeRuntime>(&self, client: &ComputeClient<R>) -> bool {
        let matmul = &client.properties().features.matmul;
        matmul.cmma.is_empty() && matmul.mma.is_empty()
    }

    fn run<R: CubeRuntime>(&self, inputs: Vec<CubeTensor<R>>) -> CubeTensor<R> {
        let mut inputs = inputs.into_iter().map(into_contiguous);
        let x = inputs.next().expect("conv2d is launched with x first");
        let weight = inputs
            .next()
            .expect("conv2d is launched with the weight second");
        let bias = inputs.next();
        let [n, _, _, _] = x.meta.shape().dims::<4>();
        let c_out = weight.meta.shape()[0];
        let client = x.client.clone();
        let dtype = x.dtype;
        let shape = Shape::new([n, c_out, self.out[0], self.out[1]]);
        let output = empty_device_dtype::<R>(client.clone(), x.device.clone(), shape, dtype);
        let count = output.meta.num_elements();
        let cube_dim = CubeDim::new(&client, count);
        let has_bias = bias.is_some();
        let bias = bias.unwrap_or_else(|| weight.clone()); // not read without a bias
        conv2d_direct::launch::<R>(
            &client,
            calculate_cube_count_elemwise(&client, count, cube_dim),
            cube_dim,
            x.into_tensor_arg(),
            weight.into_tensor_arg(),
            bias.into_tensor_arg(),
            output.clone().into_tensor_arg(),
            self.stride[0] as u32,
            self.stride[1] as u32,
            self.dilation[0] as u32,
            self.dilation[1] as u32,
            self.pad[0] as u32,
            self.pad[1] as u32,
            self.groups as u32,
            has_bias,
            dtype.into(),
        );
        output
    }
}

/// See [`super::conv2d`].
pub(super) fn forward<B: Backend>(
    conv: &Conv2d<B>,
    x: BurnTensor<B, 4>,
) -> Result<BurnTensor<B, 4>, BurnTensor<B, 4>> {
    let dtype = x.dtype();
    let weight = conv.weight.val();
    let bias = conv.bias.as_ref().map(|b| b.val());
    let [n, c_in, h, w] = x.dims();
    let [c_out, c_in_group, k_h, k_w] = weight.dims();
    // burn's `Same` padding is left to its own forward (our models pad explicitly).
    let (top, left, bottom, right) = match conv.padding {
        PaddingConfig2d::Valid => (0, 0, 0, 0),
        PaddingConfig2d::Explicit(top, left, bottom, right) => (top, left, bottom, right),
        PaddingConfig2d::Same => return Err(x),
    };
    let out_len = |len: usize, pad: usize, k: usize, stride: usize, dilation: usize| {
        let span = dilation * (k.max(1) - 1) + 1;
        (stride > 0 && len + pad >= span).then(|| (len + pad - span) / stride + 1)
    };
    let (Some(out_h), Some(out_w)) = (
        out_len(h, top + bottom, k_h, conv.stride[0], conv.dilation[0]),
        out_len(w, left + right, k_w, conv.stride[1], conv.dilation[1]),
    ) else {
        return Err(x);
    };
    let fits = |v: usize| u32::try_from(v).is_ok();
    let applies = enabled()
        && matches!(dtype, DType::F16 | DType::BF16)
        && weight.dtype() == dtype
        && bias
            .as_ref()
            .is_none_or(|b| b.dtype() == dtype && b.dims() == [c_out])
        && conv.groups > 0
        && c_out.is_multiple_of(conv.groups)
        && c_in == c_in_group * conv.groups
        && fits(n * c_in * h * w)
        && fits(n * c_out * out_h * out_w)
        && n * c_out * out_h * out_w > 0;
    if !applies {
        return Err(x);
    }
    let op = Conv2dOp {
        stride: conv.stride,
        dilation: conv.dilation,
        pad: [top, left],
        out: [out_h, out_w],
        groups: conv.groups,
    };
    let mut inputs = vec![primitive(x), primitive(weight)];
    inputs.extend(bias.map(primitive));
    let shape = Shape::new([n, c_out, out_h, out_w]);
    launch::<B, _, 4>(op, inputs, shape).map_err(|inputs| {
        let x = inputs.into_iter().next().expect("inputs come back whole");
        BurnTensor::from_primitive(TensorPrimitive::Float(x))
    })
}
