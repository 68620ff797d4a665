//! Captioned images as LAION-style crawls deliver them: a JSON Lines / CSV file of
//! `image` and `caption` (paths relative to the file), or a folder of webdataset shards
//! as img2dataset writes them (`NNNNN.tar` holding `key.jpg` / `.png` / `.webp`, `key.txt`
//! with the caption, `key.json`; members of one key stored together), with the
//! `NNNNN.parquet` beside each tar supplying the caption of a key without `.txt`.
use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use crate::{ModelError, Result};

/// Where a record's image is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageSource {
    /// A file on disk.
    File(PathBuf),
    /// Bytes of a tar member, with the member's extension.
    Member {
        /// `jpg`, `png`, ...
        ext: String,
        /// The encoded image.
        bytes: Vec<u8>,
    },
}

/// One captioned image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaptionRecord {
    /// Where it was read: `file:line` or `shard.tar:key`.
    pub source: String,
    /// A name unique in the input (the path as written, or `shard_key`).
    pub key: String,
    /// The image.
    pub image: ImageSource,
    /// Its caption.
    pub caption: String,
}

/// Something in the input that is not a usable record, and why.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Skipped {
    /// Where.
    pub source: String,
    /// Why.
    pub reason: String,
}

const IMAGE_EXTS: [&str; 5] = ["jpg", "jpeg", "png", "webp", "bmp"];
/// Largest tar member read into memory (an image or a caption).
const MAX_MEMBER: u64 = 64 << 20;

/// Reads every record of `input` (a `.jsonl` / `.csv` file or a folder of `.tar` shards,
/// in name order), calling `each` on each; returns what was skipped.
///
/// # Errors
/// An unreadable input; a file without `image` and `caption` columns; a folder without
/// `.tar` files; a broken tar archive (named). A member without its image or its caption
/// is skipped and listed, not an error.
pub fn read_records(
    input: &Path,
    each: &mut dyn FnMut(CaptionRecord) -> Result<()>,
) -> Result<Vec<Skipped>> {
    if input.is_dir() {
        let mut shards: Vec<PathBuf> = std::fs::read_dir(input)
            .map_err(|e| ModelError::io(input, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "tar"))
            .collect();
        shards.sort();
        if shards.is_empty() {
            return Err(ModelError::config(input, "no .tar shards in the folder"));
        }
        let mut skipped = Vec::new();
        for shard in &shards {
            let table = shard.with_extension("parquet");
            let captions = if table.is_file() {
                Some(super::parquet::read_captions(&table)?)
            } else {
                None
            };
            read_tar(shard, captions.as_ref(), each, &mut skipped)?;
        }
        return Ok(skipped);
    }
    read_table(input, each)?;
    Ok(Vec::new())
}

fn read_table(path: &Path, each: &mut dyn FnMut(CaptionRecord) -> Result<()>) -> Result<()> {
    let text = std::fs::read_to_string(path).map_err(|e| ModelError::io(path, e))?;
    let dir = path.parent().unwrap_or(Path::new("")).to_path_buf();
    let bad = |line: usize, m: String| ModelError::Manifest {
        path: path.to_path_buf(),
        line,
        message: m,
    };
    let mut record = |line: usize, image: String, caption: String| -> Result<()> {
        if image.trim().is_empty() {
            return Err(bad(line, "empty image path".into()));
        }
        let p = Path::new(&image);
        let file = if p.is_absolute() {
            p.to_path_buf()
        } else {
            dir.join(p)
        };
        each(CaptionRecord {
            source: format!("{}:{line}", path.display()),
            key: image,
            image: ImageSource::File(file),
            caption,
        })
    };
    match path.extension().and_then(|e| e.to_str()) {
        Some("jsonl") => {
            for (i, l) in text.lines().enumerate() {
                if l.trim().is_empty() {
                    continue;
                }
                let v: serde_json::Value = serde_json::from_str(l)
                    .map_err(|e| bad(i + 1, format!("not a JSON object: {e}")))?;
                let field = |k: &str| {
                    v.get(k)
                        .and_then(|x| x.as_str())
                        .map(str::to_string)
                        .ok_or_else(|| bad(i + 1, format!("no string `{k}`")))
                };
                record(i + 1, field("image")?, field("caption")?)?;
            }
        }
        Some("csv") => {
            let mut reader = csv::ReaderBuilder::new()
                .has_headers(true)
                .from_reader(text.as_bytes());
            let header = reader
                .headers()
                .map_err(|e| bad(1, format!("bad CSV: {e}")))?
                .clone();
            let col = |want: &str| {
                header
                    .iter()
                    .position(|h| h.trim().eq_ignore_ascii_case(want))
                    .ok_or_else(|| bad(1, format!("the CSV header has no `{want}` column")))
            };
            let (ci, cc) = (col("image")?, col("caption")?);
            for r in reader.records() {
                let r = r.map_err(|e| {
                    bad(
                        e.position().map_or(0, |p| p.line() as usize),
                        format!("bad CSV: {e}"),
                    )
                })?;
                let line = r.position().map_or(0, |p| p.line() as usize);
                record(
                    line,
                    r.get(ci).unwrap_or_default().to_string(),
                    r.get(cc).unwrap_or_default().to_string(),
                )?;
            }
        }
        _ => {
            return Err(ModelError::config(
                path,
                "the input must be a .jsonl or .csv file of image and caption, or a folder of webdataset .tar shards",
            ));
        }
    }
    Ok(())
}

/// The members of one key collected so far.
#[derive(Default)]
struct Pending {
    key: String,
    image: Option<(String, Vec<u8>)>,
    caption: Option<String>,
}

fn read_tar(
    shard: &Path,
    captions: Option<&BTreeMap<String, String>>,
    each: &mut dyn FnMut(CaptionRecord) -> Result<()>,
    skipped: &mut Vec<Skipped>,
) -> Result<()> {
    let file = std::fs::File::open(shard).map_err(|e| ModelError::io(shard, e))?;
    let mut archive = tar::Archive::new(file);
    let stem = shard
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let shard_name = shard
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let broken =
        |e: std::io::Error| ModelError::weights(shard, format!("not a readable tar archive: {e}"));
    let mut pending: Option<Pending> = None;
    let mut flush = |p: Pending, each: &mut dyn FnMut(CaptionRecord) -> Result<()>| -> Result<()> {
        let source = format!("{shard_name}:{}", p.key);
        let caption = p
            .caption
            .or_else(|| captions.and_then(|c| c.get(&p.key).cloned()));
        match (p.image, caption) {
            (Some((ext, bytes)), Some(caption)) => each(CaptionRecord {
                source,
                key: format!("{stem}_{}", p.key),
                image: ImageSource::Member { ext, bytes },
                caption,
            }),
            (None, _) => {
                skipped.push(Skipped {
                    source,
                    reason: "no image member".into(),
                });
                Ok(())
            }
            (_, None) => {
                skipped.push(Skipped {
                    source,
                    reason: if captions.is_some() {
                        "no caption (no .txt member, no parquet row)".into()
                    } else {
                        "no caption member (.txt)".into()
                    },
                });
                Ok(())
            }
        }
    };
    for entry in archive.entries().map_err(broken)? {
        let mut entry = entry.map_err(broken)?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let name = entry.path().map_err(broken)?.to_string_lossy().into_owned();
        let base = name.rsplit('/').next().unwrap_or(&name).to_string();
        let Some((key, ext)) = base.split_once('.') else {
            continue;
        };
        let ext = ext.to_ascii_lowercase();
        if pending.as_ref().is_some_and(|p| p.key != key)
            && let Some(done) = pending.take()
        {
            flush(done, each)?;
        }
        let p = pending.get_or_insert_with(|| Pending {
            key: key.to_string(),
            ..Pending::default()
        });
        let size = entry.header().size().map_err(broken)?;
        if size > MAX_MEMBER {
            return Err(ModelError::weights(
                shard,
                format!("member {name} has {size} bytes, over the {MAX_MEMBER}-byte limit"),
            ));
        }
        let wanted = ext == "txt" || IMAGE_EXTS.contains(&ext.as_str());
        if !wanted {
            continue; // key.json and others
        }
        let mut bytes = Vec::with_capacity(size as usize);
        entry.read_to_end(&mut bytes).map_err(broken)?;
        if ext == "txt" {
            p.caption = Some(String::from_utf8_lossy(&bytes).trim().to_string());
        } else {
            p.image = Some((ext, bytes));
        }
    }
    if let Some(done) = pending.take() {
        flush(done, each)?;
    }
    Ok(())
}
