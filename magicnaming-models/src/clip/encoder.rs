//! The transformer shared by CLIP's text and vision towers: transformers'
//! `CLIPAttention`, `CLIPMLP`, `CLIPEncoderLayer` and `CLIPEncoder`. Field names follow
//! the checkpoint keys (`layers.N.self_attn.q_proj`, `layer_norm1`, `mlp.fc1`...).
use burn::config::Config;
use burn::module::Module;
use burn::nn::{LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::tensor::Tensor;
use burn::tensor::activation;
use burn::tensor::backend::Backend;
use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;

use super::config::ClipActivation;
use crate::nn::linear::linear;
use crate::nn::norm;

/// Configuration of [`ClipEncoder`].
#[derive(Config, Debug)]
pub struct ClipEncoderConfig {
    /// Model width.
    pub hidden_size: usize,
    /// MLP width.
    pub intermediate_size: usize,
    /// Attention heads.
    pub num_attention_heads: usize,
    /// Layers.
    pub num_hidden_layers: usize,
    /// MLP activation.
    pub hidden_act: ClipActivation,
    /// LayerNorm epsilon.
    pub layer_norm_eps: f64,
}

/// Multi-head self-attention (`CLIPAttention`).
#[derive(Module, Debug)]
pub struct ClipAttention<B: Backend> {
    /// Query projection.
    pub q_proj: Linear<B>,
    /// Key projection.
    pub k_proj: Linear<B>,
    /// Value projection.
    pub v_proj: Linear<B>,
    /// Output projection.
    pub out_proj: Linear<B>,
    num_heads: usize,
}

impl<B: Backend> ClipAttention<B> {
    /// Self-attention, causal for the text tower.
    ///
    /// # Shapes
    /// - `x`: `[B, L, H]`
    /// - output: `[B, L, H]`
    pub fn forward(&self, x: Tensor<B, 3>, causal: bool) -> Tensor<B, 3> {
        let [batch, len, hidden] = x.dims();
        let head_dim = hidden / self.num_heads;
        let split = |t: Tensor<B, 3>| {
            t.reshape([batch, len, self.num_heads, head_dim])
                .swap_dims(1, 2)
        };
        let q = split(linear(&self.q_proj, x.clone()));
        let k = split(linear(&self.k_proj, x.clone()));
        let v = split(linear(&self.v_proj, x));
        let options = AttentionModuleOptions {
            scale: None,
            softcap: None,
            is_causal: causal,
        };
        let out = attention(q, k, v, None, None, options)
            .swap_dims(1, 2)
            .reshape([batch, len, hidden]);
        linear(&self.out_proj, out)
    }
}

/// The feed-forward block (`CLIPMLP`).
#[derive(Module, Debug)]
pub struct ClipMlp<B: Backend> {
    /// First linear layer.
    pub fc1: Linear<B>,
    /// Second linear layer.
    pub fc2: Linear<B>,
    #[module(skip)]
    act: ClipActivation,
}

impl<B: Backend> ClipMlp<B> {
    /// # Shapes
    /// - `x`: `[B, L, H]` -> `[B, L, H]`
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let h = linear(&self.fc1, x);
        let h = match self.act {
            ClipActivation::QuickGelu => h.clone() * activation::sigmoid(h.mul_scalar(1.702)),
            ClipActivation::Gelu => activation::gelu(h),
            ClipActivation::GeluTanh => activation::gelu_approximate(h),
        };
        linear(&self.fc2, h)
    }
}

/// A pre-norm transformer block (`CLIPEncoderLayer`).
#[derive(Module, Debug)]
pub struct ClipEncoderLayer<B: Backend> {
    /// Attention.
    pub self_attn: ClipAttention<B>,
    /// Norm before attention.
    pub layer_norm1: LayerNorm<B>,
    /// Feed-forward.
    pub mlp: ClipMlp<B>,
    /// Norm before the feed-forward.
    pub layer_norm2: LayerNorm<B>,
}

impl<B: Backend> ClipEncoderLayer<B> {
    /// # Shapes
    /// - `x`: `[B, L, H]` -> `[B, L, H]`
    pub fn forward(&self, x: Tensor<B, 3>, causal: bool) -> Tensor<B, 3> {
        let x = x.clone()
            + self
                .self_attn
                .forward(norm::layer_norm(&self.layer_norm1, x), causal);
        x.clone() + self.mlp.forward(norm::layer_norm(&self.layer_norm2, x))
    }
}

/// The stack of layers (`CLIPEncoder`).
#[derive(Module, Debug)]
pub struct ClipEncoder<B: Backend> {
    /// The layers, first to last.
    pub layers: Vec<ClipEncoderLayer<B>>,
}

impl ClipEncoderConfig {
    /// Builds the encoder with fresh (lazily initialised) weights.
    pub fn init<B: Backend>(&self, device: &B::Device) -> ClipEncoder<B> {
        let h = self.hidden_size;
        let linear = |i, o| LinearConfig::new(i, o).init(device);
        let norm = || {
            LayerNormConfig::new(h)
                .with_epsilon(self.layer_norm_eps)
                .init(device)
        };
        let layers = (0..self.num_hidden_layers)
            .map(|_| ClipEncoderLayer {
                self_attn: ClipAttention {
                    q_proj: linear(h, h),
                    k_proj: linear(h, h),
                    v_proj: linear(h, h),
                    out_proj: linear(h, h),
                    num_heads: self.num_attention_heads,
                },
                layer_norm1: norm(),
                mlp: ClipMlp {
                    fc1: linear(h, self.intermediate_size),
                    fc2: linear(self.intermediate_size, h),
                    act: self.hidden_act,
                },
                layer_norm2: norm(),
            })
            .collect();
        ClipEncoder { layers }
    }
}

impl<B: Backend> ClipEncoder<B> {
    /// Runs every layer, returning the input followed by each layer's output
    /// (transformers' `hidden_states`, `num_layers + 1` entries).
    ///
    /// # Shapes
    /// - `x`: `[B, L, H]`
    /// - output: `num_layers + 1` tensors `[B, L, H]`
    pub fn forward_all(&self, x: Tensor<B, 3>, causal: bool) -> Vec<Tensor<B, 3>> {
        let mut states = Vec::with_capacity(self.layers.len() + 1);
        let mut h = x;
        for layer in &self.layers {
            states.push(h.clone());
            h = layer.forward(h, causal);
        }
        states.push(h);
        states
    }
}
