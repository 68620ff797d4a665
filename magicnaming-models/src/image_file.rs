//! Reading image files within limits: the file size, the declared pixel count and the
//! decoded size are checked from the file's header, before anything the size of the image
//! is allocated, so an upload that declares 40000 x 40000 pixels is refused in
//! milliseconds instead of decoded into gigabytes.
//!
//! The limits are process-wide ([`set_image_limits`]); the defaults cover any real photo
//! (PIL's decompression-bomb bound of 178,956,970 pixels, 2x its warning level).
use std::io::Cursor;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader};

use crate::bounded_read::{BoundedReadError, read_bounded};
use crate::{ModelError, Result};

/// What an image file may declare and take.
///
/// ```
/// use magicnaming_models::image_file::{ImageLimits, image_limits, set_image_limits};
/// let defaults = image_limits();
/// set_image_limits(ImageLimits { max_pixels: 400_000_000, ..defaults });
/// assert_eq!(image_limits().max_pixels, 400_000_000);
/// set_image_limits(defaults);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageLimits {
    /// Most pixels (width x height) an image may declare.
    pub max_pixels: u64,
    /// Most bytes the decoded image may take (e.g. 16-bit RGBA: 8 per pixel).
    pub max_decoded_bytes: u64,
    /// Largest file read.
    pub max_file_bytes: u64,
}

impl ImageLimits {
    /// PIL's `2 * Image.MAX_IMAGE_PIXELS`; 8 bytes a pixel of those; 512 MiB files.
    pub const DEFAULT: Self = Self {
        max_pixels: 178_956_970,
        max_decoded_bytes: 8 * 178_956_970,
        max_file_bytes: 512 << 20,
    };
}

impl Default for ImageLimits {
    fn default() -> Self {
        Self::DEFAULT
    }
}

static MAX_PIXELS: AtomicU64 = AtomicU64::new(ImageLimits::DEFAULT.max_pixels);
static MAX_DECODED: AtomicU64 = AtomicU64::new(ImageLimits::DEFAULT.max_decoded_bytes);
static MAX_FILE: AtomicU64 = AtomicU64::new(ImageLimits::DEFAULT.max_file_bytes);

/// The limits in force.
pub fn image_limits() -> ImageLimits {
    ImageLimits {
        max_pixels: MAX_PIXELS.load(Ordering::Relaxed),
        max_decoded_bytes: MAX_DECODED.load(Ordering::Relaxed),
        max_file_bytes: MAX_FILE.load(Ordering::Relaxed),
    }
}

/// Sets the limits of every later image read, in this process.
pub fn set_image_limits(limits: ImageLimits) {
    MAX_PIXELS.store(limits.max_pixels, Ordering::Relaxed);
    MAX_DECODED.store(limits.max_decoded_bytes, Ordering::Relaxed);
    MAX_FILE.store(limits.max_file_bytes, Ordering::Relaxed);
}

fn image_error(path: &Path, message: impl Into<String>) -> ModelError {
    ModelError::Image {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

/// Reads at most `limit` bytes of `path` (more is an error, found without reading on).
fn read_limited(path: &Path, limit: u64) -> Result<Vec<u8>> {
    read_bounded(path, limit).map_err(|e| match e {
        BoundedReadError::Io(e) => image_error(path, format!("cannot open: {e}")),
        BoundedReadError::TooBig(n) => image_error(
            path,
            format!("{n} bytes is over the {limit}-byte limit of image files (set_image_limits)"),
        ),
    })
}

/// Decodes `path` (PNG, JPEG, WebP, BMP, TIFF, GIF, by content) and applies its EXIF
/// orientation, within [`image_limits`].
///
/// # Errors
/// [`ModelError::Image`] naming the path for a missing, unreadable, truncated or
/// unsupported file, and for one over a limit (with the limit).
pub fn decode_image_file(path: &Path) -> Result<DynamicImage> {
    decode_image_bytes(&read_limited(path, image_limits().max_file_bytes)?, path)
}

/// [`decode_image_file`] of a file's bytes; `path` names it in errors.
///
/// # Errors
/// As [`decode_image_file`].
pub fn decode_image_bytes(bytes: &[u8], path: &Path) -> Result<DynamicImage> {
    let limits = image_limits();
    let reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| image_error(path, format!("cannot read: {e}")))?;
    match reader.format() {
        None => {
            return Err(image_error(
                path,
                "not an image in a supported format (PNG, JPEG, WebP, BMP, TIFF, GIF)",
            ));
        }
        Some(ImageFormat::Jpeg) if !jpeg_is_complete(bytes) => {
            return Err(image_error(
                path,
                "truncated JPEG: no end-of-image marker after the last scan",
            ));
        }
        Some(_) => {}
    }
    let mut decoder = reader
        .into_decoder()
        .map_err(|e| image_error(path, format!("cannot decode: {e}")))?;
    let (w, h) = decoder.dimensions();
    let pixels = w as u64 * h as u64;
    if pixels > limits.max_pixels {
        return Err(image_error(
            path,
            format!(
                "{w}x{h} = {pixels} pixels is over the limit of {} (set_image_limits; \
                 --max-image-pixels on the command line)",
                limits.max_pixels
            ),
        ));
    }
    if decoder.total_bytes() > limits.max_decoded_bytes {
        return Err(image_error(
            path,
            format!(
                "{w}x{h} {:?} decodes to {} bytes, over the limit of {}",
                decoder.color_type(),
                decoder.total_bytes(),
                limits.max_decoded_bytes
            ),
        ));
    }
    let mut format_limits = image::Limits::default();
    format_limits.max_alloc = Some(limits.max_decoded_bytes);
    decoder
        .set_limits(format_limits)
        .map_err(|e| image_error(path, format!("cannot decode: {e}")))?;
    let orientation = decoder
        .orientation()
        .map_err(|e| image_error(path, format!("cannot read the EXIF orientation: {e}")))?;
    let mut img = DynamicImage::from_decoder(decoder)
        .map_err(|e| image_error(path, format!("cannot decode: {e}")))?;
    img.apply_orientation(orientation);
    Ok(img)
}

/// Whether a JPEG stream has an end-of-image marker (`FF D9`) after its last
/// start-of-scan (`FF DA`). zune-jpeg fills the missing rows of a truncated file with gray
/// and reports success; PIL raises "image file is truncated". Inside entropy-coded data
/// every `FF` byte is stuffed (`FF 00`), so neither marker can appear there by accident.
fn jpeg_is_complete(bytes: &[u8]) -> bool {
    let last = |marker: u8| bytes.windows(2).rposition(|w| w == [0xFF, marker]);
    match (last(0xDA), last(0xD9)) {
        (Some(sos), Some(eoi)) => eoi > sos,
        _ => false,
    }
}
