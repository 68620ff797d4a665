//! What each curation step did, in one shape for all eight ([`StepRecord`], written as
//! `OUT/steps/<n>-<step>.json`), and the funnel `dataset report` prints from them.
//!
//! A record keeps per-person results in a map sorted by name and every dropped image in
//! (name, image) order, so the records of shards that split the people between them merge
//! ([`merge_records`]) into exactly the record of one run over everyone.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{ModelError, Result};

/// The steps, numbered as in `docs/METHOD.md`.
pub const STEPS: [(u8, &str); 8] = [
    (1, "extract-names"),
    (2, "merge-aliases"),
    (3, "text-code"),
    (4, "generate"),
    (5, "generated-consistency"),
    (6, "deduplicate"),
    (7, "real-vs-generated"),
    (8, "quantity"),
];

/// One person's passage through a step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PersonStep {
    /// Real images the person had going in.
    pub images_in: usize,
    /// Real images left (0 when the person is dropped).
    pub images_out: usize,
    /// Whether the person stays.
    pub kept: bool,
    /// Step-specific numbers (generated faces, consistency, ...).
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub detail: Value,
}

/// One image dropped, and why.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct DroppedImage {
    /// The person.
    pub name: String,
    /// The image, as the manifest names it.
    pub image: String,
    /// Why.
    pub reason: String,
}

/// What one step did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    /// Its number, 1 to 8.
    pub step: u8,
    /// Its name ([`STEPS`]).
    pub title: String,
    /// Thresholds and settings it ran with.
    pub settings: Value,
    /// Counts over the whole input, equal in every shard (records read at step 1, ...).
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub input_wide: Value,
    /// Per person, by name.
    pub people: BTreeMap<String, PersonStep>,
    /// Every image dropped, sorted.
    pub dropped: Vec<DroppedImage>,
}

impl StepRecord {
    /// An empty record of step `step`.
    pub fn new(step: u8, settings: Value) -> Self {
        Self {
            step,
            title: STEPS[usize::from(step - 1)].1.into(),
            settings,
            input_wide: Value::Null,
            people: BTreeMap::new(),
            dropped: Vec::new(),
        }
    }

    /// The file of step `step` under the curation folder `out`.
    pub fn path(out: &Path, step: u8) -> PathBuf {
        out.join("steps")
            .join(format!("{step}-{}.json", STEPS[usize::from(step - 1)].1))
    }

    /// Writes the record (dropped images sorted) atomically.
    ///
    /// # Errors
    /// I/O.
    pub fn write(mut self, out: &Path) -> Result<Self> {
        self.dropped.sort();
        let path = Self::path(out, self.step);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| ModelError::io(dir, e))?;
        }
        let text = serde_json::to_string_pretty(&self).expect("serialises") + "\n";
        magicnaming_core::write_atomic(&path, text.as_bytes())?;
        Ok(self)
    }

    /// Reads the record of step `step` under `out`.
    ///
    /// # Errors
    /// A missing or malformed file (named).
    pub fn read(out: &Path, step: u8) -> Result<Self> {
        let path = Self::path(out, step);
        let text = std::fs::read_to_string(&path).map_err(|e| ModelError::io(&path, e))?;
        let r: Self =
            serde_json::from_str(&text).map_err(|e| ModelError::config(&path, e.to_string()))?;
        if r.step != step {
            return Err(ModelError::config(
                &path,
                format!("holds step {}, not {step}", r.step),
            ));
        }
        Ok(r)
    }
}

/// Records of one step from shards that split the people: people joined (a person in two
/// shards is an error), dropped images joined and sorted; settings and input-wide counts
/// must agree.
///
/// # Errors
/// No records, records of different steps or settings, different input-wide counts, a
/// person in two shards.
pub fn merge_records(records: Vec<(PathBuf, StepRecord)>) -> Result<StepRecord> {
    let mut it = records.into_iter();
    let (first_path, mut merged) = it
        .next()
        .ok_or_else(|| ModelError::InvalidInput("no shards to merge".into()))?;
    for (path, r) in it {
        let differs = |what: &str| {
            ModelError::InvalidInput(format!(
                "step {}: {} and {} differ in {what}: they are not shards of one curation",
                r.step,
                first_path.display(),
                path.display()
            ))
        };
        if r.step != merged.step {
            return Err(differs("step"));
        }
        if r.settings != merged.settings {
            return Err(differs("settings"));
        }
        if r.input_wide != merged.input_wide {
            return Err(differs("input-wide counts"));
        }
        for (name, p) in r.people {
            if merged.people.insert(name.clone(), p).is_some() {
                return Err(ModelError::InvalidInput(format!(
                    "step {}: {name:?} is in {} and in {}: shards must split the people",
                    r.step,
                    first_path.display(),
                    path.display()
                )));
            }
        }
        merged.dropped.extend(r.dropped);
    }
    merged.dropped.sort();
    Ok(merged)
}

/// One row of the funnel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FunnelRow {
    /// Step number.
    pub step: u8,
    /// Step name.
    pub title: String,
    /// People entering.
    pub names_in: usize,
    /// People leaving.
    pub names_out: usize,
    /// Real images entering (step 1: captioned records read).
    pub images_in: usize,
    /// Real images leaving.
    pub images_out: usize,
    /// Images dropped by the step (listed in its record).
    pub images_dropped: usize,
}

/// The funnel of a curation folder: one row per step whose record exists.
///
/// # Errors
/// A malformed record.
pub fn funnel(out: &Path) -> Result<Vec<FunnelRow>> {
    let mut rows = Vec::new();
    for (step, _) in STEPS {
        if !StepRecord::path(out, step).exists() {
            continue;
        }
        let r = StepRecord::read(out, step)?;
        let records = r.input_wide.get("records").and_then(Value::as_u64);
        rows.push(FunnelRow {
            step,
            title: r.title.clone(),
            names_in: r.people.len(),
            names_out: r.people.values().filter(|p| p.kept).count(),
            images_in: match records {
                Some(n) => n as usize,
                None => r.people.values().map(|p| p.images_in).sum(),
            },
            images_out: r.people.values().map(|p| p.images_out).sum(),
            images_dropped: r.dropped.len(),
        });
    }
    Ok(rows)
}

/// The funnel as a table for people.
pub fn funnel_table(rows: &[FunnelRow]) -> String {
    let mut s = format!(
        "{:<4} {:<22} {:>9} {:>9} {:>10} {:>10}\n",
        "step", "", "names in", "names out", "images in", "images out"
    );
    for r in rows {
        s += &format!(
            "{:<4} {:<22} {:>9} {:>9} {:>10} {:>10}\n",
            r.step, r.title, r.names_in, r.names_out, r.images_in, r.images_out
        );
    }
    s
}

/// Writes `OUT/report.json` (the funnel) and returns the rows.
///
/// # Errors
/// As [`funnel`]; no step record in `out` (nothing is written then); I/O.
pub fn write_report(out: &Path) -> Result<Vec<FunnelRow>> {
    let rows = funnel(out)?;
    if rows.is_empty() {
        return Err(ModelError::InvalidInput(format!(
            "{} holds no curation step records (steps/*.json)",
            out.display()
        )));
    }
    let text = serde_json::to_string_pretty(&serde_json::json!({ "funnel": rows }))
        .expect("serialises")
        + "\n";
    magicnaming_core::write_atomic(&out.join("report.json"), text.as_bytes())?;
    Ok(rows)
}
