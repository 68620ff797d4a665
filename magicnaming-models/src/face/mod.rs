//! Faces: detection (MTCNN, facenet-pytorch's port with its weights built in), five-point
//! alignment to the ArcFace template, and identity embeddings (ArcFace IResNet).
//!
//! ```text
//! image --FaceDetector--> [Face { bbox, score, landmarks }] (largest first)
//!       --norm_crop(landmarks, 112)--> aligned 112 x 112 --FaceRecognizer--> [512], L2-normalised
//! ```
pub mod detect_face;
pub mod face_align;
pub mod iresnet;
pub mod iresnet_onnx;
pub mod mtcnn;

use std::path::Path;

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use image::RgbImage;

pub use detect_face::{Face, MIN_DETECT_SIDE, MtcnnConfig, detect_faces};
pub use face_align::{ARCFACE_DST, estimate_norm, norm_crop, similarity_transform, warp_affine};
pub use iresnet::{IResNet, IResNetConfig};
pub use mtcnn::MtcnnNets;

use crate::image_file::decode_image_file;
use crate::weights::onnx::read_onnx;
use crate::weights::torch_file::to_safetensors_bytes;
use crate::weights::{SafetensorsFile, load_module, torch_as_safetensors};
use crate::{ModelError, Result};

/// Side of the crops the recognizer takes.
pub const RECOGNITION_SIZE: u32 = 112;

/// Default side of the aligned crops given to the CLIP image towers: the ArcFace template
/// scaled from 112 to 224 (any size works with [`norm_crop`]).
pub const CLIP_CROP_SIZE: u32 = 224;

/// Reads an image file as 8-bit RGB for face work (within the limits of
/// [`crate::image_file`], EXIF orientation applied): gray is replicated, an alpha channel
/// is dropped (PIL's `convert("RGB")`, what facenet-pytorch is given), 16-bit samples are
/// scaled to 8 bits.
///
/// # Errors
/// [`ModelError::Image`] naming the file when it cannot be read or decoded, or is over a
/// limit.
pub fn load_rgb(path: &Path) -> Result<RgbImage> {
    Ok(decode_image_file(path)?.to_rgb8())
}

/// MTCNN with its settings.
#[derive(Debug)]
pub struct FaceDetector<B: Backend> {
    /// The three networks.
    pub nets: MtcnnNets<B>,
    /// Pyramid and thresholds.
    pub config: MtcnnConfig,
    device: B::Device,
}

impl<B: Backend> FaceDetector<B> {
    /// The detector with facenet-pytorch's weights (built in when `weights` is `None`,
    /// see [`MtcnnNets::load`]) and default settings.
    ///
    /// # Errors
    /// As [`MtcnnNets::load`].
    pub fn load(weights: Option<&Path>, device: &B::Device) -> Result<Self> {
        Ok(Self {
            nets: MtcnnNets::load(weights, device)?,
            config: MtcnnConfig::default(),
            device: device.clone(),
        })
    }

    /// The same detector with other settings.
    pub fn with_config(mut self, config: MtcnnConfig) -> Self {
        self.config = config;
        self
    }

    /// Faces of `img`, largest box first (empty when there is none).
    ///
    /// # Errors
    /// As [`detect_faces`].
    pub fn detect(&self, img: &RgbImage) -> Result<Vec<Face>> {
        detect_faces(&self.nets, img, &self.config, &self.device)
    }
}

/// An ArcFace IResNet that maps aligned 112 x 112 faces to L2-normalised embeddings.
#[derive(Debug)]
pub struct FaceRecognizer<B: Backend> {
    /// The network.
    pub model: IResNet<B>,
    /// Its architecture.
    pub config: IResNetConfig,
    device: B::Device,
}

impl<B: Backend> FaceRecognizer<B> {
    /// Loads an arcface_torch state dict (a `.pth`/`.pt` `torch.save` file, or the same
    /// tensors as `.safetensors`) or an insightface ONNX model (`.onnx`, see
    /// [`iresnet_onnx`]); the architecture is read from the tensor shapes.
    ///
    /// # Errors
    /// [`ModelError::Weights`] for another file type, a file of an unknown layout (naming
    /// the expected keys or nodes), or tensors that do not fit.
    pub fn load(path: &Path, device: &B::Device) -> Result<Self> {
        let ext = path
            .extension()
            .map(|e| e.to_string_lossy().to_ascii_lowercase())
            .unwrap_or_default();
        let file = match ext.as_str() {
            "pth" | "pt" => torch_as_safetensors(path)?,
            "safetensors" => SafetensorsFile::open(path)?,
            "onnx" => {
                let state = iresnet_onnx::state_dict(&read_onnx(path)?, path)?;
                SafetensorsFile::from_bytes(path, to_safetensors_bytes(&state, path)?)?
            }
            _ => {
                return Err(ModelError::weights(
                    path,
                    "a face recognizer must be an arcface_torch state dict (.pth, .pt or \
                     .safetensors) or an insightface ONNX model (.onnx)",
                ));
            }
        };
        let (config, prefix) = iresnet::detect_config(&file)?;
        log::debug!("{}: IResNet {config:?}", path.display());
        let mut model = config.init(device);
        load_module(
            &mut model,
            &file,
            iresnet::remap(&file, prefix),
            "ArcFace IResNet",
        )?;
        Ok(Self {
            model,
            config,
            device: device.clone(),
        })
    }

    /// `(x / 255 - 0.5) / 0.5` of aligned crops, as a batch.
    ///
    /// # Errors
    /// [`ModelError::InvalidInput`] for an empty batch or a crop that is not 112 x 112.
    pub fn preprocess(&self, crops: &[RgbImage]) -> Result<Tensor<B, 4>> {
        if crops.is_empty() {
            return Err(ModelError::InvalidInput("no face crops to embed".into()));
        }
        let s = RECOGNITION_SIZE as usize;
        let mut data = Vec::with_capacity(crops.len() * 3 * s * s);
        for crop in crops {
            if crop.dimensions() != (RECOGNITION_SIZE, RECOGNITION_SIZE) {
                return Err(ModelError::InvalidInput(format!(
                    "an aligned face crop must be {RECOGNITION_SIZE}x{RECOGNITION_SIZE}, got {}x{}",
                    crop.width(),
                    crop.height()
                )));
            }
            for c in 0..3 {
                data.extend(crop.pixels().map(|p| (p.0[c] as f32 / 255.0 - 0.5) / 0.5));
            }
        }
        Ok(Tensor::from_data(
            TensorData::new(data, [crops.len(), 3, s, s]),
            &self.device,
        ))
    }

    /// L2-normalised embeddings of aligned 112 x 112 crops.
    ///
    /// # Shapes
    /// - output: `[crops.len(), num_features]`
    ///
    /// # Errors
    /// As [`Self::preprocess`].
    pub fn embed_aligned(&self, crops: &[RgbImage]) -> Result<Tensor<B, 2>> {
        Ok(l2_normalize(self.model.forward(self.preprocess(crops)?)))
    }

    /// The L2-normalised embedding of one detected face of `img`.
    ///
    /// # Shapes
    /// - output: `[1, num_features]`
    ///
    /// # Errors
    /// As [`norm_crop`] and [`Self::preprocess`].
    pub fn embed_face(&self, img: &RgbImage, face: &Face) -> Result<Tensor<B, 2>> {
        let crop = norm_crop(img, &face.landmarks, RECOGNITION_SIZE)?;
        self.embed_aligned(&[crop])
    }
}

/// Rows divided by their L2 norm (floored at 1e-12 as `F.normalize`).
///
/// # Shapes
/// - `x`: `[N, D]` -> `[N, D]`
pub fn l2_normalize<B: Backend>(x: Tensor<B, 2>) -> Tensor<B, 2> {
    let norm = x.clone().powi_scalar(2).sum_dim(1).sqrt().clamp_min(1e-12);
    x / norm
}

/// Cosine similarity of two embeddings.
///
/// # Errors
/// [`ModelError::InvalidInput`] when the lengths differ or a vector is zero.
pub fn cosine_similarity(a: &[f32], b: &[f32]) -> Result<f32> {
    if a.len() != b.len() || a.is_empty() {
        return Err(ModelError::InvalidInput(format!(
            "cannot compare embeddings of sizes {} and {}",
            a.len(),
            b.len()
        )));
    }
    let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
    let na: f64 = a.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    if na == 0.0 || nb == 0.0 {
        return Err(ModelError::InvalidInput(
            "cannot compare a zero embedding".into(),
        ));
    }
    Ok((dot / (na * nb)) as f32)
}
