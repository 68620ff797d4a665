//! Steps 6 and 8 of LaionCele's construction on a manifest: each person's real images
//! deduplicated (exact copies by content, near copies by CLIP image embedding cosine), then
//! people with too few images left dropped.
//!
//! Within a person, images are taken in manifest order and each is compared with the ones
//! kept before it: a byte-identical file is an exact duplicate; with a tower, an image
//! whose L2-normalised CLIP image embedding has cosine `>= dedup` with a kept one is a near
//! duplicate. Unreadable images are dropped and listed. Writes `OUT/manifest.jsonl` (the
//! kept entries, image paths absolute) and `OUT/filter.json` (counts and every drop with
//! its reason), manifest last.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::tensor::backend::Backend;
use serde::Serialize;
use serde_json::json;

use crate::clip::tower::ClipVisionTower;
use crate::train::manifest::{ManifestEntry, fnv1a64, group_names, read_manifest};
use crate::{ModelError, Result};

/// Settings of [`filter_manifest`].
#[derive(Debug, Clone, PartialEq)]
pub struct FilterConfig {
    /// Near-duplicate cosine (used with a tower).
    pub dedup: f64,
    /// People need at least this many images left (the paper keeps more than 5).
    pub min_images: usize,
}

impl Default for FilterConfig {
    fn default() -> Self {
        Self {
            dedup: 0.95,
            min_images: 6,
        }
    }
}

/// One image dropped, and why.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Dropped {
    /// The image as the manifest wrote it.
    pub image: String,
    /// Its person.
    pub name: String,
    /// Why.
    pub reason: String,
}

/// What [`filter_manifest`] did.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FilterReport {
    /// Entries and people read.
    pub entries_in: usize,
    /// People read.
    pub people_in: usize,
    /// Exact copies dropped (step 6).
    pub exact_duplicates: usize,
    /// Near copies dropped (step 6).
    pub near_duplicates: usize,
    /// Unreadable images dropped.
    pub unreadable: usize,
    /// People dropped for having fewer than `min_images` left (step 8), with their count.
    pub too_few: BTreeMap<String, usize>,
    /// Entries written.
    pub entries_out: usize,
    /// Images kept per person written.
    pub per_name: BTreeMap<String, usize>,
    /// Every image dropped.
    pub dropped: Vec<Dropped>,
}

/// L2-normalised embedding of one image, or why there is none.
fn embed<B: Backend>(tower: &ClipVisionTower<B>, path: &Path) -> Result<Vec<f32>> {
    let e: Vec<f32> = tower
        .embed_image_file(path)?
        .image_embeds
        .into_data()
        .convert::<f32>()
        .into_vec::<f32>()
        .expect("converted to f32 above");
    let norm = e.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
    Ok(e.into_iter().map(|v| v / norm).collect())
}

/// Step 6 on manifest entries: what [`deduplicate`] kept and dropped.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Dedup {
    /// Entries kept, in manifest order.
    pub kept: Vec<usize>,
    /// Exact copies dropped.
    pub exact: usize,
    /// Near copies dropped.
    pub near: usize,
    /// Unreadable images dropped.
    pub unreadable: usize,
    /// Every entry dropped, with the reason, in manifest order.
    pub dropped: Vec<(usize, String)>,
}

/// Step 6: within each person (`group_of[i]` is entry `i`'s), in manifest order, drops
/// byte-identical copies of a kept image and, with `tower`, images whose L2-normalised
/// CLIP image embedding has cosine `>= dedup` with a kept one; unreadable images are
/// dropped too.
///
/// # Errors
/// A tower failure other than an unreadable image.
pub fn deduplicate<B: Backend>(
    entries: &[ManifestEntry],
    group_of: &[usize],
    dedup: f64,
    tower: Option<&ClipVisionTower<B>>,
) -> Result<Dedup> {
    // Per person: kept (entry index, bytes hash, file, embedding).
    type Kept = (usize, (usize, u64), PathBuf, Option<Vec<f32>>);
    let people = group_of.iter().max().map_or(0, |g| g + 1);
    let mut kept: Vec<Vec<Kept>> = vec![Vec::new(); people];
    let mut out = Dedup::default();
    for (i, e) in entries.iter().enumerate() {
        let person = group_of[i];
        let bytes = match std::fs::read(&e.path) {
            Ok(b) => b,
            Err(err) => {
                out.unreadable += 1;
                out.dropped.push((i, format!("unreadable: {err}")));
                continue;
            }
        };
        let key = (bytes.len(), fnv1a64(&bytes));
        let exact = kept[person]
            .iter()
            .find(|k| k.1 == key && std::fs::read(&k.2).is_ok_and(|other| other == bytes));
        if let Some(k) = exact {
            out.exact += 1;
            out.dropped
                .push((i, format!("exact copy of {}", entries[k.0].image)));
            continue;
        }
        let embedding = match tower {
            None => None,
            Some(t) => match embed(t, &e.path) {
                Ok(v) => Some(v),
                Err(err) => {
                    out.unreadable += 1;
                    out.dropped.push((i, format!("unreadable: {err}")));
                    continue;
                }
            },
        };
        if let Some(v) = &embedding {
            let near = kept[person].iter().find_map(|k| {
                let w = k.3.as_ref()?;
                let cos: f32 = v.iter().zip(w).map(|(a, b)| a * b).sum();
                (cos as f64 >= dedup).then_some((k.0, cos))
            });
            if let Some((j, cos)) = near {
                out.near += 1;
                out.dropped.push((
                    i,
                    format!("near copy of {} (cosine {cos:.4})", entries[j].image),
                ));
                continue;
            }
        }
        kept[person].push((i, key, e.path.clone(), embedding));
    }
    out.kept = kept.into_iter().flatten().map(|k| k.0).collect();
    out.kept.sort_unstable();
    Ok(out)
}

/// Runs steps 6 and 8 on `manifest` (see the module docs); without `tower` only exact
/// copies are removed.
///
/// # Errors
/// A bad manifest; `out` already holding a manifest; `dedup` outside `(0, 1]`; I/O.
pub fn filter_manifest<B: Backend>(
    manifest: &Path,
    out: &Path,
    config: &FilterConfig,
    tower: Option<&ClipVisionTower<B>>,
) -> Result<FilterReport> {
    if !(config.dedup > 0.0 && config.dedup <= 1.0) {
        return Err(ModelError::InvalidInput(format!(
            "--dedup must be a cosine in (0, 1], got {}",
            config.dedup
        )));
    }
    let m = read_manifest(manifest)?;
    if out.join("manifest.jsonl").exists() {
        return Err(ModelError::InvalidInput(format!(
            "{} already holds a manifest.jsonl: choose another folder",
            out.display()
        )));
    }
    let groups = group_names(
        &m.entries
            .iter()
            .map(|e| e.name.as_str())
            .collect::<Vec<_>>(),
    );
    let mut report = FilterReport {
        entries_in: m.entries.len(),
        people_in: groups.names.len(),
        exact_duplicates: 0,
        near_duplicates: 0,
        unreadable: 0,
        too_few: BTreeMap::new(),
        entries_out: 0,
        per_name: BTreeMap::new(),
        dropped: Vec::new(),
    };
    let d = deduplicate(&m.entries, &groups.group_of, config.dedup, tower)?;
    report.exact_duplicates = d.exact;
    report.near_duplicates = d.near;
    report.unreadable = d.unreadable;
    for (i, reason) in d.dropped {
        report.dropped.push(Dropped {
            image: m.entries[i].image.clone(),
            name: groups.names[groups.group_of[i]].clone(),
            reason,
        });
    }
    let mut kept: Vec<Vec<usize>> = vec![Vec::new(); groups.names.len()];
    for i in d.kept {
        kept[groups.group_of[i]].push(i);
    }
    let mut lines = Vec::new();
    for (person, k) in kept.iter().enumerate() {
        let name = &groups.names[person];
        if k.len() < config.min_images {
            report.too_few.insert(name.clone(), k.len());
            continue;
        }
        report.per_name.insert(name.clone(), k.len());
        for i in k {
            let e = &m.entries[*i];
            let abs = std::path::absolute(&e.path).map_err(|err| ModelError::io(&e.path, err))?;
            lines.push((
                *i,
                json!({"image": abs, "name": name, "caption": e.caption}),
            ));
        }
    }
    lines.sort_by_key(|(i, _)| *i);
    report.entries_out = lines.len();
    std::fs::create_dir_all(out).map_err(|e| ModelError::io(out, e))?;
    let summary = json!({
        "steps": "deduplicate (6) and quantity control (8)",
        "manifest": manifest.to_string_lossy(),
        "dedup": tower.map(|_| config.dedup),
        "min_images": config.min_images,
        "report": report,
    });
    magicnaming_core::write_atomic(
        &out.join("filter.json"),
        serde_json::to_string_pretty(&summary)
            .expect("serialises")
            .as_bytes(),
    )?;
    let text: String = lines.iter().map(|(_, l)| format!("{l}\n")).collect();
    magicnaming_core::write_atomic(&out.join("manifest.jsonl"), text.as_bytes())?;
    Ok(report)
}
