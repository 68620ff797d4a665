//! The pixel operations of transformers' torchvision image backend
//! (`image_processing_backends.TorchvisionBackend`): `resize`, `center_crop` and the
//! fused rescale + normalize, on 8-bit RGB images.
//!
//! `resize` ports what `torchvision.transforms.v2.functional.resize` runs on a CPU
//! `uint8` tensor with bicubic antialiasing: PyTorch's `_upsample_bicubic2d_aa` uint8
//! kernel (`UpSampleKernel.cpp` / `UpSampleKernelAVXAntialias.h`, itself Pillow-SIMD's
//! `ImagingResample`): a horizontal then a vertical pass, each with PIL's bicubic filter
//! (`a = -0.5`) widened by the scale when downsampling, double weights normalised per
//! output pixel then quantised to `i16` with the largest precision that fits, integer
//! sums rounded, shifted and saturated to `u8` after each pass. The result is bit-exact
//! with torchvision (asserted by the tests on torchvision's outputs).
//!
//! transformers' "slow" `CLIPImageProcessorPil` resizes with PIL instead (same filter,
//! 22-bit precision): its pixel values differ from these by at most one 8-bit level
//! (0.015 after normalisation) on the test images. `CLIPImageProcessor`, the default in
//! transformers 5.24, is the torchvision one.
use std::ops::Range;

/// A resampling filter (PIL's numbering in `preprocessor_config.json`'s `resample`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resample {
    /// `3`: bicubic, Keys `a = -0.5` (PIL / torch antialias).
    Bicubic,
}

impl Resample {
    /// Parses PIL's resampling number; only bicubic (3), which every CLIP checkpoint
    /// uses, is implemented.
    pub fn from_pil(code: u64) -> Option<Self> {
        match code {
            3 => Some(Self::Bicubic),
            _ => None,
        }
    }

    fn support(self) -> f64 {
        match self {
            Self::Bicubic => 2.0,
        }
    }

    fn filter(self, x: f64) -> f64 {
        match self {
            Self::Bicubic => {
                const A: f64 = -0.5;
                let x = x.abs();
                if x < 1.0 {
                    ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
                } else if x < 2.0 {
                    (((x - 5.0) * x + 8.0) * x - 4.0) * A
                } else {
                    0.0
                }
            }
        }
    }
}

/// Integer weights of one resampling pass (`_compute_indices_int16_weights_aa`).
#[derive(Debug, Clone)]
struct PassWeights {
    /// `(first input index, tap count)` per output index.
    bounds: Vec<(usize, usize)>,
    /// `ksize` weights per output index.
    weights: Vec<i32>,
    ksize: usize,
    precision: u32,
}

fn pass_weights(input: usize, output: usize, filter: Resample) -> PassWeights {
    let scale = input as f64 / output as f64;
    let support = if scale >= 1.0 {
        filter.support() * scale
    } else {
        filter.support()
    };
    let ksize = support.ceil() as usize * 2 + 1;
    let invscale = if scale >= 1.0 { 1.0 / scale } else { 1.0 };
    let mut bounds = Vec::with_capacity(output);
    let mut w64 = vec![0f64; output * ksize];
    for i in 0..output {
        let center = scale * (i as f64 + 0.5);
        // C++ casts truncate toward zero.
        let xmin = ((center - support + 0.5) as i64).max(0) as usize;
        let xmax = ((center + support + 0.5) as i64).min(input as i64) as usize;
        let xsize = xmax.saturating_sub(xmin).min(ksize);
        let row = &mut w64[i * ksize..i * ksize + ksize];
        let mut total = 0.0;
        for (j, w) in row.iter_mut().enumerate().take(xsize) {
            *w = filter.filter((j as f64 + xmin as f64 - center + 0.5) * invscale);
            total += *w;
        }
        if total != 0.0 {
            for w in row.iter_mut().take(xsize) {
                *w /= total;
            }
        }
        bounds.push((xmin, xsize));
    }
    let w_max = w64.iter().copied().fold(w64[0], f64::max);
    let mut precision = 0u32;
    while precision < 22 {
        let next = (0.5 + w_max * (1u64 << (precision + 1)) as f64) as i64;
        if next >= 1 << 15 {
            break;
        }
        precision += 1;
    }
    let scale_p = (1u64 << precision) as f64;
    let weights = w64
        .iter()
        .map(|&v| {
            if v < 0.0 {
                (-0.5 + v * scale_p) as i32
            } else {
                (0.5 + v * scale_p) as i32
            }
        })
        .collect();
    PassWeights {
        bounds,
        weights,
        ksize,
        precision,
    }
}

fn convolve(src: impl Fn(usize) -> u8, first: usize, taps: &[i32], precision: u32) -> u8 {
    let mut sum: i32 = 1 << (precision - 1);
    for (j, &k) in taps.iter().enumerate() {
        sum += src(first + j) as i32 * k;
    }
    (sum >> precision).clamp(0, 255) as u8
}

/// A row-major 8-bit RGB raster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rgb8 {
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
    /// `height * width * 3` samples.
    pub data: Vec<u8>,
}

impl Rgb8 {
    /// Wraps an `image` buffer.
    pub fn from_image(img: &image::RgbImage) -> Self {
        Self {
            width: img.width() as usize,
            height: img.height() as usize,
            data: img.as_raw().clone(),
        }
    }

    fn at(&self, y: usize, x: usize, c: usize) -> u8 {
        self.data[(y * self.width + x) * 3 + c]
    }
}

/// Rows `rows` and columns `cols` of `img` resized to `out_h x out_w` (the same pixels as
/// a full resize followed by slicing, without computing the rest).
///
/// # Panics
/// Never for ranges inside `0..out_h` / `0..out_w` (callers clip them).
pub fn resize_region(
    img: &Rgb8,
    out_h: usize,
    out_w: usize,
    rows: Range<usize>,
    cols: Range<usize>,
    filter: Resample,
) -> Rgb8 {
    // Horizontal pass over every input row, only for the wanted columns.
    let horizontal = if out_w != img.width {
        let pw = pass_weights(img.width, out_w, filter);
        let w = cols.len();
        let mut data = vec![0u8; img.height * w * 3];
        for y in 0..img.height {
            for (xo, x) in cols.clone().enumerate() {
                let (first, n) = pw.bounds[x];
                let taps = &pw.weights[x * pw.ksize..x * pw.ksize + n];
                for c in 0..3 {
                    data[(y * w + xo) * 3 + c] =
                        convolve(|i| img.at(y, i, c), first, taps, pw.precision);
                }
            }
        }
        Rgb8 {
            width: w,
            height: img.height,
            data,
        }
    } else {
        let w = cols.len();
        let mut data = Vec::with_capacity(img.height * w * 3);
        for y in 0..img.height {
            data.extend_from_slice(
                &img.data[(y * img.width + cols.start) * 3..(y * img.width + cols.end) * 3],
            );
        }
        Rgb8 {
            width: w,
            height: img.height,
            data,
        }
    };
    if out_h != img.height {
        let pw = pass_weights(img.height, out_h, filter);
        let w = horizontal.width;
        let mut data = vec![0u8; rows.len() * w * 3];
        for (yo, y) in rows.clone().enumerate() {
            let (first, n) = pw.bounds[y];
            let taps = &pw.weights[y * pw.ksize..y * pw.ksize + n];
            for x in 0..w {
                for c in 0..3 {
                    data[(yo * w + x) * 3 + c] =
                        convolve(|i| horizontal.at(i, x, c), first, taps, pw.precision);
                }
            }
        }
        Rgb8 {
            width: w,
            height: rows.len(),
            data,
        }
    } else {
        let w = horizontal.width;
        Rgb8 {
            width: w,
            height: rows.len(),
            data: horizontal.data[rows.start * w * 3..rows.end * w * 3].to_vec(),
        }
    }
}

/// Full resize to `out_h x out_w` (torchvision `resize`, antialiased, on `uint8`).
pub fn resize(img: &Rgb8, out_h: usize, out_w: usize, filter: Resample) -> Rgb8 {
    resize_region(img, out_h, out_w, 0..out_h, 0..out_w, filter)
}

/// Offset of a centre crop of `crop` out of `size` along one axis, as the torchvision
/// backend's `center_crop` computes it: `int((size - crop) / 2)` when the crop fits,
/// else a negative offset of `(crop - size) // 2` (zero padding before the crop).
pub fn center_crop_offset(size: usize, crop: usize) -> isize {
    if crop > size {
        -(((crop - size) / 2) as isize)
    } else {
        ((size - crop) / 2) as isize
    }
}

/// `resize` (optional) then a centre crop of `crop_h x crop_w` (optional), computing
/// only the cropped pixels. Pixels outside the resized image (crop larger than it) are
/// 0, as torchvision pads them.
pub fn resize_and_crop(
    img: &Rgb8,
    resize_to: Option<(usize, usize)>,
    crop: Option<(usize, usize)>,
    filter: Resample,
) -> Rgb8 {
    let (rh, rw) = resize_to.unwrap_or((img.height, img.width));
    let Some((ch, cw)) = crop else {
        return if resize_to.is_some() {
            resize(img, rh, rw, filter)
        } else {
            img.clone()
        };
    };
    let (oy, ox) = (center_crop_offset(rh, ch), center_crop_offset(rw, cw));
    let clip = |off: isize, n: usize, size: usize| -> Range<usize> {
        let start = off.max(0) as usize;
        let end = ((off + n as isize).max(0) as usize).min(size);
        start.min(end)..end
    };
    let (rows, cols) = (clip(oy, ch, rh), clip(ox, cw, rw));
    let region = if resize_to.is_some() && (rh, rw) != (img.height, img.width) {
        resize_region(img, rh, rw, rows.clone(), cols.clone(), filter)
    } else {
        let mut data = Vec::with_capacity(rows.len() * cols.len() * 3);
        for y in rows.clone() {
            data.extend_from_slice(
                &img.data[(y * img.width + cols.start) * 3..(y * img.width + cols.end) * 3],
            );
        }
        Rgb8 {
            width: cols.len(),
            height: rows.len(),
            data,
        }
    };
    if (region.height, region.width) == (ch, cw) {
        return region;
    }
    // Padding: place the region at its offset inside a zero crop.
    let mut data = vec![0u8; ch * cw * 3];
    let (py, px) = (
        (rows.start as isize - oy) as usize,
        (cols.start as isize - ox) as usize,
    );
    for y in 0..region.height {
        let dst = ((py + y) * cw + px) * 3;
        data[dst..dst + region.width * 3]
            .copy_from_slice(&region.data[y * region.width * 3..(y + 1) * region.width * 3]);
    }
    Rgb8 {
        width: cw,
        height: ch,
        data,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_sum_to_one_in_fixed_point() {
        for (i, o) in [(45, 38), (7, 28), (200, 49), (37, 32)] {
            let pw = pass_weights(i, o, Resample::Bicubic);
            for x in 0..o {
                let (_, n) = pw.bounds[x];
                let s: i32 = pw.weights[x * pw.ksize..x * pw.ksize + n].iter().sum();
                let one = 1i32 << pw.precision;
                assert!((s - one).abs() <= n as i32, "{i}->{o} at {x}: {s} vs {one}");
            }
        }
    }

    #[test]
    fn crop_with_padding_matches_torchvision_offsets() {
        assert_eq!(center_crop_offset(45, 32), 6);
        assert_eq!(center_crop_offset(32, 45), -6);
        let img = Rgb8 {
            width: 2,
            height: 1,
            data: vec![1, 2, 3, 4, 5, 6],
        };
        let out = resize_and_crop(&img, None, Some((3, 4)), Resample::Bicubic);
        // 1 row of padding above, 1 column left: the pixels land at (1, 1) and (1, 2).
        assert_eq!(out.data[(4 + 1) * 3..(4 + 3) * 3], [1, 2, 3, 4, 5, 6]);
        assert_eq!(out.data.iter().map(|&v| v as u32).sum::<u32>(), 21);
    }
}
