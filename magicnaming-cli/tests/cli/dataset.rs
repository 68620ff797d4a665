//! `dataset build` as a user drives it: a SIGKILL mid-build and a rerun that resumes to the
//! uninterrupted result, then `train` on the built dataset and the trained encoder used on
//! a photo (its folder points at the towers the dataset was embedded with).
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use magicnaming_models::name_encoder::NameEncoder;

use crate::common::{bin, fixtures, kill_when, raw_tensors};

fn build_cmd(manifest: &Path, out: &Path) -> Command {
    let mut c = bin();
    c.args(["dataset", "build", "--manifest"])
        .arg(manifest)
        .arg("--model")
        .arg(fixtures().join("text/tiny-sdxl"))
        .arg("--tower-l")
        .arg(fixtures().join("vision/tower-l"))
        .arg("--tower-g")
        .arg(fixtures().join("vision/tower-g"))
        .arg("--out")
        .arg(out)
        .args([
            "--batch",
            "4",
            "--shard-rows",
            "8",
            "--val-fraction",
            "0.25",
            // The fixture images show no faces.
            "--face",
            "none",
        ]);
    c
}

/// A manifest of `copies` x 12 photos (the fixture images, by absolute path; two of the
/// 12 are broken) of 6 people.
fn manifest(dir: &Path, copies: usize) -> PathBuf {
    let images = fixtures().join("vision/images");
    let rows = [
        ("alpha.png", "Barack Obama"),
        ("big.png", "barack obama"),
        ("gray.png", "Ada Lovelace"),
        ("truncated.jpg", "Ada Lovelace"),
        ("palette.gif", "Marie Curie, PhD"),
        ("rgb.bmp", "Marie Curie, PhD"),
        ("rgb.jpg", "Alan Turing"),
        ("not_an_image.png", "Alan Turing"),
        ("rgb.webp", "Grace Hopper"),
        ("exif6.jpg", "Grace Hopper"),
        ("rgb16.png", "Zo\u{eb} Salda\u{f1}a"),
        ("gray16.png", "ZOË SALDAÑA"),
    ];
    let mut text = String::new();
    for _ in 0..copies {
        for (image, name) in rows {
            let line = serde_json::json!({"image": images.join(image), "name": name});
            text += &format!("{line}\n");
        }
    }
    let p = dir.join("people.jsonl");
    std::fs::write(&p, text).unwrap();
    p
}

fn shards_done(out: &Path) -> usize {
    std::fs::read(out.join("build-state.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|v| v["shards"].as_array().map(Vec::len))
        .unwrap_or(0)
}

/// Every file but the build state, by name: tensors and metadata, or text.
fn snapshot(dir: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for f in std::fs::read_dir(dir).unwrap() {
        let f = f.unwrap();
        let name = f.file_name().to_string_lossy().to_string();
        if name == "build-state.json" {
            continue;
        }
        let value = if name.ends_with(".safetensors") {
            format!("{:?}", raw_tensors(&f.path()))
        } else {
            String::from_utf8(std::fs::read(f.path()).unwrap()).unwrap()
        };
        out.insert(name, value);
    }
    out
}

fn ok(out: &std::process::Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn sigkill_then_rerun_equals_an_uninterrupted_build_which_trains() {
    let dir = tempfile::tempdir().unwrap();
    let m = manifest(dir.path(), 40);

    let full = dir.path().join("full");
    let summary = ok(&build_cmd(&m, &full).output().unwrap());
    assert_eq!(summary["identities"], 6);
    assert_eq!(summary["val_identities"], 2, "round(6 * 0.25) held out");
    assert_eq!(summary["images"], 400);
    assert_eq!(summary["skipped"], 80);
    assert_eq!(summary["resumed_at"], 0);

    // Kill -9 once the first shard is on disk, well before the end.
    let cut = dir.path().join("cut");
    kill_when(build_cmd(&m, &cut), || shards_done(&cut) > 0);
    assert!(
        !cut.join("dataset.json").exists(),
        "killed before the end (dataset.json is written last)"
    );

    let summary = ok(&build_cmd(&m, &cut).output().unwrap());
    assert!(
        summary["resumed_at"].as_u64().unwrap() > 0,
        "the rerun kept the shards written before the kill: {summary}"
    );
    assert_eq!(snapshot(&cut), snapshot(&full));

    // Train on it, then use the encoder on a photo.
    let enc = dir.path().join("enc");
    let out = bin()
        .arg("train")
        .arg("--dataset")
        .arg(&full)
        .arg("--out")
        .arg(&enc)
        .args([
            "--steps",
            "20",
            "--eval-every",
            "10",
            "--checkpoint-every",
            "10",
            "--hidden-dims",
            "16,16",
        ])
        .output()
        .unwrap();
    let last = ok(&out);
    assert_eq!(last["step"], 20);
    assert!(last["val_cosine"].as_f64().is_some(), "{last}");
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(enc.join("config.json")).unwrap()).unwrap();
    let tower_l = fixtures().join("vision/tower-l").canonicalize().unwrap();
    assert_eq!(config["tower_l"], tower_l.display().to_string());
    let encoder =
        NameEncoder::<magicnaming::backend::CpuBackend>::load(&enc, &Default::default()).unwrap();
    let photo = fixtures().join("vision/images/rgb.jpg");
    let name = encoder.predict_one(photo).unwrap();
    assert_eq!((name.num_tokens(), name.dim()), (8, 40));
    let values: Vec<f32> = name.tokens().clone().into_data().iter().collect();
    assert!(values.iter().all(|v| v.is_finite()));
}

#[test]
fn build_errors_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let m = dir.path().join("people.txt");
    std::fs::write(&m, "image,name\n").unwrap();
    let out = build_cmd(&m, &dir.path().join("o")).output().unwrap();
    assert!(!out.status.success());
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(e.contains("people.txt") && e.contains(".jsonl"), "{e}");

    let m = dir.path().join("people.jsonl");
    std::fs::write(
        &m,
        "{\"image\": \"a.png\", \"name\": \"A\"}\n{\"image\": 3}\n",
    )
    .unwrap();
    let out = build_cmd(&m, &dir.path().join("o")).output().unwrap();
    assert!(!out.status.success());
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(e.contains("people.jsonl:2:"), "{e}");
}

/// `dataset extract-names` (steps 1 and 2) on a CSV of captioned images, then `dataset
/// build` on the manifest it writes: the people the captions name, with their captions.
#[test]
fn extracted_names_build_a_dataset() {
    let dir = tempfile::tempdir().unwrap();
    let images = fixtures().join("vision/images");
    let mut csv = String::from("image,caption\n");
    for (image, caption) in [
        ("rgb.jpg", "Ada Lovelace at her desk"),
        ("gray.png", "portrait of ADA LOVELACE, 1840"),
        ("rgb.webp", "the Countess of Lovelace, engraving"),
        ("rgb.bmp", "Grace Hopper and Ada Lovelace"),
        ("alpha.png", "\"Amazing Grace\" Hopper lecturing"),
        ("big.png", "a harbour at dusk"),
    ] {
        csv += &format!(
            "{},\"{}\"\n",
            images.join(image).display(),
            caption.replace('"', "\"\"")
        );
    }
    let input = dir.path().join("captions.csv");
    std::fs::write(&input, csv).unwrap();
    let names = dir.path().join("names.txt");
    std::fs::write(
        &names,
        "Ada Lovelace\tCountess of Lovelace\nGrace Hopper\tAmazing Grace\nAlan Turing\n",
    )
    .unwrap();
    let out = dir.path().join("curated");
    let run = bin()
        .args(["dataset", "extract-names", "--input"])
        .arg(&input)
        .arg("--names")
        .arg(&names)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(stdout.starts_with("6 records: 4 kept"), "{stdout}");
    assert!(String::from_utf8_lossy(&run.stderr).contains("never named: Alan Turing"));
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("extract.json")).unwrap()).unwrap();
    let r = &report["report"];
    assert_eq!(r["no_name"], 1);
    assert_eq!(r["several_names"], 1);
    assert_eq!(r["alias_matches"], 2);
    assert_eq!(r["per_name"]["Ada Lovelace"], 3);
    assert_eq!(r["per_name"]["Grace Hopper"], 1);

    let data = dir.path().join("data");
    ok(&build_cmd(&out.join("manifest.jsonl"), &data)
        .output()
        .unwrap());
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(data.join("dataset.json")).unwrap()).unwrap();
    let people: Vec<&str> = index["identities"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap())
        .collect();
    assert_eq!(people, ["Ada Lovelace", "Grace Hopper"]);
}

/// `dataset filter` (steps 6 and 8): an exact copy and a near copy (one pixel changed) of a
/// person's photo are dropped, with a tower; every pair of a person's kept images stays
/// below the threshold; a person left with too few images is dropped.
#[test]
fn filter_removes_copies_and_small_people() {
    use magicnaming_models::clip::tower::ClipVisionTower;
    let dir = tempfile::tempdir().unwrap();
    let src = fixtures().join("vision/images");
    let mut rows: Vec<(PathBuf, &str)> = Vec::new();
    for f in [
        "rgb.jpg",
        "gray.png",
        "rgb.webp",
        "rgb.bmp",
        "alpha.png",
        "big.png",
    ] {
        rows.push((src.join(f), "Ada Lovelace"));
    }
    // An exact copy under another name, and a near copy.
    let copy = dir.path().join("copy.jpg");
    std::fs::copy(src.join("rgb.jpg"), &copy).unwrap();
    rows.push((copy, "ada lovelace"));
    let mut img = image::open(src.join("gray.png")).unwrap().to_rgb8();
    img.put_pixel(0, 0, image::Rgb([255, 0, 0]));
    let near = dir.path().join("near.png");
    img.save(&near).unwrap();
    rows.push((near.clone(), "Ada Lovelace"));
    rows.push((src.join("rgb.jpg"), "Alan Turing"));
    rows.push((src.join("gray.png"), "Alan Turing"));
    let mut text = String::new();
    for (p, n) in &rows {
        text += &format!("{}\n", serde_json::json!({"image": p, "name": n}));
    }
    let manifest = dir.path().join("m.jsonl");
    std::fs::write(&manifest, text).unwrap();
    let tower_dir = fixtures().join("vision/tower-l");
    let out = dir.path().join("f");
    let threshold = 0.9999;
    let run = bin()
        .args(["--device", "ndarray", "dataset", "filter", "--manifest"])
        .arg(&manifest)
        .arg("--out")
        .arg(&out)
        .arg("--tower")
        .arg(&tower_dir)
        .args(["--dedup", &threshold.to_string(), "--min-images", "3"])
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("filter.json")).unwrap()).unwrap();
    let r = &report["report"];
    assert_eq!(r["exact_duplicates"], 1, "{r}");
    assert_eq!(r["too_few"]["Alan Turing"], 2, "{r}");
    let dropped = r["dropped"].as_array().unwrap();
    let near_reason = dropped
        .iter()
        .find(|d| d["image"].as_str() == near.to_str())
        .unwrap_or_else(|| panic!("the near copy is dropped: {r}"))["reason"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(near_reason.starts_with("near copy of"), "{near_reason}");
    // Kept images of one person: every pair below the threshold (the rule, recomputed).
    let kept: Vec<PathBuf> = std::fs::read_to_string(out.join("manifest.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            assert_eq!(v["name"], "Ada Lovelace");
            PathBuf::from(v["image"].as_str().unwrap())
        })
        .collect();
    // Ada's 8 entries less the exact copy, the near copies and anything unreadable.
    let (near, unreadable) = (
        r["near_duplicates"].as_u64().unwrap(),
        r["unreadable"].as_u64().unwrap(),
    );
    assert_eq!(kept.len() as u64, 8 - 1 - near - unreadable, "{r}");
    type N = burn::backend::NdArray<f32>;
    let tower = ClipVisionTower::<N>::load(&tower_dir, &Default::default()).unwrap();
    let unit = |p: &PathBuf| {
        let e: Vec<f32> = tower
            .embed_image_file(p)
            .unwrap()
            .image_embeds
            .into_data()
            .to_vec()
            .unwrap();
        let n = e.iter().map(|v| v * v).sum::<f32>().sqrt();
        e.into_iter().map(|v| v / n).collect::<Vec<f32>>()
    };
    let embeds: Vec<Vec<f32>> = kept.iter().map(unit).collect();
    for i in 0..embeds.len() {
        for j in 0..i {
            let cos: f32 = embeds[i].iter().zip(&embeds[j]).map(|(a, b)| a * b).sum();
            assert!(
                (cos as f64) < threshold,
                "{:?} / {:?}: {cos}",
                kept[i],
                kept[j]
            );
        }
    }
}
