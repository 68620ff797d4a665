//! Five-point face alignment, insightface's `utils/face_align.py`: `estimate_norm` (the
//! least-squares similarity transform of scikit-image's `SimilarityTransform.estimate`
//! from the landmarks to the ArcFace template) and `norm_crop` (`cv2.warpAffine` with
//! INTER_LINEAR and a constant zero border, reproduced in OpenCV's fixed point: source
//! coordinates in 1/32 pixel, weights in 1/32768).
use image::RgbImage;

use crate::{ModelError, Result};

/// insightface's `arcface_dst`: where the left eye, right eye, nose and mouth corners
/// land in a 112 x 112 crop.
pub const ARCFACE_DST: [[f32; 2]; 5] = [
    [38.2946, 51.6963],
    [73.5318, 51.5014],
    [56.0252, 71.7366],
    [41.5493, 92.3655],
    [70.7299, 92.2041],
];

/// A 2 x 3 affine matrix `[[a, b, tx], [c, d, ty]]` mapping source to destination pixels.
pub type Affine = [[f64; 3]; 2];

/// The least-squares similarity transform (rotation, uniform scale, translation; no
/// reflection) taking `src` to `dst`: scikit-image's `SimilarityTransform.estimate`
/// (Umeyama), which for 2-D points has this closed form.
///
/// # Errors
/// [`ModelError::InvalidInput`] when the source points all coincide or are not finite.
pub fn similarity_transform(src: &[[f32; 2]], dst: &[[f32; 2]]) -> Result<Affine> {
    let n = src.len().min(dst.len()) as f64;
    let mean = |p: &[[f32; 2]]| {
        let (sx, sy) = p
            .iter()
            .fold((0f64, 0f64), |(a, b), q| (a + q[0] as f64, b + q[1] as f64));
        (sx / n, sy / n)
    };
    let (msx, msy) = mean(src);
    let (mdx, mdy) = mean(dst);
    let (mut num_a, mut num_b, mut den) = (0f64, 0f64, 0f64);
    for (s, d) in src.iter().zip(dst) {
        let (x, y) = (s[0] as f64 - msx, s[1] as f64 - msy);
        let (u, v) = (d[0] as f64 - mdx, d[1] as f64 - mdy);
        num_a += x * u + y * v;
        num_b += x * v - y * u;
        den += x * x + y * y;
    }
    if !(den > 0.0 && den.is_finite() && num_a.is_finite() && num_b.is_finite()) {
        return Err(ModelError::InvalidInput(
            "cannot align: the landmarks coincide or are not finite".into(),
        ));
    }
    let (a, b) = (num_a / den, num_b / den);
    Ok([
        [a, -b, mdx - (a * msx - b * msy)],
        [b, a, mdy - (b * msx + a * msy)],
    ])
}

/// The ArcFace template for an `size x size` crop: `arcface_dst * size / 112`.
pub fn arcface_template(size: u32) -> [[f32; 2]; 5] {
    let r = size as f32 / 112.0;
    ARCFACE_DST.map(|[x, y]| [x * r, y * r])
}

/// insightface `estimate_norm(landmarks, size)` for sizes that are multiples of 112 (and
/// any other size, by the same scaling of the template).
///
/// # Errors
/// As [`similarity_transform`].
pub fn estimate_norm(landmarks: &[[f32; 2]; 5], size: u32) -> Result<Affine> {
    similarity_transform(landmarks, &arcface_template(size))
}

/// `cv2.invertAffineTransform`.
fn invert(m: &Affine) -> Affine {
    let d = m[0][0] * m[1][1] - m[0][1] * m[1][0];
    let d = if d != 0.0 { 1.0 / d } else { 0.0 };
    let (a11, a22, a12, a21) = (m[1][1] * d, m[0][0] * d, -m[0][1] * d, -m[1][0] * d);
    let b1 = -a11 * m[0][2] - a12 * m[1][2];
    let b2 = -a21 * m[0][2] - a22 * m[1][2];
    [[a11, a12, b1], [a21, a22, b2]]
}

/// `cv2.warpAffine(img, m, (width, height))`: INTER_LINEAR, BORDER_CONSTANT 0.
pub fn warp_affine(img: &RgbImage, m: &Affine, width: u32, height: u32) -> RgbImage {
    const AB_SCALE: f64 = 1024.0; // 1 << AB_BITS (10)
    const INTER_BITS: i64 = 5;
    const INTER_TAB: i64 = 1 << INTER_BITS;
    const ROUND_DELTA: i64 = 16; // AB_SCALE / INTER_TAB_SIZE / 2
    let inv = invert(m);
    let (sw, sh) = (img.width() as i64, img.height() as i64);
    let px = |x: i64, y: i64, c: usize| -> i64 {
        if x < 0 || y < 0 || x >= sw || y >= sh {
            0
        } else {
            img.get_pixel(x as u32, y as u32).0[c] as i64
        }
    };
    let round = |v: f64| v.round_ties_even() as i64;
    let adelta: Vec<i64> = (0..width)
        .map(|x| round(inv[0][0] * x as f64 * AB_SCALE))
        .collect();
    let bdelta: Vec<i64> = (0..width)
        .map(|x| round(inv[1][0] * x as f64 * AB_SCALE))
        .collect();
    let mut out = RgbImage::new(width, height);
    for y in 0..height {
        let x0 = round((inv[0][1] * y as f64 + inv[0][2]) * AB_SCALE) + ROUND_DELTA;
        let y0 = round((inv[1][1] * y as f64 + inv[1][2]) * AB_SCALE) + ROUND_DELTA;
        for x in 0..width {
            let xs = (x0 + adelta[x as usize]) >> (10 - INTER_BITS);
            let ys = (y0 + bdelta[x as usize]) >> (10 - INTER_BITS);
            let (xi, fx) = (xs >> INTER_BITS, xs & (INTER_TAB - 1));
            let (yi, fy) = (ys >> INTER_BITS, ys & (INTER_TAB - 1));
            // Bilinear weights (INTER_TAB - f) * ... * 32 sum to 1 << 15 exactly.
            let w = [
                (INTER_TAB - fx) * (INTER_TAB - fy) * 32,
                fx * (INTER_TAB - fy) * 32,
                (INTER_TAB - fx) * fy * 32,
                fx * fy * 32,
            ];
            let mut p = [0u8; 3];
            for (c, v) in p.iter_mut().enumerate() {
                let s = px(xi, yi, c) * w[0]
                    + px(xi + 1, yi, c) * w[1]
                    + px(xi, yi + 1, c) * w[2]
                    + px(xi + 1, yi + 1, c) * w[3];
                *v = ((s + (1 << 14)) >> 15).clamp(0, 255) as u8;
            }
            out.put_pixel(x, y, image::Rgb(p));
        }
    }
    out
}

/// insightface `norm_crop`: the face with these landmarks warped onto the ArcFace
/// template scaled to `size x size`.
///
/// # Errors
/// As [`similarity_transform`], and [`ModelError::InvalidInput`] for a zero size.
pub fn norm_crop(img: &RgbImage, landmarks: &[[f32; 2]; 5], size: u32) -> Result<RgbImage> {
    if size == 0 {
        return Err(ModelError::InvalidInput(
            "an aligned crop needs a size > 0".into(),
        ));
    }
    let m = estimate_norm(landmarks, size)?;
    Ok(warp_affine(img, &m, size, size))
}
