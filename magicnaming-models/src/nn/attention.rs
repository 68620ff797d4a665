//! diffusers' `Attention` with the default `AttnProcessor2_0` (`models/attention_processor.py`):
//! `to_q` / `to_k` / `to_v` / `to_out.0`, multi-head scaled dot-product attention
//! (scale `dim_head^-0.5`), optional cross-attention, and the VAE's variant with an input
//! GroupNorm and a residual connection over `H * W` tokens.
use burn::config::Config;
use burn::module::Module;
use burn::nn::{Dropout, DropoutConfig, GroupNorm, Linear, LinearConfig};
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;
use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;

use super::lora::LoraAdapter;
use super::norm;
use super::resnet::group_norm;

/// Configuration of [`Attention`].
#[derive(Config, Debug)]
pub struct AttentionConfig {
    /// Width of the queries (and of the output).
    pub query_dim: usize,
    /// Width of the keys/values' source; `None` for self-attention.
    pub cross_attention_dim: Option<usize>,
    /// Number of heads.
    pub heads: usize,
    /// Width of one head.
    pub dim_head: usize,
    /// Biases on `to_q` / `to_k` / `to_v` (`attention_bias`; false in the UNet, true in the VAE).
    #[config(default = false)]
    pub bias: bool,
    /// Groups of the input GroupNorm (`group_norm`), the VAE's mid-block attention only.
    pub norm_num_groups: Option<usize>,
    /// Epsilon of that GroupNorm.
    #[config(default = 1e-5)]
    pub eps: f64,
    /// Add the input to the output (VAE).
    #[config(default = false)]
    pub residual_connection: bool,
    /// The output is divided by this.
    #[config(default = 1.0)]
    pub rescale_output_factor: f64,
}

/// Low-rank adapters on an [`Attention`]'s projections, each optional.
#[derive(Module, Debug)]
pub struct AttentionLora<B: Backend> {
    /// Beside `to_q`.
    pub to_q: Option<LoraAdapter<B>>,
    /// Beside `to_k`.
    pub to_k: Option<LoraAdapter<B>>,
    /// Beside `to_v`.
    pub to_v: Option<LoraAdapter<B>>,
    /// Beside `to_out.0`.
    pub to_out: Option<LoraAdapter<B>>,
}

impl<B: Backend> AttentionLora<B> {
    /// No adapter yet.
    pub fn empty() -> Self {
        Self {
            to_q: None,
            to_k: None,
            to_v: None,
            to_out: None,
        }
    }

    /// The slot of projection `name` (`to_q`, `to_k`, `to_v`, `to_out.0`), if it is one.
    pub fn slot(&mut self, name: &str) -> Option<&mut Option<LoraAdapter<B>>> {
        match name {
            "to_q" => Some(&mut self.to_q),
            "to_k" => Some(&mut self.to_k),
            "to_v" => Some(&mut self.to_v),
            "to_out.0" => Some(&mut self.to_out),
            _ => None,
        }
    }

    /// The adapters present, with their projection names, in the order q, k, v, out.
    pub fn adapters(&self) -> Vec<(&'static str, &LoraAdapter<B>)> {
        [
            ("to_q", &self.to_q),
            ("to_k", &self.to_k),
            ("to_v", &self.to_v),
            ("to_out.0", &self.to_out),
        ]
        .into_iter()
        .filter_map(|(n, a)| a.as_ref().map(|a| (n, a)))
        .collect()
    }
}

/// The projections an [`AttentionLora`] can adapt, in diffusers' spelling.
pub const LORA_PROJECTIONS: [&str; 4] = ["to_q", "to_k", "to_v", "to_out.0"];

/// `linear(x)`, plus the adapter's update when there is one.
fn project<B: Backend>(
    linear: &Linear<B>,
    adapter: Option<&LoraAdapter<B>>,
    x: Tensor<B, 3>,
) -> Tensor<B, 3> {
    match adapter {
        Some(a) => linear.forward(x.clone()) + a.forward(x),
        None => linear.forward(x),
    }
}

/// diffusers' `Attention` (no masks, no q/k norms, no added key/values).
#[derive(Module, Debug)]
pub struct Attention<B: Backend> {
    /// Input GroupNorm (VAE).
    pub group_norm: Option<GroupNorm<B>>,
    /// Query projection.
    pub to_q: Linear<B>,
    /// Key projection.
    pub to_k: Linear<B>,
    /// Value projection.
    pub to_v: Linear<B>,
    /// Output projection and (inert) dropout: `to_out.0`, `to_out.1`.
    pub to_out: (Linear<B>, Dropout),
    /// Trainable low-rank adapters beside the projections (absent outside LoRA training).
    pub lora: Option<AttentionLora<B>>,
    heads: usize,
    residual_connection: bool,
    rescale_output_factor: f64,
}

impl AttentionConfig {
    /// Builds the layer with fresh (lazily initialised) weights.
    pub fn init<B: Backend>(&self, device: &B::Device) -> Attention<B> {
        let inner = self.heads * self.dim_head;
        let kv_in = self.cross_attention_dim.unwrap_or(self.query_dim);
        let linear = |i, o, bias| LinearConfig::new(i, o).with_bias(bias).init(device);
        Attention {
            group_norm: self
                .norm_num_groups
                .map(|g| group_norm(g, self.query_dim, self.eps, device)),
            to_q: linear(self.query_dim, inner, self.bias),
            to_k: linear(kv_in, inner, self.bias),
            to_v: linear(kv_in, inner, self.bias),
            to_out: (
                linear(inner, self.query_dim, true),
                DropoutConfig::new(0.0).init(),
            ),
            lora: None,
            heads: self.heads,
            residual_connection: self.residual_connection,
            rescale_output_factor: self.rescale_output_factor,
        }
    }
}

impl<B: Backend> Attention<B> {
    /// Attention over a token sequence; keys and values come from `context` when given
    /// (cross-attention), from `x` otherwise.
    ///
    /// # Shapes
    /// - `x`: `[B, L, query_dim]`
    /// - `context`: `[B, S, cross_attention_dim]`
    /// - output: `[B, L, query_dim]`
    pub fn forward(&self, x: Tensor<B, 3>, context: Option<Tensor<B, 3>>) -> Tensor<B, 3> {
        let residual = self.residual_connection.then(|| x.clone());
        let x = match &self.group_norm {
            // GroupNorm over channels: [B, L, C] -> [B, C, L] and back.
            Some(norm) => norm::group_norm(norm, x.swap_dims(1, 2)).swap_dims(1, 2),
            None => x,
        };
        let context = context.unwrap_or_else(|| x.clone());
        let lora = self.lora.as_ref();
        let q = project(&self.to_q, lora.and_then(|l| l.to_q.as_ref()), x);
        let k = project(
            &self.to_k,
            lora.and_then(|l| l.to_k.as_ref()),
            context.clone(),
        );
        let v = project(&self.to_v, lora.and_then(|l| l.to_v.as_ref()), context);
        let [batch, len, inner] = q.dims();
        let head_dim = inner / self.heads;
        let split = |t: Tensor<B, 3>| {
            let n = t.dims()[1];
            t.reshape([batch, n, self.heads, head_dim]).swap_dims(1, 2)
        };
        let options = AttentionModuleOptions {
            scale: None, // 1/sqrt(head_dim), as F.scaled_dot_product_attention
            softcap: None,
            is_causal: false,
        };
        let out = attention(split(q), split(k), split(v), None, None, options)
            .swap_dims(1, 2)
            .reshape([batch, len, inner]);
        let mut out = project(&self.to_out.0, lora.and_then(|l| l.to_out.as_ref()), out);
        if let Some(r) = residual {
            out = out + r;
        }
        if self.rescale_output_factor != 1.0 {
            out = out.div_scalar(self.rescale_output_factor);
        }
        out
    }

    /// Self-attention over the `H * W` pixels of a feature map (the VAE mid block):
    /// `[B, C, H, W] -> [B, H*W, C]`, [`Self::forward`], and back.
    ///
    /// # Shapes
    /// - `x`: `[B, C, H, W]`
    /// - output: `[B, C, H, W]`
    pub fn forward_image(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let [b, c, h, w] = x.dims();
        let tokens = x.reshape([b, c, h * w]).swap_dims(1, 2);
        self.forward(tokens, None)
            .swap_dims(1, 2)
            .reshape([b, c, h, w])
    }
}
