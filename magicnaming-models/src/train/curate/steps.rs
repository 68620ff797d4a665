//! The work of each curation step (`run.rs` orders them and keeps the state).
use std::collections::BTreeMap;
use std::path::Path;

use burn::tensor::backend::Backend;
use serde_json::{Value, json};

use super::config::{CurateConfig, CurateSources};
use super::extract::extract_names;
use super::filter::{deduplicate, enough_images};
use super::generate::{check_person_dirs, generate_images, generated_images, person_dir};
use super::identity::{MIN_GENERATED_FACES, all_faces, consistency, match_real};
use super::names::NameList;
use super::people::{Entry, Outcome, People, count, dropped_person, entry_path, pass, read_people};
use super::report::{DroppedImage, PersonStep, StepRecord};
use crate::clip::tower::ClipVisionTower;
use crate::eval::IdentityScorer;
use crate::face::load_rgb;
use crate::sdxl::{SdxlPipeline, SdxlSource};
use crate::train::dataset::write_safetensors;
use crate::train::manifest::ManifestEntry;
use crate::{ModelError, Result};

/// `text` with the curation folder's path taken out of the paths it names, so that what a
/// step records does not depend on where the folder is (shards and their merge agree).
fn relative_to(out: &Path, text: &str) -> String {
    text.replace(&format!("{}/", out.display()), "")
}

/// Steps 1 and 2: [`extract_names`] into `OUT/steps/1-extract` (the shard's people only).
pub(super) fn extract_step(
    input: &Path,
    sources: &CurateSources,
    config: &CurateConfig,
    names: &NameList,
    out: &Path,
) -> Result<(Outcome, Outcome)> {
    let dir = out.join("steps/1-extract");
    // What a killed run left of this step is redone.
    if dir.exists() {
        std::fs::remove_dir_all(&dir).map_err(|e| ModelError::io(&dir, e))?;
    }
    let r = extract_names(
        input,
        &sources.names,
        &dir,
        config.allow_multi,
        config.shard,
    )?;
    let mut people = read_people(&dir.join("manifest.jsonl"))?;
    for entries in people.values_mut() {
        for e in entries.iter_mut() {
            if Path::new(&e.image).is_relative() {
                e.image = format!("steps/1-extract/{}", e.image);
            }
        }
    }
    let settings = json!({"allow_multi": config.allow_multi});
    let mut r1 = StepRecord::new(1, settings.clone());
    r1.input_wide = json!({
        "records": r.records,
        "no_name": r.no_name,
        "several_names": r.several_names,
        "skipped": r.skipped,
    });
    for name in names.names.iter().filter(|n| config.shard.owns(n)) {
        let n = people.get(name).map_or(0, Vec::len);
        r1.people.insert(
            name.clone(),
            PersonStep {
                images_in: 0,
                images_out: n,
                kept: n > 0,
                detail: Value::Null,
            },
        );
    }
    let mut r2 = StepRecord::new(2, settings);
    for (name, e) in &people {
        let aliases = r.alias_per_name.get(name).copied().unwrap_or(0);
        r2.people.insert(
            name.clone(),
            pass(e.len(), json!({"alias_matches": aliases})),
        );
    }
    Ok((
        Outcome {
            record: r1,
            people: people.clone(),
        },
        Outcome { record: r2, people },
    ))
}

/// Step 4: the missing generated images drawn (or, with `generated`, checked present).
pub(super) fn generate_step<B: Backend>(
    sources: &CurateSources,
    config: &CurateConfig,
    people: &People,
    dir: &Path,
    device: &B::Device,
    progress: &mut dyn FnMut(u8, usize, usize),
) -> Result<Outcome> {
    let names: Vec<String> = people.keys().cloned().collect();
    check_person_dirs(&names)?;
    let g = &config.generate;
    if sources.generated.is_some() {
        let mut missing = Vec::new();
        for n in &names {
            if generated_images(dir, n)?.is_empty() {
                missing.push(format!("{n:?} ({})", person_dir(n)));
            }
        }
        if !missing.is_empty() {
            return Err(ModelError::config(
                dir,
                format!(
                    "no generated images for {} people: {}",
                    missing.len(),
                    missing.join(", ")
                ),
            ));
        }
    } else {
        let todo = names.iter().any(|n| {
            g.seeds()
                .any(|s| !dir.join(person_dir(n)).join(format!("{s}.png")).exists())
        });
        if todo {
            let source = SdxlSource::from_path(&sources.model, sources.config.as_deref())?;
            let pipe = SdxlPipeline::<B>::load(&source, device)?;
            generate_images(&pipe, &names, g, dir, &mut |d, t| progress(4, d, t))?;
        }
    }
    let settings = match &sources.generated {
        Some(_) => json!({"reused": true}),
        None => json!({"reused": false, "generate": g}),
    };
    let mut r = StepRecord::new(4, settings);
    for (name, e) in people {
        let n = generated_images(dir, name)?.len();
        r.people
            .insert(name.clone(), pass(e.len(), json!({"generated": n})));
    }
    Ok(Outcome {
        record: r,
        people: people.clone(),
    })
}

/// Step 5: each name's generated faces embedded and judged; the kept names' faces saved
/// to `faces_file` (one `[n, 512]` tensor per person, named by [`person_dir`]).
pub(super) fn consistency_step<B: Backend>(
    scorer: &IdentityScorer<B>,
    config: &CurateConfig,
    people: People,
    dir: &Path,
    faces_file: &Path,
) -> Result<Outcome> {
    let thr = config.gen_consistency;
    let mut r = StepRecord::new(
        5,
        json!({"gen_consistency": thr, "min_faces": MIN_GENERATED_FACES}),
    );
    let mut kept = People::new();
    let mut saved: BTreeMap<String, Vec<Vec<f32>>> = BTreeMap::new();
    for (name, entries) in people {
        let files = generated_images(dir, &name)?;
        let mut faces = Vec::new();
        for f in &files {
            match load_rgb(f).and_then(|img| scorer.embed(&img)) {
                Ok(e) => faces.extend(e.embedding),
                Err(e) => log::warn!("{name:?}: {} counts as no face: {e}", f.display()),
            }
        }
        let c = consistency(files.len(), &faces, thr);
        let detail =
            json!({"generated": c.images, "faces": c.faces, "mean_pairwise": c.mean_pairwise});
        if c.kept {
            saved.insert(person_dir(&name), faces);
            r.people.insert(name.clone(), pass(entries.len(), detail));
            kept.insert(name, entries);
        } else {
            let reason = match c.mean_pairwise {
                Some(m) if c.faces >= MIN_GENERATED_FACES => {
                    format!("its generated faces disagree (mean pairwise cosine {m:.4} < {thr})")
                }
                _ => format!(
                    "{} of its {} generated images show a face (fewer than {MIN_GENERATED_FACES})",
                    c.faces, c.images
                ),
            };
            dropped_person(&name, &entries, &reason, detail, &mut r);
        }
    }
    write_faces(faces_file, &saved)?;
    Ok(Outcome {
        record: r,
        people: kept,
    })
}

/// Writes generated face embeddings, one `[n, d]` F32 tensor per person folder name.
///
/// # Errors
/// I/O.
pub fn write_faces(path: &Path, faces: &BTreeMap<String, Vec<Vec<f32>>>) -> Result<()> {
    let tensors: Vec<(&str, Vec<usize>, Vec<u8>)> = faces
        .iter()
        .map(|(n, f)| {
            let dim = f.first().map_or(0, Vec::len);
            let bytes = f.iter().flatten().flat_map(|v| v.to_le_bytes()).collect();
            (n.as_str(), vec![f.len(), dim], bytes)
        })
        .collect();
    write_safetensors(
        path,
        tensors
            .into_iter()
            .map(|(n, s, b)| (n, safetensors::Dtype::F32, s, b))
            .collect(),
        None,
    )
}

/// The generated faces [`consistency_step`] saved, by [`person_dir`].
///
/// # Errors
/// A missing or malformed file.
pub fn read_faces(path: &Path) -> Result<BTreeMap<String, Vec<Vec<f32>>>> {
    let bytes = std::fs::read(path).map_err(|e| ModelError::io(path, e))?;
    let st = safetensors::SafeTensors::deserialize(&bytes)
        .map_err(|e| ModelError::config(path, e.to_string()))?;
    let mut out = BTreeMap::new();
    for (name, view) in st.tensors() {
        let shape = view.shape();
        if view.dtype() != safetensors::Dtype::F32 || shape.len() != 2 {
            return Err(ModelError::config(
                path,
                format!("{name}: expected F32 [n, d]"),
            ));
        }
        let values: Vec<f32> = view
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        out.insert(
            name.to_string(),
            values
                .chunks(shape[1].max(1))
                .map(<[f32]>::to_vec)
                .collect(),
        );
    }
    Ok(out)
}

/// Step 6: [`deduplicate`] per person with the CLIP_L tower.
pub(super) fn dedup_step<B: Backend>(
    tower: &ClipVisionTower<B>,
    config: &CurateConfig,
    people: People,
    out: &Path,
) -> Result<Outcome> {
    let mut flat = Vec::new();
    let mut group_of = Vec::new();
    let names: Vec<String> = people.keys().cloned().collect();
    for (g, (name, entries)) in people.iter().enumerate() {
        for e in entries {
            flat.push(ManifestEntry {
                line: flat.len() + 1,
                image: e.image.clone(),
                path: entry_path(out, e),
                name: name.clone(),
                caption: e.caption.clone(),
            });
            group_of.push(g);
        }
    }
    let d = deduplicate(&flat, &group_of, config.dedup, Some(tower))?;
    let mut r = StepRecord::new(6, json!({"dedup": config.dedup, "tower": "CLIP_L"}));
    for (i, reason) in d.dropped {
        r.dropped.push(DroppedImage {
            name: flat[i].name.clone(),
            image: flat[i].image.clone(),
            reason: relative_to(out, &reason),
        });
    }
    let mut kept: People = names.iter().map(|n| (n.clone(), Vec::new())).collect();
    for i in d.kept {
        kept.get_mut(&flat[i].name)
            .expect("a person of the manifest")
            .push(Entry {
                image: flat[i].image.clone(),
                caption: flat[i].caption.clone(),
            });
    }
    for (name, entries) in &people {
        let n = kept[name].len();
        r.people.insert(
            name.clone(),
            PersonStep {
                images_in: entries.len(),
                images_out: n,
                kept: n > 0,
                detail: Value::Null,
            },
        );
    }
    kept.retain(|_, e| !e.is_empty());
    Ok(Outcome {
        record: r,
        people: kept,
    })
}

/// Step 7: each real image kept when its largest face matches the person's generated
/// faces ([`match_real`]).
pub(super) fn match_step<B: Backend>(
    scorer: &IdentityScorer<B>,
    config: &CurateConfig,
    people: People,
    out: &Path,
    faces_file: &Path,
    progress: &mut dyn FnMut(u8, usize, usize),
) -> Result<Outcome> {
    let generated = read_faces(faces_file)?;
    let thr = config.real_match;
    let mut r = StepRecord::new(7, json!({"real_match": thr}));
    let total = count(&people);
    let mut done = 0;
    let mut kept = People::new();
    for (name, entries) in people {
        let gen_faces = generated.get(&person_dir(&name)).ok_or_else(|| {
            ModelError::config(faces_file, format!("no generated faces of {name:?}"))
        })?;
        let mut mine = Vec::new();
        for e in &entries {
            done += 1;
            let reason = match load_rgb(&entry_path(out, e)) {
                Err(err) => Some(relative_to(out, &format!("unreadable: {err}"))),
                Ok(img) => match all_faces(scorer, &img) {
                    Ok(faces) => match_real(&faces, gen_faces, thr).reason,
                    Err(err) => Some(relative_to(out, &format!("faces not usable: {err}"))),
                },
            };
            match reason {
                Some(reason) => r.dropped.push(DroppedImage {
                    name: name.clone(),
                    image: e.image.clone(),
                    reason,
                }),
                None => mine.push(e.clone()),
            }
            progress(7, done, total);
        }
        r.people.insert(
            name.clone(),
            PersonStep {
                images_in: entries.len(),
                images_out: mine.len(),
                kept: !mine.is_empty(),
                detail: Value::Null,
            },
        );
        if !mine.is_empty() {
            kept.insert(name, mine);
        }
    }
    Ok(Outcome {
        record: r,
        people: kept,
    })
}

/// Step 8: people with fewer than `min_images` images dropped.
pub(super) fn quantity_step(config: &CurateConfig, people: People) -> Outcome {
    let min = config.min_images;
    let mut r = StepRecord::new(8, json!({"min_images": min}));
    let mut kept = People::new();
    for (name, entries) in people {
        if !enough_images(entries.len(), min) {
            let reason = format!("only {} images (fewer than {min})", entries.len());
            dropped_person(&name, &entries, &reason, Value::Null, &mut r);
        } else {
            r.people
                .insert(name.clone(), pass(entries.len(), Value::Null));
            kept.insert(name, entries);
        }
    }
    Outcome {
        record: r,
        people: kept,
    }
}
