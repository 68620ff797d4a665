//! Reading whole files up to a size limit, refused before reading when the file says it is
//! larger, and stopped one byte past the limit when it grows while being read.
use std::io::Read;
use std::path::Path;

/// Why a bounded read failed.
#[derive(Debug)]
pub enum BoundedReadError {
    /// The file could not be opened or read.
    Io(std::io::Error),
    /// The file has more bytes than the limit (at least this many).
    TooBig(u64),
}

/// The bytes of `path`, at most `limit` of them.
///
/// # Errors
/// [`BoundedReadError::Io`] or, past the limit, [`BoundedReadError::TooBig`].
pub fn read_bounded(path: &Path, limit: u64) -> Result<Vec<u8>, BoundedReadError> {
    let file = std::fs::File::open(path).map_err(BoundedReadError::Io)?;
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    if len > limit {
        return Err(BoundedReadError::TooBig(len));
    }
    let mut bytes = Vec::with_capacity(len as usize);
    file.take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(BoundedReadError::Io)?;
    if bytes.len() as u64 > limit {
        return Err(BoundedReadError::TooBig(bytes.len() as u64));
    }
    Ok(bytes)
}
