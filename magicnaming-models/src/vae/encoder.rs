//! diffusers' VAE `Encoder` (`models/autoencoders/vae.py`) and `DiagonalGaussianDistribution`.
use burn::config::Config;
use burn::module::Module;
use burn::nn::GroupNorm;
use burn::nn::conv::Conv2d;
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;

use super::blocks::{CoderBlock2DConfig, DownEncoderBlock2D, UNetMidBlock2D, UNetMidBlock2DConfig};
use crate::nn::conv::conv2d;
use crate::nn::norm;
use crate::nn::resnet::{group_norm, new_conv2d};

/// Configuration of [`Encoder`].
#[derive(Config, Debug)]
pub struct EncoderConfig {
    /// Image channels.
    pub in_channels: usize,
    /// Latent channels (the output has twice as many: mean and log-variance).
    pub out_channels: usize,
    /// Channels per level.
    pub block_out_channels: Vec<usize>,
    /// Resnets per level.
    pub layers_per_block: usize,
    /// GroupNorm groups.
    pub norm_num_groups: usize,
    /// Single-head attention in the mid block.
    pub mid_block_add_attention: bool,
}

/// diffusers' `Encoder` with `double_z=True`: `conv_in`, `DownEncoderBlock2D`s, mid
/// block, `conv_norm_out`, SiLU, `conv_out` to `2 * latent_channels`.
#[derive(Module, Debug)]
pub struct Encoder<B: Backend> {
    /// Input convolution.
    pub conv_in: Conv2d<B>,
    /// Levels, each halving the resolution except the last.
    pub down_blocks: Vec<DownEncoderBlock2D<B>>,
    /// Mid block.
    pub mid_block: UNetMidBlock2D<B>,
    /// Output GroupNorm.
    pub conv_norm_out: GroupNorm<B>,
    /// Output convolution.
    pub conv_out: Conv2d<B>,
}

impl EncoderConfig {
    /// Builds the encoder with fresh (lazily initialised) weights.
    pub fn init<B: Backend>(&self, device: &B::Device) -> Encoder<B> {
        let boc = &self.block_out_channels;
        let last = boc[boc.len() - 1];
        let g = self.norm_num_groups;
        Encoder {
            conv_in: new_conv2d(self.in_channels, boc[0], 3, device),
            down_blocks: (0..boc.len())
                .map(|i| {
                    let cin = if i == 0 { boc[0] } else { boc[i - 1] };
                    CoderBlock2DConfig::new(
                        cin,
                        boc[i],
                        self.layers_per_block,
                        g,
                        i + 1 < boc.len(),
                    )
                    .init_down(device)
                })
                .collect(),
            mid_block: UNetMidBlock2DConfig::new(last, g, self.mid_block_add_attention)
                .init(device),
            conv_norm_out: group_norm(g, last, 1e-6, device),
            conv_out: new_conv2d(last, 2 * self.out_channels, 3, device),
        }
    }
}

impl<B: Backend> Encoder<B> {
    /// # Shapes
    /// - `x`: `[B, in_channels, H, W]`
    /// - output: `[B, 2 * latent_channels, H / 2^(levels-1), W / 2^(levels-1)]`
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let h = conv2d(&self.conv_in, x);
        let h = self.down_blocks.iter().fold(h, |h, b| b.forward(h));
        let h = self.mid_block.forward(h);
        conv2d(
            &self.conv_out,
            norm::group_norm_silu(&self.conv_norm_out, h),
        )
    }
}

/// diffusers' `DiagonalGaussianDistribution`: the posterior of the VAE encoder.
#[derive(Debug, Clone)]
pub struct DiagonalGaussianDistribution<B: Backend> {
    /// Mean, `[B, C, h, w]`.
    pub mean: Tensor<B, 4>,
    /// Log-variance clamped to `[-30, 20]`.
    pub logvar: Tensor<B, 4>,
    /// `exp(0.5 * logvar)`.
    pub std: Tensor<B, 4>,
}

impl<B: Backend> DiagonalGaussianDistribution<B> {
    /// Splits `[B, 2C, h, w]` moments into mean and log-variance (channel halves).
    pub fn new(moments: Tensor<B, 4>) -> Self {
        let [b, c2, h, w] = moments.dims();
        let c = c2 / 2;
        let mean = moments.clone().slice([0..b, 0..c, 0..h, 0..w]);
        let logvar = moments.slice([0..b, c..c2, 0..h, 0..w]).clamp(-30.0, 20.0);
        let std = logvar.clone().mul_scalar(0.5).exp();
        Self { mean, logvar, std }
    }

    /// `mean + std * noise`, the sample diffusers draws with its generator, for a given
    /// standard-normal `noise` of the mean's shape.
    pub fn sample(&self, noise: Tensor<B, 4>) -> Tensor<B, 4> {
        self.mean.clone() + self.std.clone() * noise
    }

    /// The mode (the mean).
    pub fn mode(&self) -> Tensor<B, 4> {
        self.mean.clone()
    }
}
