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
use std::path::Path;

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

/// Step 8's rule: a person stays with at least `min_images` images (the paper keeps
/// people with more than five: `min_images` 6).
pub fn enough_images(count: usize, min_images: usize) -> bool {
    count >= min_images
}

/// Step 6's verdict on one image of a person.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Verdict {
    /// Kept.
    Keep,
    /// Identical to the kept image at this position.
    Exact(usize),
    /// Near copy of the kept image at this position, with their cosine.
    Near(usize, f32),
}

/// Step 6's rule on one person's `n` images, in order: an image identical to a kept one
/// (`same(i, j)`) is an exact copy of the first such; otherwise, with an embedding, one
/// whose cosine (f32 dot product of L2-normalised embeddings) with a kept image's is
/// `>= dedup` is a near copy of the first such; otherwise it is kept.
pub fn dedup_rule(
    n: usize,
    same: &mut dyn FnMut(usize, usize) -> bool,
    embeddings: &[Option<Vec<f32>>],
    dedup: f64,
) -> Vec<Verdict> {
    let mut kept: Vec<usize> = Vec::new();
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        if let Some(&j) = kept.iter().find(|&&j| same(i, j)) {
            out.push(Verdict::Exact(j));
            continue;
        }
        let near = embeddings[i].as_ref().and_then(|v| {
            kept.iter().find_map(|&j| {
                let w = embeddings[j].as_ref()?;
                let cos: f32 = v.iter().zip(w).map(|(a, b)| a * b).sum();
                (cos as f64 >= dedup).then_some((j, cos))
            })
        });
        match near {
            Some((j, cos)) => out.push(Verdict::Near(j, cos)),
            None => {
                kept.push(i);
                out.push(Verdict::Keep);
            }
        }
    }
    out
}

/// Step 6: within each person (`group_of[i]` is entry `i`'s), in manifest order,
/// [`dedup_rule`] with byte-identical files as identical and, with `tower`, L2-normalised
/// CLIP image embeddings; images that cannot be read or embedded are dropped first, with
/// the reason.
///
/// # Errors
/// None at present (every failure is a dropped image); the `Result` leaves room for I/O
/// that must stop the step.
pub fn deduplicate<B: Backend>(
    entries: &[ManifestEntry],
    group_of: &[usize],
    dedup: f64,
    tower: Option<&ClipVisionTower<B>>,
) -> Result<Dedup> {
    let people = group_of.iter().max().map_or(0, |g| g + 1);
    let mut by_person: Vec<Vec<usize>> = vec![Vec::new(); people];
    for (i, &g) in group_of.iter().enumerate().take(entries.len()) {
        by_person[g].push(i);
    }
    let mut out = Dedup::default();
    for indices in by_person {
        // Readable images: (entry, content key), and their embeddings.
        let mut items: Vec<(usize, (usize, u64))> = Vec::new();
        let mut embeddings: Vec<Option<Vec<f32>>> = Vec::new();
        for i in indices {
            let path = &entries[i].path;
            let unreadable = |out: &mut Dedup, err: String| {
                out.unreadable += 1;
                out.dropped.push((i, format!("unreadable: {err}")));
            };
            let bytes = match std::fs::read(path) {
                Ok(b) => b,
                Err(err) => {
                    unreadable(&mut out, err.to_string());
                    continue;
                }
            };
            let embedding = match tower.map(|t| embed(t, path)).transpose() {
                Ok(v) => v,
                Err(err) => {
                    unreadable(&mut out, err.to_string());
                    continue;
                }
            };
            items.push((i, (bytes.len(), fnv1a64(&bytes))));
            embeddings.push(embedding);
        }
        let mut same = |a: usize, b: usize| {
            let (ea, eb) = (&entries[items[a].0], &entries[items[b].0]);
            items[a].1 == items[b].1
                && matches!((std::fs::read(&ea.path), std::fs::read(&eb.path)), (Ok(x), Ok(y)) if x == y)
        };
        let verdicts = dedup_rule(items.len(), &mut same, &embeddings, dedup);
        for (k, v) in verdicts.into_iter().enumerate() {
            let i = items[k].0;
            match v {
                Verdict::Keep => out.kept.push(i),
                Verdict::Exact(j) => {
                    out.exact += 1;
                    out.dropped
                        .push((i, format!("exact copy of {}", entries[items[j].0].image)));
                }
                Verdict::Near(j, cos) => {
                    out.near += 1;
                    out.dropped.push((
                        i,
                        format!(
                            "near copy of {} (cosine {cos:.4})",
                            entries[items[j].0].image
                        ),
                    ));
                }
            }
        }
    }
    out.kept.sort_unstable();
    out.dropped.sort_by_key(|d| d.0);
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
        if !enough_images(k.len(), config.min_images) {
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
