//! A trainable low-rank adapter beside a frozen `Linear`, as PEFT's `lora.Linear`:
//! `y = base(x) + (x A^T) B^T * alpha / r`, with `A` (`lora_A`, "down") `[r, in]` and `B`
//! (`lora_B`, "up") `[out, r]` in PyTorch's layout. Here the two are kept as burn keeps
//! Linear weights, transposed: `down` `[in, r]`, `up` `[r, out]`.
//!
//! The adapter's parameters stay in f32 whatever type the frozen model runs in: its input
//! is cast to f32 and its output back to the input's type, so f16 base weights train an
//! f32 adapter (mixed precision as diffusers' `--mixed_precision fp16` keeps trainable
//! parameters in f32).
use burn::config::Config;
use burn::module::{Module, Param, ParamId};
use burn::tensor::backend::Backend;
use burn::tensor::{DType, Tensor, TensorData};

use super::precision::cast;

/// Configuration of [`LoraAdapter`].
#[derive(Config, Debug)]
pub struct LoraAdapterConfig {
    /// Input width of the adapted Linear.
    pub d_input: usize,
    /// Output width of the adapted Linear.
    pub d_output: usize,
    /// Rank `r`.
    pub rank: usize,
    /// `alpha`; the update is scaled by `alpha / r`.
    pub alpha: f64,
}

/// The two low-rank factors and their scale.
#[derive(Module, Debug)]
pub struct LoraAdapter<B: Backend> {
    /// `A^T`, `[in, r]`.
    pub down: Param<Tensor<B, 2>>,
    /// `B^T`, `[r, out]`.
    pub up: Param<Tensor<B, 2>>,
    /// `alpha / r`.
    pub scale: f64,
}

impl LoraAdapterConfig {
    /// The adapter from PyTorch-layout factors: `lora_a` `[r * in]` (row-major `[r, in]`)
    /// and `lora_b` `[out * r]` (row-major `[out, r]`), both trainable, in f32.
    ///
    /// # Panics
    /// When the slices do not have `r * in` and `out * r` values (callers build them from
    /// this configuration).
    pub fn init_from<B: Backend>(
        &self,
        lora_a: &[f32],
        lora_b: &[f32],
        device: &B::Device,
    ) -> LoraAdapter<B> {
        let (i, o, r) = (self.d_input, self.d_output, self.rank);
        assert_eq!(lora_a.len(), r * i, "lora_A holds r * in values");
        assert_eq!(lora_b.len(), o * r, "lora_B holds out * r values");
        let down =
            Tensor::<B, 2>::from_data(TensorData::new(lora_a.to_vec(), [r, i]), device).transpose();
        let up =
            Tensor::<B, 2>::from_data(TensorData::new(lora_b.to_vec(), [o, r]), device).transpose();
        LoraAdapter {
            down: Param::initialized(ParamId::new(), down.require_grad()),
            up: Param::initialized(ParamId::new(), up.require_grad()),
            scale: self.alpha / r as f64,
        }
    }
}

impl<B: Backend> LoraAdapter<B> {
    /// The adapter's contribution, to be added to the base Linear's output.
    ///
    /// # Shapes
    /// - `x`: `[B, L, in]`
    /// - output: `[B, L, out]`, in `x`'s float type
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let dtype = x.dtype();
        let x = cast(x, DType::F32);
        let h = x.matmul(self.down.val().unsqueeze());
        let y = h.matmul(self.up.val().unsqueeze()).mul_scalar(self.scale);
        cast(y, dtype)
    }

    /// `lora_A` in PyTorch's layout, `[r, in]`, row-major.
    pub fn lora_a(&self) -> (Vec<f32>, [usize; 2]) {
        pytorch_layout(self.down.val())
    }

    /// `lora_B` in PyTorch's layout, `[out, r]`, row-major.
    pub fn lora_b(&self) -> (Vec<f32>, [usize; 2]) {
        pytorch_layout(self.up.val())
    }

    /// Rank `r`.
    pub fn rank(&self) -> usize {
        self.down.shape().dims::<2>()[1]
    }
}

fn pytorch_layout<B: Backend>(t: Tensor<B, 2>) -> (Vec<f32>, [usize; 2]) {
    let t = cast(t, DType::F32).transpose();
    let dims = t.dims();
    let values = t
        .into_data()
        .convert::<f32>()
        .into_vec::<f32>()
        .expect("converted to f32 above");
    (values, dims)
}
