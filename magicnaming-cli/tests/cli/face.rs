//! The `face` commands as other tools drive them, on tests/fixtures/face/.
use std::path::{Path, PathBuf};
use std::process::Command;

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_magicnaming"));
    c.env("RUST_LOG", "warn");
    c
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/face")
}

fn run_ok(c: &mut Command) -> String {
    let out = c.output().unwrap();
    assert!(
        out.status.success(),
        "{c:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn run_err(c: &mut Command) -> String {
    let out = c.output().unwrap();
    assert!(!out.status.success(), "{c:?} should fail");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn detect_crop_embed_similarity() {
    let dir = tempfile::tempdir().unwrap();
    let group = fixtures().join("group.png");
    let json = run_ok(bin().args(["face", "detect", "--image"]).arg(&group));
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(
        (v["width"].as_u64(), v["height"].as_u64()),
        (Some(320), Some(200))
    );
    let faces = v["faces"].as_array().unwrap();
    assert_eq!(faces.len(), 3);
    let area = |f: &serde_json::Value| {
        let b: Vec<f64> = f["box"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect();
        (b[2] - b[0]) * (b[3] - b[1])
    };
    assert!(area(&faces[0]) >= area(&faces[1]) && area(&faces[1]) >= area(&faces[2]));
    assert_eq!(faces[0]["landmarks"].as_array().unwrap().len(), 5);

    let out = dir.path().join("faces.json");
    let drawn = dir.path().join("drawn.png");
    run_ok(
        bin()
            .args(["face", "detect", "--image"])
            .arg(&group)
            .arg("--out")
            .arg(&out)
            .arg("--draw")
            .arg(&drawn),
    );
    let written: serde_json::Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    assert_eq!(written, v);
    assert!(std::fs::metadata(&drawn).unwrap().len() > 0);

    let crop = dir.path().join("crop.png");
    run_ok(
        bin()
            .args(["face", "crop", "--image"])
            .arg(&group)
            .args(["--index", "1", "--out"])
            .arg(&crop),
    );
    let img = image::open(&crop).unwrap();
    assert_eq!((img.width(), img.height()), (224, 224));

    let pth = fixtures().join("iresnet_tiny.pth");
    let emb = dir.path().join("emb.safetensors");
    let astro = fixtures().join("astronaut.png");
    run_ok(
        bin()
            .args(["face", "embed", "--recognizer"])
            .arg(&pth)
            .arg("--image")
            .arg(&astro)
            .arg("--out")
            .arg(&emb),
    );
    let bytes = std::fs::read(&emb).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let t = st.tensor("embedding").unwrap();
    assert_eq!(t.shape(), &[1, 32]);
    let aligned = dir.path().join("emb_aligned.safetensors");
    run_ok(
        bin()
            .args(["face", "embed", "--aligned", "--recognizer"])
            .arg(&pth)
            .arg("--image")
            .arg(fixtures().join("align_112.png"))
            .arg("--out")
            .arg(&aligned),
    );
    // The aligned fixture is OpenCV's crop of the same face; ours is within 2 grey levels.
    let a = std::fs::read(&aligned).unwrap();
    let a = safetensors::SafeTensors::deserialize(&a).unwrap();
    let dot: f32 = t
        .data()
        .chunks_exact(4)
        .zip(a.tensor("embedding").unwrap().data().chunks_exact(4))
        .map(|(x, y)| {
            f32::from_le_bytes(x.try_into().unwrap()) * f32::from_le_bytes(y.try_into().unwrap())
        })
        .sum();
    assert!(dot > 0.99, "{dot}");

    let s = run_ok(
        bin()
            .args(["face", "similarity", "--json", "--recognizer"])
            .arg(&pth)
            .arg(&astro)
            .arg(&astro),
    );
    let s: serde_json::Value = serde_json::from_str(&s).unwrap();
    // The same face twice: 1 up to f32 rounding.
    assert!(
        (s["similarity"].as_f64().unwrap() - 1.0).abs() < 1e-5,
        "{s}"
    );
}

#[test]
fn bad_inputs_fail_by_name_and_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let grey = dir.path().join("grey.png");
    image::RgbImage::from_pixel(64, 64, image::Rgb([128, 128, 128]))
        .save(&grey)
        .unwrap();
    let out = dir.path().join("crop.png");
    let err = run_err(
        bin()
            .args(["face", "crop", "--image"])
            .arg(&grey)
            .arg("--out")
            .arg(&out),
    );
    assert!(err.contains("no face found"), "{err}");
    assert!(!out.exists());

    let tiny = dir.path().join("tiny.png");
    image::RgbImage::new(10, 10).save(&tiny).unwrap();
    let json = dir.path().join("faces.json");
    let err = run_err(
        bin()
            .args(["face", "detect", "--image"])
            .arg(&tiny)
            .arg("--out")
            .arg(&json),
    );
    assert!(err.contains("too small"), "{err}");
    assert!(!json.exists());

    let emb = dir.path().join("emb.safetensors");
    let err = run_err(
        bin()
            .args(["face", "embed", "--recognizer"])
            .arg(fixtures().join("pnet.pt"))
            .arg("--image")
            .arg(fixtures().join("astronaut.png"))
            .arg("--out")
            .arg(&emb),
    );
    assert!(err.contains("not an ArcFace IResNet"), "{err}");
    assert!(!emb.exists());
}

/// The face crop end to end: `dataset build` embeds each photo's largest face (a photo
/// without one is skipped and listed) and records the crop, `train` copies it into the
/// encoder, and `name from-image` applies it: a photo without a face fails by name and
/// writes nothing, or is skipped under `--skip-bad`; `--face none` uses the whole photo.
#[test]
fn the_face_crop_goes_from_dataset_to_encoder_to_name() {
    let dir = tempfile::tempdir().unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let no_face = root.join("tests/fixtures/vision/images/rgb.jpg");
    let astronaut = fixtures().join("astronaut.png");
    let manifest = dir.path().join("m.jsonl");
    let rows = [
        (astronaut.clone(), "Eileen Collins"),
        (fixtures().join("group.png"), "Someone Else"),
        (no_face.clone(), "Someone Else"),
    ];
    let text: String = rows
        .iter()
        .map(|(p, n)| serde_json::json!({"image": p, "name": n}).to_string() + "\n")
        .collect();
    std::fs::write(&manifest, text).unwrap();
    let data = dir.path().join("data");
    let summary = run_ok(
        bin()
            .args(["dataset", "build", "--manifest"])
            .arg(&manifest)
            .arg("--model")
            .arg(root.join("tests/fixtures/text/tiny-sdxl"))
            .arg("--tower-l")
            .arg(root.join("tests/fixtures/vision/tower-l"))
            .arg("--tower-g")
            .arg(root.join("tests/fixtures/vision/tower-g"))
            .arg("--out")
            .arg(&data)
            .args(["--val-fraction", "0"]),
    );
    let summary: serde_json::Value = serde_json::from_str(&summary).unwrap();
    assert_eq!(
        (summary["images"].as_u64(), summary["skipped"].as_u64()),
        (Some(2), Some(1))
    );
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(data.join("dataset.json")).unwrap()).unwrap();
    let crop = serde_json::json!({"type": "face", "size": 224, "min_face_size": 20.0});
    assert_eq!(index["input_crop"], crop);
    assert!(
        index["skipped"][0]["reason"]
            .as_str()
            .unwrap()
            .starts_with("no face found"),
        "{index}"
    );

    let enc = dir.path().join("enc");
    run_ok(
        bin()
            .arg("train")
            .arg("--dataset")
            .arg(&data)
            .arg("--out")
            .arg(&enc)
            .args(["--steps", "2", "--hidden-dims", "16"]),
    );
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(enc.join("config.json")).unwrap()).unwrap();
    assert_eq!(
        config["input_crop"], crop,
        "train copies the dataset's crop"
    );

    let name = |images: &[&Path], extra: &[&str], out: &Path| {
        let mut c = bin();
        c.args(["name", "from-image", "--encoder"]).arg(&enc);
        for i in images {
            c.arg("--image").arg(i);
        }
        c.args(extra).arg("--out").arg(out);
        c
    };
    let out = dir.path().join("nobody.safetensors");
    let e = run_err(&mut name(&[&no_face], &[], &out));
    assert!(e.contains("rgb.jpg") && e.contains("no face found"), "{e}");
    assert!(!out.exists(), "nothing written");
    let both = dir.path().join("both.safetensors");
    run_ok(&mut name(&[&no_face, &astronaut], &["--skip-bad"], &both));
    let alone = dir.path().join("alone.safetensors");
    run_ok(&mut name(&[&astronaut], &[], &alone));
    assert_eq!(
        crate::common::raw_tensors(&both),
        crate::common::raw_tensors(&alone),
        "the skipped photo takes no part in the name"
    );
    run_ok(&mut name(&[&no_face], &["--face", "none"], &out));
    assert!(out.exists());
}
