//! `train-lora` as a user drives it: a SIGKILL mid-run and `--resume`, and bad input named
//! before any training.
use std::path::{Path, PathBuf};
use std::process::Command;

use magicnaming_models::train::synthetic::synthetic_image_dataset;

use crate::common::{bin, fixtures, kill_when, raw_tensors};

fn model() -> PathBuf {
    fixtures().join("text/tiny-sdxl")
}

fn train_lora(data: &Path, out: &Path, extra: &[&str]) -> Command {
    let mut c = bin();
    c.arg("train-lora")
        .arg("--model")
        .arg(model())
        .arg("--dataset")
        .arg(data)
        .arg("--out")
        .arg(out)
        .args([
            "--resolution",
            "32",
            "--batch",
            "2",
            "--lr",
            "1e-3",
            "--checkpoint-every",
            "10",
        ])
        .args(extra);
    if !extra.contains(&"--steps") {
        c.args(["--steps", "80"]);
    }
    c
}

fn checkpoint_step(out: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(out.join("checkpoint/state.json")).ok()?;
    serde_json::from_str::<serde_json::Value>(&text).ok()?["step"].as_u64()
}

fn run_ok(mut c: Command) -> String {
    let out = c.output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{err}");
    err
}

fn run_err(mut c: Command) -> String {
    let out = c.output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "expected a failure: {err}");
    err
}

#[test]
fn sigkill_then_resume_equals_an_uninterrupted_run() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    synthetic_image_dataset(&data, 2, 3, [2, 40], [40, 48], 3).unwrap();

    let full = dir.path().join("full");
    run_ok(train_lora(&data, &full, &[]));
    let reference = std::fs::read_to_string(full.join("metrics.jsonl")).unwrap();
    assert_eq!(reference.lines().count(), 80);

    // Kill -9 once a checkpoint at step 20 or later exists, before the end.
    let cut = dir.path().join("cut");
    kill_when(train_lora(&data, &cut, &[]), || {
        checkpoint_step(&cut).is_some_and(|s| s >= 20)
    });
    let at_kill = checkpoint_step(&cut).unwrap();
    assert!(
        at_kill < 80,
        "killed before the end (checkpoint at {at_kill})"
    );

    // Without --resume the folder is refused; with it the run finishes as if never cut.
    let e = run_err(train_lora(&data, &cut, &[]));
    assert!(e.contains("--resume"), "{e}");
    run_ok(train_lora(&data, &cut, &["--resume"]));
    let resumed = std::fs::read_to_string(cut.join("metrics.jsonl")).unwrap();
    assert_eq!(
        resumed, reference,
        "metrics after kill + resume must equal the uninterrupted run's"
    );
    assert_eq!(
        raw_tensors(&cut.join("lora.safetensors")).0,
        raw_tensors(&full.join("lora.safetensors")).0,
        "final LoRA identical"
    );
}

#[test]
fn bad_lora_training_input_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    synthetic_image_dataset(&data, 2, 2, [2, 40], [24, 20], 5).unwrap();
    let out = dir.path().join("o");

    // A target that matches nothing.
    let e = run_err(train_lora(&data, &out, &["--targets", "to_q,to_z"]));
    assert!(e.contains("\"to_z\" matches no module"), "{e}");
    assert!(!out.exists(), "nothing written");

    // Names of another width than the model's text embeddings (16 vs 40).
    let narrow = dir.path().join("narrow");
    std::fs::create_dir_all(&narrow).unwrap();
    synthetic_image_dataset(&narrow, 2, 2, [2, 16], [40, 40], 5).unwrap();
    let e = run_err(train_lora(&narrow, &out, &[]));
    assert!(e.contains("names are 16 wide"), "{e}");
    assert!(!out.join("lora.safetensors").exists(), "nothing written");

    // A dataset without images.
    let empty = dir.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    synthetic_image_dataset(&empty, 2, 0, [2, 40], [40, 40], 5).unwrap();
    let e = run_err(train_lora(&empty, &out, &[]));
    assert!(e.contains("has no images"), "{e}");

    // A missing image is named before training starts.
    let gone = data.join("images/1_1.png");
    let kept = dir.path().join("kept.png");
    std::fs::rename(&gone, &kept).unwrap();
    let e = run_err(train_lora(&data, &out, &[]));
    assert!(e.contains("1_1.png"), "{e}");
    std::fs::rename(&kept, &gone).unwrap();

    // --names predicted without an encoder.
    let e = run_err(train_lora(&data, &out, &["--names", "predicted"]));
    assert!(e.contains("--encoder"), "{e}");

    // Images smaller than --resolution (24 x 20 < 32) are upscaled with a warning.
    let e = run_ok(train_lora(&data, &out, &["--steps", "2"]));
    assert!(e.contains("upscaled"), "{e}");
    assert!(out.join("lora.safetensors").is_file());
}

/// `--names predicted`: the encoder's names from each image's embeddings (a dataset built
/// with the tiny towers, whole photos; the bundled tiny encoder, made for face crops, is
/// warned about).
#[test]
fn predicted_names_train_too() {
    let dir = tempfile::tempdir().unwrap();
    let images = fixtures().join("vision/images");
    let mut text = String::new();
    for (image, name) in [
        ("rgb.jpg", "Ada Lovelace"),
        ("gray.png", "Ada Lovelace"),
        ("rgb.webp", "Grace Hopper"),
        ("rgb.bmp", "Grace Hopper"),
    ] {
        text += &format!(
            "{}\n",
            serde_json::json!({"image": images.join(image), "name": name, "caption": "a portrait"})
        );
    }
    let manifest = dir.path().join("people.jsonl");
    std::fs::write(&manifest, text).unwrap();
    let data = dir.path().join("data");
    let mut build = bin();
    build
        .args(["dataset", "build", "--manifest"])
        .arg(&manifest)
        .arg("--model")
        .arg(model())
        .arg("--tower-l")
        .arg(fixtures().join("vision/tower-l"))
        .arg("--tower-g")
        .arg(fixtures().join("vision/tower-g"))
        .arg("--out")
        .arg(&data)
        .args(["--face", "none"]);
    run_ok(build);
    let encoder = fixtures().join("../../assets/tiny-encoder");
    let out = dir.path().join("lora");
    let enc = encoder.to_str().unwrap();
    let e = run_ok(train_lora(
        &data,
        &out,
        &["--steps", "3", "--names", "predicted", "--encoder", enc],
    ));
    assert!(e.contains("the encoder was trained on"), "{e}");
    assert!(out.join("lora.safetensors").is_file());
    // A head whose input does not fit the dataset's embeddings is named.
    let other = dir.path().join("other");
    std::fs::create_dir_all(&other).unwrap();
    synthetic_image_dataset(&other, 2, 2, [2, 40], [40, 40], 1).unwrap();
    let e = run_err(train_lora(
        &other,
        &dir.path().join("o2"),
        &["--names", "predicted", "--encoder", enc],
    ));
    assert!(e.contains("the encoder's head takes 32 values"), "{e}");
}
