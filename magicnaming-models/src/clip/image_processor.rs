//! transformers' `CLIPImageProcessor` (torchvision backend, the default in 5.24), driven
//! by `preprocessor_config.json`: convert to RGB, resize the shortest edge (bicubic,
//! antialiased, on 8-bit pixels), centre crop, then the fused rescale + normalise
//! `(x - mean / rescale_factor) / (std / rescale_factor)` in f32, as transformers' fast
//! processor computes it.
//!
//! Files are read by [`super::image_utils::load_image`] (EXIF orientation, PIL's RGB
//! conversion with alpha composited on white; see there). The one known difference with
//! transformers is JPEG decoding: the `image` crate (zune-jpeg) and PIL (libjpeg-turbo)
//! may differ by a level or two on some pixels (IDCT / chroma upsampling rounding).
use std::path::Path;

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use serde_json::Value;

use super::image_transforms::{Resample, Rgb8, resize_and_crop};
use super::image_utils::{decode_image, to_rgb8_like_pil};
use crate::json::read_json;
use crate::{ModelError, Result};

/// OpenAI CLIP's normalisation mean (transformers' `OPENAI_CLIP_MEAN`).
pub const OPENAI_CLIP_MEAN: [f32; 3] = [0.481_454_66, 0.457_827_5, 0.408_210_73];
/// OpenAI CLIP's normalisation standard deviation (`OPENAI_CLIP_STD`).
// Digits as transformers writes them; the f32 is the nearest value, as torch.tensor gives.
#[allow(clippy::excessive_precision)]
pub const OPENAI_CLIP_STD: [f32; 3] = [0.268_629_54, 0.261_302_58, 0.275_777_11];

/// The `size` of a processor configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResizeTarget {
    /// `{"shortest_edge": n}` (or a bare integer): the shorter side becomes `n`, the longer
    /// `int(n * long / short)`.
    ShortestEdge(usize),
    /// `{"height": h, "width": w}`.
    Exact {
        /// Height.
        height: usize,
        /// Width.
        width: usize,
    },
}

/// The settings of `CLIPImageProcessor` (`preprocessor_config.json`), with transformers'
/// defaults for absent keys.
#[derive(Debug, Clone, PartialEq)]
pub struct ClipImageProcessorConfig {
    /// `do_resize` (true).
    pub do_resize: bool,
    /// `size` (`{"shortest_edge": 224}`).
    pub size: ResizeTarget,
    /// `resample` (3, bicubic).
    pub resample: Resample,
    /// `do_center_crop` (true).
    pub do_center_crop: bool,
    /// `crop_size` as `(height, width)` (224, 224).
    pub crop_size: (usize, usize),
    /// `do_rescale` (true).
    pub do_rescale: bool,
    /// `rescale_factor` (1 / 255).
    pub rescale_factor: f64,
    /// `do_normalize` (true).
    pub do_normalize: bool,
    /// `image_mean` ([`OPENAI_CLIP_MEAN`]).
    pub image_mean: [f32; 3],
    /// `image_std` ([`OPENAI_CLIP_STD`]).
    pub image_std: [f32; 3],
    /// `do_convert_rgb` (true).
    pub do_convert_rgb: bool,
}

impl Default for ClipImageProcessorConfig {
    /// transformers' `CLIPImageProcessor` class defaults.
    fn default() -> Self {
        Self::for_image_size(224)
    }
}

impl ClipImageProcessorConfig {
    /// transformers' defaults with `size` and `crop_size` set to `image_size` (what a
    /// tower without `preprocessor_config.json` uses; the defaults for 224).
    pub fn for_image_size(image_size: usize) -> Self {
        Self {
            do_resize: true,
            size: ResizeTarget::ShortestEdge(image_size),
            resample: Resample::Bicubic,
            do_center_crop: true,
            crop_size: (image_size, image_size),
            do_rescale: true,
            rescale_factor: 1.0 / 255.0,
            do_normalize: true,
            image_mean: OPENAI_CLIP_MEAN,
            image_std: OPENAI_CLIP_STD,
            do_convert_rgb: true,
        }
    }

    /// Parses a `preprocessor_config.json` (`CLIPImageProcessor`, or the older
    /// `CLIPFeatureExtractor` with integer `size` / `crop_size`).
    ///
    /// # Errors
    /// Keys of the wrong type, a `size` with `longest_edge` or without a known key, a
    /// `resample` other than bicubic, a zero size or standard deviation.
    pub fn from_json_value(root: &Value, path: &Path) -> crate::Result<Self> {
        crate::json::check_config_sizes(root, path)?;
        let bad = |m: String| ModelError::config(path, m);
        let obj = root
            .as_object()
            .ok_or_else(|| bad("expected a JSON object".into()))?;
        let mut c = Self::default();
        let flag = |key: &str, default: bool| -> crate::Result<bool> {
            match obj.get(key) {
                None | Some(Value::Null) => Ok(default),
                Some(Value::Bool(b)) => Ok(*b),
                Some(v) => Err(bad(format!("`{key}` = {v}: expected true or false"))),
            }
        };
        let int = |v: &Value, what: &str| -> crate::Result<usize> {
            v.as_u64()
                .filter(|&n| n > 0)
                .map(|n| n as usize)
                .ok_or_else(|| bad(format!("`{what}` = {v}: expected a positive integer")))
        };
        c.do_resize = flag("do_resize", c.do_resize)?;
        c.do_center_crop = flag("do_center_crop", c.do_center_crop)?;
        c.do_rescale = flag("do_rescale", c.do_rescale)?;
        c.do_normalize = flag("do_normalize", c.do_normalize)?;
        c.do_convert_rgb = flag("do_convert_rgb", c.do_convert_rgb)?;
        if let Some(size) = obj.get("size").filter(|v| !v.is_null()) {
            c.size = match size {
                Value::Object(m)
                    if m.contains_key("longest_edge") || m.contains_key("max_height") =>
                {
                    return Err(bad(format!(
                        "`size` = {size}: only shortest_edge or height/width are supported"
                    )));
                }
                Value::Object(m) if m.contains_key("shortest_edge") => {
                    ResizeTarget::ShortestEdge(int(&m["shortest_edge"], "size.shortest_edge")?)
                }
                Value::Object(m) if m.contains_key("height") && m.contains_key("width") => {
                    ResizeTarget::Exact {
                        height: int(&m["height"], "size.height")?,
                        width: int(&m["width"], "size.width")?,
                    }
                }
                Value::Number(_) => ResizeTarget::ShortestEdge(int(size, "size")?),
                _ => {
                    return Err(bad(format!(
                        "`size` = {size}: expected shortest_edge or height/width"
                    )));
                }
            };
        }
        if let Some(crop) = obj.get("crop_size").filter(|v| !v.is_null()) {
            c.crop_size = match crop {
                Value::Object(m) if m.contains_key("height") && m.contains_key("width") => (
                    int(&m["height"], "crop_size.height")?,
                    int(&m["width"], "crop_size.width")?,
                ),
                Value::Number(_) => {
                    let n = int(crop, "crop_size")?;
                    (n, n)
                }
                _ => {
                    return Err(bad(format!(
                        "`crop_size` = {crop}: expected height/width or an integer"
                    )));
                }
            };
        }
        if let Some(r) = obj.get("resample").filter(|v| !v.is_null()) {
            c.resample = r
                .as_u64()
                .and_then(Resample::from_pil)
                .ok_or_else(|| bad(format!("`resample` = {r}: only 3 (bicubic) is supported")))?;
        }
        if let Some(f) = obj.get("rescale_factor").filter(|v| !v.is_null()) {
            c.rescale_factor = f
                .as_f64()
                .filter(|f| *f > 0.0 && f.is_finite())
                .ok_or_else(|| {
                    bad(format!(
                        "`rescale_factor` = {f}: expected a positive number"
                    ))
                })?;
        }
        let triple = |key: &str, default: [f32; 3]| -> crate::Result<[f32; 3]> {
            match obj.get(key) {
                None | Some(Value::Null) => Ok(default),
                Some(Value::Number(n)) => Ok([n.as_f64().unwrap_or(f64::NAN) as f32; 3]),
                Some(Value::Array(a)) if a.len() == 3 && a.iter().all(Value::is_number) => {
                    Ok([0, 1, 2].map(|i| a[i].as_f64().unwrap_or(f64::NAN) as f32))
                }
                Some(v) => Err(bad(format!("`{key}` = {v}: expected 3 numbers"))),
            }
        };
        c.image_mean = triple("image_mean", c.image_mean)?;
        c.image_std = triple("image_std", c.image_std)?;
        if c.image_std.contains(&0.0) {
            return Err(bad("`image_std` has a zero".into()));
        }
        Ok(c)
    }

    /// Reads `preprocessor_config.json`.
    pub fn from_file(path: &Path) -> crate::Result<Self> {
        Self::from_json_value(&read_json(path)?, path)
    }

    /// `(height, width)` of the pixel values when it does not depend on the image: the
    /// crop size, or an exact resize without crop; `None` otherwise.
    pub fn output_size(&self) -> Option<(usize, usize)> {
        match (self.do_center_crop, self.do_resize, self.size) {
            (true, _, _) => Some(self.crop_size),
            (false, true, ResizeTarget::Exact { height, width }) => Some((height, width)),
            _ => None,
        }
    }

    /// The resize target of an `h x w` image (`get_resize_output_image_size` with
    /// `default_to_square=False`).
    pub fn resize_target(&self, h: usize, w: usize) -> Option<(usize, usize)> {
        if !self.do_resize {
            return None;
        }
        Some(match self.size {
            ResizeTarget::Exact { height, width } => (height, width),
            ResizeTarget::ShortestEdge(s) => {
                let (short, long) = if w <= h { (w, h) } else { (h, w) };
                // Python: int(s * long / short), true division in double.
                let new_long = ((s * long) as f64 / short as f64) as usize;
                if w <= h { (new_long, s) } else { (s, new_long) }
            }
        })
    }
}

/// `CLIPImageProcessor`: image files to `pixel_values`.
#[derive(Debug, Clone, PartialEq)]
pub struct ClipImageProcessor {
    /// The settings.
    pub config: ClipImageProcessorConfig,
}

impl ClipImageProcessor {
    /// A processor with these settings.
    pub fn new(config: ClipImageProcessorConfig) -> Self {
        Self { config }
    }

    /// Reads `preprocessor_config.json`.
    pub fn from_file(path: &Path) -> Result<Self> {
        ClipImageProcessorConfig::from_file(path).map(Self::new)
    }

    /// Resizes, crops and normalises an RGB image (the processor's work after
    /// `convert_to_rgb`).
    ///
    /// # Shapes
    /// - output: `3 * H * W` values, channel-major (`[3, H, W]`), and `(H, W)`
    pub fn preprocess_rgb(&self, img: &image::RgbImage) -> (Vec<f32>, (usize, usize)) {
        let c = &self.config;
        let src = Rgb8::from_image(img);
        let resized = c.resize_target(src.height, src.width);
        let crop = c.do_center_crop.then_some(c.crop_size);
        let out = resize_and_crop(&src, resized, crop, c.resample);
        // transformers fuses rescale into normalise: mean / rescale_factor and
        // std / rescale_factor computed in f32, then (x - mean') / std' in f32.
        let inv = (1.0 / c.rescale_factor) as f32;
        let (mean, std, scale) = match (c.do_rescale, c.do_normalize) {
            (true, true) => (
                c.image_mean.map(|m| m * inv),
                c.image_std.map(|s| s * inv),
                1.0,
            ),
            (false, true) => (c.image_mean, c.image_std, 1.0),
            (true, false) => ([0.0; 3], [1.0; 3], c.rescale_factor as f32),
            (false, false) => ([0.0; 3], [1.0; 3], 1.0),
        };
        let plane = out.width * out.height;
        let mut values = vec![0f32; 3 * plane];
        for (i, px) in out.data.chunks_exact(3).enumerate() {
            for ch in 0..3 {
                let x = px[ch] as f32;
                values[ch * plane + i] = if c.do_normalize {
                    (x - mean[ch]) / std[ch]
                } else {
                    x * scale
                };
            }
        }
        (values, (out.height, out.width))
    }

    /// Reads and preprocesses one image file.
    ///
    /// # Errors
    /// [`ModelError::Image`] naming the file: unreadable, truncated, too small, or not
    /// RGB while `do_convert_rgb` is false.
    pub fn preprocess_file(&self, path: &Path) -> Result<(Vec<f32>, (usize, usize))> {
        self.preprocess_decoded(&decode_image(path)?, path)
    }

    /// Preprocesses an image decoded by [`decode_image`]; `path` names it in errors.
    ///
    /// # Errors
    /// As [`Self::preprocess_file`].
    pub fn preprocess_decoded(
        &self,
        img: &image::DynamicImage,
        path: &Path,
    ) -> Result<(Vec<f32>, (usize, usize))> {
        if !self.config.do_convert_rgb && !matches!(img, image::DynamicImage::ImageRgb8(_)) {
            return Err(ModelError::Image {
                path: path.to_path_buf(),
                message: format!("{:?} image while do_convert_rgb is false", img.color()),
            });
        }
        Ok(self.preprocess_rgb(&to_rgb8_like_pil(img, path)?))
    }

    /// Preprocesses image files into one batch.
    ///
    /// # Shapes
    /// - output: `[N, 3, H, W]`
    ///
    /// # Errors
    /// No files; the first unreadable file ([`ModelError::Image`]); images of different
    /// output sizes (only without a centre crop).
    pub fn preprocess_files<B: Backend>(
        &self,
        paths: &[impl AsRef<Path>],
        device: &B::Device,
    ) -> Result<Tensor<B, 4>> {
        let mut all = Vec::new();
        let mut size = None;
        for p in paths {
            let (values, hw) = self.preprocess_file(p.as_ref())?;
            if *size.get_or_insert(hw) != hw {
                return Err(ModelError::InvalidInput(format!(
                    "{}: preprocessed to {hw:?}, other images to {:?} (set do_center_crop)",
                    p.as_ref().display(),
                    size.unwrap_or(hw)
                )));
            }
            all.extend(values);
        }
        let (h, w) =
            size.ok_or_else(|| ModelError::InvalidInput("no images to preprocess".into()))?;
        Ok(Tensor::from_data(
            TensorData::new(all, [paths.len(), 3, h, w]),
            device,
        ))
    }
}
