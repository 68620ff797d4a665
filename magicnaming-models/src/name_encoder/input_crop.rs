//! The part of a photo the image towers see: the whole photo, or its largest face aligned
//! to the ArcFace template (what IP-Adapter-FaceID-Plus gives CLIP). An encoder folder
//! records the crop it was trained on (`config.json`, `input_crop`), a dataset the crop it
//! was embedded with (`dataset.json`, `input_crop`); training copies the dataset's into
//! the encoder, so a name is predicted from the view of the face it was trained on.
use std::borrow::Cow;
use std::path::Path;

use burn::tensor::backend::Backend;
use image::DynamicImage;
use serde::{Deserialize, Serialize};

use crate::clip::image_utils::to_rgb8_like_pil;
use crate::face::{CLIP_CROP_SIZE, FaceDetector, MIN_DETECT_SIDE, MtcnnConfig, norm_crop};
use crate::{ModelError, Result};

/// The crop of a photo given to the image towers.
///
/// In JSON: `{"type": "whole_image"}` or `{"type": "face", "size": 224, "min_face_size": 20}`.
///
/// ```
/// use magicnaming_models::name_encoder::InputCrop;
/// let crop: InputCrop = serde_json::from_str(r#"{"type": "face", "size": 224}"#).unwrap();
/// assert_eq!(crop, InputCrop::face());
/// assert_eq!(InputCrop::default(), InputCrop::WholeImage);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum InputCrop {
    /// The whole photo (then the towers' own resize and centre crop). What a folder that
    /// records no crop was made with.
    #[default]
    WholeImage,
    /// The largest face MTCNN finds (facenet-pytorch's weights), warped by the five-point
    /// similarity transform onto the ArcFace template scaled to `size` x `size`.
    Face {
        /// Side of the aligned crop (224: the template scaled from 112, as
        /// IP-Adapter-FaceID-Plus feeds CLIP).
        size: u32,
        /// Smallest face searched for, in pixels.
        #[serde(default = "default_min_face")]
        min_face_size: f64,
    },
}

fn default_min_face() -> f64 {
    MtcnnConfig::default().min_face_size
}

impl InputCrop {
    /// The default face crop: 224 x 224, faces of 20 px and more.
    pub fn face() -> Self {
        Self::Face {
            size: CLIP_CROP_SIZE,
            min_face_size: default_min_face(),
        }
    }

    /// Reads the `input_crop` value of a `config.json` / `dataset.json` (absent or null:
    /// [`InputCrop::WholeImage`]); `file` names it in errors.
    ///
    /// # Errors
    /// [`ModelError::Config`] naming the file for an unknown type, unknown fields or a
    /// size out of range.
    pub fn from_json(value: Option<&serde_json::Value>, file: &Path) -> Result<Self> {
        let crop = match value {
            None | Some(serde_json::Value::Null) => Self::WholeImage,
            Some(v) => serde_json::from_value(v.clone()).map_err(|e| {
                ModelError::config(
                    file,
                    format!(
                        "`input_crop` = {v}: {e} (expected {{\"type\": \"whole_image\"}} or \
                         {{\"type\": \"face\", \"size\": 224}})"
                    ),
                )
            })?,
        };
        crop.check().map_err(|m| ModelError::config(file, m))?;
        Ok(crop)
    }

    /// The JSON value written to `config.json` / `dataset.json`.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).expect("an input crop serialises")
    }

    fn check(&self) -> std::result::Result<(), String> {
        match *self {
            Self::WholeImage => Ok(()),
            Self::Face {
                size,
                min_face_size,
            } => {
                if !(16..=4096).contains(&size) {
                    return Err(format!("`input_crop.size` = {size}: expected 16 to 4096"));
                }
                if !(min_face_size.is_finite() && min_face_size >= MIN_DETECT_SIDE as f64) {
                    return Err(format!(
                        "`input_crop.min_face_size` = {min_face_size}: expected at least {MIN_DETECT_SIDE}"
                    ));
                }
                Ok(())
            }
        }
    }
}

impl std::fmt::Display for InputCrop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::WholeImage => write!(f, "whole image"),
            Self::Face { size, .. } => write!(f, "largest face, aligned, {size}x{size}"),
        }
    }
}

/// Applies an [`InputCrop`] to decoded photos (holding the face detector it needs).
#[derive(Debug)]
pub struct Cropper<B: Backend> {
    crop: InputCrop,
    detector: Option<FaceDetector<B>>,
}

impl<B: Backend> Cropper<B> {
    /// The cropper of `crop`; a face crop loads MTCNN with its built-in weights.
    ///
    /// # Errors
    /// An out-of-range crop ([`ModelError::InvalidInput`]); as
    /// [`FaceDetector::load`].
    pub fn new(crop: InputCrop, device: &B::Device) -> Result<Self> {
        crop.check().map_err(ModelError::InvalidInput)?;
        let detector = match crop {
            InputCrop::WholeImage => None,
            InputCrop::Face { min_face_size, .. } => {
                let config = MtcnnConfig {
                    min_face_size,
                    ..MtcnnConfig::default()
                };
                Some(FaceDetector::load(None, device)?.with_config(config))
            }
        };
        Ok(Self { crop, detector })
    }

    /// The cropper of [`InputCrop::WholeImage`] (nothing to load).
    pub fn whole_image() -> Self {
        Self {
            crop: InputCrop::WholeImage,
            detector: None,
        }
    }

    /// The crop applied.
    pub fn crop(&self) -> InputCrop {
        self.crop
    }

    /// The view of `image` the towers see; `source` names it in errors.
    ///
    /// # Errors
    /// [`ModelError::NoFace`] when a face crop finds none; a floating-point image
    /// ([`ModelError::Image`]); as [`FaceDetector::detect`].
    pub fn apply<'a>(
        &self,
        image: &'a DynamicImage,
        source: &Path,
    ) -> Result<Cow<'a, DynamicImage>> {
        let (InputCrop::Face { size, .. }, Some(det)) = (self.crop, &self.detector) else {
            return Ok(Cow::Borrowed(image));
        };
        let rgb = to_rgb8_like_pil(image, source)?;
        let faces = det.detect(&rgb)?;
        // Faces come largest first.
        let Some(face) = faces.first() else {
            return Err(ModelError::NoFace {
                path: source.to_path_buf(),
                detail: format!(
                    " (MTCNN, minimum face {} px, thresholds {:?}; the whole-image crop skips detection)",
                    det.config.min_face_size, det.config.thresholds
                ),
            });
        };
        log::debug!(
            "{}: {} face(s), cropping the largest (box {:?}, score {:.3})",
            source.display(),
            faces.len(),
            face.bbox,
            face.score
        );
        let crop = norm_crop(&rgb, &face.landmarks, size)?;
        Ok(Cow::Owned(DynamicImage::ImageRgb8(crop)))
    }
}
