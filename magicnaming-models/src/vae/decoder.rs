//! diffusers' VAE `Decoder` (`models/autoencoders/vae.py`, `norm_type="group"`).
use burn::config::Config;
use burn::module::Module;
use burn::nn::GroupNorm;
use burn::nn::conv::Conv2d;
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;

use super::blocks::{CoderBlock2DConfig, UNetMidBlock2D, UNetMidBlock2DConfig, UpDecoderBlock2D};
use crate::nn::conv::conv2d;
use crate::nn::norm;
use crate::nn::resnet::{group_norm, new_conv2d};

/// Configuration of [`Decoder`].
#[derive(Config, Debug)]
pub struct DecoderConfig {
    /// Latent channels.
    pub in_channels: usize,
    /// Image channels.
    pub out_channels: usize,
    /// Channels per level (shallowest first, as in the config; the decoder runs them
    /// deepest first).
    pub block_out_channels: Vec<usize>,
    /// `layers_per_block`; each up block has one more resnet.
    pub layers_per_block: usize,
    /// GroupNorm groups.
    pub norm_num_groups: usize,
    /// Single-head attention in the mid block.
    pub mid_block_add_attention: bool,
}

/// diffusers' `Decoder`: `conv_in`, mid block, `UpDecoderBlock2D`s (deepest level first),
/// `conv_norm_out`, SiLU, `conv_out`.
#[derive(Module, Debug)]
pub struct Decoder<B: Backend> {
    /// Input convolution.
    pub conv_in: Conv2d<B>,
    /// Mid block.
    pub mid_block: UNetMidBlock2D<B>,
    /// Levels, deepest first, each doubling the resolution except the last.
    pub up_blocks: Vec<UpDecoderBlock2D<B>>,
    /// Output GroupNorm.
    pub conv_norm_out: GroupNorm<B>,
    /// Output convolution.
    pub conv_out: Conv2d<B>,
}

impl DecoderConfig {
    /// Builds the decoder with fresh (lazily initialised) weights.
    pub fn init<B: Backend>(&self, device: &B::Device) -> Decoder<B> {
        let rev: Vec<usize> = self.block_out_channels.iter().rev().copied().collect();
        let g = self.norm_num_groups;
        let levels = rev.len();
        Decoder {
            conv_in: new_conv2d(self.in_channels, rev[0], 3, device),
            mid_block: UNetMidBlock2DConfig::new(rev[0], g, self.mid_block_add_attention)
                .init(device),
            up_blocks: (0..levels)
                .map(|i| {
                    let prev = if i == 0 { rev[0] } else { rev[i - 1] };
                    CoderBlock2DConfig::new(
                        prev,
                        rev[i],
                        self.layers_per_block + 1,
                        g,
                        i + 1 < levels,
                    )
                    .init_up(device)
                })
                .collect(),
            conv_norm_out: group_norm(g, rev[levels - 1], 1e-6, device),
            conv_out: new_conv2d(rev[levels - 1], self.out_channels, 3, device),
        }
    }
}

impl<B: Backend> Decoder<B> {
    /// # Shapes
    /// - `z`: `[B, latent_channels, h, w]`
    /// - output: `[B, out_channels, h * 2^(levels-1), w * 2^(levels-1)]`
    pub fn forward(&self, z: Tensor<B, 4>) -> Tensor<B, 4> {
        let h = self.mid_block.forward(conv2d(&self.conv_in, z));
        let h = self.up_blocks.iter().fold(h, |h, b| b.forward(h));
        conv2d(
            &self.conv_out,
            norm::group_norm_silu(&self.conv_norm_out, h),
        )
    }
}
