//! diffusers' `ResnetBlock2D` (`models/resnet.py`, time embedding norm "default") and the
//! resampling layers of `models/downsampling.py` / `models/upsampling.py`:
//! `Downsample2D` (3x3 convolution, stride 2) and `Upsample2D` (nearest x2 + 3x3
//! convolution). Shared by the UNet and the VAE.
use super::conv::conv2d;
use super::norm;
use burn::config::Config;
use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{GroupNorm, GroupNormConfig, Linear, LinearConfig, PaddingConfig2d};
use burn::tensor::activation::silu;
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};

/// A `k x k` convolution with "same" padding `(k - 1) / 2`, as diffusers builds them.
pub(crate) fn new_conv2d<B: Backend>(
    cin: usize,
    cout: usize,
    kernel: usize,
    device: &B::Device,
) -> Conv2d<B> {
    let p = (kernel - 1) / 2;
    Conv2dConfig::new([cin, cout], [kernel, kernel])
        .with_padding(PaddingConfig2d::Explicit(p, p, p, p))
        .init(device)
}

/// A GroupNorm with affine parameters.
pub(crate) fn group_norm<B: Backend>(
    groups: usize,
    channels: usize,
    eps: f64,
    device: &B::Device,
) -> GroupNorm<B> {
    GroupNormConfig::new(groups, channels)
        .with_epsilon(eps)
        .init(device)
}

/// Configuration of [`ResnetBlock2D`].
#[derive(Config, Debug)]
pub struct ResnetBlock2DConfig {
    /// Input channels.
    pub in_channels: usize,
    /// Output channels.
    pub out_channels: usize,
    /// Width of the time embedding; `None` for the VAE's blocks (no `time_emb_proj`).
    pub temb_channels: Option<usize>,
    /// Groups of `norm1` (and of `norm2`).
    pub groups: usize,
    /// GroupNorm epsilon.
    pub eps: f64,
    /// The output is divided by this.
    #[config(default = 1.0)]
    pub output_scale_factor: f64,
}

/// diffusers' `ResnetBlock2D` with `time_embedding_norm="default"`:
/// `norm1 -> SiLU -> conv1 (+ time_emb_proj(SiLU(temb))) -> norm2 -> SiLU -> conv2`,
/// plus the input (through `conv_shortcut` when the widths differ).
#[derive(Module, Debug)]
pub struct ResnetBlock2D<B: Backend> {
    /// First GroupNorm.
    pub norm1: GroupNorm<B>,
    /// First 3x3 convolution.
    pub conv1: Conv2d<B>,
    /// Projection of the time embedding to `out_channels`.
    pub time_emb_proj: Option<Linear<B>>,
    /// Second GroupNorm.
    pub norm2: GroupNorm<B>,
    /// Second 3x3 convolution.
    pub conv2: Conv2d<B>,
    /// 1x1 convolution of the input when `in_channels != out_channels`.
    pub conv_shortcut: Option<Conv2d<B>>,
    output_scale_factor: f64,
}

impl ResnetBlock2DConfig {
    /// Builds the block with fresh (lazily initialised) weights.
    pub fn init<B: Backend>(&self, device: &B::Device) -> ResnetBlock2D<B> {
        let (cin, cout) = (self.in_channels, self.out_channels);
        ResnetBlock2D {
            norm1: group_norm(self.groups, cin, self.eps, device),
            conv1: new_conv2d(cin, cout, 3, device),
            time_emb_proj: self
                .temb_channels
                .map(|t| LinearConfig::new(t, cout).init(device)),
            norm2: group_norm(self.groups, cout, self.eps, device),
            conv2: new_conv2d(cout, cout, 3, device),
            conv_shortcut: (cin != cout).then(|| new_conv2d(cin, cout, 1, device)),
            output_scale_factor: self.output_scale_factor,
        }
    }
}

impl<B: Backend> ResnetBlock2D<B> {
    /// # Shapes
    /// - `x`: `[B, in_channels, H, W]`
    /// - `temb`: `[B, temb_channels]` (ignored by a block built without `temb_channels`)
    /// - output: `[B, out_channels, H, W]`
    pub fn forward(&self, x: Tensor<B, 4>, temb: Option<Tensor<B, 2>>) -> Tensor<B, 4> {
        let h = conv2d(&self.conv1, norm::group_norm_silu(&self.norm1, x.clone()));
        let h = match (&self.time_emb_proj, temb) {
            (Some(proj), Some(temb)) => {
                let [b, c] = [h.dims()[0], h.dims()[1]];
                h + proj.forward(silu(temb)).reshape([b, c, 1, 1])
            }
            _ => h,
        };
        let h = conv2d(&self.conv2, norm::group_norm_silu(&self.norm2, h));
        let skip = match &self.conv_shortcut {
            Some(conv) => conv2d(conv, x),
            None => x,
        };
        let out = skip + h;
        if self.output_scale_factor == 1.0 {
            out
        } else {
            out.div_scalar(self.output_scale_factor)
        }
    }
}

/// Configuration of [`Downsample2D`] (`use_conv=True`).
#[derive(Config, Debug)]
pub struct Downsample2DConfig {
    /// Input channels.
    pub channels: usize,
    /// Output channels.
    pub out_channels: usize,
    /// Symmetric padding of the stride-2 convolution (`downsample_padding`, 1 in the UNet);
    /// 0 means diffusers' asymmetric `(0, 1, 0, 1)` zero padding (right and bottom), as the
    /// VAE encoder uses.
    pub padding: usize,
}

/// diffusers' `Downsample2D` with a convolution (`conv`, 3x3, stride 2).
#[derive(Module, Debug)]
pub struct Downsample2D<B: Backend> {
    /// The strided convolution.
    pub conv: Conv2d<B>,
}

impl Downsample2DConfig {
    /// Builds the layer with fresh (lazily initialised) weights.
    pub fn init<B: Backend>(&self, device: &B::Device) -> Downsample2D<B> {
        let p = self.padding;
        let padding = if p == 0 {
            PaddingConfig2d::Explicit(0, 0, 1, 1)
        } else {
            PaddingConfig2d::Explicit(p, p, p, p)
        };
        Downsample2D {
            conv: Conv2dConfig::new([self.channels, self.out_channels], [3, 3])
                .with_stride([2, 2])
                .with_padding(padding)
                .init(device),
        }
    }
}

impl<B: Backend> Downsample2D<B> {
    /// # Shapes
    /// - `x`: `[B, C, H, W]`
    /// - output: `[B, C_out, (H + 2p - 3) / 2 + 1, (W + 2p - 3) / 2 + 1]` (with padding 0:
    ///   `[.., (H - 2) / 2 + 1, (W - 2) / 2 + 1]`)
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        conv2d(&self.conv, x)
    }
}

/// Configuration of [`Upsample2D`] (`use_conv=True`).
#[derive(Config, Debug)]
pub struct Upsample2DConfig {
    /// Input channels.
    pub channels: usize,
    /// Output channels.
    pub out_channels: usize,
}

/// diffusers' `Upsample2D`: nearest-neighbour upsampling (x2, or to an explicit size)
/// followed by a 3x3 convolution (`conv`).
#[derive(Module, Debug)]
pub struct Upsample2D<B: Backend> {
    /// The convolution after upsampling.
    pub conv: Conv2d<B>,
}

impl Upsample2DConfig {
    /// Builds the layer with fresh (lazily initialised) weights.
    pub fn init<B: Backend>(&self, device: &B::Device) -> Upsample2D<B> {
        Upsample2D {
            conv: new_conv2d(self.channels, self.out_channels, 3, device),
        }
    }
}

impl<B: Backend> Upsample2D<B> {
    /// Upsamples to `output_size` (twice the input size when `None`), then convolves.
    ///
    /// # Shapes
    /// - `x`: `[B, C, H, W]`
    /// - output: `[B, C_out, 2H, 2W]` or `[B, C_out, output_size[0], output_size[1]]`
    pub fn forward(&self, x: Tensor<B, 4>, output_size: Option<[usize; 2]>) -> Tensor<B, 4> {
        let [_, _, h, w] = x.dims();
        let size = output_size.unwrap_or([2 * h, 2 * w]);
        conv2d(&self.conv, upsample_nearest(x, size))
    }
}

/// PyTorch's `nearest` source index (`nearest_idx` in `UpSample.h`): identity for equal
/// sizes, `i / 2` when doubling, else `min(floor(i * (in / out)), in - 1)` in float32.
fn nearest_indices(input: usize, output: usize) -> Vec<i64> {
    (0..output)
        .map(|i| {
            if output == input {
                i as i64
            } else if output == 2 * input {
                (i / 2) as i64
            } else {
                let scale = input as f32 / output as f32;
                ((i as f32 * scale).floor() as i64).min(input as i64 - 1)
            }
        })
        .collect()
}

/// `F.interpolate(x, size, mode="nearest")`.
///
/// # Shapes
/// - `x`: `[B, C, H, W]`
/// - output: `[B, C, size[0], size[1]]`
pub fn upsample_nearest<B: Backend>(x: Tensor<B, 4>, size: [usize; 2]) -> Tensor<B, 4> {
    let [b, c, h, w] = x.dims();
    if size == [2 * h, 2 * w] {
        // Each pixel repeated in a 2x2 block.
        return x
            .reshape([b, c, h, 1, w, 1])
            .expand([b, c, h, 2, w, 2])
            .reshape([b, c, 2 * h, 2 * w]);
    }
    let device = x.device();
    let select = |x: Tensor<B, 4>, dim: usize, input: usize, output: usize| {
        if input == output {
            return x;
        }
        let idx = nearest_indices(input, output);
        let idx = Tensor::<B, 1, Int>::from_data(TensorData::new(idx, [output]), &device);
        x.select(dim, idx)
    };
    let x = select(x, 2, h, size[0]);
    select(x, 3, w, size[1])
}

#[cfg(test)]
mod tests {
    use super::nearest_indices;

    #[test]
    fn nearest_indices_follow_pytorch() {
        // torch.nn.functional.interpolate(torch.arange(n), size=m, mode="nearest")
        assert_eq!(nearest_indices(2, 3), vec![0, 0, 1]);
        assert_eq!(nearest_indices(3, 5), vec![0, 0, 1, 1, 2]);
        assert_eq!(nearest_indices(3, 6), vec![0, 0, 1, 1, 2, 2]);
        assert_eq!(nearest_indices(5, 10), vec![0, 0, 1, 1, 2, 2, 3, 3, 4, 4]);
        assert_eq!(nearest_indices(4, 4), vec![0, 1, 2, 3]);
        assert_eq!(nearest_indices(7, 3), vec![0, 2, 4]);
    }
}
