//! The SDXL VAE: diffusers' `AutoencoderKL` (`models/autoencoders/autoencoder_kl.py`), built
//! from `vae/config.json`, and its loaders (diffusers folders, including the old attention
//! key names, and single-file checkpoints, see [`super::remap`]).
use std::path::Path;
use std::rc::Rc;

use burn::module::Module;
use burn::nn::conv::Conv2d;
use burn::tensor::backend::Backend;
use burn::tensor::{DType, Tensor, TensorData};

use super::config::AutoencoderKLConfig;
use super::decoder::{Decoder, DecoderConfig};
use super::encoder::{DiagonalGaussianDistribution, Encoder, EncoderConfig};
use super::remap;
use crate::nn::conv::conv2d;
use crate::nn::precision::cast;
use crate::nn::resnet::new_conv2d;
use crate::weights::{
    self, Precision, SafetensorsFile, SdxlSource, diffusers_weights_file, load_module_as,
};
use crate::{ModelError, Result};

/// Single-file key prefixes of the VAE, as diffusers looks for them (`LDM_VAE_KEYS`).
pub const SINGLE_FILE_VAE_PREFIXES: &[&str] = &["first_stage_model.", "vae."];

/// diffusers' `AutoencoderKL`.
#[derive(Module, Debug)]
pub struct AutoencoderKL<B: Backend> {
    /// Image encoder.
    pub encoder: Encoder<B>,
    /// Latent decoder.
    pub decoder: Decoder<B>,
    /// 1x1 convolution on the encoder's moments.
    pub quant_conv: Option<Conv2d<B>>,
    /// 1x1 convolution on the latents before decoding.
    pub post_quant_conv: Option<Conv2d<B>>,
    #[module(skip)]
    config: AutoencoderKLConfig,
}

impl AutoencoderKLConfig {
    /// Builds the VAE with fresh (lazily initialised) weights.
    pub fn init<B: Backend>(&self, device: &B::Device) -> AutoencoderKL<B> {
        let z = self.latent_channels;
        AutoencoderKL {
            encoder: EncoderConfig::new(
                self.in_channels,
                z,
                self.block_out_channels.clone(),
                self.layers_per_block,
                self.norm_num_groups,
                self.mid_block_add_attention,
            )
            .init(device),
            decoder: DecoderConfig::new(
                z,
                self.out_channels,
                self.block_out_channels.clone(),
                self.layers_per_block,
                self.norm_num_groups,
                self.mid_block_add_attention,
            )
            .init(device),
            quant_conv: self
                .use_quant_conv
                .then(|| new_conv2d(2 * z, 2 * z, 1, device)),
            post_quant_conv: self
                .use_post_quant_conv
                .then(|| new_conv2d(z, z, 1, device)),
            config: self.clone(),
        }
    }
}

impl<B: Backend> AutoencoderKL<B> {
    /// The configuration the model was built from.
    pub fn config(&self) -> &AutoencoderKLConfig {
        &self.config
    }

    /// `scaling_factor` of the configuration.
    pub fn scaling_factor(&self) -> f64 {
        self.config.scaling_factor
    }

    /// Loads a diffusers `vae/` folder: `config.json` and
    /// `diffusion_pytorch_model.safetensors` (or the `.fp16` variant), in
    /// [`Precision::Auto`]: f16 files stay f16 on a backend with f16, f32 otherwise. The
    /// mid-block attentions may use the current names (`to_q`, `to_k`, `to_v`, `to_out.0`)
    /// or the old ones (`query`, `key`, `value`, `proj_attn`).
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
        let config = AutoencoderKLConfig::from_file(config)?;
        let file = SafetensorsFile::open(diffusers_weights_file(dir)?)?;
        let mapped = remap::diffusers(&weights::file_entries(&file));
        Self::load_mapped(&config, &file, mapped, device, precision)
    }

    /// Builds the VAE of `config` and loads `mapped` tensors of `file` into it, in the
    /// type `precision` resolves to for them, upcast per [`AutoencoderKLConfig::run_dtype`].
    fn load_mapped(
        config: &AutoencoderKLConfig,
        file: &Rc<SafetensorsFile>,
        mapped: Vec<weights::Mapped>,
        device: &B::Device,
        precision: Precision,
    ) -> Result<Self> {
        let mut model = config.init::<B>(device);
        let stored = weights::mapped_dtype(file, &mapped);
        let dtype = config.run_dtype(precision.resolve::<B>(stored, device)?);
        load_module_as(&mut model, file, mapped, "vae", dtype)?;
        Ok(model)
    }

    /// Loads the VAE of a single-file checkpoint (`first_stage_model.*` or `vae.*` keys,
    /// other components ignored), in
    /// [`Precision::Auto`]. `config` is a diffusers `vae/config.json`;
    /// SDXL base's configuration when `None`.
    ///
    /// # Errors
    /// No VAE in the file, an unsupported configuration, missing/unused/misshapen tensors.
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
            Some(p) => AutoencoderKLConfig::from_file(p)?,
            None => {
                log::info!("vae: no configuration given, using SDXL base's");
                AutoencoderKLConfig::sdxl_base()
            }
        };
        let file = SafetensorsFile::open(file)?;
        // diffusers takes the last prefix of LDM_VAE_KEYS that any key starts with.
        let prefix = SINGLE_FILE_VAE_PREFIXES
            .iter()
            .rev()
            .find(|p| file.keys().any(|k| k.starts_with(*p)))
            .ok_or_else(|| {
                ModelError::weights(
                    file.path(),
                    format!(
                        "no `{}*` tensors: not a single-file checkpoint with a VAE",
                        SINGLE_FILE_VAE_PREFIXES.join("*` or `")
                    ),
                )
            })?;
        let mapped = remap::ldm(&weights::file_entries(&file), prefix, &config);
        Self::load_mapped(&config, &file, mapped, device, precision)
    }

    /// Loads the VAE of an SDXL model: `<root>/vae/` of a diffusers folder, or the single
    /// file (with `<config>/vae/config.json` when a configuration folder has one, SDXL
    /// base's configuration otherwise).
    pub fn load(source: &SdxlSource, device: &B::Device) -> Result<Self> {
        Self::load_as(source, device, Precision::Auto)
    }

    /// [`Self::load`] with the weights' float type chosen by `precision`.
    pub fn load_as(source: &SdxlSource, device: &B::Device, precision: Precision) -> Result<Self> {
        match source {
            SdxlSource::Diffusers { root, .. } => {
                let dir = root.join("vae");
                let config = source
                    .component_file("vae", "config.json")
                    .unwrap_or_else(|| dir.join("config.json"));
                Self::load_diffusers_with(&dir, &config, device, precision)
            }
            SdxlSource::SingleFile { file, .. } => Self::load_single_file_as(
                file,
                source.component_file("vae", "config.json").as_deref(),
                device,
                precision,
            ),
        }
    }

    /// The float type of the weights (inputs are cast to it, outputs back to the
    /// input's type).
    pub fn dtype(&self) -> DType {
        self.decoder.conv_in.weight.val().dtype()
    }

    /// Encodes images to the latent posterior (diffusers' `vae.encode(x).latent_dist`).
    ///
    /// # Shapes
    /// - `images`: `[B, in_channels, H, W]`, values in `[-1, 1]`
    /// - output: mean / std `[B, latent_channels, H / f, W / f]` in the images' float
    ///   type, `f` =
    ///   [`AutoencoderKLConfig::downscale_factor`]
    ///
    /// # Errors
    /// Wrong channel count or an empty image.
    pub fn encode(&self, images: Tensor<B, 4>) -> Result<DiagonalGaussianDistribution<B>> {
        let [b, c, h, w] = images.dims();
        if b == 0 || h == 0 || w == 0 || c != self.config.in_channels {
            return Err(ModelError::InvalidInput(format!(
                "images {:?}: expected [B, {}, H, W] with B, H, W > 0",
                images.dims(),
                self.config.in_channels
            )));
        }
        let io = images.dtype();
        let moments = self.encoder.forward(cast(images, self.dtype()));
        let moments = match &self.quant_conv {
            Some(conv) => conv2d(conv, moments),
            None => moments,
        };
        Ok(DiagonalGaussianDistribution::new(cast(moments, io)))
    }

    /// Decodes latents that are already un-scaled (divided by `scaling_factor`, see
    /// [`Self::unscale_latents`]), as diffusers' `vae.decode(z).sample`.
    ///
    /// # Shapes
    /// - `latents`: `[B, latent_channels, h, w]`
    /// - output: `[B, out_channels, h * f, w * f]`, values around `[-1, 1]`
    ///
    /// # Errors
    /// Wrong channel count or empty latents.
    pub fn decode(&self, latents: Tensor<B, 4>) -> Result<Tensor<B, 4>> {
        let [b, c, h, w] = latents.dims();
        if b == 0 || h == 0 || w == 0 || c != self.config.latent_channels {
            return Err(ModelError::InvalidInput(format!(
                "latents {:?}: expected [B, {}, h, w] with B, h, w > 0",
                latents.dims(),
                self.config.latent_channels
            )));
        }
        let io = latents.dtype();
        let latents = cast(latents, self.dtype());
        let z = match &self.post_quant_conv {
            Some(conv) => conv2d(conv, latents),
            None => latents,
        };
        Ok(cast(self.decoder.forward(z), io))
    }

    fn channel_stats(&self, values: &[f64], like: &Tensor<B, 4>) -> Tensor<B, 4> {
        let v: Vec<f32> = values.iter().map(|&x| x as f32).collect();
        let shape = [1, values.len(), 1, 1];
        Tensor::from_data(TensorData::new(v, shape), (&like.device(), like.dtype()))
    }

    /// VAE latents -> the diffusion model's latent space: `(z - mean) * scaling_factor / std`
    /// with `latents_mean`/`latents_std` (as SDXL pipelines do), else
    /// `(z - shift_factor) * scaling_factor` (`shift_factor` 0 when `null`, as for SDXL).
    ///
    /// # Shapes
    /// - `z`: `[B, latent_channels, h, w]` -> same
    pub fn scale_latents(&self, z: Tensor<B, 4>) -> Tensor<B, 4> {
        let c = &self.config;
        match (&c.latents_mean, &c.latents_std) {
            (Some(mean), Some(std)) => {
                let (mean, std) = (self.channel_stats(mean, &z), self.channel_stats(std, &z));
                (z - mean).mul_scalar(c.scaling_factor) / std
            }
            _ => z
                .sub_scalar(c.shift_factor.unwrap_or(0.0))
                .mul_scalar(c.scaling_factor),
        }
    }

    /// The inverse of [`Self::scale_latents`]: what [`Self::decode`] takes
    /// (`z / scaling_factor` for SDXL).
    ///
    /// # Shapes
    /// - `z`: `[B, latent_channels, h, w]` -> same
    pub fn unscale_latents(&self, z: Tensor<B, 4>) -> Tensor<B, 4> {
        let c = &self.config;
        match (&c.latents_mean, &c.latents_std) {
            (Some(mean), Some(std)) => {
                let (mean, std) = (self.channel_stats(mean, &z), self.channel_stats(std, &z));
                (z * std).div_scalar(c.scaling_factor) + mean
            }
            _ => z
                .div_scalar(c.scaling_factor)
                .add_scalar(c.shift_factor.unwrap_or(0.0)),
        }
    }
}
