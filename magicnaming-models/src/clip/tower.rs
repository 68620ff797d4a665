//! A CLIP image tower on disk: weights + architecture + preprocessing, in any of the
//! layouts `super::remap_vision` reads.
//!
//! A tower is either
//! - a **folder**: `config.json` + `model.safetensors` (or `model.fp16.safetensors`) as
//!   transformers writes a `CLIPVisionModelWithProjection` or a full `CLIPModel`
//!   (openai/clip-vit-large-patch14, IP-Adapter's `image_encoder/`), or
//!   `open_clip_config.json` + `open_clip_model.safetensors` as open_clip repositories
//!   ship them; `preprocessor_config.json` is optional;
//! - a **single `.safetensors` file** in either layout; its architecture comes from a
//!   sibling `config.json` / `open_clip_config.json`, else from the tensor shapes when
//!   they match CLIP ViT-L/14 or OpenCLIP ViT-bigG/14 (the head count and activation
//!   cannot be read from shapes); its preprocessing from a sibling
//!   `preprocessor_config.json`.
//!
//! Without `preprocessor_config.json` the processor uses transformers' defaults with
//! `size` = `crop_size` = the tower's `image_size`, and an open_clip configuration's
//! `preprocess_cfg.mean` / `std` when present.
use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;
use serde_json::Value;

use super::config::ClipVisionConfig;
use super::image_processor::{ClipImageProcessor, ClipImageProcessorConfig};
use super::remap_vision::VisionLayout;
use super::vision::ClipVisionModel;
use super::vision_arch::{infer_vision_config, is_open_clip_config, vision_config_from_open_clip};
use crate::json::read_json;
use crate::weights::{SafetensorsFile, load_module};
use crate::{ModelError, Result};

/// Weight files of a tower folder, in order of preference.
pub const TOWER_WEIGHT_FILES: &[&str] = &[
    "model.safetensors",
    "model.fp16.safetensors",
    "open_clip_model.safetensors",
];

/// A loaded, frozen image tower with its preprocessing.
#[derive(Debug)]
pub struct ClipVisionTower<B: Backend> {
    /// The network (parameters marked no-grad).
    pub model: ClipVisionModel<B>,
    /// Its `CLIPImageProcessor`.
    pub processor: ClipImageProcessor,
    /// Layout the weights were stored in.
    pub layout: VisionLayout,
    /// The weights file.
    pub weights: PathBuf,
}

/// Pixel values and image embeddings of a batch of images.
#[derive(Debug, Clone)]
pub struct ImageEmbedding<B: Backend> {
    /// `[N, 3, S, S]`, the preprocessed images.
    pub pixel_values: Tensor<B, 4>,
    /// `[N, P]`, the tower's `image_embeds`.
    pub image_embeds: Tensor<B, 2>,
}

impl<B: Backend> ImageEmbedding<B> {
    /// Writes f32 tensors `image_embeds` `[N, P]` and `pixel_values` `[N, 3, S, S]` to a
    /// `.safetensors` file, atomically (temporary file, then rename).
    pub fn save(&self, path: &Path) -> Result<()> {
        let tensors = [
            (
                "image_embeds",
                flat(&self.image_embeds.clone().into_data()),
                self.image_embeds.dims().to_vec(),
            ),
            (
                "pixel_values",
                flat(&self.pixel_values.clone().into_data()),
                self.pixel_values.dims().to_vec(),
            ),
        ];
        let bytes = crate::weights::write::f32_safetensors(
            &tensors,
            &[("format", "magicnaming-image-embedding")],
        )
        .map_err(|e| ModelError::weights(path, e))?;
        Ok(magicnaming_core::write_atomic(path, &bytes)?)
    }
}

fn flat(data: &burn::tensor::TensorData) -> Vec<f32> {
    data.iter::<f32>().collect()
}

/// Parses a tower configuration file (transformers or open_clip). Returns the config and
/// the open_clip `preprocess_cfg` if any.
fn parse_config(path: &Path) -> Result<(ClipVisionConfig, Option<Value>)> {
    parse_config_value(&read_json(path)?, path)
}

/// Parses a tower configuration (a transformers `CLIPVisionConfig` / `CLIPConfig`, or an
/// open_clip model configuration); `path` names its source in errors. Returns the
/// architecture and the open_clip `preprocess_cfg` if any.
pub fn parse_config_value(root: &Value, path: &Path) -> Result<(ClipVisionConfig, Option<Value>)> {
    if is_open_clip_config(root) {
        let pre = root.get("preprocess_cfg").cloned();
        return Ok((vision_config_from_open_clip(root, path)?, pre));
    }
    let looks_clip = root.get("vision_config").is_some()
        || (root.get("hidden_size").is_some() && root.get("patch_size").is_some());
    if !looks_clip {
        return Err(ModelError::config(
            path,
            "not a CLIP vision configuration (no `vision_config`, nor `hidden_size` + `patch_size`, nor open_clip's `vision_cfg`)",
        ));
    }
    Ok((ClipVisionConfig::from_json_value(root, path)?, None))
}

/// Folder → (weights, config file, preprocessor file).
fn resolve_folder(dir: &Path) -> Result<(PathBuf, Option<PathBuf>, Option<PathBuf>)> {
    let weights = TOWER_WEIGHT_FILES
        .iter()
        .map(|f| dir.join(f))
        .find(|p| p.is_file())
        .ok_or_else(|| ModelError::MissingFile {
            path: dir.to_path_buf(),
            what: format!(
                "image tower weights: one of {} (.bin files are not read)",
                TOWER_WEIGHT_FILES.join(", ")
            ),
        })?;
    let open_clip_first = weights
        .file_name()
        .is_some_and(|n| n == "open_clip_model.safetensors");
    let order: [&str; 2] = if open_clip_first {
        ["open_clip_config.json", "config.json"]
    } else {
        ["config.json", "open_clip_config.json"]
    };
    let config = order.iter().map(|f| dir.join(f)).find(|p| p.is_file());
    let pre = Some(dir.join("preprocessor_config.json")).filter(|p| p.is_file());
    Ok((weights, config, pre))
}

impl<B: Backend> ClipVisionTower<B> {
    /// Loads a tower from a folder or a `.safetensors` file (see the module docs).
    ///
    /// # Errors
    /// [`ModelError::MissingFile`] for a missing tower or weights file; a configuration
    /// that is missing (and cannot be inferred) or invalid; missing, unused or misshaped
    /// tensors, all named; a preprocessor whose output is not `image_size` square.
    pub fn load(path: &Path, device: &B::Device) -> Result<Self> {
        Self::load_with(path, None, None, device)
    }

    /// [`Self::load`] with an explicit architecture and/or preprocessing that replace the
    /// files' (a name encoder's `config.json` may embed them).
    pub fn load_with(
        path: &Path,
        config: Option<ClipVisionConfig>,
        processor: Option<ClipImageProcessorConfig>,
        device: &B::Device,
    ) -> Result<Self> {
        let (weights, config_file, pre_file) = if path.is_dir() {
            resolve_folder(path)?
        } else if path.is_file() {
            if path.extension().is_none_or(|e| e != "safetensors") {
                return Err(ModelError::weights(
                    path,
                    "an image tower file must be .safetensors",
                ));
            }
            let dir = path.parent().unwrap_or(Path::new("."));
            let config = ["config.json", "open_clip_config.json"]
                .iter()
                .map(|f| dir.join(f))
                .find(|p| p.is_file());
            let pre = Some(dir.join("preprocessor_config.json")).filter(|p| p.is_file());
            (path.to_path_buf(), config, pre)
        } else {
            return Err(ModelError::MissingFile {
                path: path.to_path_buf(),
                what: "a CLIP image tower (a folder or a .safetensors file)".into(),
            });
        };
        let file = SafetensorsFile::open(&weights)?;
        let layout = VisionLayout::detect(&file)?;
        let (config, preprocess_cfg) = match (config, &config_file) {
            (Some(c), _) => (c, None),
            (None, Some(p)) => parse_config(p)?,
            (None, None) => (infer_vision_config(&file, &layout)?, None),
        };
        let mut model = config.init::<B>(device);
        load_module(
            &mut model,
            &file,
            layout.remap(&file),
            &format!("{} image tower", layout.name()),
        )?;
        let model = model.no_grad();
        let processor = match (processor, pre_file) {
            (Some(p), _) => p,
            (None, Some(p)) => ClipImageProcessorConfig::from_file(&p)?,
            (None, None) => {
                let mut p = ClipImageProcessorConfig::for_image_size(config.image_size);
                if let Some(pre) = preprocess_cfg {
                    let src = config_file.clone().unwrap_or_default();
                    let get = |k: &str| -> Result<Option<[f32; 3]>> {
                        match pre.get(k) {
                            None | Some(Value::Null) => Ok(None),
                            Some(Value::Array(a))
                                if a.len() == 3 && a.iter().all(Value::is_number) =>
                            {
                                Ok(Some(
                                    [0, 1, 2].map(|i| a[i].as_f64().unwrap_or(f64::NAN) as f32),
                                ))
                            }
                            Some(v) => Err(ModelError::config(
                                &src,
                                format!("preprocess_cfg.{k} = {v}: expected 3 numbers"),
                            )),
                        }
                    };
                    p.image_mean = get("mean")?.unwrap_or(p.image_mean);
                    p.image_std = get("std")?.unwrap_or(p.image_std);
                }
                p
            }
        };
        let s = config.image_size;
        if processor.output_size() != Some((s, s)) {
            return Err(ModelError::config(
                weights.clone(),
                format!(
                    "the preprocessing gives {:?} pixel values but the tower takes {s}x{s} (crop_size / size must be {s})",
                    processor.output_size()
                ),
            ));
        }
        log::info!(
            "{}: {} image tower, {} layers, width {}, {} -> {}-d embeddings",
            weights.display(),
            layout.name(),
            config.num_hidden_layers,
            config.hidden_size,
            s,
            config.projection_dim
        );
        Ok(Self {
            model,
            processor: ClipImageProcessor::new(processor),
            layout,
            weights,
        })
    }

    /// Width `P` of the image embeddings.
    pub fn projection_dim(&self) -> usize {
        self.model.projection_dim()
    }

    /// Input resolution `S`.
    pub fn image_size(&self) -> usize {
        self.model.image_size()
    }

    /// Image embeddings of preprocessed images.
    ///
    /// # Shapes
    /// - `pixel_values`: `[N, 3, S, S]`
    /// - output: `[N, P]`
    pub fn embed_pixels(&self, pixel_values: Tensor<B, 4>) -> Result<Tensor<B, 2>> {
        Ok(self.model.forward(pixel_values)?.image_embeds)
    }

    /// Reads, preprocesses and embeds image files (one batch).
    ///
    /// # Shapes
    /// - output: `pixel_values` `[N, 3, S, S]`, `image_embeds` `[N, P]`
    ///
    /// # Errors
    /// No files, or the first unreadable one ([`ModelError::Image`] naming it).
    pub fn embed_image_files(&self, paths: &[impl AsRef<Path>]) -> Result<ImageEmbedding<B>> {
        let device = self.model.pre_layrnorm.gamma.device();
        let pixel_values = self.processor.preprocess_files::<B>(paths, &device)?;
        let image_embeds = self.embed_pixels(pixel_values.clone())?;
        Ok(ImageEmbedding {
            pixel_values,
            image_embeds,
        })
    }

    /// [`Self::embed_image_files`] for one file: `pixel_values` `[1, 3, S, S]`,
    /// `image_embeds` `[1, P]`.
    pub fn embed_image_file(&self, path: &Path) -> Result<ImageEmbedding<B>> {
        self.embed_image_files(&[path])
    }
}
