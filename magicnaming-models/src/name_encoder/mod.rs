//! The image encoder E_image of METHOD.md (b): two frozen CLIP image towers (CLIP_L =
//! ViT-L/14, 768-d; CLIP_G = OpenCLIP ViT-bigG/14, 1280-d) whose image embeddings are
//! concatenated (`[B, 768 + 1280]`, L first) and mapped by the trainable [`NameHead`] to
//! names `[B, K, D]`.
//!
//! On disk an encoder is a folder:
//! - `config.json`:
//!   ```json
//!   {"tower_l": "clip-vit-large-patch14", "tower_g": "/models/bigG/open_clip_model.safetensors",
//!    "head": {"hidden_dims": [2048, 2048], "activation": "gelu"},
//!    "num_tokens": 8, "token_dim": 2048, "image_embed_dims": [768, 1280]}
//!   ```
//!   A tower is a path (relative to the folder, or absolute) to anything
//!   [`ClipVisionTower::load`] reads, or `{"path": ..., "config": {...},
//!   "preprocessor": {...}}` embedding a transformers/open_clip configuration and a
//!   `preprocessor_config.json` that replace the files'. `head` takes the fields of
//!   [`NameHeadConfig`](magicnaming_core::NameHeadConfig); `input_dim`, `num_tokens` and
//!   `token_dim` default to the top-level values (`sum(image_embed_dims)`, 8, 2048) and must agree with them.
//! - `head.safetensors`: the head's f32 weights in PyTorch layout, `layers.{i}.weight`
//!   `[out, in]` and `layers.{i}.bias` `[out]` (an `nn.Sequential` of Linear/GELU with its
//!   Linear indices renumbered 0, 1, 2).
mod config;
mod head_io;

use std::path::{Path, PathBuf};

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use magicnaming_core::{NameEmbedding, NameHead};

pub use config::{NameEncoderConfig, TowerRef};
pub use head_io::{head_to_safetensors_bytes, load_head, HEAD_FORMAT};

use crate::clip::image_processor::ClipImageProcessorConfig;
use crate::clip::image_utils::decode_image;
use crate::clip::tower::{parse_config_value, ClipVisionTower};
use crate::{ModelError, Result};

/// Images embedded per forward pass.
pub const DEFAULT_BATCH_SIZE: usize = 8;

/// An image that could not be used, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct SkippedImage {
    /// The file.
    pub path: PathBuf,
    /// The error.
    pub reason: String,
}

/// Image embeddings of the readable images of a batch.
#[derive(Debug, Clone)]
pub struct EmbeddedImages<B: Backend> {
    /// `[N, P_L + P_G]` for the `used` images, in order.
    pub embeds: Tensor<B, 2>,
    /// The images embedded.
    pub used: Vec<PathBuf>,
    /// The images skipped (only with `skip_bad`).
    pub skipped: Vec<SkippedImage>,
}

/// Names predicted from a batch of images.
#[derive(Debug, Clone)]
pub struct NamePrediction<B: Backend> {
    /// One name per used image, or one mean name when averaging.
    pub names: Vec<NameEmbedding<B>>,
    /// The images used, in order.
    pub used: Vec<PathBuf>,
    /// The images skipped (only with `skip_bad`).
    pub skipped: Vec<SkippedImage>,
}

/// E_image: two frozen CLIP image towers and the name head.
#[derive(Debug)]
pub struct NameEncoder<B: Backend> {
    /// CLIP_L.
    pub tower_l: ClipVisionTower<B>,
    /// CLIP_G.
    pub tower_g: ClipVisionTower<B>,
    /// The trainable head.
    pub head: NameHead<B>,
    /// The configuration (tower paths as written).
    pub config: NameEncoderConfig,
    /// Images per forward pass.
    pub batch_size: usize,
    dir: Option<PathBuf>,
}

fn load_tower<B: Backend>(
    dir: &Path,
    r: &TowerRef,
    which: &str,
    device: &B::Device,
) -> Result<ClipVisionTower<B>> {
    let path = dir.join(&r.path);
    let src = dir.join("config.json");
    let config = match &r.config {
        Some(v) => Some(parse_config_value(v, &src)?.0),
        None => None,
    };
    let pre = match &r.preprocessor {
        Some(v) => Some(ClipImageProcessorConfig::from_json_value(v, &src)?),
        None => None,
    };
    log::info!("name encoder: {which} tower from {}", path.display());
    ClipVisionTower::load_with(&path, config, pre, device)
}

impl<B: Backend> NameEncoder<B> {
    /// Loads an encoder folder (`config.json` + `head.safetensors`, see the module docs).
    ///
    /// # Errors
    /// A missing folder, configuration, tower or head file; towers whose embedding
    /// widths differ from `image_embed_dims`; head tensors that do not fit.
    pub fn load(dir: &Path, device: &B::Device) -> Result<Self> {
        if !dir.is_dir() {
            return Err(ModelError::MissingFile {
                path: dir.to_path_buf(),
                what: "a name encoder folder (config.json + head.safetensors)".into(),
            });
        }
        let config = NameEncoderConfig::from_file(&dir.join("config.json"))?;
        let tower_l = load_tower(dir, &config.tower_l, "CLIP_L", device)?;
        let tower_g = load_tower(dir, &config.tower_g, "CLIP_G", device)?;
        let head = load_head(&dir.join("head.safetensors"), &config.head, device)?;
        let mut enc = Self::new(config, tower_l, tower_g, head)?;
        enc.dir = Some(dir.to_path_buf());
        Ok(enc)
    }

    /// Assembles an encoder (e.g. with a freshly initialised head for training).
    ///
    /// # Errors
    /// Tower embedding widths or a head input width that disagree with `config`.
    pub fn new(
        config: NameEncoderConfig,
        tower_l: ClipVisionTower<B>,
        tower_g: ClipVisionTower<B>,
        head: NameHead<B>,
    ) -> Result<Self> {
        let got = [tower_l.projection_dim(), tower_g.projection_dim()];
        if got != config.image_embed_dims {
            return Err(ModelError::InvalidInput(format!(
                "the towers give {got:?}-d image embeddings, the encoder expects image_embed_dims {:?} ({} and {})",
                config.image_embed_dims,
                tower_l.weights.display(),
                tower_g.weights.display()
            )));
        }
        let want = (
            got[0] + got[1],
            config.head.num_tokens,
            config.head.token_dim,
        );
        if (head.input_dim(), head.num_tokens(), head.token_dim()) != want {
            return Err(ModelError::InvalidInput(format!(
                "the head maps {} -> {}x{}, the encoder needs {} -> {}x{}",
                head.input_dim(),
                head.num_tokens(),
                head.token_dim(),
                want.0,
                want.1,
                want.2
            )));
        }
        Ok(Self {
            tower_l,
            tower_g,
            head,
            config,
            batch_size: DEFAULT_BATCH_SIZE,
            dir: None,
        })
    }

    /// Writes the head's weights to `path` (normally `<dir>/head.safetensors`),
    /// atomically (temporary file, then rename).
    pub fn save_head(&self, path: &Path) -> Result<()> {
        let bytes = head_to_safetensors_bytes(&self.head)?;
        Ok(magicnaming_core::write_atomic(path, &bytes)?)
    }

    /// Writes `config.json` and `head.safetensors` into `dir` (created if needed). Tower
    /// paths relative to the folder this encoder was loaded from are rewritten as
    /// absolute paths when `dir` is another folder.
    pub fn save(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| ModelError::io(dir, e))?;
        let mut config = self.config.clone();
        if let Some(src) = &self.dir {
            let same = match (src.canonicalize(), dir.canonicalize()) {
                (Ok(a), Ok(b)) => a == b,
                _ => false,
            };
            if !same {
                for r in [&mut config.tower_l, &mut config.tower_g] {
                    if r.path.is_relative() {
                        let p = src.join(&r.path);
                        r.path = p.canonicalize().unwrap_or(p);
                    }
                }
            }
        }
        let text =
            serde_json::to_string_pretty(&config.to_json()).expect("JSON values serialise") + "\n";
        magicnaming_core::write_atomic(&dir.join("config.json"), text.as_bytes())?;
        self.save_head(&dir.join("head.safetensors"))
    }

    fn device(&self) -> B::Device {
        self.head.layers[0].weight.device()
    }

    /// Reads one image and preprocesses it for both towers.
    fn pixels(&self, path: &Path) -> Result<(Vec<f32>, Vec<f32>)> {
        let img = decode_image(path)?;
        let (l, _) = self.tower_l.processor.preprocess_decoded(&img, path)?;
        let (g, _) = if self.tower_g.processor == self.tower_l.processor {
            (l.clone(), (0, 0))
        } else {
            self.tower_g.processor.preprocess_decoded(&img, path)?
        };
        Ok((l, g))
    }

    /// Concatenated image embeddings `[CLIP_L(x), CLIP_G(x)]` of the readable images;
    /// with `skip_bad`, unreadable images are listed in `skipped` instead of failing.
    ///
    /// # Shapes
    /// - output: `embeds` `[N, P_L + P_G]`, `N` = `used.len()`
    ///
    /// # Errors
    /// No image given; without `skip_bad`, the first unreadable image
    /// ([`ModelError::Image`] naming it); with it, no readable image at all.
    pub fn embed_images_report(
        &self,
        images: &[PathBuf],
        skip_bad: bool,
    ) -> Result<EmbeddedImages<B>> {
        if images.is_empty() {
            return Err(ModelError::InvalidInput("no images given".into()));
        }
        let device = self.device();
        let (sl, sg) = (self.tower_l.image_size(), self.tower_g.image_size());
        let mut used = Vec::new();
        let mut skipped = Vec::new();
        let mut parts = Vec::new();
        for chunk in images.chunks(self.batch_size.max(1)) {
            let (mut pl, mut pg, mut n) = (Vec::new(), Vec::new(), 0);
            for path in chunk {
                match self.pixels(path) {
                    Ok((l, g)) => {
                        pl.extend(l);
                        pg.extend(g);
                        used.push(path.clone());
                        n += 1;
                    }
                    Err(e) if skip_bad => {
                        log::warn!("skipping {}: {e}", path.display());
                        skipped.push(SkippedImage {
                            path: path.clone(),
                            reason: e.to_string(),
                        });
                    }
                    Err(e) => return Err(e),
                }
            }
            if n == 0 {
                continue;
            }
            let xl = Tensor::<B, 4>::from_data(TensorData::new(pl, [n, 3, sl, sl]), &device);
            let xg = Tensor::<B, 4>::from_data(TensorData::new(pg, [n, 3, sg, sg]), &device);
            let el = self.tower_l.embed_pixels(xl)?;
            let eg = self.tower_g.embed_pixels(xg)?;
            parts.push(Tensor::cat(vec![el, eg], 1));
        }
        if parts.is_empty() {
            let list: Vec<String> = skipped.iter().map(|s| s.reason.clone()).collect();
            return Err(ModelError::InvalidInput(format!(
                "none of the {} images could be read: {}",
                images.len(),
                list.join("; ")
            )));
        }
        Ok(EmbeddedImages {
            embeds: Tensor::cat(parts, 0),
            used,
            skipped,
        })
    }

    /// Concatenated image embeddings of `images` (all must be readable).
    ///
    /// # Shapes
    /// - output: `[N, P_L + P_G]` (`[N, 768 + 1280]` for SDXL's towers)
    pub fn embed_images(&self, images: &[PathBuf]) -> Result<Tensor<B, 2>> {
        Ok(self.embed_images_report(images, false)?.embeds)
    }

    /// The head applied to concatenated image embeddings.
    ///
    /// # Shapes
    /// - `embeds`: `[N, P_L + P_G]`
    /// - output: `[N, K, D]`
    pub fn predict_from_embeds(&self, embeds: Tensor<B, 2>) -> Tensor<B, 3> {
        self.head.forward(embeds)
    }

    /// Predicts names from photos; with `skip_bad`, unreadable files are skipped and
    /// reported. `average`: the photos show one person, return one name, the mean of
    /// their predicted names; otherwise one name per used photo.
    ///
    /// # Errors
    /// As [`Self::embed_images_report`]; a non-finite prediction.
    pub fn predict_batch(
        &self,
        images: &[PathBuf],
        average: bool,
        skip_bad: bool,
    ) -> Result<NamePrediction<B>> {
        let e = self.embed_images_report(images, skip_bad)?;
        let pred = self.predict_from_embeds(e.embeds);
        let [n, k, d] = pred.dims();
        let names = if average {
            let mean = pred.mean_dim(0).reshape([k, d]);
            let shown: Vec<String> = e.used.iter().map(|p| p.display().to_string()).collect();
            vec![NameEmbedding::new(
                mean,
                format!("mean of {n} images: {}", shown.join(", ")),
            )?]
        } else {
            (0..n)
                .map(|i| {
                    let t = pred.clone().slice([i..i + 1, 0..k, 0..d]).reshape([k, d]);
                    NameEmbedding::new(t, e.used[i].display().to_string()).map_err(ModelError::from)
                })
                .collect::<Result<_>>()?
        };
        Ok(NamePrediction {
            names,
            used: e.used,
            skipped: e.skipped,
        })
    }

    /// [`Self::predict_batch`] without skipping: every image must be readable.
    pub fn predict(&self, images: &[PathBuf], average: bool) -> Result<Vec<NameEmbedding<B>>> {
        Ok(self.predict_batch(images, average, false)?.names)
    }
}
