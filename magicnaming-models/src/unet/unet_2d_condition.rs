//! The SDXL UNet: diffusers' `UNet2DConditionModel` (`models/unets/unet_2d_condition.py`)
//! with `addition_embed_type: "text_time"`, built from `unet/config.json`, and its loaders
//! (diffusers folders and single-file SDXL checkpoints, see [`super::remap`]).
use std::path::Path;

use burn::module::Module;
use burn::nn::GroupNorm;
use burn::nn::conv::Conv2d;
use burn::tensor::backend::Backend;
use burn::tensor::{DType, Tensor};

use super::blocks::{
    CrossAttentionConfig, DownBlock2D, DownBlock2DConfig, UNetMidBlock2DCrossAttn,
    UNetMidBlock2DCrossAttnConfig, UpBlock2D, UpBlock2DConfig,
};
use super::config::{DownBlockType, UNet2DConditionModelConfig, UpBlockType};
use super::embeddings::{TimestepEmbedding, TimestepEmbeddingConfig, Timesteps, TimestepsConfig};
use super::remap;
use super::transformer::Transformer2DModel;
use crate::nn::attention::Attention;
use crate::nn::conv::conv2d;
use crate::nn::norm;
use crate::nn::precision::cast;
use crate::nn::resnet::{group_norm, new_conv2d};
use crate::weights::{
    Precision, SafetensorsFile, SdxlSource, diffusers_weights_file, file_entries, load_module_auto,
};
use crate::{ModelError, Result};

/// Single-file key prefix of the UNet (Stability "sgm" / LDM checkpoints).
pub const SINGLE_FILE_UNET_PREFIX: &str = "model.diffusion_model.";

/// The denoising timestep(s) of one UNet call.
#[derive(Debug, Clone)]
pub enum Timestep<B: Backend> {
    /// One timestep for the whole batch (diffusers converts a Python float to float64,
    /// then the embedding to float32).
    Scalar(f64),
    /// `[B]` (or `[1]`, broadcast) timesteps.
    PerSample(Tensor<B, 1>),
}

impl<B: Backend> From<f64> for Timestep<B> {
    fn from(t: f64) -> Self {
        Self::Scalar(t)
    }
}

impl<B: Backend> From<f32> for Timestep<B> {
    fn from(t: f32) -> Self {
        Self::Scalar(t as f64)
    }
}

impl<B: Backend> From<Tensor<B, 1>> for Timestep<B> {
    fn from(t: Tensor<B, 1>) -> Self {
        Self::PerSample(t)
    }
}

/// diffusers' `UNet2DConditionModel` (SD/SDXL subset, see [`UNet2DConditionModelConfig`]).
#[derive(Module, Debug)]
pub struct UNet2DConditionModel<B: Backend> {
    /// Input convolution.
    pub conv_in: Conv2d<B>,
    /// Sinusoidal timestep projection.
    pub time_proj: Timesteps,
    /// Timestep MLP.
    pub time_embedding: TimestepEmbedding<B>,
    /// Sinusoidal projection of each `time_ids` entry (SDXL micro-conditioning).
    pub add_time_proj: Timesteps,
    /// MLP of `[text_embeds, time_ids embeddings]`, added to the time embedding.
    pub add_embedding: TimestepEmbedding<B>,
    /// Encoder levels.
    pub down_blocks: Vec<DownBlock2D<B>>,
    /// Bottleneck.
    pub mid_block: UNetMidBlock2DCrossAttn<B>,
    /// Decoder levels, deepest first.
    pub up_blocks: Vec<UpBlock2D<B>>,
    /// Output GroupNorm.
    pub conv_norm_out: GroupNorm<B>,
    /// Output convolution.
    pub conv_out: Conv2d<B>,
    #[module(skip)]
    config: UNet2DConditionModelConfig,
}

impl UNet2DConditionModelConfig {
    /// Builds the UNet with fresh (lazily initialised) weights.
    pub fn init<B: Backend>(&self, device: &B::Device) -> UNet2DConditionModel<B> {
        let levels = self.levels();
        let boc = &self.block_out_channels;
        let temb = self.time_embed_dim();
        let (groups, eps) = (self.norm_num_groups, self.norm_eps);
        let cross = |level: usize| {
            CrossAttentionConfig::new(
                self.num_attention_heads[level],
                self.transformer_layers_per_block[level],
                self.cross_attention_dim[level],
                self.use_linear_projection,
            )
        };
        let down_blocks = (0..levels)
            .map(|i| {
                DownBlock2DConfig::new(
                    if i == 0 { boc[0] } else { boc[i - 1] },
                    boc[i],
                    temb,
                    self.layers_per_block[i],
                    groups,
                    eps,
                    i + 1 < levels,
                    self.downsample_padding,
                )
                .with_cross_attention(
                    (self.down_block_types[i] == DownBlockType::CrossAttnDownBlock2D)
                        .then(|| cross(i)),
                )
                .init(device)
            })
            .collect();
        let mid_block = UNetMidBlock2DCrossAttnConfig::new(
            boc[levels - 1],
            temb,
            groups,
            eps,
            self.mid_block_scale_factor,
            cross(levels - 1),
        )
        .init(device);
        // Up block i works at level `levels - 1 - i`; diffusers reverses the per-level lists.
        let up_blocks = (0..levels)
            .map(|i| {
                let level = levels - 1 - i;
                let prev = boc[(level + 1).min(levels - 1)];
                let skip_in = boc[level.saturating_sub(1)];
                UpBlock2DConfig::new(
                    skip_in,
                    prev,
                    boc[level],
                    temb,
                    self.layers_per_block[level] + 1,
                    groups,
                    eps,
                    i + 1 < levels,
                )
                .with_cross_attention(
                    (self.up_block_types[i] == UpBlockType::CrossAttnUpBlock2D)
                        .then(|| cross(level)),
                )
                .init(device)
            })
            .collect();
        UNet2DConditionModel {
            conv_in: new_conv2d(self.in_channels, boc[0], self.conv_in_kernel, device),
            time_proj: TimestepsConfig::new(boc[0], self.flip_sin_to_cos, self.freq_shift).init(),
            time_embedding: TimestepEmbeddingConfig::new(boc[0], temb).init(device),
            add_time_proj: TimestepsConfig::new(
                self.addition_time_embed_dim,
                self.flip_sin_to_cos,
                self.freq_shift,
            )
            .init(),
            add_embedding: TimestepEmbeddingConfig::new(
                self.projection_class_embeddings_input_dim,
                temb,
            )
            .init(device),
            down_blocks,
            mid_block,
            up_blocks,
            conv_norm_out: group_norm(groups, boc[0], eps, device),
            conv_out: new_conv2d(boc[0], self.out_channels, self.conv_out_kernel, device),
            config: self.clone(),
        }
    }
}

impl<B: Backend> UNet2DConditionModel<B> {
    /// The configuration the model was built from.
    pub fn config(&self) -> &UNet2DConditionModelConfig {
        &self.config
    }

    /// Loads a diffusers `unet/` folder: `config.json` and
    /// `diffusion_pytorch_model.safetensors` (or the `.fp16` variant), in
    /// [`Precision::Auto`]: f16 files stay f16 on a backend with f16, f32 otherwise.
    ///
    /// # Errors
    /// Missing files, an unsupported configuration, missing/unused/misshapen tensors.
    pub fn load_diffusers(dir: impl AsRef<Path>, device: &B::Device) -> Result<Self> {
        let dir = dir.as_ref();
        Self::load_diffusers_with(dir, &dir.join("config.json"), device, Precision::Auto)
    }

    fn load_diffusers_with(
        dir: &Path,
        config: &Path,
        device: &B::Device,
        precision: Precision,
    ) -> Result<Self> {
        let config = UNet2DConditionModelConfig::from_file(config)?;
        let file = SafetensorsFile::open(diffusers_weights_file(dir)?)?;
        let mut model = config.init::<B>(device);
        let mapped = remap::diffusers(&file_entries(&file));
        load_module_auto(&mut model, &file, mapped, "unet", precision, device)?;
        Ok(model)
    }

    /// Loads the UNet of a single-file SDXL checkpoint (`model.diffusion_model.*` keys,
    /// other components ignored), in
    /// [`Precision::Auto`]. `config` is a diffusers `unet/config.json`;
    /// SDXL base's configuration when `None`.
    ///
    /// # Errors
    /// No UNet in the file, an unsupported configuration, missing/unused/misshapen tensors.
    pub fn load_single_file(
        file: impl AsRef<Path>,
        config: Option<&Path>,
        device: &B::Device,
    ) -> Result<Self> {
        Self::load_single_file_as(file.as_ref(), config, device, Precision::Auto)
    }

    fn load_single_file_as(
        file: &Path,
        config: Option<&Path>,
        device: &B::Device,
        precision: Precision,
    ) -> Result<Self> {
        let config = match config {
            Some(p) => UNet2DConditionModelConfig::from_file(p)?,
            None => {
                log::info!("unet: no configuration given, using SDXL base's");
                UNet2DConditionModelConfig::sdxl_base()
            }
        };
        let file = SafetensorsFile::open(file)?;
        if file.keys().all(|k| !k.starts_with(SINGLE_FILE_UNET_PREFIX)) {
            return Err(ModelError::weights(
                file.path(),
                format!(
                    "no `{SINGLE_FILE_UNET_PREFIX}*` tensors: not a single-file checkpoint with a UNet"
                ),
            ));
        }
        let mut model = config.init::<B>(device);
        let mapped = remap::ldm(&file_entries(&file), SINGLE_FILE_UNET_PREFIX, &config);
        load_module_auto(&mut model, &file, mapped, "unet", precision, device)?;
        Ok(model)
    }

    /// Loads the UNet of an SDXL model: `<root>/unet/` of a diffusers folder, or the
    /// single file (with `<config>/unet/config.json` when a configuration folder has one,
    /// SDXL base's configuration otherwise).
    pub fn load(source: &SdxlSource, device: &B::Device) -> Result<Self> {
        Self::load_as(source, device, Precision::Auto)
    }

    /// [`Self::load`] with the weights' float type chosen by `precision`.
    pub fn load_as(source: &SdxlSource, device: &B::Device, precision: Precision) -> Result<Self> {
        match source {
            SdxlSource::Diffusers { root, .. } => {
                let dir = root.join("unet");
                let config = source
                    .component_file("unet", "config.json")
                    .unwrap_or_else(|| dir.join("config.json"));
                Self::load_diffusers_with(&dir, &config, device, precision)
            }
            SdxlSource::SingleFile { file, .. } => Self::load_single_file_as(
                file,
                source.component_file("unet", "config.json").as_deref(),
                device,
                precision,
            ),
        }
    }

    /// Predicts the noise (or v) for `sample` at `timestep`, conditioned on the prompt
    /// embeddings and SDXL's micro-conditioning, as diffusers'
    /// `unet(sample, timestep, encoder_hidden_states, added_cond_kwargs={"text_embeds",
    /// "time_ids"})`.
    ///
    /// # Shapes
    /// - `sample`: `[B, in_channels, h, w]` (any `h`, `w`; skips are upsampled to match)
    /// - `timestep`: a scalar, or `[B]` / `[1]`
    /// - `encoder_hidden_states`: `[B, S, cross_attention_dim]` (`[B, 77, 2048]` for SDXL)
    /// - `text_embeds`: `[B, P]` (pooled prompt embedding, `P = 1280` for SDXL)
    /// - `time_ids`: `[B, N]` with `P + N * addition_time_embed_dim =
    ///   projection_class_embeddings_input_dim` (`N = 6`: original size, crop top-left,
    ///   target size)
    /// - output: `[B, out_channels, h, w]`, in `sample`'s float type (inputs of any float
    ///   type are cast to the weights' type, see [`Self::dtype`])
    ///
    /// # Errors
    /// Inputs whose shapes do not fit the model or each other.
    pub fn forward(
        &self,
        sample: Tensor<B, 4>,
        timestep: impl Into<Timestep<B>>,
        encoder_hidden_states: Tensor<B, 3>,
        text_embeds: Tensor<B, 2>,
        time_ids: Tensor<B, 2>,
    ) -> Result<Tensor<B, 4>> {
        let c = &self.config;
        let [batch, channels, h, w] = sample.dims();
        let [eb, _, ed] = encoder_hidden_states.dims();
        let [tb, p] = text_embeds.dims();
        let [ib, n_ids] = time_ids.dims();
        let bad = |m: String| Err(ModelError::InvalidInput(m));
        if batch == 0 || h == 0 || w == 0 || channels != c.in_channels {
            return bad(format!(
                "sample {:?}: expected [B, {}, h, w] with B, h, w > 0",
                sample.dims(),
                c.in_channels
            ));
        }
        if (eb, tb, ib) != (batch, batch, batch) {
            return bad(format!(
                "batch sizes differ: sample {batch}, encoder_hidden_states {eb}, text_embeds {tb}, time_ids {ib}"
            ));
        }
        if c.cross_attention_dim.iter().any(|&d| d != ed) {
            return bad(format!(
                "encoder_hidden_states width {ed}, the model expects {:?}",
                c.cross_attention_dim
            ));
        }
        if p + n_ids * c.addition_time_embed_dim != c.projection_class_embeddings_input_dim {
            return bad(format!(
                "text_embeds width {p} + {n_ids} time_ids x {} != projection_class_embeddings_input_dim {}",
                c.addition_time_embed_dim, c.projection_class_embeddings_input_dim
            ));
        }
        let device = sample.device();
        // Mixed precision as diffusers: the model runs in its weights' type, the timestep
        // and time-id sinusoids are built in f32 and cast, the output gets the input's type.
        let (io, dtype) = (sample.dtype(), self.dtype());
        let timesteps = match timestep.into() {
            Timestep::Scalar(t) => Tensor::<B, 1>::full([batch], t as f32, (&device, DType::F32)),
            Timestep::PerSample(t) => match t.dims() {
                [n] if n == batch => cast(t, DType::F32),
                [1] => cast(t, DType::F32).expand([batch]),
                d => return bad(format!("timesteps {d:?} for a batch of {batch}")),
            },
        };
        let sample = cast(sample, dtype);
        let sample = if c.center_input_sample {
            sample.mul_scalar(2.0).sub_scalar(1.0)
        } else {
            sample
        };

        let mut emb = self
            .time_embedding
            .forward(cast(self.time_proj.forward(timesteps), dtype));
        let time_embeds = self
            .add_time_proj
            .forward(cast(time_ids, DType::F32).reshape([batch * n_ids]))
            .reshape([batch, n_ids * c.addition_time_embed_dim]);
        emb = emb
            + self.add_embedding.forward(Tensor::cat(
                vec![cast(text_embeds, dtype), cast(time_embeds, dtype)],
                1,
            ));

        let context = cast(encoder_hidden_states, dtype);
        let mut h = conv2d(&self.conv_in, sample);
        let mut skips = vec![h.clone()];
        for block in &self.down_blocks {
            let (out, states) = block.forward(h, &emb, &context);
            h = out;
            skips.extend(states);
        }
        h = self.mid_block.forward(h, &emb, &context);
        for block in &self.up_blocks {
            let consumed = block.resnets.len();
            // Upsample to the size of the next skip state (diffusers' `upsample_size`;
            // exactly twice the size whenever the latent size divides evenly).
            let upsample_size = (!block.upsamplers.is_empty()).then(|| {
                let [_, _, sh, sw] = skips[skips.len() - consumed - 1].dims();
                [sh, sw]
            });
            h = block.forward(h, &mut skips, &emb, &context, upsample_size);
        }
        let out = conv2d(
            &self.conv_out,
            norm::group_norm_silu(&self.conv_norm_out, h),
        );
        Ok(cast(out, io))
    }

    /// The float type of the weights (inputs are cast to it, the output back to the
    /// sample's type).
    pub fn dtype(&self) -> DType {
        self.conv_in.weight.val().dtype()
    }

    /// Calls `f` on every attention layer of the transformer blocks with its diffusers
    /// module path (`down_blocks.1.attentions.0.transformer_blocks.0.attn1`), in the
    /// order of the model's `state_dict`.
    pub fn for_each_attention_mut(&mut self, mut f: impl FnMut(&str, &mut Attention<B>)) {
        let mut visit = |prefix: String, attentions: &mut Vec<Transformer2DModel<B>>| {
            for (j, t) in attentions.iter_mut().enumerate() {
                for (k, block) in t.transformer_blocks.iter_mut().enumerate() {
                    let base = format!("{prefix}.attentions.{j}.transformer_blocks.{k}");
                    f(&format!("{base}.attn1"), &mut block.attn1);
                    f(&format!("{base}.attn2"), &mut block.attn2);
                }
            }
        };
        for (i, b) in self.down_blocks.iter_mut().enumerate() {
            visit(format!("down_blocks.{i}"), &mut b.attentions);
        }
        for (i, b) in self.up_blocks.iter_mut().enumerate() {
            visit(format!("up_blocks.{i}"), &mut b.attentions);
        }
        visit("mid_block".into(), &mut self.mid_block.attentions);
    }
}
