//! The images a LoRA trains on: each dataset row's photo (the shard metadata's `paths`,
//! relative to the manifest that built the dataset), its caption (the manifest's
//! `caption`, else the run's), and its preprocessing as diffusers' script does it: the
//! shorter side resized to the resolution (bilinear, antialiased), a centre crop, values
//! in `[-1, 1]`, and the SDXL micro-conditioning of that crop.
use std::collections::HashMap;
use std::path::PathBuf;

use image::DynamicImage;
use image::imageops::FilterType;

use crate::image_file::decode_image_file;
use crate::train::dataset::Dataset;
use crate::train::manifest::read_manifest;
use crate::{ModelError, Result};

/// One training image.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainImage {
    /// Dataset row.
    pub row: usize,
    /// The path as the manifest wrote it.
    pub key: String,
    /// The file.
    pub path: PathBuf,
    /// The person (index into the dataset's identities).
    pub identity: usize,
    /// Its caption.
    pub caption: String,
}

/// The dataset's images with their files and captions, in row order.
///
/// # Errors
/// A dataset without images; shard metadata without `paths`; an image file that does not
/// exist (the first such is named).
pub fn dataset_images(dataset: &Dataset, default_caption: &str) -> Result<Vec<TrainImage>> {
    if dataset.identity.is_empty() {
        return Err(ModelError::InvalidInput(format!(
            "the dataset {} has no images",
            dataset.dir.display()
        )));
    }
    let mut keys = Vec::with_capacity(dataset.identity.len());
    for shard in &dataset.index.shards {
        let p = dataset.dir.join(&shard.file);
        let bytes = std::fs::read(&p).map_err(|e| ModelError::io(&p, e))?;
        let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes)
            .map_err(|e| ModelError::weights(&p, format!("not a safetensors file: {e}")))?;
        let paths: Vec<String> = meta
            .metadata()
            .as_ref()
            .and_then(|m| m.get("paths"))
            .and_then(|t| serde_json::from_str(t).ok())
            .ok_or_else(|| {
                ModelError::weights(&p, "no `paths` metadata (a JSON list of images)")
            })?;
        if paths.len() != shard.count {
            return Err(ModelError::weights(
                &p,
                format!("{} paths for {} rows", paths.len(), shard.count),
            ));
        }
        keys.extend(paths);
    }
    let manifest = dataset
        .index
        .source
        .get("manifest")
        .and_then(|m| m.as_str())
        .map(PathBuf::from);
    let base = manifest
        .as_deref()
        .and_then(|m| m.parent())
        .map(PathBuf::from)
        .unwrap_or_else(|| dataset.dir.clone());
    let captions: HashMap<String, String> = match &manifest {
        Some(m) if m.is_file() => read_manifest(m)?
            .entries
            .into_iter()
            .filter_map(|e| e.caption.map(|c| (e.image, c)))
            .collect(),
        _ => {
            log::info!(
                "the dataset's manifest is not at hand: every image is captioned {default_caption:?}"
            );
            HashMap::new()
        }
    };
    let mut images = Vec::with_capacity(keys.len());
    for (row, key) in keys.into_iter().enumerate() {
        let p = std::path::Path::new(&key);
        let path = if p.is_absolute() {
            p.to_path_buf()
        } else {
            base.join(p)
        };
        if !path.is_file() {
            return Err(ModelError::MissingFile {
                path,
                what: format!("image of dataset row {row}"),
            });
        }
        let caption = captions
            .get(&key)
            .cloned()
            .unwrap_or_else(|| default_caption.to_string());
        images.push(TrainImage {
            row,
            key,
            path,
            identity: dataset.identity[row],
            caption,
        });
    }
    Ok(images)
}

/// An image ready for the VAE.
#[derive(Debug, Clone, PartialEq)]
pub struct PreparedImage {
    /// `[3, res, res]` row-major, values in `[-1, 1]`.
    pub pixels: Vec<f32>,
    /// `[orig_h, orig_w, crop_top, crop_left, res, res]`.
    pub time_ids: [f32; 6],
    /// Whether the shorter side was below the resolution (the image was upscaled).
    pub upscaled: bool,
}

/// Python's `round` (half to even) of a non-negative half-integer or integer.
fn round_half_even(x: f64) -> usize {
    let r = x.round();
    let r = if (x - x.trunc() - 0.5).abs() < 1e-9 && r % 2.0 != 0.0 {
        r - 1.0
    } else {
        r
    };
    r.max(0.0) as usize
}

/// Resize (shorter side to `res`, torchvision's size rule), centre crop, normalise.
pub fn prepare_image(image: &DynamicImage, res: usize) -> PreparedImage {
    let rgb = image.to_rgb8();
    let (w, h) = (rgb.width() as usize, rgb.height() as usize);
    let (short, long) = (w.min(h), w.max(h));
    // torchvision: new_long = int(res * long / short).
    let new_long = (res as f64 * long as f64 / short as f64) as usize;
    let (nw, nh) = if w <= h {
        (res, new_long)
    } else {
        (new_long, res)
    };
    let resized = image::imageops::resize(&rgb, nw as u32, nh as u32, FilterType::Triangle);
    let top = round_half_even((nh - res) as f64 / 2.0);
    let left = round_half_even((nw - res) as f64 / 2.0);
    let mut pixels = vec![0f32; 3 * res * res];
    for y in 0..res {
        for x in 0..res {
            let p = resized.get_pixel((left + x) as u32, (top + y) as u32);
            for c in 0..3 {
                pixels[c * res * res + y * res + x] = p[c] as f32 / 255.0 * 2.0 - 1.0;
            }
        }
    }
    PreparedImage {
        pixels,
        time_ids: [
            h as f32,
            w as f32,
            top as f32,
            left as f32,
            res as f32,
            res as f32,
        ],
        upscaled: short < res,
    }
}

/// Reads and prepares one training image.
///
/// # Errors
/// An unreadable image (named).
pub fn load_prepared(image: &TrainImage, res: usize) -> Result<PreparedImage> {
    let decoded = decode_image_file(&image.path)?;
    let prepared = prepare_image(&decoded, res);
    if prepared.upscaled {
        log::warn!(
            "{}: {}x{} is smaller than --resolution {res}: upscaled",
            image.path.display(),
            decoded.width(),
            decoded.height()
        );
    }
    Ok(prepared)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_rounding_and_crop() {
        assert_eq!(round_half_even(0.5), 0);
        assert_eq!(round_half_even(1.5), 2);
        assert_eq!(round_half_even(2.5), 2);
        assert_eq!(round_half_even(3.0), 3);
        // 40 x 30 (w x h) at 16: shorter side 30 -> 16, longer int(16 * 40 / 30) = 21;
        // left = round(5 / 2) = 2 (half to even), top 0.
        let img = DynamicImage::new_rgb8(40, 30);
        let p = prepare_image(&img, 16);
        assert_eq!(p.time_ids, [30.0, 40.0, 0.0, 2.0, 16.0, 16.0]);
        assert!(!p.upscaled);
        assert_eq!(p.pixels.len(), 3 * 16 * 16);
        assert!(p.pixels.iter().all(|&v| v == -1.0));
        assert!(prepare_image(&DynamicImage::new_rgb8(8, 12), 16).upscaled);
    }
}
