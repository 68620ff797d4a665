//! A full CLIP model (transformers' `CLIPModel`): the text tower with `text_projection`,
//! the image tower with `visual_projection`, `logit_scale`, the tokenizer and the image
//! processor; what evaluation papers use to score prompt following (CLIP-T, the cosine
//! of an image's and its prompt's embeddings).
//!
//! A model is a folder as transformers' `save_pretrained` writes it (openai/clip-vit-*,
//! laion/CLIP-ViT-* in transformers format): `config.json` (`CLIPConfig` with
//! `text_config` and `vision_config`), `model.safetensors` (or `model.fp16.safetensors`),
//! optionally `preprocessor_config.json` and the tokenizer files (`tokenizer.json`, or
//! `vocab.json` + `merges.txt`). Without tokenizer files the bundled CLIP vocabulary is
//! used, padding with `<|endoftext|>` as openai's tokenizer does.
use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use image::RgbImage;

use super::config::ClipTextConfig;
use super::remap_text::hf_text;
use super::text::ClipTextModel;
use super::tokenizer::ClipTokenizer;
use super::tower::ClipVisionTower;
use crate::json::read_json;
use crate::weights::{SafetensorsFile, load_module};
use crate::{ModelError, Result};

/// A loaded, frozen `CLIPModel`.
#[derive(Debug)]
pub struct ClipModel<B: Backend> {
    /// The text tower with its projection.
    pub text: ClipTextModel<B>,
    /// The image tower with its projection and preprocessing.
    pub vision: ClipVisionTower<B>,
    /// The tokenizer (the folder's, or the bundled vocabulary).
    pub tokenizer: ClipTokenizer,
    /// `logit_scale` as stored (the logits are `exp(logit_scale)` x cosine).
    pub logit_scale: f32,
    /// The folder.
    pub path: PathBuf,
}

impl<B: Backend> ClipModel<B> {
    /// Loads a `CLIPModel` folder (see the module docs).
    ///
    /// # Errors
    /// [`ModelError::MissingFile`] for a missing folder, configuration or weights;
    /// [`ModelError::Config`] for a configuration without `text_config` and
    /// `vision_config`, or a tokenizer longer than the text tower's position table;
    /// missing, unused or misshaped tensors (named), a missing `text_projection.weight`.
    pub fn load(dir: &Path, device: &B::Device) -> Result<Self> {
        if !dir.is_dir() {
            return Err(ModelError::MissingFile {
                path: dir.to_path_buf(),
                what: "a CLIP model folder (config.json + model.safetensors)".into(),
            });
        }
        let config_path = dir.join("config.json");
        if !config_path.is_file() {
            return Err(ModelError::MissingFile {
                path: config_path,
                what: "the CLIPModel configuration".into(),
            });
        }
        let root = read_json(&config_path)?;
        if !root.get("text_config").is_some_and(|v| v.is_object())
            || !root.get("vision_config").is_some_and(|v| v.is_object())
        {
            return Err(ModelError::config(
                &config_path,
                "not a full CLIPModel configuration: `text_config` and `vision_config` are both needed",
            ));
        }
        let mut text_config = ClipTextConfig::from_json_value(&root, &config_path)?;
        // CLIPModel's text_projection uses the top-level projection_dim.
        if let Some(p) = root.get("projection_dim").and_then(|v| v.as_u64()) {
            text_config.projection_dim = p as usize;
        }
        let vision = ClipVisionTower::load(dir, device)?;
        let file = SafetensorsFile::open(&vision.weights)?;
        if file.entry("text_projection.weight").is_none() {
            return Err(ModelError::weights(
                &vision.weights,
                "no `text_projection.weight`: not a full CLIPModel (CLIP-T needs both projections)",
            ));
        }
        let mut text = text_config.init::<B>(true, device);
        load_module(&mut text, &file, hf_text(&file, ""), "CLIP text tower")?;
        let text = text.no_grad();
        let logit_scale = match file.entry("logit_scale") {
            Some(_) => file
                .read_f32("logit_scale")?
                .0
                .first()
                .copied()
                .unwrap_or(f32::NAN),
            None => f32::NAN,
        };
        let has_tokenizer = ["tokenizer.json", "vocab.json"]
            .iter()
            .any(|f| dir.join(f).is_file());
        let tokenizer = if has_tokenizer {
            ClipTokenizer::from_folder(dir)?
        } else {
            ClipTokenizer::bundled(super::tokenizer::CLIP_EOS_TOKEN)?
        };
        if tokenizer.max_length() > text_config.max_position_embeddings {
            return Err(ModelError::config(
                &config_path,
                format!(
                    "the tokenizer makes {} ids but the text tower has {} positions",
                    tokenizer.max_length(),
                    text_config.max_position_embeddings
                ),
            ));
        }
        log::info!(
            "{}: CLIPModel, text width {} ({} layers), image {} px, {}-d embeddings",
            dir.display(),
            text_config.hidden_size,
            text_config.num_hidden_layers,
            vision.image_size(),
            vision.projection_dim()
        );
        Ok(Self {
            text,
            vision,
            tokenizer,
            logit_scale,
            path: dir.to_path_buf(),
        })
    }

    fn device(&self) -> B::Device {
        self.text.final_layer_norm.gamma.device()
    }

    /// Projected text embeddings (`get_text_features`), not normalised; each text is
    /// tokenized as `CLIPProcessor(padding="max_length", max_length=77, truncation=True)`
    /// (a text over 77 tokens is truncated with a warning).
    ///
    /// # Shapes
    /// - output: `[texts.len(), P]`
    ///
    /// # Errors
    /// No texts; a text the tokenizer cannot encode.
    pub fn text_embeds(&self, texts: &[&str]) -> Result<Tensor<B, 2>> {
        if texts.is_empty() {
            return Err(ModelError::InvalidInput("no texts to embed".into()));
        }
        let ids = self.tokenizer.encode_batch(texts)?;
        self.text
            .forward(&ids)?
            .text_embeds
            .ok_or_else(|| ModelError::InvalidInput("the text tower has no projection".into()))
    }

    /// Projected image embeddings (`get_image_features`) of decoded RGB images, not
    /// normalised.
    ///
    /// # Shapes
    /// - output: `[images.len(), P]`
    ///
    /// # Errors
    /// No images.
    pub fn image_embeds(&self, images: &[RgbImage]) -> Result<Tensor<B, 2>> {
        if images.is_empty() {
            return Err(ModelError::InvalidInput("no images to embed".into()));
        }
        let mut values = Vec::new();
        let mut hw = (0, 0);
        for img in images {
            let (v, size) = self.vision.processor.preprocess_rgb(img);
            hw = size;
            values.extend(v);
        }
        let pixels = Tensor::from_data(
            TensorData::new(values, [images.len(), 3, hw.0, hw.1]),
            &self.device(),
        );
        self.vision.embed_pixels(pixels)
    }

    /// Projected image embeddings of image files (read as transformers' processor reads
    /// them), not normalised.
    ///
    /// # Shapes
    /// - output: `[paths.len(), P]`
    ///
    /// # Errors
    /// No files, or the first unreadable one ([`ModelError::Image`] naming it).
    pub fn image_file_embeds(&self, paths: &[impl AsRef<Path>]) -> Result<Tensor<B, 2>> {
        Ok(self.vision.embed_image_files(paths)?.image_embeds)
    }

    /// CLIP-T of decoded images with their prompts: the cosine of `images[i]`'s and
    /// `texts[i]`'s embeddings, one number per pair.
    ///
    /// # Errors
    /// Lists of different lengths, or as [`Self::image_embeds`] and
    /// [`Self::text_embeds`].
    pub fn clip_t(&self, images: &[RgbImage], texts: &[&str]) -> Result<Vec<f32>> {
        if images.len() != texts.len() {
            return Err(ModelError::InvalidInput(format!(
                "CLIP-T pairs {} images with {} texts",
                images.len(),
                texts.len()
            )));
        }
        Ok(row_cosines(
            self.image_embeds(images)?,
            self.text_embeds(texts)?,
        ))
    }
}

/// The cosine of each row of `a` with the same row of `b`.
///
/// # Shapes
/// - `a`, `b`: `[N, P]`
/// - output: `N` numbers
pub fn row_cosines<B: Backend>(a: Tensor<B, 2>, b: Tensor<B, 2>) -> Vec<f32> {
    let unit = |x: Tensor<B, 2>| {
        let norm = x.clone().powi_scalar(2).sum_dim(1).sqrt().clamp_min(1e-12);
        x / norm
    };
    (unit(a) * unit(b))
        .sum_dim(1)
        .into_data()
        .convert::<f32>()
        .iter::<f32>()
        .collect()
}
