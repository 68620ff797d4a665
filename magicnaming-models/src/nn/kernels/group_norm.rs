//! GroupNorm (optionally fused with SiLU) as three CubeCL kernels, for any cubecl runtime.
//!
//! Twin of `torch.nn.functional.group_norm` (+ `F.silu`) as diffusers' ResnetBlock2D
//! calls it, with PyTorch's precision rule: statistics and the affine transform in f32
//! whatever the input's type, the result rounded once to the input's type.
//!
//! 1. `chunk_moments`: the `N * G` groups are cut into chunks of `CHUNK` values; one cube
//!    per (chunk, group) computes the chunk's mean and sum of squared deviations `M2` of
//!    `x - K` in f32 (K: the group's first value, so a large mean costs no precision),
//!    two-pass (the second pass re-reads the chunk, from cache). Many cubes per group
//!    keep the GPU busy: at SDXL's first level (`[2, 320, 128, 128]`) 80 chunks x 64
//!    groups.
//! 2. `group_stats`: one unit per group merges its chunks' (count, mean, M2) with Chan et
//!    al.'s pairwise formula (as PyTorch's Welford reduction does), and writes the mean
//!    and `1 / sqrt(var + eps)` (biased variance, as PyTorch).
//! 3. `normalize`: one unit per value: `(x - mean) * rstd * gamma[c] + beta[c]`, then
//!    `v * sigmoid(v)` when fused with SiLU, cast to the input's type.
//!
//! The input is read twice from memory (plus the cached re-read of step 1) and written
//! once, instead of the cast, statistics, normalisation, cast back and SiLU passes of
//! the generic path.
use burn::nn::GroupNorm;
use burn::tensor::backend::Backend;
use burn::tensor::{DType, Shape, Tensor as BurnTensor, TensorPrimitive};
use burn_cubecl::CubeRuntime;
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::ops::numeric::empty_device_dtype;
use burn_cubecl::tensor::CubeTensor;
use cubecl::{calculate_cube_count_elemwise, prelude::*};

use super::dispatch::{CubeOp, launch};
use super::downcast::primitive;
use super::switch::enabled;

/// Units per cube in the reductions (a power of two, for the tree sum).
const BLOCK: u32 = 256;
/// Values each unit of `chunk_moments` reads (unrolled: independent loads in flight).
const PER_UNIT: u32 = 8;
/// Values per chunk of a group.
const CHUNK: u32 = BLOCK * PER_UNIT;

/// Mean and sum of squared deviations (`M2`) of one chunk of one group, in f32.
#[cube(launch)]
fn chunk_moments<F: Float>(
    input: &Tensor<F>,
    partials: &mut Tensor<f32>,
    group_len: u32,
    #[comptime] block: u32,
    #[comptime] per_unit: u32,
    #[define(F)] _dtype: StorageType,
) {
    let chunk = CUBE_POS_X as usize;
    let group = CUBE_POS_Y as usize;
    let chunks = CUBE_COUNT_X as usize;
    let unit = UNIT_POS_X as usize;
    let len = group_len as usize;
    let base = group * len;
    let chunk_len = (block * per_unit) as usize;
    let start = chunk * chunk_len;
    let count = select(len - start < chunk_len, len - start, chunk_len);
    // Moments of `x - K`, K = the group's first value: keeps the mean's rounding relative
    // to the spread, not to |mean| (`group_stats` adds K back).
    let shift = f32::cast_from(input[base]);
    let mut shared = SharedMemory::<f32>::new(block as usize);

    // Pass 1: the chunk's mean.
    let mut sum = 0.0f32;
    #[unroll]
    for j in 0..per_unit {
        let idx = start + (j * block) as usize + unit;
        if idx < len {
            sum += f32::cast_from(input[base + idx]) - shift;
        }
    }
    let mean = block_sum(&mut shared, unit, sum) / count as f32;

    // Pass 2: squared deviations from it (the chunk is in cache by now).
    let mut m2 = 0.0f32;
    #[unroll]
    for j in 0..per_unit {
        let idx = start + (j * block) as usize + unit;
        if idx < len {
            let d = f32::cast_from(input[base + idx]) - shift - mean;
            m2 += d * d;
        }
    }
    let m2 = block_sum(&mut shared, unit, m2);

    if unit == 0 {
        let out = (group * chunks + chunk) * 2;
        partials[out] = mean;
        partials[out + 1] = m2;
    }
}

/// Sum of `value` over the cube's units (a power of two), through `shared` (one slot per
/// unit); every unit gets the sum, and `shared` is free again when this returns.
#[cube]
fn block_sum(shared: &mut SharedMemory<f32>, unit: usize, value: f32) -> f32 {
    shared[unit] = value;
    sync_cube();
    let mut stride = CUBE_DIM_X as usize / 2;
    while stride > 0 {
        if unit < stride {
            shared[unit] += shared[unit + stride];
        }
        sync_cube();
        stride /= 2;
    }
    let total = shared[0];
    sync_cube(); // every unit has read shared[0] before anyone writes `shared` again
    total
}

/// Mean and `1 / sqrt(var + eps)` of each group, merging its chunks' moments.
#[cube(launch)]
fn group_stats<F: Float>(
    input: &Tensor<F>,
    partials: &Tensor<f32>,
    stats: &mut Tensor<f32>,
    group_len: u32,
    chunks: u32,
    chunk_len: u32,
    epsilon: f32,
    #[define(F)] _dtype: StorageType,
) {
    let group = ABSOLUTE_POS;
    if group >= stats.len() / 2 {
        terminate!();
    }
    let n_chunks = chunks as usize;
    let (len, chunk_len) = (group_len as usize, chunk_len as usize);
    let mut count = 0.0f32;
    let mut mean = 0.0f32;
    let mut m2 = 0.0f32;
    for chunk in 0..n_chunks {
        let at = (group * n_chunks + chunk) * 2;
        let left = len - chunk * chunk_len;
        let n_b = select(left < chunk_len, left, chunk_len) as f32;
        let total = count + n_b;
        let delta = partials[at] - mean;
        mean += delta * (n_b / total);
        m2 += partials[at + 1] + delta * delta * (count * (n_b / total));
        count = total;
    }
    stats[group * 2] = f32::cast_from(input[group * len]) + mean;
    stats[group * 2 + 1] = 1.0f32 / f32::sqrt(m2 / count + epsilon);
}

/// `(x - mean) * rstd * gamma[c] + beta[c]` (then SiLU), one unit per value.
#[cube(launch)]
fn normalize<F: Float, P: Float>(
    input: &Tensor<F>,
    stats: &Tensor<f32>,
    gamma: &Tensor<P>,
    beta: &Tensor<P>,
    output: &mut Tensor<F>,
    group_len: u32,
    spatial: u32,
    channels: u32,
    #[comptime] silu: bool,
    #[define(F, P)] _dtypes: [StorageType; 2],
) {
    let idx = ABSOLUTE_POS;
    if idx >= output.len() {
        terminate!();
    }
    let group = idx / group_len as usize;
    let channel = (idx / spatial as usize) % channels as usize;
    let mean = stats[group * 2];
    let rstd = stats[group * 2 + 1];
    let mut v = (f32::cast_from(input[idx]) - mean) * rstd;
    v = v * f32::cast_from(gamma[channel]) + f32::cast_from(beta[channel]);
    if silu {
        v /= 1.0f32 + f32::exp(-v);
    }
    output[idx] = F::cast_from(v);
}

/// Whether `chunk_moments`' grid (chunks x groups) stays within 65535 cubes per
/// dimension, the limit of wgpu (and of CUDA's y dimension).
fn grid_fits(total_groups: usize, group_len: usize) -> bool {
    const MAX: usize = 65535;
    total_groups <= MAX && group_len.div_ceil(CHUNK as usize) <= MAX
}

/// Whether the kernels take this float type (inputs and parameters).
fn supported(dtype: DType) -> bool {
    matches!(dtype, DType::F32 | DType::F16 | DType::BF16)
}

/// GroupNorm settings; inputs `[x, gamma, beta]`.
#[derive(Clone, Copy, Debug)]
struct GroupNormOp {
    groups: usize,
    epsilon: f64,
    silu: bool,
}

impl CubeOp for GroupNormOp {
    fn id(&self) -> &'static str {
        if self.silu {
            "magicnaming_group_norm_silu"
        } else {
            "magicnaming_group_norm"
        }
    }

    fn run<R: CubeRuntime>(&self, inputs: Vec<CubeTensor<R>>) -> CubeTensor<R> {
        let [x, gamma, beta]: [CubeTensor<R>; 3] = inputs
            .try_into()
            .expect("group_norm is launched with [x, gamma, beta]");
        group_norm(x, gamma, beta, self.groups, self.epsilon, self.silu)
    }
}

/// See [`super::group_norm`].
pub(super) fn forward<B: Backend, const D: usize>(
    norm: &GroupNorm<B>,
    x: BurnTensor<B, D>,
    silu: bool,
) -> Result<BurnTensor<B, D>, BurnTensor<B, D>> {
    let (Some(gamma), Some(beta)) = (&norm.gamma, &norm.beta) else {
        return Err(x);
    };
    let (gamma, beta) = (gamma.val(), beta.val());
    let dims = x.dims();
    let numel: usize = dims.iter().product();
    let applies = enabled()
        && D >= 2
        && norm.num_groups > 0
        && dims[1] == norm.num_channels
        && norm.num_channels.is_multiple_of(norm.num_groups)
        && numel > 0
        && u32::try_from(numel).is_ok()
        && grid_fits(
            dims[0] * norm.num_groups,
            numel / (dims[0] * norm.num_groups),
        )
        && supported(x.dtype())
        && supported(gamma.dtype())
        && gamma.dtype() == beta.dtype()
        && gamma.dims() == [norm.num_channels]
        && beta.dims() == [norm.num_channels];
    if !applies {
        return Err(x);
    }
    let op = GroupNormOp {
        groups: norm.num_groups,
        epsilon: norm.epsilon,
        silu,
    };
    let shape = Shape::from(dims.to_vec());
    let inputs = vec![primitive(x), primitive(gamma), primitive(beta)];
    launch::<B, _, D>(op, inputs, shape).map_err(|inputs| {
        let x = inputs.into_iter().next().expect("inputs come back whole");
        BurnTensor::from_primitive(TensorPrimitive::Float(x))
    })
}

/// GroupNorm of `input` over `groups` groups with per-channel `gamma` and `beta`, then
/// SiLU when `silu`. The caller checks the shapes, the float types ([`supported`]) and
/// that the sizes fit `u32` ([`forward`]).
///
/// # Shapes
/// - `input`: `[N, C, ...]` -> same shape and float type
/// - `gamma`, `beta`: `[C]` (any supported float type)
fn group_norm<R: CubeRuntime>(
    input: CubeTensor<R>,
    gamma: CubeTensor<R>,
    beta: CubeTensor<R>,
    groups: usize,
    epsilon: f64,
    silu: bool,
) -> CubeTensor<R> {
    let input = into_contiguous(input);
    let gamma = into_contiguous(gamma);
    let beta = into_contiguous(beta);
    let dims = input.meta.shape().to_vec();
    let (batch, channels) = (dims[0], dims[1]);
    let spatial: usize = dims[2..].iter().product();
    let group_len = channels / groups * spatial;
    let total_groups = batch * groups;
    let chunks = group_len.div_ceil(CHUNK as usize);
    let client = input.client.clone();
    let device = input.device.clone();
    let dtype = input.dtype;

    let partials = empty_device_dtype::<R>(
        client.clone(),
        device.clone(),
        Shape::new([total_groups * chunks * 2]),
        DType::F32,
    );
    chunk_moments::launch::<R>(
        &client,
        CubeCount::Static(chunks as u32, total_groups as u32, 1),
        CubeDim::new_1d(BLOCK),
        input.clone().into_tensor_arg(),
        partials.clone().into_tensor_arg(),
        group_len as u32,
        BLOCK,
        PER_UNIT,
        dtype.into(),
    );

    let stats = empty_device_dtype::<R>(
        client.clone(),
        device.clone(),
        Shape::new([total_groups * 2]),
        DType::F32,
    );
    let cube_dim = CubeDim::new(&client, total_groups);
    group_stats::launch::<R>(
        &client,
        calculate_cube_count_elemwise(&client, total_groups, cube_dim),
        cube_dim,
        input.clone().into_tensor_arg(),
        partials.into_tensor_arg(),
        stats.clone().into_tensor_arg(),
        group_len as u32,
        chunks as u32,
        CHUNK,
        epsilon as f32,
        dtype.into(),
    );

    let output = empty_device_dtype::<R>(client.clone(), device, Shape::from(dims), dtype);
    let count = output.meta.num_elements();
    let cube_dim = CubeDim::new(&client, count);
    let param_dtype = gamma.dtype;
    normalize::launch::<R>(
        &client,
        calculate_cube_count_elemwise(&client, count, cube_dim),
        cube_dim,
        input.into_tensor_arg(),
        stats.into_tensor_arg(),
        gamma.into_tensor_arg(),
        beta.into_tensor_arg(),
        output.clone().into_tensor_arg(),
        group_len as u32,
        spatial as u32,
        channels as u32,
        silu,
        [dtype.into(), param_dtype.into()],
    );
    output
}
