//! Dataset manifests: which photo shows whom, one entry per photo.
//!
//! - **JSON Lines** (`.jsonl`): one object per line, `{"image": "<path>", "name": "<Person
//!   Name>"}`, optionally `"caption": "<text>"` (other keys are ignored, blank lines
//!   skipped).
//! - **CSV** (`.csv`, RFC 4180): a header naming the columns `image` and `name` (in any
//!   order; an optional `caption` column; other columns are ignored), then one record per photo; fields holding commas,
//!   quotes or line breaks are quoted, quotes doubled (`"Dwayne ""The Rock"" Johnson"`).
//!
//! Image paths are relative to the manifest's folder, or absolute. Each unusable entry is a
//! [`ModelError::Manifest`] naming the file and the 1-based line.
//!
//! Names are cleaned by [`clean_name`] (Unicode NFC, whitespace trimmed and collapsed);
//! [`group_names`] merges the case variants of one person ("barack obama", "Barack  Obama")
//! into one identity spelled as most entries spell it (ties: the first seen).
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use unicode_normalization::UnicodeNormalization;

use crate::{ModelError, Result};

/// One photo of the manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestEntry {
    /// 1-based line where the entry starts.
    pub line: usize,
    /// The image path as written in the manifest.
    pub image: String,
    /// The image path resolved against the manifest's folder.
    pub path: PathBuf,
    /// The name as written.
    pub name: String,
    /// The image's caption (`caption`, optional), used by LoRA training.
    pub caption: Option<String>,
}

/// A manifest read from disk.
#[derive(Debug, Clone)]
pub struct Manifest {
    /// The file.
    pub path: PathBuf,
    /// The entries, in file order.
    pub entries: Vec<ManifestEntry>,
    /// FNV-1a 64 of the file's bytes, in hex: tells a changed manifest when a build
    /// resumes (not a cryptographic hash).
    pub hash: String,
}

/// FNV-1a, 64 bits.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

fn bad(path: &Path, line: usize, message: impl Into<String>) -> ModelError {
    ModelError::Manifest {
        path: path.to_path_buf(),
        line,
        message: message.into(),
    }
}

/// Reads a `.jsonl` or `.csv` manifest (see the module docs).
///
/// # Errors
/// A missing file, an extension other than `.jsonl` / `.csv` ([`ModelError::Config`]); a
/// file that is not UTF-8, a line that is not an object with string `image` and `name`, a
/// CSV header without those columns, a record with the wrong number of fields, an empty
/// image path or name ([`ModelError::Manifest`] with the line); no entries at all.
pub fn read_manifest(path: &Path) -> Result<Manifest> {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    let csv = match ext.as_deref() {
        Some("jsonl") => false,
        Some("csv") => true,
        _ => {
            return Err(ModelError::config(
                path,
                "unknown manifest format: the file name must end in .jsonl (JSON Lines, \
                 {\"image\": ..., \"name\": ...} per line) or .csv (header `image,name`)",
            ));
        }
    };
    let bytes = std::fs::read(path).map_err(|e| ModelError::io(path, e))?;
    let hash = format!("{:016x}", fnv1a64(&bytes));
    let text = String::from_utf8(bytes).map_err(|e| {
        let at = e.utf8_error().valid_up_to();
        let line = 1 + e.as_bytes()[..at].iter().filter(|&&b| b == b'\n').count();
        bad(path, line, "not UTF-8 text")
    })?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
    let raw = if csv {
        parse_csv(path, text)?
    } else {
        parse_jsonl(path, text)?
    };
    let dir = path.parent().unwrap_or(Path::new(""));
    let mut entries = Vec::with_capacity(raw.len());
    for (line, image, name, caption) in raw {
        if image.trim().is_empty() {
            return Err(bad(path, line, "empty image path"));
        }
        if clean_name(&name).is_empty() {
            return Err(bad(path, line, format!("empty name for image {image:?}")));
        }
        let p = Path::new(&image);
        let resolved = if p.is_absolute() {
            p.to_path_buf()
        } else {
            dir.join(p)
        };
        entries.push(ManifestEntry {
            line,
            path: resolved,
            image,
            name,
            caption,
        });
    }
    if entries.is_empty() {
        return Err(ModelError::config(path, "the manifest lists no images"));
    }
    Ok(Manifest {
        path: path.to_path_buf(),
        entries,
        hash,
    })
}

/// Line, image, name and caption of each entry.
type RawEntry = (usize, String, String, Option<String>);

fn parse_jsonl(path: &Path, text: &str) -> Result<Vec<RawEntry>> {
    let mut out = Vec::new();
    for (i, l) in text.lines().enumerate() {
        let line = i + 1;
        if l.trim().is_empty() {
            continue;
        }
        let v: serde_json::Value = serde_json::from_str(l)
            .map_err(|e| bad(path, line, format!("not a JSON object: {e}")))?;
        let obj = v
            .as_object()
            .ok_or_else(|| bad(path, line, "not a JSON object"))?;
        let field = |key: &str| -> Result<String> {
            match obj.get(key) {
                Some(serde_json::Value::String(s)) => Ok(s.clone()),
                Some(other) => Err(bad(
                    path,
                    line,
                    format!("`{key}` must be a string, got {other}"),
                )),
                None => Err(bad(path, line, format!("no `{key}` field"))),
            }
        };
        let caption = match obj.get("caption") {
            None | Some(serde_json::Value::Null) => None,
            Some(_) => Some(field("caption")?),
        };
        out.push((line, field("image")?, field("name")?, caption));
    }
    Ok(out)
}

fn parse_csv(path: &Path, text: &str) -> Result<Vec<RawEntry>> {
    let csv_err = |e: csv::Error| {
        let line = e.position().map_or(1, |p| p.line() as usize);
        bad(path, line, format!("bad CSV: {e}"))
    };
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(false)
        .from_reader(text.as_bytes());
    let header = reader.headers().map_err(csv_err)?.clone();
    let column = |want: &str| {
        header
            .iter()
            .position(|h| h.trim().eq_ignore_ascii_case(want))
            .ok_or_else(|| {
                bad(
                    path,
                    1,
                    format!(
                        "the CSV header has no `{want}` column (header: {:?}; expected `image,name`)",
                        header.iter().collect::<Vec<_>>()
                    ),
                )
            })
    };
    let (ci, cn) = (column("image")?, column("name")?);
    let cc = column("caption").ok();
    let mut out = Vec::new();
    for record in reader.records() {
        let record = record.map_err(csv_err)?;
        let line = record.position().map_or(0, |p| p.line() as usize);
        out.push((
            line,
            record.get(ci).unwrap_or_default().to_string(),
            record.get(cn).unwrap_or_default().to_string(),
            cc.and_then(|c| record.get(c))
                .filter(|c| !c.trim().is_empty())
                .map(str::to_string),
        ));
    }
    Ok(out)
}

/// A name as stored in a dataset: Unicode NFC, leading and trailing whitespace removed,
/// inner runs of whitespace collapsed to one space.
pub fn clean_name(name: &str) -> String {
    let nfc: String = name.nfc().collect();
    nfc.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// People found in a list of names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameGroups {
    /// One cleaned spelling per person, in order of first appearance.
    pub names: Vec<String>,
    /// For each input name, its person.
    pub group_of: Vec<usize>,
}

/// Groups names by person: cleaned names equal up to case (Unicode lowercase) are one
/// person, spelled as most of its entries spell it (ties: the spelling seen first).
pub fn group_names<S: AsRef<str>>(names: &[S]) -> NameGroups {
    let mut key_group: HashMap<String, usize> = HashMap::new();
    // Per group: (spelling, count), in order of first appearance.
    let mut spellings: Vec<Vec<(String, usize)>> = Vec::new();
    let mut group_of = Vec::with_capacity(names.len());
    for name in names {
        let clean = clean_name(name.as_ref());
        let next = spellings.len();
        let g = *key_group.entry(clean.to_lowercase()).or_insert(next);
        if g == next {
            spellings.push(Vec::new());
        }
        match spellings[g].iter_mut().find(|(s, _)| *s == clean) {
            Some((_, n)) => *n += 1,
            None => spellings[g].push((clean, 1)),
        }
        group_of.push(g);
    }
    let names = spellings
        .into_iter()
        .map(|v| {
            // `max_by_key` keeps the last maximum; scan for the first one instead.
            let best = v.iter().map(|(_, n)| *n).max().unwrap_or(0);
            v.into_iter()
                .find(|(_, n)| *n == best)
                .map(|(s, _)| s)
                .unwrap_or_default()
        })
        .collect();
    NameGroups { names, group_of }
}
