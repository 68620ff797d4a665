//! Face Sim: faces found, aligned and embedded exactly as the face module's
//! `similarity` does it, so a score here equals `face similarity` on the same pair.
use std::path::Path;

use burn::tensor::backend::Backend;
use image::RgbImage;

use crate::face::{FaceDetector, FaceRecognizer, MIN_DETECT_SIDE, cosine_similarity, load_rgb};
use crate::{ModelError, Result};

/// What the identity scorer saw in one image.
#[derive(Debug, Clone, PartialEq)]
pub struct FaceEmbedding {
    /// Whether MTCNN found a face.
    pub face_found: bool,
    /// The L2-normalised ArcFace embedding of the largest face (a face and a recognizer
    /// are needed).
    pub embedding: Option<Vec<f32>>,
}

/// MTCNN and, optionally, an ArcFace recognizer: finds faces, and embeds the largest.
#[derive(Debug)]
pub struct IdentityScorer<B: Backend> {
    /// The detector.
    pub detector: FaceDetector<B>,
    /// The recognizer (without it, only whether a face is found is known).
    pub recognizer: Option<FaceRecognizer<B>>,
}

impl<B: Backend> IdentityScorer<B> {
    /// A scorer from a detector and an optional recognizer.
    pub fn new(detector: FaceDetector<B>, recognizer: Option<FaceRecognizer<B>>) -> Self {
        Self {
            detector,
            recognizer,
        }
    }

    /// Finds the largest face of `img` and embeds it. An image too small for the detector
    /// has no face.
    ///
    /// # Errors
    /// A detector or recognizer failure.
    pub fn embed(&self, img: &RgbImage) -> Result<FaceEmbedding> {
        let faces = if img.width() < MIN_DETECT_SIDE || img.height() < MIN_DETECT_SIDE {
            Vec::new()
        } else {
            self.detector.detect(img)?
        };
        let Some(face) = faces.first() else {
            return Ok(FaceEmbedding {
                face_found: false,
                embedding: None,
            });
        };
        let embedding = match &self.recognizer {
            Some(rec) => Some(
                rec.embed_face(img, face)?
                    .into_data()
                    .convert::<f32>()
                    .iter::<f32>()
                    .collect(),
            ),
            None => None,
        };
        Ok(FaceEmbedding {
            face_found: true,
            embedding,
        })
    }

    /// [`Self::embed`] of an image file.
    ///
    /// # Errors
    /// [`ModelError::Image`] naming an unreadable file, or as [`Self::embed`].
    pub fn embed_file(&self, path: &Path) -> Result<FaceEmbedding> {
        self.embed(&load_rgb(path)?)
    }

    /// [`Self::embed_file`] for a reference photo, which must show a face.
    ///
    /// # Errors
    /// [`ModelError::NoFace`] naming the photo, or as [`Self::embed_file`].
    pub fn reference(&self, path: &Path) -> Result<FaceEmbedding> {
        let e = self.embed_file(path)?;
        if !e.face_found {
            return Err(ModelError::NoFace {
                path: path.to_path_buf(),
                detail: format!(
                    " (MTCNN, minimum face {} px, thresholds {:?}): it cannot be an identity reference",
                    self.detector.config.min_face_size, self.detector.config.thresholds
                ),
            });
        }
        Ok(e)
    }
}

/// Face Sim of an image against references: the mean cosine of its embedding with each
/// reference embedding (one reference: that cosine). `None` when the image or every
/// reference lacks an embedding.
///
/// # Errors
/// Embeddings of different sizes.
pub fn face_sim(image: &FaceEmbedding, references: &[&FaceEmbedding]) -> Result<Option<f32>> {
    let Some(e) = &image.embedding else {
        return Ok(None);
    };
    let mut sims = Vec::new();
    for r in references {
        if let Some(r) = &r.embedding {
            sims.push(cosine_similarity(e, r)?);
        }
    }
    Ok((!sims.is_empty()).then(|| sims.iter().sum::<f32>() / sims.len() as f32))
}
