//! Contact sheets: tiles in a grid on white.
use image::{Rgb, RgbImage};

use crate::{ModelError, Result};

/// The tiles in rows of `columns` (row-major), each in a cell the size of the largest
/// tile (top-left aligned), cells `gap` pixels apart, on white.
///
/// # Errors
/// [`ModelError::InvalidInput`] for no tiles, zero columns, or a sheet over 2^31 pixels.
pub fn contact_sheet(tiles: &[RgbImage], columns: usize, gap: u32) -> Result<RgbImage> {
    if tiles.is_empty() || columns == 0 {
        return Err(ModelError::InvalidInput(format!(
            "a contact sheet needs tiles and columns (got {} tiles, {columns} columns)",
            tiles.len()
        )));
    }
    let cols = columns.min(tiles.len()) as u64;
    let rows = tiles.len().div_ceil(columns) as u64;
    let w = tiles.iter().map(|t| t.width()).max().unwrap_or(0) as u64;
    let h = tiles.iter().map(|t| t.height()).max().unwrap_or(0) as u64;
    let gap = gap as u64;
    let sheet_w = cols * w + (cols - 1) * gap;
    let sheet_h = rows * h + (rows - 1) * gap;
    if sheet_w * sheet_h > 1 << 31 || sheet_w > u32::MAX as u64 || sheet_h > u32::MAX as u64 {
        return Err(ModelError::InvalidInput(format!(
            "a {sheet_w}x{sheet_h} contact sheet is too large"
        )));
    }
    let mut sheet = RgbImage::from_pixel(sheet_w as u32, sheet_h as u32, Rgb([255, 255, 255]));
    for (i, tile) in tiles.iter().enumerate() {
        let (r, c) = ((i / columns) as u64, (i % columns) as u64);
        image::imageops::replace(
            &mut sheet,
            tile,
            (c * (w + gap)) as i64,
            (r * (h + gap)) as i64,
        );
    }
    Ok(sheet)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiles_land_in_their_cells() {
        let tile = |v: u8, w, h| RgbImage::from_pixel(w, h, Rgb([v, v, v]));
        let tiles = [tile(10, 4, 3), tile(20, 4, 3), tile(30, 2, 2)];
        let s = contact_sheet(&tiles, 2, 1).unwrap();
        assert_eq!(s.dimensions(), (9, 7));
        assert_eq!(s.get_pixel(0, 0).0, [10; 3]);
        assert_eq!(s.get_pixel(5, 2).0, [20; 3]);
        assert_eq!(s.get_pixel(4, 0).0, [255; 3]); // the gap
        assert_eq!(s.get_pixel(1, 5).0, [30; 3]);
        assert_eq!(s.get_pixel(3, 5).0, [255; 3]); // outside the smaller tile
        assert!(contact_sheet(&[], 2, 1).is_err());
        assert!(contact_sheet(&tiles, 0, 1).is_err());
        // One row when the columns outnumber the tiles.
        assert_eq!(contact_sheet(&tiles, 5, 0).unwrap().dimensions(), (12, 3));
    }
}
