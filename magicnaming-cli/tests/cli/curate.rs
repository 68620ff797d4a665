//! `dataset curate`, `dataset merge` and `dataset report` on a small LAION-like input:
//! webdataset shards of photos made from the fixture astronaut (several people, copies,
//! a photo without a face, a broken image, a group photo, a caption naming two people, a
//! member without caption), checked against the rules recomputed here step by step; shards
//! merged into exactly the single run; a run killed mid-generation resumed into exactly an
//! uninterrupted one; bad input refused by name.
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

use image::{Rgb, RgbImage};
use magicnaming_models::clip::tower::ClipVisionTower;
use magicnaming_models::eval::IdentityScorer;
use magicnaming_models::face::{load_rgb, FaceDetector, FaceRecognizer};
use magicnaming_models::train::curate::person_dir;
use serde_json::Value;

use crate::common::{bin, fixtures, kill_when};

type N = burn::backend::NdArray<f32>;

const NAMES: &str = "Ada Lovelace\tCountess of Lovelace\nAlan Turing\nMarie Curie\nGrace Hopper\n";

fn astronaut() -> RgbImage {
    image::open(fixtures().join("face/astronaut.png"))
        .unwrap()
        .to_rgb8()
}

/// The astronaut cropped by `margin`, resized back, brightened by `light`, mirrored when
/// `flip`: the same face, other pixels.
fn variant(margin: u32, light: u8, flip: bool) -> RgbImage {
    let a = astronaut();
    let s = a.width() - 2 * margin;
    let crop = image::imageops::crop_imm(&a, margin, margin, s, s).to_image();
    let mut img = image::imageops::resize(&crop, 256, 256, image::imageops::FilterType::Triangle);
    for p in img.pixels_mut() {
        for c in p.0.iter_mut() {
            *c = c.saturating_add(light);
        }
    }
    if flip {
        image::imageops::flip_horizontal_in_place(&mut img);
    }
    img
}

/// The astronaut at `scale` on a grey canvas, at `(x, y)`.
fn pasted(scale: f32, x: i64, y: i64) -> RgbImage {
    let a = astronaut();
    let side = (256.0 * scale) as u32;
    let small = image::imageops::resize(&a, side, side, image::imageops::FilterType::Triangle);
    let mut canvas = RgbImage::from_pixel(288, 288, Rgb([120, 120, 120]));
    image::imageops::overlay(&mut canvas, &small, x, y);
    canvas
}

/// No face: a smooth gradient with a little seeded texture.
fn no_face(seed: u32) -> RgbImage {
    RgbImage::from_fn(160, 160, |x, y| {
        let h = (x * 31 + y * 17 + seed * 101) % 23;
        Rgb([(x + h) as u8, (y + h) as u8, ((x + y) / 2) as u8])
    })
}

fn png(img: &RgbImage) -> Vec<u8> {
    let mut b = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut b), image::ImageFormat::Png)
        .unwrap();
    b
}

fn tar(path: &Path, members: &[(String, Vec<u8>)]) {
    let mut b = tar::Builder::new(std::fs::File::create(path).unwrap());
    for (name, data) in members {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, name, data.as_slice()).unwrap();
    }
    b.finish().unwrap();
}

/// Writes `dir/shards` (two webdataset tars), `dir/names.txt` and `dir/generated`.
fn laion_like(dir: &Path) {
    let shards = dir.join("shards");
    std::fs::create_dir_all(&shards).unwrap();
    let v0 = png(&variant(0, 0, false));
    let v1 = png(&variant(6, 10, true));
    let mut near = variant(6, 10, true);
    near.put_pixel(0, 0, Rgb([255, 0, 0]));
    let group = std::fs::read(fixtures().join("face/group.png")).unwrap();
    let mut m: Vec<(String, Vec<u8>)> = Vec::new();
    let rec = |m: &mut Vec<(String, Vec<u8>)>, key: &str, img: Vec<u8>, caption: &str| {
        m.push((format!("{key}.png"), img));
        if !caption.is_empty() {
            m.push((format!("{key}.txt"), caption.as_bytes().to_vec()));
        }
        m.push((format!("{key}.json"), b"{}".to_vec()));
    };
    rec(
        &mut m,
        "a00",
        v0.clone(),
        "Ada Lovelace at the Royal Society",
    );
    rec(&mut m, "a01", v1, "portrait of ADA LOVELACE");
    rec(
        &mut m,
        "a02",
        png(&variant(12, 20, false)),
        "the Countess of Lovelace",
    );
    rec(&mut m, "a03", v0, "Ada Lovelace, again");
    rec(&mut m, "a04", png(&near), "Ada Lovelace in 1840");
    rec(&mut m, "a05", png(&no_face(1)), "Ada Lovelace's notes");
    rec(
        &mut m,
        "a06",
        b"not an image".to_vec(),
        "Ada Lovelace (broken)",
    );
    rec(&mut m, "a07", group, "Ada Lovelace with friends");
    rec(&mut m, "a08", png(&variant(18, 5, true)), "Ada Lovelace");
    rec(&mut m, "t00", png(&variant(3, 15, false)), "Alan Turing");
    rec(
        &mut m,
        "t01",
        png(&variant(9, 25, true)),
        "Alan Turing at Bletchley",
    );
    rec(&mut m, "t02", png(&pasted(0.8, 20, 10)), "Alan Turing");
    rec(
        &mut m,
        "x00",
        png(&variant(4, 4, false)),
        "Ada Lovelace and Alan Turing",
    );
    rec(&mut m, "n00", png(&no_face(2)), "a cat on a sofa");
    rec(&mut m, "u00", png(&no_face(3)), "");
    tar(&shards.join("00000.tar"), &m);
    let mut m = Vec::new();
    for k in 0..5u32 {
        let img = pasted(0.7 + 0.05 * k as f32, (k * 7) as i64, (k * 5) as i64);
        rec(
            &mut m,
            &format!("m{k:02}"),
            png(&img),
            "Marie Curie in her laboratory",
        );
    }
    rec(&mut m, "g00", png(&variant(2, 30, false)), "Grace Hopper");
    rec(
        &mut m,
        "g01",
        png(&variant(10, 35, true)),
        "Rear Admiral Grace Hopper",
    );
    tar(&shards.join("00001.tar"), &m);
    std::fs::write(dir.join("names.txt"), NAMES).unwrap();

    // Generated faces: consistent for three people (the astronaut, varied), none for Alan.
    let generated = dir.join("generated");
    let people: [(&str, Vec<RgbImage>); 4] = [
        (
            "Ada Lovelace",
            (0..4)
                .map(|k| variant(2 * k, 3 * k as u8, k % 2 == 1))
                .collect(),
        ),
        (
            "Marie Curie",
            (0..4).map(|k| pasted(0.75, (k * 9) as i64, 12)).collect(),
        ),
        (
            "Grace Hopper",
            (0..4)
                .map(|k| variant(20 + 5 * k, 60, k % 2 == 0))
                .collect(),
        ),
        ("Alan Turing", (0..4).map(no_face).collect()),
    ];
    for (name, images) in people {
        let d = generated.join(person_dir(name));
        std::fs::create_dir_all(&d).unwrap();
        for (i, img) in images.iter().enumerate() {
            img.save(d.join(format!("{i}.png"))).unwrap();
        }
    }
}

fn curate_cmd(dir: &Path, out: &Path, extra: &[&str]) -> Command {
    curate_input(&dir.join("shards"), dir, out, extra)
}

fn curate_input(input: &Path, dir: &Path, out: &Path, extra: &[&str]) -> Command {
    let mut c = bin();
    c.args(["--device", "ndarray", "dataset", "curate", "--input"])
        .arg(input)
        .arg("--names")
        .arg(dir.join("names.txt"))
        .arg("--out")
        .arg(out)
        .arg("--model")
        .arg(fixtures().join("text/tiny-sdxl"))
        .arg("--tower-l")
        .arg(fixtures().join("vision/tower-l"))
        .arg("--tower-g")
        .arg(fixtures().join("vision/tower-g"))
        .arg("--recognizer")
        .arg(fixtures().join("face/iresnet_tiny.onnx"))
        .args(["--batch", "4", "--shard-rows", "8", "--val-fraction", "0.5"])
        .args(extra);
    c
}

fn run_ok(mut c: Command) -> String {
    let o = c.output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout).unwrap()
}

fn fail(mut c: Command) -> String {
    let o = c.output().unwrap();
    assert!(!o.status.success(), "expected a failure");
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Every file under `dir` (relative path -> bytes).
fn snapshot(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let rel = p.strip_prefix(dir).unwrap().to_string_lossy().into_owned();
                out.insert(rel, std::fs::read(&p).unwrap());
            }
        }
    }
    out
}

fn json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

fn manifest(path: &Path) -> Vec<(String, String)> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            (
                v["name"].as_str().unwrap().into(),
                v["image"].as_str().unwrap().into(),
            )
        })
        .collect()
}

fn dot(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum()
}

/// A threshold halfway between the two middle values of `v`. The tiny random recognizer
/// puts every face near cosine 1 (gaps of ~1e-5); the binary computes the same values on
/// the same backend from the same calls, so a gap far above f64 summation-order effects
/// (1e-12) is enough.
fn middle(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let i = v.len() / 2;
    assert!(v[i] - v[i - 1] > 1e-9, "values too close to split: {v:?}");
    (v[i - 1] + v[i]) / 2.0
}

/// Each person's entries after steps 1-2, as the rules say (input order; the caption
/// naming two people and the member without caption are out).
fn expected_extract() -> BTreeMap<String, Vec<String>> {
    let img = |shard: &str, k: &str| format!("steps/1-extract/images/{shard}_{k}.png");
    let mut m = BTreeMap::new();
    m.insert(
        "Ada Lovelace".to_string(),
        [
            "a00", "a01", "a02", "a03", "a04", "a05", "a06", "a07", "a08",
        ]
        .map(|k| img("00000", k))
        .to_vec(),
    );
    m.insert(
        "Alan Turing".into(),
        ["t00", "t01", "t02"].map(|k| img("00000", k)).to_vec(),
    );
    m.insert(
        "Marie Curie".into(),
        (0..5).map(|k| img("00001", &format!("m{k:02}"))).collect(),
    );
    m.insert(
        "Grace Hopper".into(),
        ["g00", "g01"].map(|k| img("00001", k)).to_vec(),
    );
    m
}

#[test]
fn curation_follows_the_rules_and_shards_merge_into_the_single_run() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    laion_like(dir);
    let extract_dir = dir.join("extracted");
    let device = Default::default();
    let scorer = IdentityScorer::<N>::new(
        FaceDetector::load(None, &device).unwrap(),
        Some(FaceRecognizer::load(&fixtures().join("face/iresnet_tiny.onnx"), &device).unwrap()),
    );
    let tower = ClipVisionTower::<N>::load(&fixtures().join("vision/tower-l"), &device).unwrap();

    // The rules, recomputed on the inputs. The real images are read from the shards'
    // bytes as extracted by `dataset extract-names` (tested on its own).
    run_ok({
        let mut c = bin();
        c.args(["dataset", "extract-names", "--input"])
            .arg(dir.join("shards"))
            .arg("--names")
            .arg(dir.join("names.txt"))
            .arg("--out")
            .arg(&extract_dir);
        c
    });
    let file = |image: &str| extract_dir.join(image.trim_start_matches("steps/1-extract/"));
    let people = expected_extract();
    // Step 5: largest face of each generated image; mean over pairs.
    let mut generated: BTreeMap<String, Vec<Vec<f32>>> = BTreeMap::new();
    for name in people.keys() {
        let d = dir.join("generated").join(person_dir(name));
        let faces: Vec<Vec<f32>> = (0..4)
            .filter_map(|i| {
                let img = load_rgb(&d.join(format!("{i}.png"))).unwrap();
                scorer.embed(&img).unwrap().embedding
            })
            .collect();
        generated.insert(name.clone(), faces);
    }
    let consistency = |f: &[Vec<f32>]| {
        let mut pairs = Vec::new();
        for i in 0..f.len() {
            for j in i + 1..f.len() {
                pairs.push(dot(&f[i], &f[j]));
            }
        }
        pairs.iter().sum::<f64>() / pairs.len() as f64
    };
    assert!(generated["Alan Turing"].is_empty(), "noise shows no face");
    let with_faces: Vec<f64> = generated
        .values()
        .filter(|f| f.len() >= 2)
        .map(|f| consistency(f))
        .collect();
    assert_eq!(with_faces.len(), 3);
    let gen_threshold = middle(with_faces);
    let after5: BTreeSet<String> = generated
        .iter()
        .filter(|(_, f)| f.len() >= 2 && consistency(f) >= gen_threshold)
        .map(|(n, _)| n.clone())
        .collect();
    assert_eq!(after5.len(), 2, "the threshold splits the three");
    // Step 6: within a person, in order: exact copies, then CLIP cosine with a kept one.
    let dedup = 0.9999;
    let mut after6: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut dropped6 = BTreeSet::new();
    for name in &after5 {
        let mut kept: Vec<(String, Vec<u8>, Vec<f32>)> = Vec::new();
        for image in &people[name] {
            let bytes = std::fs::read(file(image)).unwrap();
            let Ok(e) = tower.embed_image_file(&file(image)) else {
                dropped6.insert((name.clone(), image.clone()));
                continue;
            };
            let e: Vec<f32> = e.image_embeds.into_data().to_vec().unwrap();
            let n = e.iter().map(|v| v * v).sum::<f32>().sqrt();
            let e: Vec<f32> = e.into_iter().map(|v| v / n).collect();
            if kept.iter().any(|k| k.1 == bytes || dot(&k.2, &e) >= dedup) {
                dropped6.insert((name.clone(), image.clone()));
            } else {
                kept.push((image.clone(), bytes, e));
            }
        }
        after6.insert(name.clone(), kept.into_iter().map(|k| k.0).collect());
    }
    // Step 7: every face of a real image scored against the generated faces; the best
    // must reach the threshold and be the largest face.
    let mut best: BTreeMap<(String, String), Option<(usize, f64)>> = BTreeMap::new();
    for (name, images) in &after6 {
        for image in images {
            let img = load_rgb(&file(image)).unwrap();
            let faces = scorer.detector.detect(&img).unwrap();
            let rec = scorer.recognizer.as_ref().unwrap();
            let mut b: Option<(usize, f64)> = None;
            for (i, face) in faces.iter().enumerate() {
                let e: Vec<f32> = rec
                    .embed_face(&img, face)
                    .unwrap()
                    .into_data()
                    .to_vec()
                    .unwrap();
                let g = &generated[name];
                let s = g.iter().map(|g| dot(&e, g)).sum::<f64>() / g.len() as f64;
                if b.is_none_or(|(_, bs)| s > bs) {
                    b = Some((i, s));
                }
            }
            best.insert((name.clone(), image.clone()), b);
        }
    }
    let scores: Vec<f64> = best.values().flatten().map(|b| b.1).collect();
    let real_threshold = middle(scores);
    let mut after7: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, images) in &after6 {
        let kept: Vec<String> = images
            .iter()
            .filter(|i| {
                best[&(name.clone(), (*i).clone())]
                    .is_some_and(|(f, s)| f == 0 && s >= real_threshold)
            })
            .cloned()
            .collect();
        if !kept.is_empty() {
            after7.insert(name.clone(), kept);
        }
    }
    // Step 8: only the people with the most images stay.
    let min_images = after7.values().map(Vec::len).max().unwrap();
    let expected: Vec<(String, String)> = after7
        .iter()
        .filter(|(_, v)| v.len() >= min_images)
        .flat_map(|(n, v)| v.iter().map(|i| (n.clone(), i.clone())))
        .collect();

    // The curation.
    let settings = [
        "--generated".to_string(),
        dir.join("generated").display().to_string(),
        "--gen-consistency".into(),
        gen_threshold.to_string(),
        "--dedup".into(),
        dedup.to_string(),
        "--real-match".into(),
        real_threshold.to_string(),
        "--min-images".into(),
        min_images.to_string(),
    ];
    let settings: Vec<&str> = settings.iter().map(String::as_str).collect();
    let single = dir.join("single");
    let stdout = run_ok(curate_cmd(dir, &single, &settings));
    assert!(stdout.contains("dataset: "), "{stdout}");
    let r1 = json(&single.join("steps/1-extract-names.json"));
    assert_eq!(r1["input_wide"]["records"], 21, "{r1}");
    assert_eq!(r1["input_wide"]["no_name"], 1);
    assert_eq!(r1["input_wide"]["several_names"], 1);
    assert_eq!(r1["input_wide"]["skipped"].as_array().unwrap().len(), 1);
    let r2 = json(&single.join("steps/2-merge-aliases.json"));
    assert_eq!(r2["people"]["Ada Lovelace"]["detail"]["alias_matches"], 1);
    let got_people: BTreeMap<String, Vec<String>> =
        manifest(&single.join("steps/2-merge-aliases.jsonl"))
            .into_iter()
            .fold(BTreeMap::new(), |mut m, (n, i)| {
                m.entry(n).or_default().push(i);
                m
            });
    assert_eq!(got_people, people);
    let kept = |step: u8, title: &str| -> BTreeSet<String> {
        let r = json(&single.join(format!("steps/{step}-{title}.json")));
        r["people"]
            .as_object()
            .unwrap()
            .iter()
            .filter(|(_, p)| p["kept"] == true)
            .map(|(n, _)| n.clone())
            .collect()
    };
    assert_eq!(kept(5, "generated-consistency"), after5);
    let r6 = json(&single.join("steps/6-deduplicate.json"));
    let got6: BTreeSet<(String, String)> = r6["dropped"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["name"].as_str().unwrap().into(),
                d["image"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(got6, dropped6);
    assert!(
        dropped6.len() >= 2,
        "an exact copy, a near copy and a broken image of Ada are dropped when Ada stays"
    );
    let got7: BTreeMap<String, Vec<String>> =
        manifest(&single.join("steps/7-real-vs-generated.jsonl"))
            .into_iter()
            .fold(BTreeMap::new(), |mut m, (n, i)| {
                m.entry(n).or_default().push(i);
                m
            });
    assert_eq!(got7, after7);
    assert_eq!(manifest(&single.join("manifest.jsonl")), expected);
    let index = json(&single.join("dataset/dataset.json"));
    let built: BTreeSet<&str> = index["identities"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap())
        .collect();
    assert_eq!(built, expected.iter().map(|e| e.0.as_str()).collect());

    // The funnel, printed and written again by `dataset report`.
    let report = json(&single.join("report.json"));
    let funnel = report["funnel"].as_array().unwrap();
    assert_eq!(funnel.len(), 8);
    assert_eq!(funnel[0]["images_in"], 21);
    assert_eq!(funnel[0]["names_out"], 4);
    assert_eq!(funnel[7]["images_out"], expected.len());
    let printed = run_ok({
        let mut c = bin();
        c.args(["dataset", "report"]).arg(&single);
        c
    });
    assert!(printed.contains("real-vs-generated"), "{printed}");
    assert_eq!(json(&single.join("report.json")), report);

    // Two shards, each on its own people, merged: the single run's files.
    let mut shards = Vec::new();
    for i in 0..2 {
        let out = dir.join(format!("shard{i}"));
        let mut s = settings.clone();
        let spec = format!("{i}/2");
        s.extend(["--shard", spec.as_str()]);
        let stdout = run_ok(curate_cmd(dir, &out, &s));
        assert!(stdout.contains("no dataset built"), "{stdout}");
        let r = json(&out.join("steps/1-extract-names.json"));
        assert!(
            !r["people"].as_object().unwrap().is_empty(),
            "shard {i} has people"
        );
        shards.push(out);
    }
    let merged = dir.join("merged");
    run_ok({
        let mut c = bin();
        c.args(["--device", "ndarray", "dataset", "merge", "--out"])
            .arg(&merged)
            .arg(&shards[1])
            .arg(&shards[0]);
        c
    });
    let comparable = |d: &Path| {
        let mut s = snapshot(d);
        s.retain(|k, _| !k.starts_with("steps/1-extract/"));
        // dataset.json names the manifest it was built from, by its own path.
        let k = "dataset/dataset.json".to_string();
        let mut v: Value = serde_json::from_slice(&s[&k]).unwrap();
        v["source"]["manifest"] = Value::Null;
        s.insert(k, serde_json::to_vec(&v).unwrap());
        s
    };
    let (a, b) = (comparable(&single), comparable(&merged));
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    for (k, v) in &a {
        assert!(
            b[k] == *v,
            "{k} differs between the single run and the merge"
        );
    }
    // A merge run again (as after a stop in its build) goes on and changes nothing.
    run_ok({
        let mut c = bin();
        c.args(["--device", "ndarray", "dataset", "merge", "--out"])
            .arg(&merged)
            .arg(&shards[0])
            .arg(&shards[1]);
        c
    });
    assert!(
        comparable(&merged) == b,
        "the rerun changed the merged folder"
    );
    // The kept images were copied into the merged folder.
    for (_, image) in &expected {
        assert!(merged.join(image).is_file(), "{image}");
    }
    // A shard missing, or a shard twice, is refused by name.
    let e = fail({
        let mut c = bin();
        c.args(["dataset", "merge", "--out"])
            .arg(dir.join("m2"))
            .arg(&shards[0]);
        c
    });
    assert!(
        e.contains("one of 2 shards, but 1 folders were given"),
        "{e}"
    );
    let e = fail({
        let mut c = bin();
        c.args(["dataset", "merge", "--out"])
            .arg(dir.join("m3"))
            .arg(&shards[0])
            .arg(&shards[0]);
        c
    });
    assert!(e.contains("both shard 0/2"), "{e}");
}

#[test]
fn a_curation_killed_while_generating_resumes_to_the_uninterrupted_result() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    laion_like(dir);
    // Step 4 draws with the tiny random SDXL: 6 images of each of the 4 people.
    let extra = [
        "--gen-count",
        "6",
        "--gen-steps",
        "3",
        "--gen-size",
        "64",
        "--min-images",
        "2",
    ];
    let full = dir.join("full");
    run_ok(curate_cmd(dir, &full, &extra));
    let killed = dir.join("killed");
    // People are drawn in name order (Ada, Alan, ...): killed while drawing Alan.
    let marker = killed
        .join("steps/4-generate")
        .join(person_dir("Alan Turing"))
        .join("1.png");
    kill_when(curate_cmd(dir, &killed, &extra), || marker.exists());
    let state = json(&killed.join("curate.json"));
    assert_eq!(state["done"], serde_json::json!([1, 2, 3]), "{state}");
    run_ok(curate_cmd(dir, &killed, &extra));
    let (a, b) = (snapshot(&full), snapshot(&killed));
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    for (k, v) in &a {
        assert!(b[k] == *v, "{k} differs after the resume");
    }
    // 24 images drawn; the random model draws no face, so step 5 keeps no one.
    let r4 = json(&full.join("steps/4-generate.json"));
    let drawn: u64 = r4["people"]
        .as_object()
        .unwrap()
        .values()
        .map(|p| p["detail"]["generated"].as_u64().unwrap())
        .sum();
    assert_eq!(drawn, 24);
    let funnel = json(&full.join("report.json"))["funnel"].clone();
    assert_eq!(funnel[4]["names_out"], 0, "{funnel}");
    // The same folder with another threshold is refused, naming it.
    let mut other = extra.to_vec();
    other.extend(["--real-match", "0.1"]);
    let e = fail(curate_cmd(dir, &full, &other));
    assert!(e.contains("real_match changed"), "{e}");
}

#[test]
fn bad_curation_input_is_refused_before_any_work() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    laion_like(dir);
    let out = dir.join("out");
    for (extra, want) in [
        (vec!["--shard", "3/2"], "I must be below N"),
        (vec!["--shard", "1"], "expected I/N"),
        (
            vec!["--gen-consistency", "1.5"],
            "--gen-consistency must be a cosine",
        ),
        (vec!["--real-match=-2"], "--real-match must be a cosine"),
        (vec!["--gen-count", "1"], "--gen-count must be at least 2"),
    ] {
        let e = fail(curate_cmd(dir, &out, &extra));
        assert!(e.contains(want), "{extra:?}: {e}");
        assert!(!out.exists(), "{extra:?} wrote nothing");
    }
    for (names, want) in [
        ("", "no names"),
        (
            "Ada Lovelace\nada lovelace\n",
            "is listed twice (also on line 1)",
        ),
    ] {
        std::fs::write(dir.join("names.txt"), names).unwrap();
        let e = fail(curate_cmd(dir, &out, &[]));
        assert!(e.contains(want), "{names:?}: {e}");
        assert!(!out.exists());
    }
    std::fs::write(dir.join("names.txt"), NAMES).unwrap();
    // img2dataset's parquet without a caption column.
    let input = fixtures().join("curate/no_caption");
    let e = fail(curate_input(&input, dir, &dir.join("pq"), &[]));
    assert!(e.contains("no `caption` column"), "{e}");
    // A folder holding something else.
    let used = dir.join("used");
    std::fs::create_dir_all(&used).unwrap();
    std::fs::write(used.join("keep.txt"), "mine").unwrap();
    let e = fail(curate_cmd(dir, &used, &[]));
    assert!(e.contains("not empty"), "{e}");
    // Reused generated images that lack a person: the person is named.
    std::fs::remove_dir_all(dir.join("generated").join(person_dir("Grace Hopper"))).unwrap();
    let generated = dir.join("generated").display().to_string();
    let e = fail(curate_cmd(dir, &out, &["--generated", &generated]));
    assert!(
        e.contains("no generated images for 1 people: \"Grace Hopper\""),
        "{e}"
    );
}
