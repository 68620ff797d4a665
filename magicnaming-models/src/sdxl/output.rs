//! What the pipeline returns: [`GenerateOutput`], with the settings it was made with,
//! and its conversion to RGB and PNG.
use std::path::Path;

use burn::tensor::Tensor;
use burn::tensor::backend::Backend;

use super::png::{encode_png, to_rgb8};
use crate::{ModelError, Result};

/// What the pipeline returns: the image, its latents and the settings it was made with.
///
/// ```no_run
/// # use magicnaming_models::sdxl::{GenerateOptions, SdxlPipeline, SdxlSource};
/// # type B = burn::backend::NdArray<f32>;
/// # let pipeline = SdxlPipeline::<B>::load(&SdxlSource::from_path("sdxl", None)?, &Default::default())?;
/// let out = pipeline.generate(&GenerateOptions::new("a red bicycle"))?;
/// out.save_png("bicycle.png")?; // the settings go into the PNG's text chunks
/// let rgb: image::RgbImage = out.to_rgb_image()?;
/// assert_eq!(rgb.dimensions(), (1024, 1024));
/// # Ok::<(), magicnaming_models::ModelError>(())
/// ```
#[derive(Debug, Clone)]
pub struct GenerateOutput<B: Backend> {
    /// Final latents before the VAE, `[1, C, H/f, W/f]`.
    pub latents: Tensor<B, 4>,
    /// Decoded image in `[0, 1]`, `[1, 3, H, W]`.
    pub image: Tensor<B, 4>,
    /// The settings the image was made with, as PNG text chunks: `prompt`,
    /// `negative_prompt`, `seed`, `steps`, `guidance`, `scheduler`, `precision`, `model`,
    /// `software`, and `name` when a name was prepended.
    pub text: Vec<(String, String)>,
}

impl<B: Backend> GenerateOutput<B> {
    /// Sets the text chunk `key` (replacing it when present).
    pub fn set_text(&mut self, key: &str, value: impl Into<String>) {
        let value = value.into();
        match self.text.iter_mut().find(|(k, _)| k == key) {
            Some(entry) => entry.1 = value,
            None => self.text.push((key.to_string(), value)),
        }
    }

    /// The image as interleaved RGB8 rows (`(x * 255).round()`, as diffusers'
    /// `numpy_to_pil`), with its width and height.
    ///
    /// # Errors
    /// An image that is not `[1, 3, H, W]`.
    pub fn to_rgb8(&self) -> Result<(usize, usize, Vec<u8>)> {
        to_rgb8(self.image.clone())
    }

    /// The image as an [`image::RgbImage`].
    ///
    /// # Errors
    /// An image that is not `[1, 3, H, W]`.
    pub fn to_rgb_image(&self) -> Result<image::RgbImage> {
        let (w, h, rgb) = self.to_rgb8()?;
        let size = |v: usize| {
            u32::try_from(v)
                .map_err(|_| ModelError::InvalidInput(format!("image side {v} exceeds u32")))
        };
        image::RgbImage::from_raw(size(w)?, size(h)?, rgb)
            .ok_or_else(|| ModelError::InvalidInput("RGB buffer does not match its size".into()))
    }

    /// The image as PNG bytes with the settings as text chunks.
    ///
    /// # Errors
    /// An image that is not `[1, 3, H, W]`.
    pub fn to_png(&self) -> Result<Vec<u8>> {
        let (w, h, rgb) = self.to_rgb8()?;
        let text: Vec<(&str, String)> = self
            .text
            .iter()
            .map(|(k, v)| (k.as_str(), v.clone()))
            .collect();
        encode_png(w, h, &rgb, &text)
    }

    /// Writes the image as PNG with the settings as text chunks, atomically (a failure
    /// leaves no partial file).
    ///
    /// # Errors
    /// An image that is not `[1, 3, H, W]`; a file that cannot be written.
    pub fn save_png(&self, path: impl AsRef<Path>) -> Result<()> {
        Ok(magicnaming_core::write_atomic(
            path.as_ref(),
            &self.to_png()?,
        )?)
    }
}
