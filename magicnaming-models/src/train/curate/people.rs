//! The people of a curation and their images, as each step leaves them, and the
//! per-person bookkeeping every step shares.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use super::report::{DroppedImage, PersonStep, StepRecord};
use crate::{ModelError, Result};

/// One manifest entry in a curation.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// As manifests write it: relative to the curation folder, or absolute.
    pub image: String,
    /// Caption.
    pub caption: Option<String>,
}

/// Each person's images, people by name, images in input order.
pub type People = BTreeMap<String, Vec<Entry>>;

/// The manifest file step `step` leaves.
pub fn manifest_path(out: &Path, step: u8) -> PathBuf {
    StepRecord::path(out, step).with_extension("jsonl")
}

/// Writes `people` as a manifest (`dataset build` reads it; image paths relative to the
/// curation folder the manifest sits in, or absolute).
///
/// # Errors
/// I/O.
pub fn write_people(path: &Path, people: &People) -> Result<()> {
    let mut text = String::new();
    for (name, entries) in people {
        for e in entries {
            let mut line = json!({"image": e.image, "name": name});
            if let Some(c) = &e.caption {
                line["caption"] = json!(c);
            }
            text += &line.to_string();
            text.push('\n');
        }
    }
    Ok(magicnaming_core::write_atomic(path, text.as_bytes())?)
}

/// Reads a manifest [`write_people`] wrote.
///
/// # Errors
/// A missing or malformed file (named, with the line).
pub fn read_people(path: &Path) -> Result<People> {
    let text = std::fs::read_to_string(path).map_err(|e| ModelError::io(path, e))?;
    let mut people = People::new();
    for (i, line) in text.lines().enumerate() {
        let bad = |m: String| ModelError::Manifest {
            path: path.to_path_buf(),
            line: i + 1,
            message: m,
        };
        let v: Value = serde_json::from_str(line).map_err(|e| bad(e.to_string()))?;
        let field = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
        let (Some(image), Some(name)) = (field("image"), field("name")) else {
            return Err(bad("needs string fields image and name".into()));
        };
        people.entry(name).or_default().push(Entry {
            image,
            caption: field("caption"),
        });
    }
    Ok(people)
}

/// The file of an entry.
pub fn entry_path(out: &Path, e: &Entry) -> PathBuf {
    out.join(&e.image)
}

/// Images of all people.
pub fn count(people: &People) -> usize {
    people.values().map(Vec::len).sum()
}

/// A step that keeps or drops whole people and images.
pub struct Outcome {
    /// What the step did.
    pub record: StepRecord,
    /// Who and what is left.
    pub people: People,
}

/// A person passing a step unchanged.
pub fn pass(n: usize, detail: Value) -> PersonStep {
    PersonStep {
        images_in: n,
        images_out: n,
        kept: true,
        detail,
    }
}

/// Records `name` and all its images as dropped by `r`'s step.
pub fn dropped_person(
    name: &str,
    entries: &[Entry],
    reason: &str,
    detail: Value,
    r: &mut StepRecord,
) {
    r.people.insert(
        name.to_string(),
        PersonStep {
            images_in: entries.len(),
            images_out: 0,
            kept: false,
            detail,
        },
    );
    for e in entries {
        r.dropped.push(DroppedImage {
            name: name.to_string(),
            image: e.image.clone(),
            reason: reason.to_string(),
        });
    }
}
