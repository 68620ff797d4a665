//! Building a dataset from a manifest (train::build) on the tiny fixtures: the text model
//! `tests/fixtures/text/tiny-sdxl` (names [8, 40]), the image towers
//! `tests/fixtures/vision/tower-l` (12-d) and `tower-g` (20-d), and the fixture images,
//! some of which are broken on purpose.
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use burn::tensor::Tensor;
use magicnaming_models::ModelError;
use magicnaming_models::clip::tower::ClipVisionTower;
use magicnaming_models::name_encoder::InputCrop;
use magicnaming_models::sdxl::{SdxlSource, SdxlTextEncoders};
use magicnaming_models::train::build::BUILD_STATE_FILE;
use magicnaming_models::train::{
    BuildConfig, BuildReport, BuildSources, Dataset, Split, build_dataset, clean_name, group_names,
    read_manifest, split_identities,
};

use crate::common::raw_tensors;

use crate::common::B;

/// Batched against one-image (one-name) forward passes of the same f32 operations: only
/// the blocking of the matrix products may differ, ~1 ulp of O(1) values; 1e-6 leaves
/// room for a few ulps and would catch any wrong row, token or tower.
const BATCH_TOL: f32 = 1e-6;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures")
}

fn sources(manifest: &Path) -> BuildSources {
    BuildSources {
        manifest: manifest.to_path_buf(),
        model: fixtures().join("text/tiny-sdxl"),
        config: None,
        tower_l: fixtures().join("vision/tower-l"),
        tower_g: fixtures().join("vision/tower-g"),
    }
}

/// Copies the fixture images to `dir/photos` (so that manifests can use relative paths).
fn photos(dir: &Path) {
    let to = dir.join("photos");
    std::fs::create_dir_all(&to).unwrap();
    for f in std::fs::read_dir(fixtures().join("vision/images")).unwrap() {
        let f = f.unwrap();
        std::fs::copy(f.path(), to.join(f.file_name())).unwrap();
    }
}

/// (image, name) rows: case, whitespace and Unicode-normalisation variants, names with a
/// comma and with quotes, one absolute path, five unusable images, and one person
/// ("Ghost Person", third of the people) with no usable image at all.
fn rows() -> Vec<(String, String)> {
    let abs = fixtures().join("vision/images/exif6.jpg");
    [
        ("photos/alpha.png", "Barack Obama"),
        ("photos/truncated.jpg", "Ada Lovelace"),
        ("photos/big.png", "barack  obama"),
        ("photos/gray.png", "Ada Lovelace"),
        ("photos/truncated.png", "Ghost Person"),
        ("photos/palette.gif", "Marie Curie, PhD"),
        ("photos/rgb.jpg", "Dwayne \"The Rock\" Johnson"),
        ("photos/not_an_image.png", "Dwayne \"The Rock\" Johnson"),
        (abs.to_str().unwrap(), " Barack\tObama "),
        ("photos/rgb.bmp", "marie curie, phd"),
        ("photos/tiny.png", "ghost person"),
        ("photos/missing.png", "Ghost  Person"),
        ("photos/rgb.webp", "Alan Turing"),
        ("photos/rgb16.png", "Alan Turing"),
        ("photos/gray16.png", "alan turing"),
        // NFC "Zoë Saldaña", then NFD and lower case.
        ("photos/alpha.png", "Zo\u{eb} Salda\u{f1}a"),
        ("photos/rgb.jpg", "zoe\u{308} saldan\u{303}a"),
        ("photos/big.png", "Person Seven"),
    ]
    .into_iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect()
}

const BAD: [&str; 5] = [
    "photos/truncated.jpg",
    "photos/truncated.png",
    "photos/not_an_image.png",
    "photos/tiny.png",
    "photos/missing.png",
];

fn write_jsonl(path: &Path, rows: &[(String, String)]) -> PathBuf {
    let text: String = rows
        .iter()
        .map(|(i, n)| serde_json::json!({"image": i, "name": n}).to_string() + "\n")
        .collect();
    std::fs::write(path, text).unwrap();
    path.to_path_buf()
}

/// RFC 4180: every field quoted, quotes doubled.
fn write_csv(path: &Path, rows: &[(String, String)]) -> PathBuf {
    let q = |s: &str| format!("\"{}\"", s.replace('"', "\"\""));
    let mut text = String::from("image,name\r\n");
    for (i, n) in rows {
        text += &format!("{},{}\r\n", q(i), q(n));
    }
    std::fs::write(path, text).unwrap();
    path.to_path_buf()
}

fn build(manifest: &Path, out: &Path, config: &BuildConfig) -> Result<BuildReport, ModelError> {
    build_dataset::<B>(
        &sources(manifest),
        out,
        config,
        &Default::default(),
        &mut |_, _| {},
    )
}

/// Small batches and shards, whole images (the fixture images show no faces; the face
/// crop has its own tests in `face_crop.rs`).
fn small() -> BuildConfig {
    BuildConfig {
        input_crop: InputCrop::WholeImage,
        val_fraction: 0.3,
        batch_size: 4,
        shard_rows: 4,
        ..BuildConfig::default()
    }
}

/// The `paths` metadata of every shard, in order.
fn shard_paths(ds: &Dataset) -> Vec<String> {
    ds.index
        .shards
        .iter()
        .flat_map(|s| {
            let bytes = std::fs::read(ds.dir.join(&s.file)).unwrap();
            let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
            let list = &meta.metadata().as_ref().unwrap()["paths"];
            serde_json::from_str::<Vec<String>>(list).unwrap()
        })
        .collect()
}

fn max_abs(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn host(t: Tensor<B, 2>) -> Vec<f32> {
    t.into_data().iter::<f32>().collect()
}

#[test]
fn jsonl_and_csv_build_the_same_exact_dataset() {
    let dir = tempfile::tempdir().unwrap();
    photos(dir.path());
    let jsonl = write_jsonl(&dir.path().join("people.jsonl"), &rows());
    let csv = write_csv(&dir.path().join("people.CSV"), &rows());
    let report = build(&jsonl, &dir.path().join("a"), &small()).unwrap();
    assert_eq!(report.dropped, ["Ghost Person"]);
    build(&csv, &dir.path().join("b"), &small()).unwrap();
    let (a, b) = (
        Dataset::load(dir.path().join("a")).unwrap(),
        Dataset::load(dir.path().join("b")).unwrap(),
    );
    // Same dataset from both formats, bit for bit.
    assert_eq!(a.names, b.names);
    assert_eq!(a.embeds, b.embeds);
    assert_eq!(a.identity, b.identity);
    assert_eq!(
        serde_json::to_value(&a.index.identities).unwrap(),
        serde_json::to_value(&b.index.identities).unwrap()
    );
    assert_eq!(
        serde_json::to_value(&a.index.skipped).unwrap(),
        serde_json::to_value(&b.index.skipped).unwrap()
    );

    // People: merged variants, most frequent spelling (ties: first seen), NFC.
    let people: Vec<(&str, usize)> = a
        .index
        .identities
        .iter()
        .map(|i| (i.name.as_str(), i.images))
        .collect();
    assert_eq!(
        people,
        [
            ("Barack Obama", 3),
            ("Ada Lovelace", 1),
            ("Marie Curie, PhD", 2),
            ("Dwayne \"The Rock\" Johnson", 1),
            ("Alan Turing", 3),
            ("Zo\u{eb} Salda\u{f1}a", 2),
            ("Person Seven", 1),
        ]
    );
    assert_eq!((a.index.num_tokens, a.index.token_dim), (8, 40));
    assert_eq!(a.index.embed_dims, [12, 20]);
    let val = a.identities(Split::Val).len();
    assert_eq!(val, 2, "round(7 * 0.3) people held out");

    // Skipped images: listed with a reason, the build went on.
    let skipped: BTreeSet<&str> = a
        .index
        .skipped
        .iter()
        .map(|s| s.path.to_str().unwrap())
        .collect();
    assert_eq!(skipped, BAD.into_iter().collect());
    let reason = |p: &str| {
        let s = a
            .index
            .skipped
            .iter()
            .find(|s| s.path == std::path::Path::new(p))
            .unwrap();
        s.reason.clone()
    };
    assert!(reason("photos/missing.png").contains("cannot open"));
    assert!(reason("photos/truncated.jpg").contains("truncated"));
    assert!(reason("photos/tiny.png").contains("too small"));

    // Provenance: absolute paths the encoder export can use.
    let src = &a.index.source;
    let canon = |p: PathBuf| p.canonicalize().unwrap().display().to_string();
    assert_eq!(src["tower_l"], canon(fixtures().join("vision/tower-l")));
    assert_eq!(src["tower_g"], canon(fixtures().join("vision/tower-g")));
    assert_eq!(src["model"], canon(fixtures().join("text/tiny-sdxl")));
    assert_eq!(src["manifest"], canon(jsonl.clone()));
    assert_eq!(src["seed"], 0);
    assert_eq!(src["val_fraction"], 0.3);
    assert_eq!(
        src["dropped_identities"],
        serde_json::json!(["Ghost Person"])
    );
    assert!(!dir.path().join("a/build-names.safetensors").exists());

    // Rows: the usable images in manifest order, each with its person.
    let want: Vec<(String, String)> = rows()
        .into_iter()
        .filter(|(i, _)| !BAD.contains(&i.as_str()))
        .collect();
    assert_eq!(
        shard_paths(&a),
        want.iter().map(|r| r.0.clone()).collect::<Vec<_>>()
    );
    let device = Default::default();
    let tl = ClipVisionTower::<B>::load(&fixtures().join("vision/tower-l"), &device).unwrap();
    let tg = ClipVisionTower::<B>::load(&fixtures().join("vision/tower-g"), &device).unwrap();
    let mut worst = 0f32;
    for (r, (image, name)) in want.iter().enumerate() {
        let person = &a.index.identities[a.identity[r]].name;
        assert_eq!(
            person.to_lowercase(),
            clean_name(name).to_lowercase(),
            "row {r}"
        );
        let path = dir.path().join(image);
        let mut e = host(tl.embed_image_file(&path).unwrap().image_embeds);
        e.extend(host(tg.embed_image_file(&path).unwrap().image_embeds));
        worst = worst.max(max_abs(&a.embeds[r * 32..(r + 1) * 32], &e));
    }
    eprintln!("image embeddings: max abs error {worst:e}");
    assert!(worst <= BATCH_TOL, "image embeddings differ by {worst}");

    // Names: each person's text-coding, as text_code_name makes it.
    let source = SdxlSource::from_path(fixtures().join("text/tiny-sdxl"), None).unwrap();
    let enc = SdxlTextEncoders::<B>::load(&source, &device).unwrap();
    let mut worst = 0f32;
    for (i, person) in a.index.identities.iter().enumerate() {
        let n = enc.text_code_name(&person.name, 8).unwrap();
        let want = host(n.into_tokens());
        worst = worst.max(max_abs(&a.names[i * 320..(i + 1) * 320], &want));
    }
    eprintln!("names: max abs error {worst:e}");
    assert!(worst <= BATCH_TOL, "names differ by {worst}");
    // The batched API itself, against single names.
    let batch = enc
        .text_code_names(&["Ada Lovelace", "Alan Turing"], 8)
        .unwrap();
    assert_eq!(batch.dims(), [2, 8, 40]);
    let one = host(enc.text_code_name("Alan Turing", 8).unwrap().into_tokens());
    let row: Vec<f32> = batch
        .slice([1..2, 0..8, 0..40])
        .into_data()
        .iter()
        .collect();
    assert!(max_abs(&row, &one) <= BATCH_TOL);
    assert!(enc.text_code_names(&["a", "  "], 8).is_err());
}

/// Every file of a folder but the build state: tensors, metadata and JSON, by name.
fn snapshot(dir: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for f in std::fs::read_dir(dir).unwrap() {
        let f = f.unwrap();
        let name = f.file_name().to_string_lossy().to_string();
        if name == BUILD_STATE_FILE {
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

#[test]
fn an_interrupted_build_resumes_to_the_uninterrupted_result() {
    let dir = tempfile::tempdir().unwrap();
    photos(dir.path());
    // 54 entries; shards of 8 rows, batches of 4 (a divisor: exact resume).
    let all: Vec<_> = (0..3).flat_map(|_| rows()).collect();
    let manifest = write_jsonl(&dir.path().join("m.jsonl"), &all);
    let config = BuildConfig {
        shard_rows: 8,
        ..small()
    };
    let full = dir.path().join("full");
    build(&manifest, &full, &config).unwrap();

    let cut = dir.path().join("cut");
    let stop = |n| BuildConfig {
        stop_after: Some(n),
        ..config.clone()
    };
    let r = build(&manifest, &cut, &stop(20)).unwrap();
    assert!(r.index.is_none() && r.resumed_at == 0);
    assert!(
        (20..54).contains(&r.processed),
        "stopped at {}",
        r.processed
    );
    assert!(
        !cut.join("dataset.json").exists(),
        "dataset.json comes last"
    );
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(cut.join(BUILD_STATE_FILE)).unwrap()).unwrap();
    let shards = state["shards"].as_array().unwrap().len();
    assert!(shards >= 1, "a shard was written before the stop");

    // A second partial run continues after the recorded shards.
    let mut first = None;
    let r = build_dataset::<B>(
        &sources(&manifest),
        &cut,
        &stop(12),
        &Default::default(),
        &mut |done, total| {
            first.get_or_insert((done, total));
        },
    )
    .unwrap();
    assert!(r.index.is_none());
    assert!(r.resumed_at > 0, "resumed after the first shards");
    assert_eq!(first, Some((r.resumed_at, 54)));

    let r = build(&manifest, &cut, &config).unwrap();
    assert!(r.index.is_some() && r.resumed_at > 0);
    assert_eq!(r.processed, 54);
    assert_eq!(snapshot(&cut), snapshot(&full));
    let ds = Dataset::load(&cut).unwrap();
    assert_eq!(ds.identity.len(), 39, "13 usable images, three times");
    assert_eq!(ds.index.skipped.len(), 15);

    // A damaged shard is embedded again, with everything after it.
    let second = cut.join("images-00001.safetensors");
    let bytes = std::fs::read(&second).unwrap();
    std::fs::write(&second, &bytes[..bytes.len() / 2]).unwrap();
    let r = build(&manifest, &cut, &config).unwrap();
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(cut.join(BUILD_STATE_FILE)).unwrap()).unwrap();
    assert_eq!(
        r.resumed_at as u64,
        state["shards"][0]["entries_end"].as_u64().unwrap(),
        "resumed after the last good shard"
    );
    assert_eq!(snapshot(&cut), snapshot(&full));

    // Rerun on a finished build: only the split is redone (here with another seed).
    let reseeded = BuildConfig { seed: 7, ..config };
    build(&manifest, &cut, &reseeded).unwrap();
    let again = Dataset::load(&cut).unwrap();
    assert_eq!(again.embeds, ds.embeds);
    assert_eq!(again.names, ds.names);
    assert_eq!(again.index.source["seed"], 7);
}

#[test]
fn the_split_holds_out_whole_people_deterministically() {
    let s = split_identities(20, 0.1, 0);
    assert_eq!(s.iter().filter(|&&x| x == Split::Val).count(), 2);
    assert_eq!(s, split_identities(20, 0.1, 0), "same seed, same split");
    assert_ne!(
        s,
        split_identities(20, 0.1, 1),
        "another seed, another split"
    );
    let val = |m, f| {
        split_identities(m, f, 3)
            .iter()
            .filter(|&&x| x == Split::Val)
            .count()
    };
    assert_eq!(val(2, 0.1), 1, "at least one held out");
    assert_eq!(val(1, 0.5), 0, "never everyone");
    assert_eq!(val(5, 0.99), 4, "never everyone");
    assert_eq!(val(10, 0.0), 0, "0 asks for none");

    // In a built dataset, no person has images on both sides.
    let dir = tempfile::tempdir().unwrap();
    photos(dir.path());
    let m = write_jsonl(&dir.path().join("m.jsonl"), &rows());
    build(&m, &dir.path().join("d"), &small()).unwrap();
    let ds = Dataset::load(dir.path().join("d")).unwrap();
    let people =
        |split| -> BTreeSet<usize> { ds.rows(split).iter().map(|&r| ds.identity[r]).collect() };
    assert!(people(Split::Train).is_disjoint(&people(Split::Val)));
    assert_eq!(people(Split::Val).len(), 2);
    let splits: Vec<Split> = ds.index.identities.iter().map(|i| i.split).collect();
    assert_eq!(splits, split_identities(7, 0.3, 0));
}

#[test]
fn a_folder_of_other_inputs_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    photos(dir.path());
    let m = write_jsonl(&dir.path().join("m.jsonl"), &rows());
    let out = dir.path().join("out");
    let r = build(
        &m,
        &out,
        &BuildConfig {
            stop_after: Some(8),
            ..small()
        },
    )
    .unwrap();
    assert!(r.index.is_none());

    let mut more = rows();
    more.push(("photos/rgb.jpg".into(), "Someone Else".into()));
    write_jsonl(&m, &more);
    let e = build(&m, &out, &small()).unwrap_err().to_string();
    assert!(
        e.contains(BUILD_STATE_FILE) && e.contains("manifest_hash"),
        "{e}"
    );

    write_jsonl(&m, &rows());
    let mut other = sources(&m);
    other.tower_g = fixtures().join("vision/tower-g-file/visual.safetensors");
    let e = build_dataset::<B>(&other, &out, &small(), &Default::default(), &mut |_, _| {})
        .unwrap_err()
        .to_string();
    assert!(e.contains("tower_g"), "{e}");

    let busy = dir.path().join("busy");
    std::fs::create_dir_all(&busy).unwrap();
    std::fs::write(busy.join("notes.txt"), "mine").unwrap();
    let e = build(&m, &busy, &small()).unwrap_err().to_string();
    assert!(e.contains("not empty"), "{e}");

    let mut missing = sources(&m);
    missing.tower_l = dir.path().join("no-tower");
    let e = build_dataset::<B>(
        &missing,
        &dir.path().join("x"),
        &small(),
        &Default::default(),
        &mut |_, _| {},
    )
    .unwrap_err();
    assert!(matches!(e, ModelError::MissingFile { .. }), "{e}");
    assert!(e.to_string().contains("no-tower"));
    let e = build(
        &m,
        &dir.path().join("y"),
        &BuildConfig {
            val_fraction: 1.0,
            ..small()
        },
    )
    .unwrap_err();
    assert!(e.to_string().contains("val_fraction"), "{e}");
}

fn manifest_error(name: &str, text: &str) -> (usize, String) {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join(name);
    std::fs::write(&p, text).unwrap();
    match read_manifest(&p) {
        Err(ModelError::Manifest { line, message, .. }) => (line, message),
        other => panic!("{name}: expected a manifest error, got {other:?}"),
    }
}

#[test]
fn manifests_are_parsed_and_bad_lines_named() {
    let dir = tempfile::tempdir().unwrap();
    // CSV: quoted commas, doubled quotes, a line break inside a field, extra columns,
    // columns in any order; absolute paths stay absolute.
    let p = dir.path().join("m.csv");
    std::fs::write(
        &p,
        "id,name,image\n1,\"Curie, Marie\",a.png\n2,\"Dwayne \"\"The Rock\"\"\nJohnson\",/abs/b.png\n3,Ada,c/d.jpg\n",
    )
    .unwrap();
    let m = read_manifest(&p).unwrap();
    let got: Vec<(usize, &str, PathBuf, String)> = m
        .entries
        .iter()
        .map(|e| {
            (
                e.line,
                e.image.as_str(),
                e.path.clone(),
                clean_name(&e.name),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            (2, "a.png", dir.path().join("a.png"), "Curie, Marie".into()),
            (
                3,
                "/abs/b.png",
                PathBuf::from("/abs/b.png"),
                "Dwayne \"The Rock\" Johnson".into()
            ),
            (5, "c/d.jpg", dir.path().join("c/d.jpg"), "Ada".into()),
        ]
    );

    let (line, msg) = manifest_error(
        "m.jsonl",
        "{\"image\": \"a.png\", \"name\": \"A\"}\n\n{\"image\": \"b.png\"}\n",
    );
    assert_eq!(line, 3);
    assert!(msg.contains("`name`"), "{msg}");
    let (line, msg) = manifest_error(
        "m.jsonl",
        "{\"image\": \"a.png\", \"name\": \"A\"}\n{oops\n",
    );
    assert_eq!(line, 2);
    assert!(msg.contains("JSON"), "{msg}");
    let (line, msg) = manifest_error("m.jsonl", "{\"image\": \"a.png\", \"name\": 5}\n");
    assert_eq!(line, 1);
    assert!(msg.contains("string"), "{msg}");
    let (line, msg) = manifest_error("m.jsonl", "{\"image\": \"a.png\", \"name\": \" \\t \"}\n");
    assert_eq!(line, 1);
    assert!(msg.contains("empty name"), "{msg}");
    let (line, msg) = manifest_error("m.csv", "img,person\na.png,A\n");
    assert_eq!(line, 1);
    assert!(msg.contains("`image`"), "{msg}");
    let (line, _) = manifest_error("m.csv", "image,name\na.png,A\nb.png,B,extra\n");
    assert_eq!(line, 3);
    let (line, msg) = manifest_error("m.csv", "image,name\n\"a.png\",\"A\nB\"\n,C\n");
    assert_eq!(line, 4);
    assert!(msg.contains("empty image"), "{msg}");

    let p = dir.path().join("m.txt");
    std::fs::write(&p, "image,name\n").unwrap();
    let e = read_manifest(&p).unwrap_err().to_string();
    assert!(e.contains(".jsonl") && e.contains(".csv"), "{e}");
    let p = dir.path().join("empty.jsonl");
    std::fs::write(&p, "\n").unwrap();
    assert!(
        read_manifest(&p)
            .unwrap_err()
            .to_string()
            .contains("no images")
    );

    // Name grouping, on its own.
    let g = group_names(&[
        "barack obama",
        "Barack  Obama",
        "Ada",
        " Barack Obama ",
        "ADA",
    ]);
    assert_eq!(g.names, ["Barack Obama", "Ada"]);
    assert_eq!(g.group_of, [0, 0, 1, 0, 1]);
    assert_eq!(clean_name("  Zoe\u{308}\u{a0} X "), "Zo\u{eb} X");
}
