//! [`NameEncoder`]: photo in, name out (the two towers, then the name head).
use std::path::{Path, PathBuf};

use burn::tensor::Tensor;
use burn::tensor::backend::Backend;
use image::DynamicImage;
use magicnaming_core::{NameEmbedding, NameHead};

use super::config::{NameEncoderConfig, TowerRef};
use super::head_io::{load_head, save_head};
use super::image_embedder::{ImageEmbedder, OnBadImage, SkippedImage};
use super::input_crop::InputCrop;
use crate::clip::image_processor::ClipImageProcessorConfig;
use crate::clip::tower::{ClipVisionTower, parse_config_value};
use crate::{ModelError, Result};

/// How a batch call turns several photos into names (see [`BatchOptions`]).
///
/// ```
/// use magicnaming_models::name_encoder::{BatchOptions, Reduce};
/// let one_person = BatchOptions::default().with_reduce(Reduce::Average);
/// assert_eq!(BatchOptions::default().reduce, Reduce::PerImage);
/// # let _ = one_person;
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Reduce {
    /// One name per usable photo, in order.
    #[default]
    PerImage,
    /// The photos show one person: one name, the mean of their predicted names.
    Average,
}

/// Options of [`NameEncoder::predict_batch`].
///
/// ```no_run
/// use magicnaming_models::name_encoder::{BatchOptions, NameEncoder, OnBadImage, Reduce};
/// type B = burn::backend::NdArray<f32>;
/// let encoder = NameEncoder::<B>::load("encoder", &Default::default())?;
/// let photos = vec!["a.jpg".into(), "b.jpg".into(), "broken.jpg".into()];
/// let options = BatchOptions {
///     reduce: Reduce::Average,
///     on_bad_image: OnBadImage::Skip,
/// };
/// let prediction = encoder.predict_batch(&photos, &options)?;
/// for skipped in &prediction.skipped {
///     eprintln!("{}: {}", skipped.path.display(), skipped.reason);
/// }
/// let name = &prediction.names[0]; // one name: the mean over the usable photos
/// # Ok::<(), magicnaming_models::ModelError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BatchOptions {
    /// One name per photo, or their mean.
    pub reduce: Reduce,
    /// Fail on an unusable photo, or skip and list it.
    pub on_bad_image: OnBadImage,
}

impl BatchOptions {
    /// These options with `reduce`.
    pub fn with_reduce(mut self, reduce: Reduce) -> Self {
        self.reduce = reduce;
        self
    }

    /// These options with `on_bad_image`.
    pub fn with_on_bad_image(mut self, on_bad_image: OnBadImage) -> Self {
        self.on_bad_image = on_bad_image;
        self
    }
}

/// Names predicted from a batch of photos (see the example of [`BatchOptions`]).
///
/// # Shapes
/// - `names`: each `[K, D]` (`[8, 2048]` for SDXL)
#[derive(Debug, Clone)]
pub struct NamePrediction<B: Backend> {
    /// One name per used photo, or one mean name with [`Reduce::Average`].
    pub names: Vec<NameEmbedding<B>>,
    /// The photos used, in order.
    pub used: Vec<PathBuf>,
    /// The photos skipped (only with [`OnBadImage::Skip`]).
    pub skipped: Vec<SkippedImage>,
}

/// E_image: two frozen CLIP image towers and the trainable name head.
///
/// ```no_run
/// # fn main() -> Result<(), magicnaming_models::ModelError> {
/// use magicnaming_models::name_encoder::NameEncoder;
/// type B = burn::backend::NdArray<f32>;
/// let encoder = NameEncoder::<B>::load("encoder", &Default::default())?;
/// let name = encoder.predict_one("me.png")?;
/// assert_eq!((name.num_tokens(), name.dim()), (8, 2048));
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct NameEncoder<B: Backend> {
    /// CLIP_L and CLIP_G with their preprocessing.
    pub embedder: ImageEmbedder<B>,
    /// The trainable head.
    pub head: NameHead<B>,
    /// The configuration (tower paths as written).
    pub config: NameEncoderConfig,
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
    /// Loads an encoder folder (`config.json` + `head.safetensors`, see the module docs);
    /// photos are cropped as `config.json`'s `input_crop` says (see
    /// [`Self::with_input_crop`]).
    ///
    /// # Errors
    /// A missing folder, configuration, tower or head file; towers whose embedding
    /// widths differ from `image_embed_dims`; head tensors that do not fit.
    pub fn load(dir: impl AsRef<Path>, device: &B::Device) -> Result<Self> {
        let dir = dir.as_ref();
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
        let embedder = ImageEmbedder::new(tower_l, tower_g, device);
        let mut enc = Self::new(config, embedder, head)?;
        enc.dir = Some(dir.to_path_buf());
        Ok(enc)
    }

    /// Assembles an encoder (e.g. with a freshly initialised head for training); the
    /// embedder crops photos as `config.input_crop` says.
    ///
    /// # Errors
    /// Tower embedding widths or a head input width that disagree with `config`; as
    /// [`ImageEmbedder::with_input_crop`].
    pub fn new(
        config: NameEncoderConfig,
        embedder: ImageEmbedder<B>,
        head: NameHead<B>,
    ) -> Result<Self> {
        let got = embedder.embed_dims();
        if got != config.image_embed_dims {
            return Err(ModelError::InvalidInput(format!(
                "the towers give {got:?}-d image embeddings, the encoder expects image_embed_dims {:?} ({} and {})",
                config.image_embed_dims,
                embedder.tower_l.weights.display(),
                embedder.tower_g.weights.display()
            )));
        }
        let want = (
            got[0] + got[1],
            config.head.num_tokens,
            config.head.token_dim,
        );
        let have = (head.input_dim(), head.num_tokens(), head.token_dim());
        if have != want {
            return Err(ModelError::InvalidInput(format!(
                "the head maps {} -> {}x{}, the encoder needs {} -> {}x{}",
                have.0, have.1, have.2, want.0, want.1, want.2
            )));
        }
        Ok(Self {
            embedder: embedder.with_input_crop(config.input_crop)?,
            head,
            config,
            dir: None,
        })
    }

    /// The same encoder seeing `crop` of each photo instead of the crop it records (a
    /// name predicted from another view than the one trained on is less faithful).
    ///
    /// # Errors
    /// As [`ImageEmbedder::with_input_crop`].
    pub fn with_input_crop(mut self, crop: InputCrop) -> Result<Self> {
        self.embedder = self.embedder.with_input_crop(crop)?;
        self.config.input_crop = crop;
        Ok(self)
    }

    /// The view of each photo the towers see.
    pub fn input_crop(&self) -> InputCrop {
        self.config.input_crop
    }

    /// Writes the head's weights to `path` (normally `<dir>/head.safetensors`),
    /// atomically.
    ///
    /// # Errors
    /// A file that cannot be written.
    pub fn save_head(&self, path: &Path) -> Result<()> {
        save_head(&self.head, path)
    }

    /// Writes `config.json` and `head.safetensors` into `dir` (created if needed). Tower
    /// paths relative to the folder this encoder was loaded from are rewritten as
    /// absolute paths when `dir` is another folder.
    ///
    /// # Errors
    /// A folder or file that cannot be written.
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

    /// Concatenated image embeddings `[CLIP_L(x), CLIP_G(x)]` of image files (all must be
    /// readable).
    ///
    /// # Shapes
    /// - output: `[N, P_L + P_G]` (`[N, 768 + 1280]` for SDXL's towers)
    ///
    /// # Errors
    /// No image; an unreadable one, named.
    pub fn embed_images(&self, images: &[PathBuf]) -> Result<Tensor<B, 2>> {
        Ok(self.embedder.embed_files(images, OnBadImage::Fail)?.embeds)
    }

    /// The head applied to concatenated image embeddings.
    ///
    /// # Shapes
    /// - `embeds`: `[N, P_L + P_G]`
    /// - output: `[N, K, D]`
    pub fn predict_from_embeds(&self, embeds: Tensor<B, 2>) -> Tensor<B, 3> {
        self.head.forward(embeds)
    }

    /// The name of the person in one photo file.
    ///
    /// # Shapes
    /// - output: `[K, D]` (`[8, 2048]` for SDXL)
    ///
    /// # Errors
    /// An unreadable image (named); a non-finite prediction.
    pub fn predict_one(&self, image: impl AsRef<Path>) -> Result<NameEmbedding<B>> {
        let path = image.as_ref();
        let pixels = self.embedder.preprocess_file(path)?;
        let embeds = self.embedder.embed_pixels(&[pixels])?;
        self.one_name(embeds, path.display().to_string())
    }

    /// The name of the person in a decoded photo.
    ///
    /// # Shapes
    /// - output: `[K, D]`
    ///
    /// # Errors
    /// An image the processors cannot use; a non-finite prediction.
    pub fn predict_image(&self, image: &DynamicImage) -> Result<NameEmbedding<B>> {
        let embeds = self.embedder.embed_images(std::slice::from_ref(image))?;
        self.one_name(embeds, "image".to_string())
    }

    fn one_name(&self, embeds: Tensor<B, 2>, source: String) -> Result<NameEmbedding<B>> {
        let pred = self.head.forward(embeds);
        let [_, k, d] = pred.dims();
        Ok(NameEmbedding::new(pred.reshape([k, d]), source)?)
    }

    /// Names of the people in several photo files: one per photo or their mean
    /// ([`Reduce`]); unusable photos fail the call or are skipped and listed
    /// ([`OnBadImage`]).
    ///
    /// # Shapes
    /// - output: `names`, each `[K, D]`
    ///
    /// # Errors
    /// No photo; with [`OnBadImage::Fail`] the first unusable one (named); with
    /// [`OnBadImage::Skip`] no usable one; a non-finite prediction.
    pub fn predict_batch(
        &self,
        images: &[PathBuf],
        options: &BatchOptions,
    ) -> Result<NamePrediction<B>> {
        let e = self.embedder.embed_files(images, options.on_bad_image)?;
        let pred = self.predict_from_embeds(e.embeds);
        let [n, k, d] = pred.dims();
        let names = match options.reduce {
            Reduce::Average => {
                let mean = pred.mean_dim(0).reshape([k, d]);
                let shown: Vec<String> = e.used.iter().map(|p| p.display().to_string()).collect();
                vec![NameEmbedding::new(
                    mean,
                    format!("mean of {n} images: {}", shown.join(", ")),
                )?]
            }
            Reduce::PerImage => (0..n)
                .map(|i| {
                    let t = pred.clone().slice([i..i + 1, 0..k, 0..d]).reshape([k, d]);
                    NameEmbedding::new(t, e.used[i].display().to_string()).map_err(ModelError::from)
                })
                .collect::<Result<_>>()?,
        };
        Ok(NamePrediction {
            names,
            used: e.used,
            skipped: e.skipped,
        })
    }
}
