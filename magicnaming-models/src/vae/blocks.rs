//! The VAE's blocks of diffusers' `models/unets/unet_2d_blocks.py`: `DownEncoderBlock2D`,
//! `UNetMidBlock2D` (with attention) and `UpDecoderBlock2D` (no time embedding, no skips).
use burn::config::Config;
use burn::module::Module;
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;

use crate::nn::attention::{Attention, AttentionConfig};
use crate::nn::resnet::{
    Downsample2D, Downsample2DConfig, ResnetBlock2D, ResnetBlock2DConfig, Upsample2D,
    Upsample2DConfig,
};

/// Configuration of the VAE's [`DownEncoderBlock2D`], [`UpDecoderBlock2D`] (no time
/// embedding, no skips).
#[derive(Config, Debug)]
pub struct CoderBlock2DConfig {
    /// Input channels.
    pub in_channels: usize,
    /// Output channels.
    pub out_channels: usize,
    /// Resnets.
    pub num_layers: usize,
    /// GroupNorm groups.
    pub resnet_groups: usize,
    /// Ends with a downsampler (encoder, padding `(0, 1, 0, 1)`) or an upsampler (decoder).
    pub add_resample: bool,
}

impl CoderBlock2DConfig {
    fn resnets<B: Backend>(&self, device: &B::Device) -> Vec<ResnetBlock2D<B>> {
        (0..self.num_layers)
            .map(|i| {
                let cin = if i == 0 {
                    self.in_channels
                } else {
                    self.out_channels
                };
                ResnetBlock2DConfig::new(cin, self.out_channels, self.resnet_groups, 1e-6)
                    .init(device)
            })
            .collect()
    }

    /// Builds a `DownEncoderBlock2D` with fresh (lazily initialised) weights.
    pub fn init_down<B: Backend>(&self, device: &B::Device) -> DownEncoderBlock2D<B> {
        let out = self.out_channels;
        DownEncoderBlock2D {
            resnets: self.resnets(device),
            downsamplers: if self.add_resample {
                vec![Downsample2DConfig::new(out, out, 0).init(device)]
            } else {
                Vec::new()
            },
        }
    }

    /// Builds an `UpDecoderBlock2D` with fresh (lazily initialised) weights.
    pub fn init_up<B: Backend>(&self, device: &B::Device) -> UpDecoderBlock2D<B> {
        let out = self.out_channels;
        UpDecoderBlock2D {
            resnets: self.resnets(device),
            upsamplers: if self.add_resample {
                vec![Upsample2DConfig::new(out, out).init(device)]
            } else {
                Vec::new()
            },
        }
    }
}

/// diffusers' `DownEncoderBlock2D`: resnets, then an asymmetrically padded downsampler.
#[derive(Module, Debug)]
pub struct DownEncoderBlock2D<B: Backend> {
    /// Resnets.
    pub resnets: Vec<ResnetBlock2D<B>>,
    /// The downsampler, absent at the last level.
    pub downsamplers: Vec<Downsample2D<B>>,
}

impl<B: Backend> DownEncoderBlock2D<B> {
    /// # Shapes
    /// - `x`: `[B, C_in, H, W]` -> `[B, C_out, H / 2, W / 2]` (`[.., H, W]` at the last level)
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let h = self.resnets.iter().fold(x, |h, r| r.forward(h, None));
        self.downsamplers.iter().fold(h, |h, d| d.forward(h))
    }
}

/// diffusers' `UpDecoderBlock2D`: resnets, then an upsampler.
#[derive(Module, Debug)]
pub struct UpDecoderBlock2D<B: Backend> {
    /// Resnets.
    pub resnets: Vec<ResnetBlock2D<B>>,
    /// The upsampler, absent at the last level.
    pub upsamplers: Vec<Upsample2D<B>>,
}

impl<B: Backend> UpDecoderBlock2D<B> {
    /// # Shapes
    /// - `x`: `[B, C_in, H, W]` -> `[B, C_out, 2H, 2W]` (`[.., H, W]` at the last level)
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let h = self.resnets.iter().fold(x, |h, r| r.forward(h, None));
        self.upsamplers.iter().fold(h, |h, u| u.forward(h, None))
    }
}

/// Configuration of the VAE's [`UNetMidBlock2D`].
#[derive(Config, Debug)]
pub struct UNetMidBlock2DConfig {
    /// Channels.
    pub in_channels: usize,
    /// GroupNorm groups (resnets and attention).
    pub resnet_groups: usize,
    /// With the single-head attention between the resnets (`mid_block_add_attention`).
    pub add_attention: bool,
}

/// diffusers' `UNetMidBlock2D` as the VAE builds it: resnet, single-head self-attention over
/// the pixels (GroupNorm in front, residual), resnet.
#[derive(Module, Debug)]
pub struct UNetMidBlock2D<B: Backend> {
    /// The two resnets.
    pub resnets: Vec<ResnetBlock2D<B>>,
    /// The attention between them (none without `mid_block_add_attention`).
    pub attentions: Vec<Attention<B>>,
}

impl UNetMidBlock2DConfig {
    /// Builds the block with fresh (lazily initialised) weights.
    pub fn init<B: Backend>(&self, device: &B::Device) -> UNetMidBlock2D<B> {
        let c = self.in_channels;
        let resnet = || ResnetBlock2DConfig::new(c, c, self.resnet_groups, 1e-6).init(device);
        let attentions = if self.add_attention {
            vec![
                AttentionConfig::new(c, 1, c)
                    .with_bias(true)
                    .with_norm_num_groups(Some(self.resnet_groups))
                    .with_eps(1e-6)
                    .with_residual_connection(true)
                    .init(device),
            ]
        } else {
            Vec::new()
        };
        UNetMidBlock2D {
            resnets: vec![resnet(), resnet()],
            attentions,
        }
    }
}

impl<B: Backend> UNetMidBlock2D<B> {
    /// # Shapes
    /// - `x`: `[B, C, H, W]` -> `[B, C, H, W]`
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let mut h = self.resnets[0].forward(x, None);
        if let Some(attn) = self.attentions.first() {
            h = attn.forward_image(h);
        }
        self.resnets[1].forward(h, None)
    }
}
