//! Reading JSON files (configurations, dataset indexes, training state), naming the file
//! on failure.
use std::path::Path;

use serde_json::Value;

use crate::ModelError;

/// Reads a JSON file into a `Value`, naming the file on failure.
///
/// # Errors
/// A file that cannot be read ([`ModelError::Io`] / [`ModelError::MissingFile`]) or is not
/// JSON ([`ModelError::Config`]).
pub fn read_json(path: &Path) -> crate::Result<Value> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ModelError::open(path, "a JSON configuration", e))?;
    serde_json::from_str(&text).map_err(|e| ModelError::config(path, format!("invalid JSON: {e}")))
}
