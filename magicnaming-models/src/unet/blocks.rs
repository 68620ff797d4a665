//! The UNet's blocks, as diffusers' `models/unets/unet_2d_blocks.py`: `DownBlock2D` /
//! `CrossAttnDownBlock2D`, `UNetMidBlock2DCrossAttn`, `UpBlock2D` / `CrossAttnUpBlock2D`
//! (with skip connections). The VAE's blocks of the same file are in `crate::vae::blocks`.
//!
//! A plain `DownBlock2D` / `UpBlock2D` is the cross-attention block without attentions:
//! both have the same parameter names (`resnets.N`, `attentions.N`, `downsamplers.0` /
//! `upsamplers.0`), so one type serves each pair.
use burn::config::Config;
use burn::module::Module;
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;

use super::transformer::{Transformer2DModel, Transformer2DModelConfig};
use crate::nn::resnet::{
    Downsample2D, Downsample2DConfig, ResnetBlock2D, ResnetBlock2DConfig, Upsample2D,
    Upsample2DConfig,
};

/// The cross-attention part of a `CrossAttn*Block2D`.
#[derive(Config, Debug)]
pub struct CrossAttentionConfig {
    /// Heads of every attention (the resolved per-level `attention_head_dim` of SDXL configs).
    pub num_attention_heads: usize,
    /// Transformer blocks in each `Transformer2DModel`.
    pub transformer_layers_per_block: usize,
    /// Width of the encoder hidden states.
    pub cross_attention_dim: usize,
    /// Linear (true) or 1x1-convolution `proj_in` / `proj_out`.
    pub use_linear_projection: bool,
}

impl CrossAttentionConfig {
    fn transformer(&self, channels: usize, groups: usize) -> Transformer2DModelConfig {
        Transformer2DModelConfig::new(
            self.num_attention_heads,
            channels / self.num_attention_heads,
            channels,
            self.transformer_layers_per_block,
            self.cross_attention_dim,
            groups,
            self.use_linear_projection,
        )
    }
}

/// Configuration of [`DownBlock2D`] (`CrossAttnDownBlock2D` when `cross_attention` is set).
#[derive(Config, Debug)]
pub struct DownBlock2DConfig {
    /// Input channels.
    pub in_channels: usize,
    /// Output channels.
    pub out_channels: usize,
    /// Width of the time embedding.
    pub temb_channels: usize,
    /// Resnets (`layers_per_block`).
    pub num_layers: usize,
    /// GroupNorm groups.
    pub resnet_groups: usize,
    /// GroupNorm epsilon of the resnets.
    pub resnet_eps: f64,
    /// Ends with a stride-2 convolution.
    pub add_downsample: bool,
    /// Padding of that convolution.
    pub downsample_padding: usize,
    /// Attentions after each resnet.
    pub cross_attention: Option<CrossAttentionConfig>,
}

/// diffusers' `DownBlock2D`, or `CrossAttnDownBlock2D` when it has `attentions`.
#[derive(Module, Debug)]
pub struct DownBlock2D<B: Backend> {
    /// Resnets.
    pub resnets: Vec<ResnetBlock2D<B>>,
    /// One transformer after each resnet (cross-attention blocks), or none.
    pub attentions: Vec<Transformer2DModel<B>>,
    /// The downsampler (`downsamplers.0`), absent at the last level.
    pub downsamplers: Vec<Downsample2D<B>>,
}

/// diffusers' `CrossAttnDownBlock2D` (a [`DownBlock2D`] with attentions).
pub type CrossAttnDownBlock2D<B> = DownBlock2D<B>;

impl DownBlock2DConfig {
    /// Builds the block with fresh (lazily initialised) weights.
    pub fn init<B: Backend>(&self, device: &B::Device) -> DownBlock2D<B> {
        let out = self.out_channels;
        DownBlock2D {
            resnets: (0..self.num_layers)
                .map(|i| {
                    let cin = if i == 0 { self.in_channels } else { out };
                    ResnetBlock2DConfig::new(cin, out, self.resnet_groups, self.resnet_eps)
                        .with_temb_channels(Some(self.temb_channels))
                        .init(device)
                })
                .collect(),
            attentions: match &self.cross_attention {
                Some(c) => (0..self.num_layers)
                    .map(|_| c.transformer(out, self.resnet_groups).init(device))
                    .collect(),
                None => Vec::new(),
            },
            downsamplers: if self.add_downsample {
                vec![Downsample2DConfig::new(out, out, self.downsample_padding).init(device)]
            } else {
                Vec::new()
            },
        }
    }
}

impl<B: Backend> DownBlock2D<B> {
    /// Returns the output and the states kept for the skip connections (after each
    /// resnet/attention pair, and after the downsampler).
    ///
    /// # Shapes
    /// - `x`: `[B, C_in, H, W]`, `temb`: `[B, T]`, `context`: `[B, S, D]`
    /// - output: `[B, C_out, H', W']` (`H' = ceil(H / 2)` with a downsampler) and
    ///   `num_layers (+ 1)` states
    pub fn forward(
        &self,
        x: Tensor<B, 4>,
        temb: &Tensor<B, 2>,
        context: &Tensor<B, 3>,
    ) -> (Tensor<B, 4>, Vec<Tensor<B, 4>>) {
        let mut h = x;
        let mut states = Vec::with_capacity(self.resnets.len() + 1);
        for (i, resnet) in self.resnets.iter().enumerate() {
            h = resnet.forward(h, Some(temb.clone()));
            if let Some(attn) = self.attentions.get(i) {
                h = attn.forward(h, context.clone());
            }
            states.push(h.clone());
        }
        for down in &self.downsamplers {
            h = down.forward(h);
            states.push(h.clone());
        }
        (h, states)
    }
}

/// Configuration of [`UNetMidBlock2DCrossAttn`] (one attention, two resnets).
#[derive(Config, Debug)]
pub struct UNetMidBlock2DCrossAttnConfig {
    /// Channels.
    pub in_channels: usize,
    /// Width of the time embedding.
    pub temb_channels: usize,
    /// GroupNorm groups.
    pub resnet_groups: usize,
    /// GroupNorm epsilon of the resnets.
    pub resnet_eps: f64,
    /// Resnet output divisor (`mid_block_scale_factor`).
    pub output_scale_factor: f64,
    /// The attention.
    pub cross_attention: CrossAttentionConfig,
}

/// diffusers' `UNetMidBlock2DCrossAttn`: resnet, transformer, resnet.
#[derive(Module, Debug)]
pub struct UNetMidBlock2DCrossAttn<B: Backend> {
    /// The two resnets.
    pub resnets: Vec<ResnetBlock2D<B>>,
    /// The transformer between them.
    pub attentions: Vec<Transformer2DModel<B>>,
}

impl UNetMidBlock2DCrossAttnConfig {
    /// Builds the block with fresh (lazily initialised) weights.
    pub fn init<B: Backend>(&self, device: &B::Device) -> UNetMidBlock2DCrossAttn<B> {
        let c = self.in_channels;
        let resnet = || {
            ResnetBlock2DConfig::new(c, c, self.resnet_groups, self.resnet_eps)
                .with_temb_channels(Some(self.temb_channels))
                .with_output_scale_factor(self.output_scale_factor)
                .init(device)
        };
        UNetMidBlock2DCrossAttn {
            resnets: vec![resnet(), resnet()],
            attentions: vec![
                self.cross_attention
                    .transformer(c, self.resnet_groups)
                    .init(device),
            ],
        }
    }
}

impl<B: Backend> UNetMidBlock2DCrossAttn<B> {
    /// # Shapes
    /// - `x`: `[B, C, H, W]`, `temb`: `[B, T]`, `context`: `[B, S, D]`
    /// - output: `[B, C, H, W]`
    pub fn forward(
        &self,
        x: Tensor<B, 4>,
        temb: &Tensor<B, 2>,
        context: &Tensor<B, 3>,
    ) -> Tensor<B, 4> {
        let mut h = self.resnets[0].forward(x, Some(temb.clone()));
        for (attn, resnet) in self.attentions.iter().zip(&self.resnets[1..]) {
            h = attn.forward(h, context.clone());
            h = resnet.forward(h, Some(temb.clone()));
        }
        h
    }
}

/// Configuration of [`UpBlock2D`] (`CrossAttnUpBlock2D` when `cross_attention` is set).
#[derive(Config, Debug)]
pub struct UpBlock2DConfig {
    /// Channels of the matching down level's input (the last skip's width).
    pub in_channels: usize,
    /// Channels coming from the previous up block.
    pub prev_output_channel: usize,
    /// Output channels.
    pub out_channels: usize,
    /// Width of the time embedding.
    pub temb_channels: usize,
    /// Resnets (`layers_per_block + 1`).
    pub num_layers: usize,
    /// GroupNorm groups.
    pub resnet_groups: usize,
    /// GroupNorm epsilon of the resnets.
    pub resnet_eps: f64,
    /// Ends with an upsampler.
    pub add_upsample: bool,
    /// Attentions after each resnet.
    pub cross_attention: Option<CrossAttentionConfig>,
}

/// diffusers' `UpBlock2D`, or `CrossAttnUpBlock2D` when it has `attentions`.
#[derive(Module, Debug)]
pub struct UpBlock2D<B: Backend> {
    /// Resnets, each fed the previous output concatenated with one skip state.
    pub resnets: Vec<ResnetBlock2D<B>>,
    /// One transformer after each resnet (cross-attention blocks), or none.
    pub attentions: Vec<Transformer2DModel<B>>,
    /// The upsampler (`upsamplers.0`), absent at the last level.
    pub upsamplers: Vec<Upsample2D<B>>,
}

/// diffusers' `CrossAttnUpBlock2D` (an [`UpBlock2D`] with attentions).
pub type CrossAttnUpBlock2D<B> = UpBlock2D<B>;

impl UpBlock2DConfig {
    /// Builds the block with fresh (lazily initialised) weights.
    pub fn init<B: Backend>(&self, device: &B::Device) -> UpBlock2D<B> {
        let out = self.out_channels;
        UpBlock2D {
            resnets: (0..self.num_layers)
                .map(|i| {
                    let skip = if i == self.num_layers - 1 {
                        self.in_channels
                    } else {
                        out
                    };
                    let cin = if i == 0 {
                        self.prev_output_channel
                    } else {
                        out
                    };
                    ResnetBlock2DConfig::new(cin + skip, out, self.resnet_groups, self.resnet_eps)
                        .with_temb_channels(Some(self.temb_channels))
                        .init(device)
                })
                .collect(),
            attentions: match &self.cross_attention {
                Some(c) => (0..self.num_layers)
                    .map(|_| c.transformer(out, self.resnet_groups).init(device))
                    .collect(),
                None => Vec::new(),
            },
            upsamplers: if self.add_upsample {
                vec![Upsample2DConfig::new(out, out).init(device)]
            } else {
                Vec::new()
            },
        }
    }
}

impl<B: Backend> UpBlock2D<B> {
    /// Consumes one skip state per resnet from the end of `skips`, then upsamples to
    /// `upsample_size` (twice the size when `None`).
    ///
    /// # Shapes
    /// - `x`: `[B, C_prev, H, W]`, `temb`: `[B, T]`, `context`: `[B, S, D]`
    /// - output: `[B, C_out, H', W']`
    pub fn forward(
        &self,
        x: Tensor<B, 4>,
        skips: &mut Vec<Tensor<B, 4>>,
        temb: &Tensor<B, 2>,
        context: &Tensor<B, 3>,
        upsample_size: Option<[usize; 2]>,
    ) -> Tensor<B, 4> {
        let mut h = x;
        for (i, resnet) in self.resnets.iter().enumerate() {
            let skip = skips
                .pop()
                .expect("the UNet keeps one skip state per up-block resnet");
            h = resnet.forward(Tensor::cat(vec![h, skip], 1), Some(temb.clone()));
            if let Some(attn) = self.attentions.get(i) {
                h = attn.forward(h, context.clone());
            }
        }
        for up in &self.upsamplers {
            h = up.forward(h, upsample_size);
        }
        h
    }
}
