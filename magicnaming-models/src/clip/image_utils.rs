//! Reading image files as transformers' processors see them (transformers'
//! `image_utils.load_image` + `image_transforms.convert_to_rgb`): decode any format the
//! `image` crate reads (PNG, JPEG, WebP, BMP, TIFF, GIF), apply the EXIF orientation
//! (`PIL.ImageOps.exif_transpose`), and convert to 8-bit RGB the way PIL does:
//!
//! | decoded as | RGB8 result (PIL equivalent) |
//! |---|---|
//! | RGB8 | as is |
//! | gray 8-bit (`L`) | gray replicated (`convert("RGB")`) |
//! | RGBA / gray+alpha / palette or colour key with transparency | composited on **white** with PIL's integer `alpha_composite`, as `CLIPImageProcessor`'s `convert_to_rgb` does (transformers' `load_image` would instead drop the alpha channel; the processor's behaviour is the one followed here) |
//! | 16-bit RGB(A) / gray+alpha | high byte of each sample (PIL's `RGB;16B` / `LA;16B` unpacking), then as above |
//! | 16-bit gray (`I;16`) | `min(v, 255)`, replicated: PIL's `I;16 -> RGB` conversion **clips** instead of scaling, so 16-bit gray photos come out mostly white in transformers too; reproduced on purpose and logged |
//! | 32-bit float | rejected ([`ModelError::Image`]) |
//!
//! Images smaller than [`MIN_IMAGE_SIDE`] pixels on a side are rejected: a CLIP patch is
//! 14 pixels, so such an image carries no face detail, and transformers would silently
//! upscale it.
use std::path::Path;

use image::{DynamicImage, RgbImage};

use crate::image_file::decode_image_file;
use crate::{ModelError, Result};

/// Smallest accepted width and height, in pixels (after EXIF orientation).
pub const MIN_IMAGE_SIDE: u32 = 16;

fn image_error(path: &Path, message: impl Into<String>) -> ModelError {
    ModelError::Image {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

/// Decodes `path` and applies its EXIF orientation, within the limits of
/// [`crate::image_file`].
///
/// # Errors
/// [`ModelError::Image`] naming the path for a missing, unreadable, truncated,
/// unsupported or over-limit file, or an image smaller than [`MIN_IMAGE_SIDE`].
pub fn decode_image(path: &Path) -> Result<DynamicImage> {
    let img = decode_image_file(path)?;
    let (w, h) = (img.width(), img.height());
    if w < MIN_IMAGE_SIDE || h < MIN_IMAGE_SIDE {
        return Err(image_error(
            path,
            format!(
                "{w}x{h} pixels is too small: both sides must be at least {MIN_IMAGE_SIDE} pixels"
            ),
        ));
    }
    Ok(img)
}

/// PIL's `alpha_composite` of one RGBA pixel over opaque white (`AlphaComposite.c`, 7
/// precision bits, rounded divisions by 255).
fn over_white(r: u8, g: u8, b: u8, a: u8) -> [u8; 3] {
    if a == 0 {
        return [255, 255, 255];
    }
    const PRECISION_BITS: u32 = 7;
    let a = a as u32;
    // dst alpha is 255: outa255 = 255 * 255, so coef1 = a << 7 exactly.
    let blend = 255 * (255 - a);
    let outa255 = a * 255 + blend;
    let coef1 = a * 255 * 255 * (1 << PRECISION_BITS) / outa255;
    let coef2 = 255 * (1 << PRECISION_BITS) - coef1;
    let shift_div_255 = |x: u32| ((x >> 8) + x) >> 8;
    let mix = |c: u8| {
        let tmp = c as u32 * coef1 + 255 * coef2;
        (shift_div_255(tmp + (0x80 << PRECISION_BITS)) >> PRECISION_BITS) as u8
    };
    [mix(r), mix(g), mix(b)]
}

/// Converts a decoded image to 8-bit RGB as PIL's `convert("RGB")` / transformers'
/// `convert_to_rgb` do (see the module documentation for each pixel format).
///
/// # Errors
/// [`ModelError::Image`] for floating-point images.
pub fn to_rgb8_like_pil(img: &DynamicImage, path: &Path) -> Result<RgbImage> {
    let (w, h) = (img.width(), img.height());
    let from_fn =
        |f: &dyn Fn(u32, u32) -> [u8; 3]| RgbImage::from_fn(w, h, |x, y| image::Rgb(f(x, y)));
    let hi = |v: u16| (v >> 8) as u8;
    Ok(match img {
        DynamicImage::ImageRgb8(i) => i.clone(),
        DynamicImage::ImageLuma8(i) => from_fn(&|x, y| [i.get_pixel(x, y).0[0]; 3]),
        DynamicImage::ImageRgba8(i) => from_fn(&|x, y| {
            let [r, g, b, a] = i.get_pixel(x, y).0;
            over_white(r, g, b, a)
        }),
        DynamicImage::ImageLumaA8(i) => from_fn(&|x, y| {
            let [l, a] = i.get_pixel(x, y).0;
            over_white(l, l, l, a)
        }),
        DynamicImage::ImageRgb16(i) => from_fn(&|x, y| i.get_pixel(x, y).0.map(hi)),
        DynamicImage::ImageRgba16(i) => from_fn(&|x, y| {
            let [r, g, b, a] = i.get_pixel(x, y).0.map(hi);
            over_white(r, g, b, a)
        }),
        DynamicImage::ImageLumaA16(i) => from_fn(&|x, y| {
            let [l, a] = i.get_pixel(x, y).0.map(hi);
            over_white(l, l, l, a)
        }),
        DynamicImage::ImageLuma16(i) => {
            if i.pixels().any(|p| p.0[0] > 255) {
                log::warn!(
                    "{}: 16-bit grayscale values above 255 are clipped to 255, as PIL's I;16 -> RGB conversion \
                     (and so transformers) does",
                    path.display()
                );
            }
            from_fn(&|x, y| [i.get_pixel(x, y).0[0].min(255) as u8; 3])
        }
        other => {
            return Err(image_error(
                path,
                format!(
                    "pixel format {:?} is not supported (8/16-bit gray or RGB(A) only)",
                    other.color()
                ),
            ));
        }
    })
}

/// Reads an image file as 8-bit RGB, the input of `CLIPImageProcessor`: decode, EXIF
/// orientation, PIL-style conversion ([`decode_image`] then [`to_rgb8_like_pil`]).
pub fn load_image(path: &Path) -> Result<RgbImage> {
    to_rgb8_like_pil(&decode_image(path)?, path)
}

#[cfg(test)]
mod tests {
    use super::over_white;

    #[test]
    fn compositing_on_white_keeps_the_extremes() {
        assert_eq!(over_white(10, 20, 30, 255), [10, 20, 30]);
        assert_eq!(over_white(10, 20, 30, 0), [255, 255, 255]);
        // Half transparent black on white: 255 * (255 - 128) / 255 = 127.
        assert_eq!(over_white(0, 0, 0, 128), [127, 127, 127]);
    }
}
