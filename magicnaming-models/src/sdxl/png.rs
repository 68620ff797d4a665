//! PNG output with `tEXt`/`iTXt` chunks carrying the generation settings (prompt,
//! negative prompt, seed, steps, guidance, scheduler, model, name file), written
//! atomically.
use std::path::Path;

use burn::tensor::Tensor;
use burn::tensor::backend::Backend;

use crate::{ModelError, Result};

/// Converts `[1, 3, H, W]` values in `[0, 1]` to interleaved RGB8 (rounding like
/// diffusers' `numpy_to_pil`: `(x * 255).round()`).
pub fn to_rgb8<B: Backend>(image: Tensor<B, 4>) -> Result<(usize, usize, Vec<u8>)> {
    let [b, c, h, w] = image.dims();
    if b != 1 || c != 3 {
        return Err(ModelError::InvalidInput(format!(
            "expected an image [1, 3, H, W], got {:?}",
            image.dims()
        )));
    }
    let hwc: Vec<f32> = image
        .reshape([3, h * w])
        .transpose()
        .into_data()
        .iter::<f32>()
        .collect();
    Ok((
        w,
        h,
        hwc.iter()
            .map(|v| (v.clamp(0.0, 1.0) * 255.0).round() as u8)
            .collect(),
    ))
}

/// Encodes RGB8 pixels as PNG with text chunks (`iTXt` when a value is not Latin-1).
pub fn encode_png(
    width: usize,
    height: usize,
    rgb: &[u8],
    text: &[(&str, String)],
) -> Result<Vec<u8>> {
    let err = |e: png::EncodingError| ModelError::InvalidInput(format!("PNG encoding: {e}"));
    if rgb.len() != width * height * 3 {
        return Err(ModelError::InvalidInput(format!(
            "{} bytes for a {width}x{height} RGB image",
            rgb.len()
        )));
    }
    let mut out = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut out, width as u32, height as u32);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        for (k, v) in text {
            if v.chars().all(|c| (c as u32) < 256) {
                enc.add_text_chunk(k.to_string(), v.clone()).map_err(err)?;
            } else {
                enc.add_itxt_chunk(k.to_string(), v.clone()).map_err(err)?;
            }
        }
        let mut writer = enc.write_header().map_err(err)?;
        writer.write_image_data(rgb).map_err(err)?;
        writer.finish().map_err(err)?;
    }
    Ok(out)
}

/// Saves an image `[1, 3, H, W]` in `[0, 1]` as PNG with text chunks, atomically.
pub fn save_png<B: Backend>(
    path: &Path,
    image: Tensor<B, 4>,
    text: &[(&str, String)],
) -> Result<()> {
    let (w, h, rgb) = to_rgb8(image)?;
    Ok(magicnaming_core::write_atomic(
        path,
        &encode_png(w, h, &rgb, text)?,
    )?)
}
