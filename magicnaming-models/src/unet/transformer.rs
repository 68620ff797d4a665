//! diffusers' `Transformer2DModel` over continuous inputs
//! (`models/transformers/transformer_2d.py`) and its `BasicTransformerBlock`, `FeedForward`
//! and `GEGLU` (`models/attention.py`, `models/activations.py`), as the SD/SDXL UNets use
//! them: `layer_norm` blocks, self-attention, cross-attention, GEGLU feed-forward.
use burn::config::Config;
use burn::module::Module;
use burn::nn::{
    Dropout, DropoutConfig, GroupNorm, LayerNorm, LayerNormConfig, Linear, LinearConfig,
};
use burn::tensor::Tensor;
use burn::tensor::activation::gelu;
use burn::tensor::backend::Backend;

use crate::nn::attention::{Attention, AttentionConfig};
use crate::nn::norm;
use crate::nn::resnet::group_norm;

/// `GEGLU`: `proj` to twice the width, then `hidden * gelu(gate)` (exact GELU).
#[derive(Module, Debug)]
pub struct Geglu<B: Backend> {
    /// `[dim] -> [2 * inner]`: hidden half first, gate half second.
    pub proj: Linear<B>,
}

impl<B: Backend> Geglu<B> {
    /// # Shapes
    /// - `x`: `[B, L, dim]` -> `[B, L, inner]`
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let h = self.proj.forward(x);
        let [b, l, two_inner] = h.dims();
        let inner = two_inner / 2;
        let hidden = h.clone().slice([0..b, 0..l, 0..inner]);
        let gate = h.slice([0..b, 0..l, inner..two_inner]);
        hidden * gelu(gate)
    }
}

/// `FeedForward` with `activation_fn="geglu"`: `net.0` (GEGLU), `net.1` (inert dropout),
/// `net.2` (Linear back to `dim`).
#[derive(Module, Debug)]
pub struct FeedForward<B: Backend> {
    /// The three layers, named `net.0`, `net.1`, `net.2` like diffusers' `ModuleList`.
    pub net: (Geglu<B>, Dropout, Linear<B>),
}

impl<B: Backend> FeedForward<B> {
    /// # Shapes
    /// - `x`: `[B, L, dim]` -> `[B, L, dim]`
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        self.net.2.forward(self.net.0.forward(x))
    }
}

/// Configuration of [`BasicTransformerBlock`].
#[derive(Config, Debug)]
pub struct BasicTransformerBlockConfig {
    /// Width of the tokens.
    pub dim: usize,
    /// Heads.
    pub num_attention_heads: usize,
    /// Width of one head.
    pub attention_head_dim: usize,
    /// Width of the encoder hidden states (cross-attention keys/values).
    pub cross_attention_dim: usize,
    /// LayerNorm epsilon (`norm_eps`, diffusers' default 1e-5; the UNet does not change it).
    #[config(default = 1e-5)]
    pub norm_eps: f64,
}

/// `BasicTransformerBlock` (`norm_type="layer_norm"`): self-attention, cross-attention and a
/// GEGLU feed-forward, each pre-normed and residual.
#[derive(Module, Debug)]
pub struct BasicTransformerBlock<B: Backend> {
    /// Norm before self-attention.
    pub norm1: LayerNorm<B>,
    /// Self-attention.
    pub attn1: Attention<B>,
    /// Norm before cross-attention.
    pub norm2: LayerNorm<B>,
    /// Cross-attention on the encoder hidden states.
    pub attn2: Attention<B>,
    /// Norm before the feed-forward.
    pub norm3: LayerNorm<B>,
    /// Feed-forward.
    pub ff: FeedForward<B>,
}

impl BasicTransformerBlockConfig {
    /// Builds the block with fresh (lazily initialised) weights.
    pub fn init<B: Backend>(&self, device: &B::Device) -> BasicTransformerBlock<B> {
        let d = self.dim;
        let norm = || {
            LayerNormConfig::new(d)
                .with_epsilon(self.norm_eps)
                .init(device)
        };
        let attn = |cross: Option<usize>| {
            AttentionConfig::new(d, self.num_attention_heads, self.attention_head_dim)
                .with_cross_attention_dim(cross)
                .init(device)
        };
        let inner = 4 * d;
        BasicTransformerBlock {
            norm1: norm(),
            attn1: attn(None),
            norm2: norm(),
            attn2: attn(Some(self.cross_attention_dim)),
            norm3: norm(),
            ff: FeedForward {
                net: (
                    Geglu {
                        proj: LinearConfig::new(d, 2 * inner).init(device),
                    },
                    DropoutConfig::new(0.0).init(),
                    LinearConfig::new(inner, d).init(device),
                ),
            },
        }
    }
}

impl<B: Backend> BasicTransformerBlock<B> {
    /// # Shapes
    /// - `x`: `[B, L, dim]`
    /// - `context`: `[B, S, cross_attention_dim]`
    /// - output: `[B, L, dim]`
    pub fn forward(&self, x: Tensor<B, 3>, context: Tensor<B, 3>) -> Tensor<B, 3> {
        let x = self
            .attn1
            .forward(norm::layer_norm(&self.norm1, x.clone()), None)
            + x;
        let x = self
            .attn2
            .forward(norm::layer_norm(&self.norm2, x.clone()), Some(context))
            + x;
        self.ff.forward(norm::layer_norm(&self.norm3, x.clone())) + x
    }
}

/// Configuration of [`Transformer2DModel`].
#[derive(Config, Debug)]
pub struct Transformer2DModelConfig {
    /// Heads.
    pub num_attention_heads: usize,
    /// Width of one head; `num_attention_heads * attention_head_dim` is the token width.
    pub attention_head_dim: usize,
    /// Channels of the feature map (input and output).
    pub in_channels: usize,
    /// Number of [`BasicTransformerBlock`]s.
    pub num_layers: usize,
    /// Width of the encoder hidden states.
    pub cross_attention_dim: usize,
    /// Groups of the input GroupNorm (epsilon fixed at 1e-6 by diffusers).
    pub norm_num_groups: usize,
    /// `proj_in`/`proj_out` are Linear layers (SDXL) rather than 1x1 convolutions (SD 1.x).
    /// Both compute the same per-pixel affine map; this module always holds them as Linear
    /// layers and the loaders reshape stored `[out, in, 1, 1]` convolution weights.
    pub use_linear_projection: bool,
}

/// `Transformer2DModel` on a feature map: `norm` (GroupNorm), `proj_in`, the transformer
/// blocks over the `H * W` tokens, `proj_out`, plus the input.
#[derive(Module, Debug)]
pub struct Transformer2DModel<B: Backend> {
    /// Input GroupNorm.
    pub norm: GroupNorm<B>,
    /// Projection of the channels to the token width.
    pub proj_in: Linear<B>,
    /// The blocks.
    pub transformer_blocks: Vec<BasicTransformerBlock<B>>,
    /// Projection back to the channels.
    pub proj_out: Linear<B>,
}

impl Transformer2DModelConfig {
    /// Builds the model with fresh (lazily initialised) weights.
    pub fn init<B: Backend>(&self, device: &B::Device) -> Transformer2DModel<B> {
        let inner = self.num_attention_heads * self.attention_head_dim;
        let block = BasicTransformerBlockConfig::new(
            inner,
            self.num_attention_heads,
            self.attention_head_dim,
            self.cross_attention_dim,
        );
        Transformer2DModel {
            norm: group_norm(self.norm_num_groups, self.in_channels, 1e-6, device),
            proj_in: LinearConfig::new(self.in_channels, inner).init(device),
            transformer_blocks: (0..self.num_layers).map(|_| block.init(device)).collect(),
            proj_out: LinearConfig::new(inner, self.in_channels).init(device),
        }
    }
}

impl<B: Backend> Transformer2DModel<B> {
    /// # Shapes
    /// - `x`: `[B, C, H, W]`
    /// - `context`: `[B, S, cross_attention_dim]`
    /// - output: `[B, C, H, W]`
    pub fn forward(&self, x: Tensor<B, 4>, context: Tensor<B, 3>) -> Tensor<B, 4> {
        let [b, c, h, w] = x.dims();
        // [B, C, H, W] -> [B, H*W, C]
        let tokens = norm::group_norm(&self.norm, x.clone())
            .reshape([b, c, h * w])
            .swap_dims(1, 2);
        let mut tokens = self.proj_in.forward(tokens);
        for block in &self.transformer_blocks {
            tokens = block.forward(tokens, context.clone());
        }
        let out = self
            .proj_out
            .forward(tokens)
            .swap_dims(1, 2)
            .reshape([b, c, h, w]);
        out + x
    }
}
