//! The CLIP image tower: transformers' `CLIPVisionEmbeddings`, `CLIPVisionTransformer`
//! (`CLIPVisionModel` in transformers 5) and `CLIPVisionModelWithProjection`'s
//! `visual_projection`. MagicNaming uses two: OpenAI CLIP ViT-L/14 (768-d image embeds)
//! and OpenCLIP ViT-bigG/14 (1280-d), see [`ClipVisionConfig::vit_l_14`] and
//! [`ClipVisionConfig::vit_bigg_14`]. open_clip's `VisionTransformer` computes the same
//! function (`ln_pre` = `pre_layrnorm`, `ln_post` on the class token = `post_layernorm`,
//! `x @ proj` = `visual_projection`); `super::remap_vision` maps its keys.
use burn::module::{Module, Param};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{
    Embedding, EmbeddingConfig, Initializer, LayerNorm, LayerNormConfig, Linear, LinearConfig,
};
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;

use super::config::ClipVisionConfig;
use super::encoder::{ClipEncoder, ClipEncoderConfig};
use crate::nn::conv::conv2d;
use crate::nn::{norm, precision};
use crate::{ModelError, Result};

/// Class token, patch stem and position table (`CLIPVisionEmbeddings`).
#[derive(Module, Debug)]
pub struct ClipVisionEmbeddings<B: Backend> {
    /// `[H]`: the class token.
    pub class_embedding: Param<Tensor<B, 1>>,
    /// Patch stem: `Conv2d(3, H, patch, stride = patch)` without bias.
    pub patch_embedding: Conv2d<B>,
    /// `[num_patches + 1, H]`.
    pub position_embedding: Embedding<B>,
}

impl<B: Backend> ClipVisionEmbeddings<B> {
    /// # Shapes
    /// - `pixel_values`: `[B, C, S, S]`
    /// - output: `[B, (S / patch)^2 + 1, H]`
    pub fn forward(&self, pixel_values: Tensor<B, 4>) -> Tensor<B, 3> {
        let batch = pixel_values.dims()[0];
        let patches = conv2d(&self.patch_embedding, pixel_values); // [B, H, g, g]
        let [_, hidden, gh, gw] = patches.dims();
        let patches = patches.reshape([batch, hidden, gh * gw]).swap_dims(1, 2);
        let class = self
            .class_embedding
            .val()
            .reshape([1, 1, hidden])
            .expand([batch, 1, hidden]);
        let x = Tensor::cat(vec![class, patches], 1);
        let positions = self.position_embedding.weight.val().unsqueeze::<3>();
        x + positions
    }
}

/// The vision transformer with its projection (`CLIPVisionModelWithProjection`).
#[derive(Module, Debug)]
pub struct ClipVisionModel<B: Backend> {
    /// Embeddings.
    pub embeddings: ClipVisionEmbeddings<B>,
    /// LayerNorm before the transformer (transformers spells it `pre_layrnorm`).
    pub pre_layrnorm: LayerNorm<B>,
    /// Transformer layers (non-causal).
    pub encoder: ClipEncoder<B>,
    /// LayerNorm of the pooled class token.
    pub post_layernorm: LayerNorm<B>,
    /// `visual_projection` (no bias): `[H] -> [P]`.
    pub visual_projection: Linear<B>,
    #[module(skip)]
    image_size: usize,
    #[module(skip)]
    num_channels: usize,
}

/// Everything a forward pass yields.
#[derive(Debug, Clone)]
pub struct ClipVisionOutput<B: Backend> {
    /// `[B, P]`: `visual_projection(pooled_output)`, the CLIP image embedding.
    pub image_embeds: Tensor<B, 2>,
    /// `[B, H]`: `post_layernorm` of the final class token (`pooler_output`).
    pub pooled_output: Tensor<B, 2>,
    /// `[B, L, H]`: output of the last layer (no final norm), `L = (S / patch)^2 + 1`.
    pub last_hidden_state: Tensor<B, 3>,
}

impl ClipVisionConfig {
    /// Builds the tower with fresh (lazily initialised) weights.
    pub fn init<B: Backend>(&self, device: &B::Device) -> ClipVisionModel<B> {
        let h = self.hidden_size;
        let p = self.patch_size;
        let grid = self.image_size / p;
        let norm = || {
            LayerNormConfig::new(h)
                .with_epsilon(self.layer_norm_eps)
                .init(device)
        };
        ClipVisionModel {
            embeddings: ClipVisionEmbeddings {
                class_embedding: Initializer::Normal {
                    mean: 0.0,
                    std: (h as f64).powf(-0.5),
                }
                .init([h], device),
                patch_embedding: Conv2dConfig::new([self.num_channels, h], [p, p])
                    .with_stride([p, p])
                    .with_bias(false)
                    .init(device),
                position_embedding: EmbeddingConfig::new(grid * grid + 1, h).init(device),
            },
            pre_layrnorm: norm(),
            encoder: ClipEncoderConfig::new(
                h,
                self.intermediate_size,
                self.num_attention_heads,
                self.num_hidden_layers,
                self.hidden_act,
                self.layer_norm_eps,
            )
            .init(device),
            post_layernorm: norm(),
            visual_projection: LinearConfig::new(h, self.projection_dim)
                .with_bias(false)
                .init(device),
            image_size: self.image_size,
            num_channels: self.num_channels,
        }
    }
}

impl<B: Backend> ClipVisionModel<B> {
    /// Encodes preprocessed images (see `clip::image_processor`).
    ///
    /// # Shapes
    /// - `pixel_values`: `[B, C, S, S]` with `S` = `image_size` of the configuration
    /// - output: see [`ClipVisionOutput`], in the pixels' float type
    ///
    /// # Errors
    /// An empty batch, or pixel values of another size or channel count (transformers
    /// raises too; position-embedding interpolation is not supported).
    pub fn forward(&self, pixel_values: Tensor<B, 4>) -> Result<ClipVisionOutput<B>> {
        let [batch, channels, height, width] = pixel_values.dims();
        if batch == 0 {
            return Err(ModelError::InvalidInput("no images to encode".into()));
        }
        if channels != self.num_channels || height != self.image_size || width != self.image_size {
            return Err(ModelError::InvalidInput(format!(
                "pixel values of shape {:?} do not fit the vision tower: expected [B, {}, {}, {}]",
                pixel_values.dims(),
                self.num_channels,
                self.image_size,
                self.image_size
            )));
        }
        // The tower runs in its weights' type; outputs come back in the pixels' type.
        let io = pixel_values.dtype();
        let pixel_values = precision::cast(pixel_values, self.pre_layrnorm.gamma.val().dtype());
        let x = norm::layer_norm(&self.pre_layrnorm, self.embeddings.forward(pixel_values));
        let last_hidden_state = self
            .encoder
            .forward_all(x, false)
            .pop()
            .expect("the encoder returns at least its input");
        let hidden = self.hidden_size();
        let class = last_hidden_state
            .clone()
            .slice([0..batch, 0..1, 0..hidden])
            .reshape([batch, hidden]);
        let pooled_output = norm::layer_norm(&self.post_layernorm, class);
        let image_embeds = self.visual_projection.forward(pooled_output.clone());
        Ok(ClipVisionOutput {
            image_embeds: precision::cast(image_embeds, io),
            pooled_output: precision::cast(pooled_output, io),
            last_hidden_state: precision::cast(last_hidden_state, io),
        })
    }

    /// Input resolution `S`.
    pub fn image_size(&self) -> usize {
        self.image_size
    }

    /// Width `H`.
    pub fn hidden_size(&self) -> usize {
        self.pre_layrnorm.gamma.dims()[0]
    }

    /// Width `P` of the image embeddings.
    pub fn projection_dim(&self) -> usize {
        self.visual_projection.weight.dims()[1]
    }

    /// Token positions `(S / patch)^2 + 1`.
    pub fn num_positions(&self) -> usize {
        self.embeddings.position_embedding.weight.dims()[0]
    }
}
