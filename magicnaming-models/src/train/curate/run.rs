//! `dataset curate`: LaionCele's eight steps (`docs/METHOD.md`) from captioned images and a
//! list of people to a dataset folder that `train` reads, each step resumable.
//!
//! ```text
//! OUT/curate.json                 the inputs and settings, and the steps finished
//! OUT/steps/1-extract/            step 1-2 output of `extract_names` (images/ from tar shards)
//! OUT/steps/<n>-<step>.json       what each step did (StepRecord: per person, every drop)
//! OUT/steps/<n>-<step>.jsonl      the manifest each step leaves (image paths relative to OUT)
//! OUT/steps/4-generate/<person>/  generated images (unless reused with `generated`)
//! OUT/steps/5-faces.safetensors   each kept name's generated face embeddings
//! OUT/manifest.jsonl              step 8's manifest (image paths relative to OUT)
//! OUT/dataset/                    `dataset build` of that manifest (not with a shard)
//! OUT/report.json                 the funnel
//! ```
//! People are handled in name order and each person's images in input order, so shards
//! ([`ShardSpec`]) that split the people produce pieces of exactly the single run's
//! files; [`super::merge`] joins them. A step's outputs are written atomically and the step
//! is recorded as finished after them: a rerun with the same inputs continues at the first
//! unfinished step (step 4 also keeps the images already drawn); other inputs are refused.
use std::path::{Path, PathBuf};

use burn::tensor::backend::Backend;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::config::{CurateConfig, CurateSources, check_config};
use super::names::NameList;
use super::people::{Outcome, People, count, manifest_path, pass, read_people, write_people};
use super::report::{FunnelRow, StepRecord, write_report};
use super::steps::{
    consistency_step, dedup_step, extract_step, generate_step, match_step, quantity_step,
};
use crate::clip::tower::ClipVisionTower;
use crate::eval::IdentityScorer;
use crate::face::{FaceDetector, FaceRecognizer, MtcnnConfig};
use crate::name_encoder::InputCrop;
use crate::train::build::{BuildConfig, BuildSources, build_dataset};
use crate::train::dataset::DatasetIndex;
use crate::train::manifest::fnv1a64;
use crate::{ModelError, Result};

/// Step 5's generated face embeddings, under the curation folder.
pub const FACES_FILE: &str = "steps/5-faces.safetensors";

/// The state file of a curation folder.
pub const CURATE_STATE_FILE: &str = "curate.json";

/// `curate.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CurateState {
    /// What the curation ran on and with.
    pub inputs: Value,
    /// Steps finished, in order.
    pub done: Vec<u8>,
}

/// What [`curate`] did.
#[derive(Debug, Clone)]
pub struct CurateReport {
    /// The funnel, one row per step.
    pub funnel: Vec<FunnelRow>,
    /// The built dataset (a run over all people only).
    pub dataset: Option<DatasetIndex>,
}

pub(super) fn exists(path: &Path, what: &str) -> Result<PathBuf> {
    path.canonicalize().map_err(|_| ModelError::MissingFile {
        path: path.to_path_buf(),
        what: what.into(),
    })
}

/// The inputs a folder's steps depend on: a rerun with other values is refused.
fn inputs(s: &CurateSources, c: &CurateConfig) -> Result<Value> {
    let names = std::fs::read(&s.names).map_err(|e| ModelError::io(&s.names, e))?;
    let p = |p: &Path, what: &str| exists(p, what).map(|p| p.display().to_string());
    Ok(json!({
        "input": p(&s.input, "the input")?,
        "names_hash": format!("{:016x}", fnv1a64(&names)),
        "model": p(&s.model, "the SDXL model")?,
        "config": s.config.as_deref().map(|c| p(c, "the --config folder")).transpose()?,
        "tower_l": p(&s.tower_l, "the CLIP_L image tower")?,
        "tower_g": p(&s.tower_g, "the CLIP_G image tower")?,
        "recognizer": p(&s.recognizer, "the face recognizer")?,
        "detector": s.detector.as_deref().map(|d| p(d, "the MTCNN weights")).transpose()?,
        "generated": s.generated.as_deref().map(|d| p(d, "the --generated folder")).transpose()?,
        "allow_multi": c.allow_multi,
        "generate": c.generate,
        "gen_consistency": c.gen_consistency,
        "dedup": c.dedup,
        "real_match": c.real_match,
        "min_images": c.min_images,
        "build": {
            "num_tokens": c.build.num_tokens,
            "val_fraction": c.build.val_fraction,
            "seed": c.build.seed,
            "batch_size": c.build.batch_size,
            "shard_rows": c.build.shard_rows,
            "input_crop": c.build.input_crop,
        },
        "shard_count": c.shard.count,
        "shard": c.shard.index,
    }))
}

/// Opens (or starts) the state of `out`.
pub(super) fn open_state(out: &Path, inputs: &Value) -> Result<CurateState> {
    let path = out.join(CURATE_STATE_FILE);
    if path.exists() {
        let text = std::fs::read_to_string(&path).map_err(|e| ModelError::io(&path, e))?;
        let state: CurateState =
            serde_json::from_str(&text).map_err(|e| ModelError::config(&path, e.to_string()))?;
        let Some(old) = state.inputs.as_object() else {
            return Err(ModelError::config(&path, "`inputs` is not an object"));
        };
        if let Some(new) = inputs.as_object() {
            let changed: Vec<&str> = new
                .iter()
                .filter(|(k, v)| old.get(*k) != Some(v))
                .map(|(k, _)| k.as_str())
                .collect();
            if !changed.is_empty() {
                return Err(ModelError::InvalidInput(format!(
                    "{} holds a curation of other inputs ({} changed): use another folder",
                    out.display(),
                    changed.join(", ")
                )));
            }
        }
        return Ok(state);
    }
    if std::fs::read_dir(out).is_ok_and(|mut d| d.next().is_some()) {
        return Err(ModelError::InvalidInput(format!(
            "{} is not empty and holds no {CURATE_STATE_FILE}: choose an empty folder",
            out.display()
        )));
    }
    std::fs::create_dir_all(out).map_err(|e| ModelError::io(out, e))?;
    let state = CurateState {
        inputs: inputs.clone(),
        done: Vec::new(),
    };
    save_state(out, &state)?;
    Ok(state)
}

pub(super) fn save_state(out: &Path, state: &CurateState) -> Result<()> {
    let text = serde_json::to_string_pretty(state).expect("serialises") + "\n";
    Ok(magicnaming_core::write_atomic(
        &out.join(CURATE_STATE_FILE),
        text.as_bytes(),
    )?)
}

/// Runs a curation into `out` (see the module docs); `progress(step, done, total)`
/// reports the long steps.
///
/// # Errors
/// Bad thresholds or build settings, a bad names file, missing models or input (all before
/// any step runs; a bad input file is found by step 1); `out` holding something else; a
/// step's failure (the folder stays resumable).
pub fn curate<B: Backend>(
    sources: &CurateSources,
    config: &CurateConfig,
    out: &Path,
    device: &B::Device,
    progress: &mut dyn FnMut(u8, usize, usize),
) -> Result<CurateReport> {
    check_config(config)?;
    let names = NameList::read(&sources.names)?;
    let inputs = inputs(sources, config)?;
    if let Some(g) = &sources.generated
        && !g.is_dir()
    {
        return Err(ModelError::config(g, "--generated must be a folder"));
    }
    let mut state = open_state(out, &inputs)?;
    let out = &exists(out, "the output folder")?;
    let shard = config.shard;

    // Steps finish in order, so the finished ones are 1..=last; a rerun starts from the
    // manifest the last one left.
    let last = state.done.iter().copied().max().unwrap_or(0);
    let mut people = if last >= 2 {
        read_people(&manifest_path(out, last))?
    } else {
        People::new()
    };
    let finish = |state: &mut CurateState, o: Outcome| -> Result<People> {
        let step = o.record.step;
        write_people(&manifest_path(out, step), &o.people)?;
        o.record.write(out)?;
        if !state.done.contains(&step) {
            state.done.push(step);
        }
        save_state(out, state)?;
        log::info!(
            "step {step}: {} people, {} images left",
            o.people.len(),
            count(&o.people)
        );
        Ok(o.people)
    };
    // Steps 1 and 2.
    if last < 2 {
        let (r1, o2) = extract_step(
            &exists(&sources.input, "the input")?,
            sources,
            config,
            &names,
            out,
        )?;
        finish(&mut state, r1)?;
        people = finish(&mut state, o2)?;
    }
    // Step 3: the names are text-coded where they are used (step 4, the build).
    if last < 3 {
        let mut r = StepRecord::new(3, json!({"num_tokens": config.build.num_tokens}));
        for (name, e) in &people {
            r.people.insert(name.clone(), pass(e.len(), Value::Null));
        }
        people = finish(&mut state, Outcome { record: r, people })?;
    }
    // Step 4.
    let generated_dir = match &sources.generated {
        Some(g) => exists(g, "the --generated folder")?,
        None => out.join("steps/4-generate"),
    };
    if last < 4 {
        let o = generate_step::<B>(sources, config, &people, &generated_dir, device, progress)?;
        people = finish(&mut state, o)?;
    }
    // Steps 5 and 7 share the face models.
    let faces_file = out.join(FACES_FILE);
    let scorer = || -> Result<IdentityScorer<B>> {
        let mut detect = MtcnnConfig::default();
        if let InputCrop::Face { min_face_size, .. } = config.build.input_crop {
            detect.min_face_size = min_face_size;
        }
        Ok(IdentityScorer::new(
            FaceDetector::load(sources.detector.as_deref(), device)?.with_config(detect),
            Some(FaceRecognizer::load(&sources.recognizer, device)?),
        ))
    };
    if last < 5 {
        let o = consistency_step(&scorer()?, config, people, &generated_dir, &faces_file)?;
        people = finish(&mut state, o)?;
    }
    if last < 6 {
        let tower = ClipVisionTower::<B>::load(&sources.tower_l, device)?;
        let o = dedup_step(&tower, config, people, out)?;
        people = finish(&mut state, o)?;
    }
    if last < 7 {
        let o = match_step(&scorer()?, config, people, out, &faces_file, progress)?;
        people = finish(&mut state, o)?;
    }
    if last < 8 {
        let o = quantity_step(config, people);
        people = finish(&mut state, o)?;
    }
    write_people(&out.join("manifest.jsonl"), &people)?;
    let dataset = if shard.count == 1 {
        build::<B>(sources, &config.build, out, device, &people)?
    } else {
        log::info!("shard {shard}: join the shards with `dataset merge` to build the dataset");
        None
    };
    let funnel = write_report(out)?;
    Ok(CurateReport { funnel, dataset })
}

/// The build of step 8's manifest into `OUT/dataset` (nothing when no one is left).
///
/// # Errors
/// As [`build_dataset`].
pub fn build<B: Backend>(
    sources: &CurateSources,
    config: &BuildConfig,
    out: &Path,
    device: &B::Device,
    people: &People,
) -> Result<Option<DatasetIndex>> {
    if people.is_empty() {
        log::warn!("no one is left after step 8: no dataset to build");
        return Ok(None);
    }
    let b = BuildSources {
        manifest: out.join("manifest.jsonl"),
        model: sources.model.clone(),
        config: sources.config.clone(),
        tower_l: sources.tower_l.clone(),
        tower_g: sources.tower_g.clone(),
    };
    let report = build_dataset::<B>(&b, &out.join("dataset"), config, device, &mut |_, _| {})?;
    Ok(report.index)
}
