//! Steps 1 and 2 as one pass over the input: each record's caption searched for the listed
//! people ([`super::names`]), aliases merged into the person's name; the records naming
//! exactly one person (or several, with `allow_multi`: one entry each) become a manifest
//! that `dataset build` reads; the rest are counted and listed.
//!
//! ```text
//! OUT/manifest.jsonl   {"image": "images/<key>.<ext>" or the input's path, "name", "caption"} per entry
//! OUT/images/          the images of kept tar records
//! OUT/extract.json     what went in, what came out, what was dropped and why
//! ```
//! Everything is written under temporary names and renamed at the end: an interrupted run
//! leaves no manifest.
use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;
use serde_json::json;

use super::captions::{CaptionRecord, ImageSource, Skipped, read_records};
use super::names::NameList;
use super::shard::ShardSpec;
use crate::{ModelError, Result};

/// What [`extract_names`] did.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ExtractReport {
    /// Records read (captioned images).
    pub records: usize,
    /// Records kept (naming one person, or several with `allow_multi`), counting only
    /// those naming a person of the shard.
    pub kept: usize,
    /// Manifest entries written (a record naming several people counts once per person).
    pub entries: usize,
    /// Records whose caption names nobody listed.
    pub no_name: usize,
    /// Records whose caption names several people (dropped without `allow_multi`).
    pub several_names: usize,
    /// Entries found through an alias (step 2 merged them).
    pub alias_matches: usize,
    /// Entries per person, by name.
    pub per_name: BTreeMap<String, usize>,
    /// Entries found through an alias, per person.
    pub alias_per_name: BTreeMap<String, usize>,
    /// Listed people no caption names.
    pub never_found: Vec<String>,
    /// Input that is not a usable record.
    pub skipped: Vec<Skipped>,
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> ModelError + '_ {
    move |e| ModelError::io(path, e)
}

/// Runs steps 1 and 2 on `input` (see [`read_records`]) with the people of `names_file`
/// ([`NameList::read`]), writing `out` (see the module docs). Only people `shard` owns get
/// entries (and images); whether a caption names several people is decided on the whole
/// list, so every shard drops the same records.
///
/// # Errors
/// A bad names file or input (named); `out` already holding a manifest; I/O.
pub fn extract_names(
    input: &Path,
    names_file: &Path,
    out: &Path,
    allow_multi: bool,
    shard: ShardSpec,
) -> Result<ExtractReport> {
    let names = NameList::read(names_file)?;
    if out.join("manifest.jsonl").exists() {
        return Err(ModelError::InvalidInput(format!(
            "{} already holds a manifest.jsonl: choose another folder",
            out.display()
        )));
    }
    std::fs::create_dir_all(out).map_err(io(out))?;
    let images_tmp = out.join("images.partial");
    let _ = std::fs::remove_dir_all(&images_tmp);
    let mut manifest = String::new();
    let mut report = ExtractReport {
        records: 0,
        kept: 0,
        entries: 0,
        no_name: 0,
        several_names: 0,
        alias_matches: 0,
        per_name: BTreeMap::new(),
        alias_per_name: BTreeMap::new(),
        never_found: Vec::new(),
        skipped: Vec::new(),
    };
    let mut wrote_images = false;
    let mut each = |r: CaptionRecord| -> Result<()> {
        report.records += 1;
        let found = names.find(&r.caption);
        if found.is_empty() {
            report.no_name += 1;
            return Ok(());
        }
        if found.len() > 1 {
            report.several_names += 1;
            if !allow_multi {
                return Ok(());
            }
        }
        let found: Vec<_> = found
            .into_iter()
            .filter(|f| shard.owns(&names.names[f.person]))
            .collect();
        if found.is_empty() {
            return Ok(());
        }
        report.kept += 1;
        let image = match r.image {
            ImageSource::File(p) => p.to_string_lossy().into_owned(),
            ImageSource::Member { ext, bytes } => {
                if !wrote_images {
                    std::fs::create_dir_all(&images_tmp).map_err(io(&images_tmp))?;
                    wrote_images = true;
                }
                let file = format!("{}.{ext}", r.key);
                let p = images_tmp.join(&file);
                std::fs::write(&p, bytes).map_err(io(&p))?;
                format!("images/{file}")
            }
        };
        for f in found {
            let name = &names.names[f.person];
            report.entries += 1;
            report.alias_matches += usize::from(f.alias);
            if f.alias {
                *report.alias_per_name.entry(name.clone()).or_default() += 1;
            }
            *report.per_name.entry(name.clone()).or_default() += 1;
            manifest
                .push_str(&json!({"image": image, "name": name, "caption": r.caption}).to_string());
            manifest.push('\n');
        }
        Ok(())
    };
    let skipped = read_records(input, &mut each)?;
    report.skipped = skipped;
    report.never_found = names
        .names
        .iter()
        .filter(|n| shard.owns(n) && !report.per_name.contains_key(*n))
        .cloned()
        .collect();
    if wrote_images {
        let images = out.join("images");
        let _ = std::fs::remove_dir_all(&images);
        std::fs::rename(&images_tmp, &images).map_err(io(&images_tmp))?;
    }
    let summary = json!({
        "step": "extract names (1) and merge aliases (2)",
        "input": input.to_string_lossy(),
        "names_file": names_file.to_string_lossy(),
        "people_listed": names.names.len(),
        "allow_multi": allow_multi,
        "shard": shard.to_string(),
        "report": report,
    });
    magicnaming_core::write_atomic(
        &out.join("extract.json"),
        serde_json::to_string_pretty(&summary)
            .expect("serialises")
            .as_bytes(),
    )?;
    magicnaming_core::write_atomic(&out.join("manifest.jsonl"), manifest.as_bytes())?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_with(path: &Path, members: &[(&str, &[u8])]) {
        let mut b = tar::Builder::new(std::fs::File::create(path).unwrap());
        for (name, data) in members {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            b.append_data(&mut h, name, *data).unwrap();
        }
        b.finish().unwrap();
    }

    #[test]
    fn webdataset_shards_to_a_manifest() {
        let dir = tempfile::tempdir().unwrap();
        let shards = dir.path().join("shards");
        std::fs::create_dir_all(&shards).unwrap();
        tar_with(
            &shards.join("00000.tar"),
            &[
                ("000.jpg", b"jpeg-a"),
                ("000.txt", b"Zoe Kravitz at the Met Gala"),
                ("000.json", b"{}"),
                ("001.jpg", b"jpeg-b"),
                ("001.txt", b"a cat"),
                ("002.txt", b"Zoe Kravitz, no image"),
                ("003.png", b"png-c"),
            ],
        );
        tar_with(
            &shards.join("00001.tar"),
            &[
                ("000.webp", b"webp-d"),
                ("000.txt", "ZOË KRAVITZ and Bob Odenkirk".as_bytes()),
                ("001.jpg", b"jpeg-e"),
                ("001.txt", b"Saul Goodman in court"),
            ],
        );
        let names = dir.path().join("names.txt");
        std::fs::write(
            &names,
            "Zoë Kravitz\tZoe Kravitz\nBob Odenkirk\tSaul Goodman\nNobody Here\n",
        )
        .unwrap();
        let out = dir.path().join("out");
        let r = extract_names(&shards, &names, &out, false, ShardSpec::WHOLE).unwrap();
        assert_eq!((r.records, r.kept, r.entries), (4, 2, 2));
        // "Zoe Kravitz" folds to the name's own words; "Saul Goodman" is an alias.
        assert_eq!((r.no_name, r.several_names, r.alias_matches), (1, 1, 1));
        assert_eq!(r.never_found, ["Nobody Here"]);
        let reasons: Vec<_> = r
            .skipped
            .iter()
            .map(|s| (s.source.as_str(), s.reason.as_str()))
            .collect();
        assert_eq!(
            reasons,
            [
                ("00000.tar:002", "no image member"),
                ("00000.tar:003", "no caption member (.txt)")
            ]
        );
        let manifest = std::fs::read_to_string(out.join("manifest.jsonl")).unwrap();
        let lines: Vec<serde_json::Value> = manifest
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines[0]["image"], "images/00000_000.jpg");
        assert_eq!(lines[0]["name"], "Zoë Kravitz");
        assert_eq!(lines[1]["name"], "Bob Odenkirk");
        assert_eq!(
            std::fs::read(out.join("images/00001_001.jpg")).unwrap(),
            b"jpeg-e"
        );
        assert!(!out.join("images.partial").exists());
        // The manifest reads as `dataset build` reads it.
        let m = crate::train::manifest::read_manifest(&out.join("manifest.jsonl")).unwrap();
        assert_eq!(m.entries.len(), 2);
        assert_eq!(
            m.entries[1].caption.as_deref(),
            Some("Saul Goodman in court")
        );
        // A second run into the same folder is refused; with several names allowed, the
        // two-person caption gives one entry each.
        assert!(extract_names(&shards, &names, &out, false, ShardSpec::WHOLE).is_err());
        let r = extract_names(
            &shards,
            &names,
            &dir.path().join("multi"),
            true,
            ShardSpec::WHOLE,
        )
        .unwrap();
        assert_eq!((r.kept, r.entries), (3, 4));
    }
}
