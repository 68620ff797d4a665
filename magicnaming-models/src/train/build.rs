//! Building a dataset folder ([`super::dataset`]) from a manifest of photos and names
//! ([`super::manifest`]): each person's name is text-coded once by SDXL's text encoders
//! (`docs/METHOD.md`, (a)), each photo embedded by both CLIP image towers (L ++ G), and the people
//! split into training and held-out identities.
//!
//! The build is resumable: embedding shards are written as they fill, and
//! `build-state.json` records the inputs (manifest hash, model and tower paths), the
//! shards completed and the images skipped so far. Run again with the same `out`, a build
//! keeps the shards whose rows match the manifest and continues after them; with other
//! inputs it stops with an error naming what changed. `dataset.json` is written last.
//! With a shard size that is a multiple of the batch size (the defaults), a resumed build
//! writes exactly the files an uninterrupted one does.
//!
//! Each photo is cropped as [`BuildConfig::input_crop`] says (by default its largest face,
//! aligned) before embedding. Unreadable images and, with a face crop, images without a
//! face are skipped (logged, listed in `dataset.json`'s `skipped`); a person left without
//! images is dropped (logged, listed in `source.dropped_identities`).
mod state;

use std::path::{Path, PathBuf};

use burn::tensor::backend::Backend;
use serde_json::json;

use super::dataset::{DatasetIndex, DatasetWriter, Identity, Shard, Split, write_safetensors};
use super::manifest::{NameGroups, group_names, read_manifest};
use super::rng::SplitMix64;
use crate::name_encoder::{ImageEmbedder, InputCrop, SkippedImage, TowerPixels};
use crate::sdxl::{SdxlSource, SdxlTextEncoders};
use crate::{ModelError, Result};
pub use state::{BUILD_STATE_FILE, BUILD_STATE_FORMAT, NAMES_CACHE_FILE};
use state::{
    BuildInputs, BuildState, StateShard, StateSkip, keep_valid_shards, open_state,
    read_names_cache, rewrite_identity, save_state, shard_entries,
};

/// What a dataset is built from.
#[derive(Debug, Clone)]
pub struct BuildSources {
    /// The `.jsonl` / `.csv` manifest.
    pub manifest: PathBuf,
    /// SDXL model: diffusers folder or single-file checkpoint (for its text encoders).
    pub model: PathBuf,
    /// Diffusers-style configuration folder (single files of non-standard sizes).
    pub config: Option<PathBuf>,
    /// CLIP_L image tower (anything [`ClipVisionTower::load`] reads).
    pub tower_l: PathBuf,
    /// CLIP_G image tower.
    pub tower_g: PathBuf,
}

/// Settings of a build.
#[derive(Debug, Clone, PartialEq)]
pub struct BuildConfig {
    /// Share of the people held out for validation, in `[0, 1)`; when above 0 and there
    /// are at least two people, at least one is held out (and at least one trains).
    pub val_fraction: f64,
    /// Seed of the split.
    pub seed: u64,
    /// Name tokens `K` kept after the start token.
    pub num_tokens: usize,
    /// Images (and names) per forward pass.
    pub batch_size: usize,
    /// Images per shard file (a new build only; a resumed one keeps its own).
    pub shard_rows: usize,
    /// Stop (as an interruption would, leaving the folder resumable) once this many
    /// manifest entries were processed in this run, at a batch boundary.
    pub stop_after: Option<usize>,
    /// The view of each photo the towers embed (default: the largest face, aligned,
    /// 224 x 224); recorded in `dataset.json` and copied into encoders trained on it.
    pub input_crop: InputCrop,
}

impl Default for BuildConfig {
    fn default() -> Self {
        Self {
            val_fraction: 0.1,
            seed: 0,
            num_tokens: magicnaming_core::DEFAULT_NAME_TOKENS,
            batch_size: 16,
            shard_rows: 1024,
            stop_after: None,
            input_crop: InputCrop::face(),
        }
    }
}

/// What a build did.
#[derive(Debug, Clone)]
pub struct BuildReport {
    /// The written `dataset.json`; `None` when the run stopped early (`stop_after`).
    pub index: Option<DatasetIndex>,
    /// Manifest entries.
    pub entries: usize,
    /// Entries that earlier runs had already processed.
    pub resumed_at: usize,
    /// Entries processed, this run and earlier ones.
    pub processed: usize,
    /// Images skipped so far, with the reason.
    pub skipped: Vec<SkippedImage>,
    /// People dropped for want of a usable image (complete builds only).
    pub dropped: Vec<String>,
}

fn absolute(path: &Path, what: &str) -> Result<PathBuf> {
    path.canonicalize().map_err(|_| ModelError::MissingFile {
        path: path.to_path_buf(),
        what: what.into(),
    })
}

fn text(p: &Path) -> String {
    p.display().to_string()
}

/// `[G, K, D]` names of every person (cached across runs), and `D`.
fn text_code<B: Backend>(
    sources: &BuildSources,
    groups: &NameGroups,
    config: &BuildConfig,
    out: &Path,
    state: &mut BuildState,
    device: &B::Device,
) -> Result<(Vec<f32>, usize)> {
    let cache = out.join(NAMES_CACHE_FILE);
    let (g, k) = (groups.names.len(), config.num_tokens);
    if state.names_cached {
        match read_names_cache(&cache, &groups.names, k) {
            Ok(v) => return Ok(v),
            Err(e) => log::warn!("{e}; text-coding the names again"),
        }
    }
    let source = SdxlSource::from_path(&sources.model, sources.config.as_deref())?;
    let enc = SdxlTextEncoders::<B>::load(&source, device)?;
    let d = enc.token_dim();
    let mut names = Vec::with_capacity(g * k * d);
    for (i, chunk) in groups.names.chunks(config.batch_size).enumerate() {
        let refs: Vec<&str> = chunk.iter().map(String::as_str).collect();
        names.extend(enc.text_code_names(&refs, k)?.into_data().iter::<f32>());
        log::debug!(
            "text-coded {} of {g} names",
            (i * config.batch_size + chunk.len())
        );
    }
    let bytes = names.iter().flat_map(|v| v.to_le_bytes()).collect();
    let list = serde_json::to_string(&groups.names).expect("strings serialise");
    write_safetensors(
        &cache,
        vec![("names", safetensors::Dtype::F32, vec![g, k, d], bytes)],
        Some(("names", list)),
    )?;
    state.names_cached = true;
    save_state(out, state)?;
    log::info!("text-coded {g} names ([{k}, {d}] each)");
    Ok((names, d))
}

/// Splits `m` people: `round(m * val_fraction)` held out (at least one when
/// `val_fraction > 0` and `m >= 2`, and never all), chosen by a SplitMix64 shuffle seeded
/// with `seed`.
pub fn split_identities(m: usize, val_fraction: f64, seed: u64) -> Vec<Split> {
    let mut n_val = (m as f64 * val_fraction).round() as usize;
    if val_fraction > 0.0 && m >= 2 {
        n_val = n_val.max(1);
    }
    n_val = n_val.min(m.saturating_sub(1));
    let mut order: Vec<usize> = (0..m).collect();
    SplitMix64(seed).shuffle(&mut order);
    let mut split = vec![Split::Train; m];
    for &i in &order[..n_val] {
        split[i] = Split::Val;
    }
    split
}

pub(crate) fn check_config(config: &BuildConfig) -> Result<()> {
    if !(0.0..1.0).contains(&config.val_fraction) {
        return Err(ModelError::InvalidInput(format!(
            "val_fraction must be in [0, 1), got {}",
            config.val_fraction
        )));
    }
    if config.batch_size == 0 || config.shard_rows == 0 || config.num_tokens == 0 {
        return Err(ModelError::InvalidInput(
            "batch size, shard size and name token count must be positive".into(),
        ));
    }
    Ok(())
}

/// Builds (or resumes building) the dataset folder `out` (see the module docs), calling
/// `progress(done, total)` with manifest entries processed after each batch.
///
/// # Errors
/// A bad manifest ([`ModelError::Manifest`] with the line); missing or invalid model or
/// towers; `out` not empty and not a build of the same inputs; no readable image at all;
/// I/O errors. Unreadable images are not errors.
pub fn build_dataset<B: Backend>(
    sources: &BuildSources,
    out: &Path,
    config: &BuildConfig,
    device: &B::Device,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<BuildReport> {
    check_config(config)?;
    let manifest = read_manifest(&sources.manifest)?;
    let entries = &manifest.entries;
    let groups = group_names(&entries.iter().map(|e| e.name.as_str()).collect::<Vec<_>>());
    log::info!(
        "{}: {} images of {} people",
        manifest.path.display(),
        entries.len(),
        groups.names.len()
    );
    let config_dir = match &sources.config {
        Some(c) => Some(absolute(c, "the --config folder")?),
        None => None,
    };
    let inputs = BuildInputs {
        manifest_hash: manifest.hash.clone(),
        entries: entries.len(),
        model: text(&absolute(&sources.model, "the SDXL model")?),
        config: config_dir.as_deref().map(text),
        tower_l: text(&absolute(&sources.tower_l, "the CLIP_L image tower")?),
        tower_g: text(&absolute(&sources.tower_g, "the CLIP_G image tower")?),
        num_tokens: config.num_tokens,
        input_crop: config.input_crop,
    };
    let mut state = open_state(out, &inputs, config.shard_rows)?;
    let (names, d) = text_code::<B>(sources, &groups, config, out, &mut state, device)?;
    let embedder = ImageEmbedder::<B>::load(&sources.tower_l, &sources.tower_g, device)?
        .with_input_crop(config.input_crop)?;
    let embed_dims = embedder.embed_dims().to_vec();
    let e: usize = embed_dims.iter().sum();
    let image: Vec<&str> = entries.iter().map(|x| x.image.as_str()).collect();
    keep_valid_shards(out, &mut state, &image, e)?;

    let mut writer = DatasetWriter::new(out, config.num_tokens, d, embed_dims, state.shard_rows)?;
    writer.index.shards = state
        .shards
        .iter()
        .map(|s| Shard {
            file: s.file.clone(),
            count: s.count,
        })
        .collect();
    let total = entries.len();
    let resumed_at = state.shards.last().map_or(0, |s| s.entries_end);
    let mut skipped = state.skipped.clone();
    let mut next = resumed_at;
    progress(next, total);
    let record = |state: &mut BuildState, w: &DatasetWriter, end: usize, sk: &[StateSkip]| {
        let s = w.index.shards.last().expect("a shard was written");
        log::info!(
            "{}: {} images ({end}/{total} entries done)",
            s.file,
            s.count
        );
        state.shards.push(StateShard {
            file: s.file.clone(),
            count: s.count,
            entries_end: end,
        });
        state.skipped = sk.iter().filter(|s| s.entry < end).cloned().collect();
        save_state(out, state)
    };
    while next < total {
        if config.stop_after.is_some_and(|n| next - resumed_at >= n) {
            log::info!(
                "stopping after {} entries as asked; run again to resume",
                next - resumed_at
            );
            return Ok(BuildReport {
                index: None,
                entries: total,
                resumed_at,
                processed: next,
                skipped: to_skipped(&skipped),
                dropped: Vec::new(),
            });
        }
        // Manifest entries of the batch, and their pixels, in the same order.
        let mut batch: Vec<usize> = Vec::with_capacity(config.batch_size);
        let mut pixels: Vec<TowerPixels> = Vec::with_capacity(config.batch_size);
        while next < total && batch.len() < config.batch_size {
            match embedder.preprocess_file(&entries[next].path) {
                Ok(p) => {
                    batch.push(next);
                    pixels.push(p);
                }
                Err(err) => {
                    let reason = SkippedImage::new(&entries[next].path, err).reason;
                    log::warn!(
                        "skipping {} (manifest line {}): {reason}",
                        entries[next].image,
                        entries[next].line
                    );
                    skipped.push(StateSkip {
                        entry: next,
                        path: entries[next].image.clone(),
                        reason,
                    });
                }
            }
            next += 1;
        }
        if !batch.is_empty() {
            let embeds: Vec<f32> = embedder
                .embed_pixels(&pixels)?
                .into_data()
                .iter::<f32>()
                .collect();
            for (row, entry) in batch.iter().enumerate() {
                let before = writer.index.shards.len();
                let group = groups.group_of[*entry];
                writer.push(&embeds[row * e..(row + 1) * e], group, image[*entry])?;
                if writer.index.shards.len() > before {
                    record(&mut state, &writer, entry + 1, &skipped)?;
                }
            }
        }
        progress(next, total);
    }
    let before = writer.index.shards.len();
    writer.flush()?;
    if writer.index.shards.len() > before {
        record(&mut state, &writer, total, &skipped)?;
    } else if let Some(last) = state.shards.last_mut() {
        // Only skipped images after the last shard.
        last.entries_end = total;
    }
    state.skipped = skipped;
    save_state(out, &state)?;
    let context = BuildContext {
        sources,
        config,
        out,
        manifest_hash: &manifest.hash,
        groups: &groups,
    };
    finalize(&context, state, &names, writer, resumed_at)
}

fn to_skipped(s: &[StateSkip]) -> Vec<SkippedImage> {
    s.iter()
        .map(|s| SkippedImage {
            path: PathBuf::from(&s.path),
            reason: s.reason.clone(),
        })
        .collect()
}

/// The inputs every finishing step of a build reads.
struct BuildContext<'a> {
    sources: &'a BuildSources,
    config: &'a BuildConfig,
    out: &'a Path,
    manifest_hash: &'a str,
    groups: &'a NameGroups,
}

/// Who stays in the dataset: people with at least one usable image.
struct People {
    /// Usable images of each manifest person.
    images: Vec<usize>,
    /// Each manifest person's identity in the dataset (`None`: dropped).
    final_id: Vec<Option<usize>>,
    /// Manifest people kept, in order.
    kept: Vec<usize>,
    /// Names of the people dropped.
    dropped: Vec<String>,
}

fn people(groups: &NameGroups, rows: &[Vec<usize>]) -> People {
    let mut images = vec![0usize; groups.names.len()];
    for &r in rows.iter().flatten() {
        images[groups.group_of[r]] += 1;
    }
    let (mut final_id, mut kept, mut dropped) = (vec![None; images.len()], Vec::new(), Vec::new());
    for (g, &n) in images.iter().enumerate() {
        if n > 0 {
            final_id[g] = Some(kept.len());
            kept.push(g);
        } else {
            log::warn!("{:?}: no usable image, person dropped", groups.names[g]);
            dropped.push(groups.names[g].clone());
        }
    }
    People {
        images,
        final_id,
        kept,
        dropped,
    }
}

/// Drops people without images (renumbering the shards' identities), splits, writes
/// `names.safetensors` and, last, `dataset.json`.
fn finalize(
    cx: &BuildContext<'_>,
    mut state: BuildState,
    names: &[f32],
    mut writer: DatasetWriter,
    resumed_at: usize,
) -> Result<BuildReport> {
    let (sources, config, out, groups) = (cx.sources, cx.config, cx.out, cx.groups);
    let rows = shard_entries(&state);
    let People {
        images,
        final_id,
        kept,
        dropped,
    } = people(groups, &rows);
    if kept.is_empty() {
        return Err(ModelError::InvalidInput(format!(
            "none of the {} images of {} could be read (see {})",
            state.inputs.entries,
            sources.manifest.display(),
            out.join(BUILD_STATE_FILE).display()
        )));
    }
    // Shards hold each person's position among all the manifest's people; renumber the
    // shards whose people moved (computed from the manifest, so a rerun is idempotent).
    for (shard, rows) in state.shards.iter().zip(&rows) {
        let ids: Vec<usize> = rows
            .iter()
            .map(|&r| final_id[groups.group_of[r]].expect("a person with this image is kept"))
            .collect();
        if rows
            .iter()
            .zip(&ids)
            .any(|(&r, &id)| groups.group_of[r] != id)
        {
            rewrite_identity(&out.join(&shard.file), &ids)?;
        }
    }
    let split = split_identities(kept.len(), config.val_fraction, config.seed);
    writer.index.identities = kept
        .iter()
        .zip(&split)
        .map(|(&g, &split)| Identity {
            name: groups.names[g].clone(),
            split,
            images: images[g],
        })
        .collect();
    let kd = writer.index.num_tokens * writer.index.token_dim;
    let kept_names: Vec<f32> = kept
        .iter()
        .flat_map(|&g| names[g * kd..(g + 1) * kd].iter().copied())
        .collect();
    writer.write_names(&kept_names)?;
    writer.index.skipped = to_skipped(&state.skipped);
    writer.index.input_crop = state.inputs.input_crop;
    let s = &state.inputs;
    writer.index.source = json!({
        "manifest": text(&absolute(&sources.manifest, "the manifest")?),
        "manifest_hash": cx.manifest_hash,
        "model": s.model,
        "config": s.config,
        "tower_l": s.tower_l,
        "tower_g": s.tower_g,
        "seed": config.seed,
        "val_fraction": config.val_fraction,
        "dropped_identities": dropped,
    })
    .as_object()
    .expect("object")
    .clone();
    let index = writer.finish()?;
    state.names_cached = false;
    save_state(out, &state)?;
    let _ = std::fs::remove_file(out.join(NAMES_CACHE_FILE));
    let val = index
        .identities
        .iter()
        .filter(|i| i.split == Split::Val)
        .count();
    log::info!(
        "{}: {} images of {} people ({val} held out); skipped images: {}, dropped people: {}",
        out.display(),
        rows.iter().map(Vec::len).sum::<usize>(),
        index.identities.len(),
        index.skipped.len(),
        dropped.len()
    );
    Ok(BuildReport {
        entries: state.inputs.entries,
        resumed_at,
        processed: state.inputs.entries,
        skipped: index.skipped.clone(),
        index: Some(index),
        dropped,
    })
}
