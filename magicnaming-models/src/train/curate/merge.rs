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

use super::report::{STEPS, StepRecord, merge_records, write_report};
use super::run::{
    CURATE_STATE_FILE, CurateReport, CurateSources, CurateState, FACES_FILE, People, build,
    entry_path, exists, manifest_path, read_people, save_state, write_people,
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
    let mut seen = vec![None::<&PathBuf>; count];
    for (dir, s) in shards.iter().zip(&states) {
        let mut a = s.inputs.clone();
        let mut b = states[0].inputs.clone();
        let index = field(&a, "shard", dir)?.as_u64().unwrap_or(u64::MAX) as usize;
        for v in [&mut a, &mut b] {
            v.as_object_mut().map(|o| o.remove("shard"));
        }
        if a != b {
            return Err(ModelError::InvalidInput(format!(
                "{} and {} are curations of different inputs or settings",
                first.display(),
                dir.display()
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
    if !state.done.is_empty() {
        return Err(ModelError::InvalidInput(format!(
            "{} already holds a curation: choose an empty folder",
            out.display()
        )));
    }
    let out = &exists(out, "the output folder")?;
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
                        if Path::new(&e.image).is_relative() {
                            let (from, to) = (entry_path(&d, e), entry_path(out, e));
                            if let Some(parent) = to.parent() {
                                std::fs::create_dir_all(parent)
                                    .map_err(|err| ModelError::io(parent, err))?;
                            }
                            std::fs::copy(&from, &to).map_err(|err| ModelError::io(&from, err))?;
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
    )?;
    // The build, with what the shards recorded.
    let path = |k: &str| -> Result<Option<PathBuf>> {
        Ok(field(&inputs, k, first)?.as_str().map(PathBuf::from))
    };
    let required = |k: &str| -> Result<PathBuf> {
        path(k)?.ok_or_else(|| ModelError::config(first, format!("inputs lack {k:?}")))
    };
    let b = field(&inputs, "build", first)?;
    let num = |k: &str| field(b, k, first).map(|v| v.as_f64().unwrap_or(f64::NAN));
    let config = BuildConfig {
        num_tokens: num("num_tokens")? as usize,
        val_fraction: num("val_fraction")?,
        seed: num("seed")? as u64,
        batch_size: num("batch_size")? as usize,
        shard_rows: num("shard_rows")? as usize,
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
