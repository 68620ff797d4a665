//! `dataset merge`: the curations of shards that split the people (`--shard I/N`, each
//! run to step 8) joined into the folder one run over everyone writes, then built.
//!
//! Each step's record is joined ([`merge_records`]), the step 8 manifests are joined in
//! name order, the images the manifest names under a shard's folder are copied to the
//! same place under `out`, and `curate.json` is written as the single run writes it. The
//! build then runs once on the joined manifest with the settings the shards recorded, so
//! `out` holds what a single run does: the same `manifest.jsonl`, `steps/*.json`,
//! `report.json` and `dataset/` (whose `dataset.json` names its own manifest's path).
use std::path::{Path, PathBuf};

use burn::tensor::backend::Backend;
use serde_json::{Value, json};

use super::config::CurateSources;
use super::people::{People, entry_path, manifest_path, read_people, write_people};
use super::report::{STEPS, StepRecord, merge_records, write_report};
use super::run::{
    CURATE_STATE_FILE, CurateReport, CurateState, FACES_FILE, build, exists, save_state,
};
use super::steps::{read_faces, write_faces};
use crate::name_encoder::InputCrop;
use crate::train::build::BuildConfig;
use crate::{ModelError, Result};

fn read_state(dir: &Path) -> Result<CurateState> {
    let path = dir.join(CURATE_STATE_FILE);
    let text = std::fs::read_to_string(&path).map_err(|e| ModelError::io(&path, e))?;
    serde_json::from_str(&text).map_err(|e| ModelError::config(&path, e.to_string()))
}

fn field<'a>(v: &'a Value, k: &str, path: &Path) -> Result<&'a Value> {
    v.get(k)
        .ok_or_else(|| ModelError::config(path, format!("inputs lack {k:?}")))
}

/// Joins the shard folders `shards` into `out` and builds the dataset there.
///
/// # Errors
/// Fewer or more shards than their count says, a shard missing or repeated, shards of
/// different inputs, an unfinished shard (all named); `out` not empty; the build's errors.
pub fn merge_curations<B: Backend>(
    shards: &[PathBuf],
    out: &Path,
    device: &B::Device,
) -> Result<CurateReport> {
    if shards.is_empty() {
        return Err(ModelError::InvalidInput("no shard folders to merge".into()));
    }
    let mut states = Vec::new();
    for dir in shards {
        let s = read_state(dir)?;
        if !s.done.contains(&8) {
            return Err(ModelError::InvalidInput(format!(
                "{} has not finished step 8 (done: {:?}): run its curation to the end first",
                dir.display(),
                s.done
            )));
        }
        states.push(s);
    }
    let first = &shards[0];
    let count = field(&states[0].inputs, "shard_count", first)?
        .as_u64()
        .unwrap_or(0) as usize;
    if count == 0 || count != shards.len() {
        return Err(ModelError::InvalidInput(format!(
            "{} is one of {count} shards, but {} folders were given",
            first.display(),
            shards.len()
        )));
    }
    let mut seen = vec![None::<&PathBuf>; count];
    for (dir, s) in shards.iter().zip(&states) {
        let mut a = s.inputs.clone();
        let mut b = states[0].inputs.clone();
        let index = field(&a, "shard", dir)?.as_u64().unwrap_or(u64::MAX) as usize;
        for v in [&mut a, &mut b] {
            v.as_object_mut().map(|o| o.remove("shard"));
        }
        if a != b {
            let differ: Vec<String> = match (a.as_object(), b.as_object()) {
                (Some(a), Some(b)) => a
                    .iter()
                    .filter(|(k, v)| b.get(*k) != Some(v))
                    .map(|(k, _)| k.clone())
                    .chain(b.keys().filter(|k| !a.contains_key(*k)).cloned())
                    .collect(),
                _ => vec!["inputs".into()],
            };
            return Err(ModelError::InvalidInput(format!(
                "{} and {} are curations of different inputs or settings ({} differ)",
                first.display(),
                dir.display(),
                differ.join(", ")
            )));
        }
        match seen.get_mut(index) {
            None => {
                return Err(ModelError::InvalidInput(format!(
                    "{} is shard {index} of {count}",
                    dir.display()
                )));
            }
            Some(Some(other)) => {
                return Err(ModelError::InvalidInput(format!(
                    "{} and {} are both shard {index}/{count}",
                    other.display(),
                    dir.display()
                )));
            }
            Some(slot) => *slot = Some(dir),
        }
    }
    if let Some(i) = seen.iter().position(Option::is_none) {
        return Err(ModelError::InvalidInput(format!(
            "shard {i}/{count} is missing from the folders to merge"
        )));
    }
    let mut inputs = states[0].inputs.clone();
    inputs["shard"] = json!(0);
    inputs["shard_count"] = json!(1);
    let state = super::run::open_state(out, &inputs)?;
    let out = &exists(out, "the output folder")?;
    // A merge whose files are all written (stopped in its build) goes on with the build.
    if state.done.len() < STEPS.len() {
        join_files(shards, out, &inputs)?;
    }
    build_merged::<B>(&inputs, first, out, device)
}

/// Every step's record and manifest, the generated faces and the kept images of `shards`
/// joined into `out`; `curate.json` marks all steps done last.
fn join_files(shards: &[PathBuf], out: &Path, inputs: &Value) -> Result<()> {
    // Records and manifests of every step.
    for (step, _) in STEPS {
        let records = shards
            .iter()
            .map(|d| Ok((d.clone(), StepRecord::read(d, step)?)))
            .collect::<Result<Vec<_>>>()?;
        merge_records(records)?.write(out)?;
        let mut people = People::new();
        for d in shards {
            let d = exists(d, "a shard folder")?;
            for (name, entries) in read_people(&manifest_path(&d, step))? {
                if step == 8 {
                    for e in &entries {
                        let rel = Path::new(&e.image);
                        if rel.is_relative() {
                            if !rel
                                .components()
                                .all(|c| matches!(c, std::path::Component::Normal(_)))
                            {
                                return Err(ModelError::config(
                                    manifest_path(&d, step),
                                    format!("image path {:?} leaves the folder", e.image),
                                ));
                            }
                            let (from, to) = (entry_path(&d, e), entry_path(out, e));
                            if let Some(parent) = to.parent() {
                                std::fs::create_dir_all(parent)
                                    .map_err(|err| ModelError::io(parent, err))?;
                            }
                            std::fs::copy(&from, &to).map_err(|err| {
                                ModelError::io(
                                    &from,
                                    std::io::Error::new(
                                        err.kind(),
                                        format!("copying to {}: {err}", to.display()),
                                    ),
                                )
                            })?;
                        }
                    }
                }
                people.insert(name, entries);
            }
        }
        write_people(&manifest_path(out, step), &people)?;
        if step == 8 {
            write_people(&out.join("manifest.jsonl"), &people)?;
        }
    }
    let mut faces = std::collections::BTreeMap::new();
    for d in shards {
        faces.extend(read_faces(&d.join(FACES_FILE))?);
    }
    write_faces(&out.join(FACES_FILE), &faces)?;
    save_state(
        out,
        &CurateState {
            inputs: inputs.clone(),
            done: STEPS.iter().map(|s| s.0).collect(),
        },
    )
}

/// The build of the joined manifest, with the settings the shards recorded.
fn build_merged<B: Backend>(
    inputs: &Value,
    first: &Path,
    out: &Path,
    device: &B::Device,
) -> Result<CurateReport> {
    let path = |k: &str| -> Result<Option<PathBuf>> {
        Ok(field(inputs, k, first)?.as_str().map(PathBuf::from))
    };
    let required = |k: &str| -> Result<PathBuf> {
        path(k)?.ok_or_else(|| ModelError::config(first, format!("inputs lack {k:?}")))
    };
    let b = field(inputs, "build", first)?;
    let int = |k: &str| {
        field(b, k, first)?.as_u64().ok_or_else(|| {
            ModelError::config(first, format!("build setting {k:?} is not a whole number"))
        })
    };
    let config = BuildConfig {
        num_tokens: int("num_tokens")? as usize,
        val_fraction: field(b, "val_fraction", first)?.as_f64().ok_or_else(|| {
            ModelError::config(first, "build setting \"val_fraction\" is not a number")
        })?,
        seed: int("seed")?,
        batch_size: int("batch_size")? as usize,
        shard_rows: int("shard_rows")? as usize,
        stop_after: None,
        input_crop: serde_json::from_value::<InputCrop>(field(b, "input_crop", first)?.clone())
            .map_err(|e| ModelError::config(first, e.to_string()))?,
    };
    let sources = CurateSources {
        input: required("input")?,
        names: PathBuf::new(),
        model: required("model")?,
        config: path("config")?,
        tower_l: required("tower_l")?,
        tower_g: required("tower_g")?,
        recognizer: required("recognizer")?,
        detector: path("detector")?,
        generated: path("generated")?,
    };
    let people = read_people(&out.join("manifest.jsonl"))?;
    let dataset = build::<B>(&sources, &config, out, device, &people)?;
    let funnel = write_report(out)?;
    Ok(CurateReport { funnel, dataset })
}
