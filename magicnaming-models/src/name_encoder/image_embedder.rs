//! The two-tower image embedder of the name encoder (`docs/METHOD.md`, (b)): one photo is
//! preprocessed for CLIP_L and CLIP_G and embedded by both; the two embeddings are
//! concatenated, L first. [`crate::name_encoder::NameEncoder`] and the dataset build share
//! it, so a name is always predicted from the embedding it was trained on.
use std::path::{Path, PathBuf};

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use image::DynamicImage;
use serde::{Deserialize, Serialize};

use super::input_crop::{Cropper, InputCrop};
use crate::clip::image_utils::decode_image;
use crate::clip::tower::ClipVisionTower;
use crate::{ModelError, Result};

/// Images embedded per forward pass by default.
pub const DEFAULT_BATCH_SIZE: usize = 8;

/// What a batch call does with an image it cannot use.
///
/// ```
/// use magicnaming_models::name_encoder::{BatchOptions, OnBadImage};
/// assert_eq!(BatchOptions::default().on_bad_image, OnBadImage::Fail);
/// let lenient = BatchOptions::default().with_on_bad_image(OnBadImage::Skip);
/// # let _ = lenient;
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnBadImage {
    /// Fail on the first one, naming it.
    #[default]
    Fail,
    /// Skip it, log it and list it in the result; fail only when none is usable.
    Skip,
}

/// An image that could not be used, and why.
///
/// ```
/// use magicnaming_models::name_encoder::SkippedImage;
/// use magicnaming_models::ModelError;
/// let error = ModelError::Image { path: "x.jpg".into(), message: "truncated JPEG".into() };
/// let skipped = SkippedImage::new("x.jpg", error);
/// assert_eq!(skipped.reason, "truncated JPEG");
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SkippedImage {
    /// The file, as given.
    pub path: PathBuf,
    /// What went wrong.
    pub reason: String,
}

impl SkippedImage {
    /// The skip record of `path` for `error` (an image error's message without the path,
    /// which the record holds already).
    pub fn new(path: impl Into<PathBuf>, error: ModelError) -> Self {
        let reason = match error {
            ModelError::Image { message, .. } => message,
            ModelError::NoFace { detail, .. } => format!("no face found{detail}"),
            other => other.to_string(),
        };
        Self {
            path: path.into(),
            reason,
        }
    }
}

/// One image preprocessed for both towers (`[3, S, S]` each, row-major).
#[derive(Debug, Clone, PartialEq)]
pub struct TowerPixels {
    /// CLIP_L's pixel values.
    pub l: Vec<f32>,
    /// CLIP_G's pixel values.
    pub g: Vec<f32>,
}

/// Image embeddings of the usable images of a batch.
#[derive(Debug, Clone)]
pub struct EmbeddedImages<B: Backend> {
    /// `[N, P_L + P_G]` for the `used` images, in order.
    pub embeds: Tensor<B, 2>,
    /// The images embedded.
    pub used: Vec<PathBuf>,
    /// The images skipped (only with [`OnBadImage::Skip`]).
    pub skipped: Vec<SkippedImage>,
}

/// CLIP_L and CLIP_G with their preprocessing.
#[derive(Debug)]
pub struct ImageEmbedder<B: Backend> {
    /// CLIP_L (ViT-L/14 for SDXL's name space).
    pub tower_l: ClipVisionTower<B>,
    /// CLIP_G (OpenCLIP ViT-bigG/14).
    pub tower_g: ClipVisionTower<B>,
    /// Images per forward pass.
    pub batch_size: usize,
    cropper: Cropper<B>,
    device: B::Device,
}

impl<B: Backend> ImageEmbedder<B> {
    /// Pairs two loaded towers on `device`; they see whole photos until
    /// [`Self::with_input_crop`] says otherwise.
    pub fn new(
        tower_l: ClipVisionTower<B>,
        tower_g: ClipVisionTower<B>,
        device: &B::Device,
    ) -> Self {
        Self {
            tower_l,
            tower_g,
            batch_size: DEFAULT_BATCH_SIZE,
            cropper: Cropper::whole_image(),
            device: device.clone(),
        }
    }

    /// The same embedder showing the towers `crop` of each photo.
    ///
    /// # Errors
    /// As [`Cropper::new`] (a face crop loads the face detector).
    pub fn with_input_crop(mut self, crop: InputCrop) -> Result<Self> {
        if crop != self.cropper.crop() {
            self.cropper = Cropper::new(crop, &self.device)?;
        }
        Ok(self)
    }

    /// The crop of each photo the towers see.
    pub fn input_crop(&self) -> InputCrop {
        self.cropper.crop()
    }

    /// Loads both towers (anything [`ClipVisionTower::load`] reads).
    ///
    /// # Errors
    /// As [`ClipVisionTower::load`], for either tower.
    pub fn load(tower_l: &Path, tower_g: &Path, device: &B::Device) -> Result<Self> {
        let l = ClipVisionTower::load(tower_l, device)?;
        let g = ClipVisionTower::load(tower_g, device)?;
        Ok(Self::new(l, g, device))
    }

    /// The device the towers run on.
    pub fn device(&self) -> &B::Device {
        &self.device
    }

    /// Widths of the two embeddings, `[P_L, P_G]` (`[768, 1280]` for SDXL's towers).
    pub fn embed_dims(&self) -> [usize; 2] {
        [self.tower_l.projection_dim(), self.tower_g.projection_dim()]
    }

    /// Crops a decoded image ([`Self::input_crop`]) and preprocesses it for both towers;
    /// `source` names it in errors.
    ///
    /// # Errors
    /// An image the processors cannot use ([`ModelError::Image`]); no face in it when the
    /// crop is a face crop ([`ModelError::NoFace`]).
    pub fn preprocess(&self, image: &DynamicImage, source: &Path) -> Result<TowerPixels> {
        let image = self.cropper.apply(image, source)?;
        let image = image.as_ref();
        let (l, _) = self.tower_l.processor.preprocess_decoded(image, source)?;
        let g = if self.tower_g.processor == self.tower_l.processor {
            l.clone()
        } else {
            self.tower_g.processor.preprocess_decoded(image, source)?.0
        };
        Ok(TowerPixels { l, g })
    }

    /// Reads an image file, crops it and preprocesses it for both towers.
    ///
    /// # Errors
    /// A missing or undecodable file ([`ModelError::Image`] naming it); as
    /// [`Self::preprocess`].
    pub fn preprocess_file(&self, path: &Path) -> Result<TowerPixels> {
        self.preprocess(&decode_image(path)?, path)
    }

    /// Embeds preprocessed images in one forward pass of each tower.
    ///
    /// # Shapes
    /// - output: `[N, P_L + P_G]`, `N` = `batch.len()`
    ///
    /// # Errors
    /// An empty batch; pixel buffers of the wrong size.
    pub fn embed_pixels(&self, batch: &[TowerPixels]) -> Result<Tensor<B, 2>> {
        let n = batch.len();
        if n == 0 {
            return Err(ModelError::InvalidInput("no images to embed".into()));
        }
        let input = |values: Vec<f32>, s: usize, which: &str| {
            if values.len() != n * 3 * s * s {
                return Err(ModelError::InvalidInput(format!(
                    "{which} pixel values: {} values for {n} images of 3 x {s} x {s}",
                    values.len()
                )));
            }
            Ok(Tensor::<B, 4>::from_data(
                TensorData::new(values, [n, 3, s, s]),
                &self.device,
            ))
        };
        let l = batch.iter().flat_map(|p| p.l.iter().copied()).collect();
        let g = batch.iter().flat_map(|p| p.g.iter().copied()).collect();
        let el = self
            .tower_l
            .embed_pixels(input(l, self.tower_l.image_size(), "CLIP_L")?)?;
        let eg = self
            .tower_g
            .embed_pixels(input(g, self.tower_g.image_size(), "CLIP_G")?)?;
        Ok(Tensor::cat(vec![el, eg], 1))
    }

    /// Embeds decoded images, [`Self::batch_size`] at a time.
    ///
    /// # Shapes
    /// - output: `[N, P_L + P_G]`, `N` = `images.len()`
    ///
    /// # Errors
    /// No image; an image the processors cannot use.
    pub fn embed_images(&self, images: &[DynamicImage]) -> Result<Tensor<B, 2>> {
        if images.is_empty() {
            return Err(ModelError::InvalidInput("no images given".into()));
        }
        let mut parts = Vec::new();
        for chunk in images.chunks(self.batch_size.max(1)) {
            let pixels = chunk
                .iter()
                .map(|img| self.preprocess(img, Path::new("<image>")))
                .collect::<Result<Vec<_>>>()?;
            parts.push(self.embed_pixels(&pixels)?);
        }
        Ok(Tensor::cat(parts, 0))
    }

    /// Embeds image files, [`Self::batch_size`] at a time; `on_bad` decides what an
    /// unreadable file does.
    ///
    /// # Shapes
    /// - output: `embeds` `[N, P_L + P_G]`, `N` = `used.len()`
    ///
    /// # Errors
    /// No image given; with [`OnBadImage::Fail`] the first unusable image
    /// ([`ModelError::Image`] naming it); with [`OnBadImage::Skip`], no usable image.
    pub fn embed_files(&self, paths: &[PathBuf], on_bad: OnBadImage) -> Result<EmbeddedImages<B>> {
        if paths.is_empty() {
            return Err(ModelError::InvalidInput("no images given".into()));
        }
        let (mut used, mut skipped, mut parts) = (Vec::new(), Vec::new(), Vec::new());
        for chunk in paths.chunks(self.batch_size.max(1)) {
            let mut pixels = Vec::with_capacity(chunk.len());
            for path in chunk {
                match self.preprocess_file(path) {
                    Ok(p) => {
                        pixels.push(p);
                        used.push(path.clone());
                    }
                    Err(e) if on_bad == OnBadImage::Skip => {
                        log::warn!("skipping {}: {e}", path.display());
                        skipped.push(SkippedImage::new(path.clone(), e));
                    }
                    Err(e) => return Err(e),
                }
            }
            if !pixels.is_empty() {
                parts.push(self.embed_pixels(&pixels)?);
            }
        }
        if parts.is_empty() {
            let reasons: Vec<String> = skipped
                .iter()
                .map(|s| format!("{}: {}", s.path.display(), s.reason))
                .collect();
            return Err(ModelError::InvalidInput(format!(
                "none of the {} images could be read: {}",
                paths.len(),
                reasons.join("; ")
            )));
        }
        Ok(EmbeddedImages {
            embeds: Tensor::cat(parts, 0),
            used,
            skipped,
        })
    }
}
