//! Timestep embeddings, as diffusers' `models/embeddings.py`: `get_timestep_embedding`,
//! `Timesteps` (sinusoidal, no weights) and `TimestepEmbedding` (`linear_1`, SiLU,
//! `linear_2`).
use burn::config::Config;
use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::tensor::activation::silu;
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};

/// diffusers' `get_timestep_embedding`: sinusoidal embeddings of (possibly fractional)
/// timesteps.
///
/// The frequencies are computed on the host in float32 exactly as PyTorch does
/// (`exp(-ln(max_period) * i / (half - downscale_freq_shift))`), then multiplied by the
/// timesteps on the device; `flip_sin_to_cos` puts the cosines first; an odd
/// `embedding_dim` gets one zero column at the end.
///
/// # Shapes
/// - `timesteps`: `[N]`
/// - output: `[N, embedding_dim]`, in the timesteps' float type
pub fn get_timestep_embedding<B: Backend>(
    timesteps: Tensor<B, 1>,
    embedding_dim: usize,
    flip_sin_to_cos: bool,
    downscale_freq_shift: f64,
    scale: f64,
    max_period: f64,
) -> Tensor<B, 2> {
    let (device, dtype) = (timesteps.device(), timesteps.dtype());
    let [n] = timesteps.dims();
    let half = embedding_dim / 2;
    // PyTorch: the Python scalars are cast to float32 before the element-wise ops.
    let log_period = -(max_period.ln() as f32);
    let denominator = (half as f64 - downscale_freq_shift) as f32;
    let freqs: Vec<f32> = (0..half)
        .map(|i| (((log_period * i as f32) / denominator) as f64).exp() as f32)
        .collect();
    let freqs = Tensor::<B, 1>::from_data(TensorData::new(freqs, [half]), (&device, dtype));
    let mut args = timesteps.reshape([n, 1]) * freqs.reshape([1, half]);
    if scale != 1.0 {
        args = args.mul_scalar(scale);
    }
    let (sin, cos) = (args.clone().sin(), args.cos());
    let emb = if flip_sin_to_cos {
        Tensor::cat(vec![cos, sin], 1)
    } else {
        Tensor::cat(vec![sin, cos], 1)
    };
    if embedding_dim % 2 == 1 {
        Tensor::cat(vec![emb, Tensor::zeros([n, 1], (&device, dtype))], 1)
    } else {
        emb
    }
}

/// Configuration of [`Timesteps`].
#[derive(Config, Debug)]
pub struct TimestepsConfig {
    /// Embedding width.
    pub num_channels: usize,
    /// Cosines first (`true` for SDXL).
    pub flip_sin_to_cos: bool,
    /// `freq_shift` of the UNet config (0 for SDXL).
    pub downscale_freq_shift: f64,
}

/// diffusers' `Timesteps`: the sinusoidal projection, without weights.
#[derive(Module, Clone, Debug)]
pub struct Timesteps {
    num_channels: usize,
    flip_sin_to_cos: bool,
    downscale_freq_shift: f64,
}

impl TimestepsConfig {
    /// Builds the projection.
    pub fn init(&self) -> Timesteps {
        Timesteps {
            num_channels: self.num_channels,
            flip_sin_to_cos: self.flip_sin_to_cos,
            downscale_freq_shift: self.downscale_freq_shift,
        }
    }
}

impl Timesteps {
    /// # Shapes
    /// - `timesteps`: `[N]`
    /// - output: `[N, num_channels]`
    pub fn forward<B: Backend>(&self, timesteps: Tensor<B, 1>) -> Tensor<B, 2> {
        get_timestep_embedding(
            timesteps,
            self.num_channels,
            self.flip_sin_to_cos,
            self.downscale_freq_shift,
            1.0,
            10000.0,
        )
    }

    /// Embedding width.
    pub fn num_channels(&self) -> usize {
        self.num_channels
    }
}

/// Configuration of [`TimestepEmbedding`] (SiLU activation, no conditioning projection).
#[derive(Config, Debug)]
pub struct TimestepEmbeddingConfig {
    /// Input width.
    pub in_channels: usize,
    /// Output width (`time_embed_dim`).
    pub time_embed_dim: usize,
}

/// diffusers' `TimestepEmbedding`: `linear_2(silu(linear_1(x)))`.
#[derive(Module, Debug)]
pub struct TimestepEmbedding<B: Backend> {
    /// First projection.
    pub linear_1: Linear<B>,
    /// Second projection.
    pub linear_2: Linear<B>,
}

impl TimestepEmbeddingConfig {
    /// Builds the layer with fresh (lazily initialised) weights.
    pub fn init<B: Backend>(&self, device: &B::Device) -> TimestepEmbedding<B> {
        TimestepEmbedding {
            linear_1: LinearConfig::new(self.in_channels, self.time_embed_dim).init(device),
            linear_2: LinearConfig::new(self.time_embed_dim, self.time_embed_dim).init(device),
        }
    }
}

impl<B: Backend> TimestepEmbedding<B> {
    /// # Shapes
    /// - `x`: `[N, in_channels]`
    /// - output: `[N, time_embed_dim]`
    pub fn forward(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        self.linear_2.forward(silu(self.linear_1.forward(x)))
    }
}
