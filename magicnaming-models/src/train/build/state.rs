//! The resume record of a build (`build-state.json`), the cache of text-coded names, and
//! the checks and rewrites of shard files.
use std::collections::HashSet;
use std::io::Read;
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::name_encoder::InputCrop;
use crate::train::dataset::write_safetensors;
use crate::{ModelError, Result};

/// The resume record in the output folder.
pub const BUILD_STATE_FILE: &str = "build-state.json";
/// Format tag of [`BUILD_STATE_FILE`].
pub const BUILD_STATE_FORMAT: &str = "magicnaming-build-state";
/// Text-coded names of every person of the manifest, kept while the build runs.
pub const NAMES_CACHE_FILE: &str = "build-names.safetensors";

/// The inputs a resumed build must share with the one it continues.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct BuildInputs {
    pub(super) manifest_hash: String,
    pub(super) entries: usize,
    pub(super) model: String,
    pub(super) config: Option<String>,
    pub(super) tower_l: String,
    pub(super) tower_g: String,
    pub(super) num_tokens: usize,
    /// Absent from states written before crops were recorded: the whole image.
    #[serde(default)]
    pub(super) input_crop: InputCrop,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct StateShard {
    pub(super) file: String,
    pub(super) count: usize,
    /// Manifest entries `..entries_end` are done once this shard exists.
    pub(super) entries_end: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct StateSkip {
    pub(super) entry: usize,
    pub(super) path: String,
    pub(super) reason: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct BuildState {
    pub(super) format: String,
    pub(super) version: u32,
    pub(super) inputs: BuildInputs,
    pub(super) shard_rows: usize,
    pub(super) names_cached: bool,
    pub(super) shards: Vec<StateShard>,
    pub(super) skipped: Vec<StateSkip>,
}

pub(super) fn save_state(out: &Path, state: &BuildState) -> Result<()> {
    let json = serde_json::to_vec_pretty(state).expect("state serialises");
    Ok(magicnaming_core::write_atomic(
        &out.join(BUILD_STATE_FILE),
        &json,
    )?)
}

/// The state of a new build, or of the one `out` holds (same inputs only).
pub(super) fn open_state(
    out: &Path,
    inputs: &BuildInputs,
    shard_rows: usize,
) -> Result<BuildState> {
    let path = out.join(BUILD_STATE_FILE);
    if path.is_file() {
        let state: BuildState = serde_json::from_value(crate::json::read_json(&path)?)
            .map_err(|e| ModelError::config(&path, e.to_string()))?;
        if state.format != BUILD_STATE_FORMAT {
            return Err(ModelError::config(&path, "not a dataset build state"));
        }
        if state.inputs != *inputs {
            let (was, now) = (json!(state.inputs), json!(inputs));
            let changed: Vec<String> = now
                .as_object()
                .expect("object")
                .iter()
                .filter(|(k, v)| was.get(k.as_str()) != Some(v))
                .map(|(k, v)| {
                    format!(
                        "{k}: {} -> {v}",
                        was.get(k.as_str()).unwrap_or(&Value::Null)
                    )
                })
                .collect();
            return Err(ModelError::config(
                &path,
                format!(
                    "{} holds a build from other inputs ({}); give an empty or new --out folder, or empty this one to start over",
                    out.display(),
                    changed.join("; ")
                ),
            ));
        }
        for entry in std::fs::read_dir(out).map_err(|e| ModelError::io(out, e))? {
            // Temporary files of an interrupted atomic write (`.NAME.tmp-PID`).
            let name = entry.map_err(|e| ModelError::io(out, e))?.file_name();
            let name = name.to_string_lossy();
            if name.starts_with('.') && name.contains(".tmp-") {
                let _ = std::fs::remove_file(out.join(name.as_ref()));
            }
        }
        log::info!(
            "{}: resuming a build ({} shards done)",
            out.display(),
            state.shards.len()
        );
        return Ok(state);
    }
    if out.exists() {
        let mut items = std::fs::read_dir(out).map_err(|e| ModelError::io(out, e))?;
        if items.next().is_some() {
            return Err(ModelError::InvalidInput(format!(
                "{}: the output folder is not empty and holds no {BUILD_STATE_FILE} (no build to resume); give an empty or new folder",
                out.display()
            )));
        }
    }
    std::fs::create_dir_all(out).map_err(|e| ModelError::io(out, e))?;
    let state = BuildState {
        format: BUILD_STATE_FORMAT.into(),
        version: 1,
        inputs: inputs.clone(),
        shard_rows,
        names_cached: false,
        shards: Vec::new(),
        skipped: Vec::new(),
    };
    save_state(out, &state)?;
    Ok(state)
}

pub(super) fn read_names_cache(
    path: &Path,
    names: &[String],
    k: usize,
) -> Result<(Vec<f32>, usize)> {
    let bytes = std::fs::read(path).map_err(|e| ModelError::io(path, e))?;
    let st = safetensors::SafeTensors::deserialize(&bytes)
        .map_err(|e| ModelError::weights(path, e.to_string()))?;
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes)
        .map_err(|e| ModelError::weights(path, e.to_string()))?;
    let listed = meta.metadata().as_ref().and_then(|m| m.get("names"));
    if listed != Some(&serde_json::to_string(names).expect("strings serialise")) {
        return Err(ModelError::weights(path, "lists other names"));
    }
    let t = st
        .tensor("names")
        .map_err(|_| ModelError::weights(path, "no tensor `names`"))?;
    match (t.dtype(), t.shape()) {
        (safetensors::Dtype::F32, &[g, kk, d]) if g == names.len() && kk == k => Ok((
            t.data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            d,
        )),
        (dt, s) => Err(ModelError::weights(
            path,
            format!(
                "`names` is {dt:?} {s:?}, expected F32 [{}, {k}, D]",
                names.len()
            ),
        )),
    }
}

/// Manifest entries of each recorded shard's rows, in order.
pub(super) fn shard_entries(state: &BuildState) -> Vec<Vec<usize>> {
    let skipped: HashSet<usize> = state.skipped.iter().map(|s| s.entry).collect();
    let mut start = 0;
    state
        .shards
        .iter()
        .map(|s| {
            let rows = (start..s.entries_end)
                .filter(|e| !skipped.contains(e))
                .collect();
            start = s.entries_end;
            rows
        })
        .collect()
}

/// Checks a shard's header (shapes, dtypes, size and `paths`) without reading its data.
fn check_shard(path: &Path, paths: &[&str], e: usize) -> std::result::Result<(), String> {
    let mut f = std::fs::File::open(path).map_err(|err| err.to_string())?;
    let size = f.metadata().map_err(|err| err.to_string())?.len();
    let mut len = [0u8; 8];
    f.read_exact(&mut len).map_err(|err| err.to_string())?;
    let hlen = u64::from_le_bytes(len);
    if hlen > size.saturating_sub(8) {
        return Err("truncated header".into());
    }
    let mut header = vec![0u8; hlen as usize];
    f.read_exact(&mut header).map_err(|err| err.to_string())?;
    let h: Value = serde_json::from_slice(&header).map_err(|err| err.to_string())?;
    let n = paths.len();
    let want = [
        ("image_embeds", "F32", vec![n, e]),
        ("identity", "I64", vec![n]),
    ];
    for (key, dtype, shape) in want {
        if h[key]["dtype"] != dtype || h[key]["shape"] != json!(shape) {
            return Err(format!("`{key}` is not {dtype} {shape:?}"));
        }
    }
    if size != 8 + hlen + (4 * n * e + 8 * n) as u64 {
        return Err("wrong file size (truncated?)".into());
    }
    let listed: Vec<String> = h["__metadata__"]["paths"]
        .as_str()
        .and_then(|s| serde_json::from_str(s).ok())
        .ok_or("no `paths` metadata")?;
    if listed != paths {
        return Err("its images are not the manifest's at this position".into());
    }
    Ok(())
}

/// Keeps the recorded shards that match the manifest (all up to the first that does not).
pub(super) fn keep_valid_shards(
    out: &Path,
    state: &mut BuildState,
    image: &[&str],
    e: usize,
) -> Result<()> {
    let rows = shard_entries(state);
    let bad = state.shards.iter().zip(&rows).position(|(s, rows)| {
        let paths: Vec<&str> = rows.iter().map(|&r| image[r]).collect();
        let check = if rows.len() == s.count {
            check_shard(&out.join(&s.file), &paths, e)
        } else {
            Err(format!(
                "{} rows recorded, {} expected",
                s.count,
                rows.len()
            ))
        };
        check
            .map_err(|why| log::warn!("{}: {why}; embedding again from here", s.file))
            .is_err()
    });
    if let Some(i) = bad {
        state.shards.truncate(i);
        let end = state.shards.last().map_or(0, |s| s.entries_end);
        state.skipped.retain(|s| s.entry < end);
        save_state(out, state)?;
    }
    Ok(())
}

/// Rewrites a shard's `identity` tensor, keeping its embeddings and metadata.
pub(super) fn rewrite_identity(path: &Path, ids: &[usize]) -> Result<()> {
    let bytes = std::fs::read(path).map_err(|e| ModelError::io(path, e))?;
    let st = safetensors::SafeTensors::deserialize(&bytes)
        .map_err(|e| ModelError::weights(path, e.to_string()))?;
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes)
        .map_err(|e| ModelError::weights(path, e.to_string()))?;
    let paths = meta
        .metadata()
        .as_ref()
        .and_then(|m| m.get("paths"))
        .cloned()
        .ok_or_else(|| ModelError::weights(path, "no `paths` metadata"))?;
    let embeds = st
        .tensor("image_embeds")
        .map_err(|_| ModelError::weights(path, "no tensor `image_embeds`"))?;
    let id_bytes = ids.iter().flat_map(|&i| (i as i64).to_le_bytes()).collect();
    write_safetensors(
        path,
        vec![
            (
                "image_embeds",
                safetensors::Dtype::F32,
                embeds.shape().to_vec(),
                embeds.data().to_vec(),
            ),
            (
                "identity",
                safetensors::Dtype::I64,
                vec![ids.len()],
                id_bytes,
            ),
        ],
        Some(("paths", paths)),
    )
}
