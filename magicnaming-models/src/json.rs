//! Reading JSON files (configurations, dataset indexes, training state), naming the file
//! on failure.
use std::path::Path;

use serde_json::Value;

use crate::ModelError;
use crate::bounded_read::{BoundedReadError, read_bounded};

/// Largest integer a model configuration may hold (channels, widths, layer and head
/// counts, vocabulary and image sizes): the largest real value, a vocabulary of ~50k or
/// a sample count of 1000, is far below it, and a network sized by it would not fit any
/// machine anyway. A config over it is refused before any tensor is made.
pub const MAX_CONFIG_INT: u64 = 1 << 20;

/// Longest array a model configuration may hold.
pub const MAX_CONFIG_ARRAY: usize = 1 << 16;

/// Checks every integer and array of a parsed configuration against [`MAX_CONFIG_INT`]
/// and [`MAX_CONFIG_ARRAY`].
///
/// # Errors
/// [`ModelError::Config`] naming the file and the key path (`block_out_channels[0]`).
pub fn check_config_sizes(value: &Value, path: &Path) -> crate::Result<()> {
    fn walk(v: &Value, at: &mut String, path: &Path) -> crate::Result<()> {
        let bad = |at: &str, what: String| {
            ModelError::config(
                path,
                format!("`{at}` = {what}: over the limit of model configurations"),
            )
        };
        match v {
            Value::Number(n) => {
                let big = match (n.as_u64(), n.as_i64()) {
                    (Some(u), _) => u > MAX_CONFIG_INT,
                    (None, Some(i)) => i.unsigned_abs() > MAX_CONFIG_INT,
                    // Floats (learning rates, betas, scaling factors) are not sizes.
                    (None, None) => false,
                };
                if big {
                    return Err(bad(at, format!("{n} (at most {MAX_CONFIG_INT})")));
                }
            }
            Value::Array(a) => {
                if a.len() > MAX_CONFIG_ARRAY {
                    return Err(bad(
                        at,
                        format!("an array of {} items (at most {MAX_CONFIG_ARRAY})", a.len()),
                    ));
                }
                let len = at.len();
                for (i, x) in a.iter().enumerate() {
                    at.push_str(&format!("[{i}]"));
                    walk(x, at, path)?;
                    at.truncate(len);
                }
            }
            Value::Object(o) => {
                let len = at.len();
                for (k, x) in o {
                    if !at.is_empty() {
                        at.push('.');
                    }
                    at.push_str(k);
                    walk(x, at, path)?;
                    at.truncate(len);
                }
            }
            _ => {}
        }
        Ok(())
    }
    walk(value, &mut String::new(), path)
}

/// Largest configuration or tokenizer file read (the largest tokenizer.json of a public
/// model is ~30 MB; SDXL's CLIP ones are 3.6 MB).
pub const MAX_TEXT_FILE: u64 = 64 << 20;

/// Reads a UTF-8 text file of at most [`MAX_TEXT_FILE`] bytes; `what` says what it is.
///
/// # Errors
/// [`ModelError::MissingFile`] / [`ModelError::Io`] when unreadable or not UTF-8,
/// [`ModelError::Config`] when over the limit (checked before reading).
pub fn read_text_file(path: &Path, what: &str) -> crate::Result<String> {
    let bytes = read_bounded(path, MAX_TEXT_FILE).map_err(|e| match e {
        BoundedReadError::Io(e) => ModelError::open(path, what, e),
        BoundedReadError::TooBig(n) => ModelError::config(
            path,
            format!("{n} bytes is over the {MAX_TEXT_FILE}-byte limit of {what} files"),
        ),
    })?;
    String::from_utf8(bytes).map_err(|e| ModelError::config(path, format!("not UTF-8 text: {e}")))
}

/// Reads a JSON file into a `Value`, naming the file on failure.
///
/// # Errors
/// A file that cannot be read ([`ModelError::Io`] / [`ModelError::MissingFile`]), is over
/// [`MAX_TEXT_FILE`] or is not JSON ([`ModelError::Config`]).
pub fn read_json(path: &Path) -> crate::Result<Value> {
    let text = read_text_file(path, "a JSON configuration")?;
    serde_json::from_str(&text).map_err(|e| ModelError::config(path, format!("invalid JSON: {e}")))
}
