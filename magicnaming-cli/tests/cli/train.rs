//! `train` / `eval` as a user drives them, including a SIGKILL mid-run and `--resume`.
use std::path::Path;
use std::process::Command;

use magicnaming_models::train::synthetic::synthetic_dataset;

use crate::common::{bin, kill_when, raw_tensors};

fn train_cmd(data: &Path, out: &Path, resume: bool) -> Command {
    let mut c = bin();
    c.arg("train")
        .arg("--dataset")
        .arg(data)
        .arg("--out")
        .arg(out);
    c.args([
        "--steps",
        "3000",
        "--eval-every",
        "50",
        "--checkpoint-every",
        "100",
        "--hidden-dims",
        "32,32",
    ]);
    if resume {
        c.arg("--resume");
    }
    c
}

/// Every tensor of a file, by name (the header's metadata order varies between runs).
fn tensors(path: &Path) -> impl PartialEq + std::fmt::Debug {
    raw_tensors(path).0
}

fn checkpoint_step(out: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(out.join("checkpoint/state.json")).ok()?;
    serde_json::from_str::<serde_json::Value>(&text).ok()?["step"].as_u64()
}

#[test]
fn sigkill_then_resume_equals_an_uninterrupted_run() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    synthetic_dataset(&data, 30, 3, 5, 3).unwrap();

    let full = dir.path().join("full");
    let out = train_cmd(&data, &full, false).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let reference = std::fs::read_to_string(full.join("metrics.jsonl")).unwrap();
    assert_eq!(reference.lines().count(), 60);

    // Kill -9 once a checkpoint past step 500 exists, well before the end.
    let cut = dir.path().join("cut");
    kill_when(train_cmd(&data, &cut, false), || {
        checkpoint_step(&cut).is_some_and(|s| s >= 500)
    });
    let at_kill = checkpoint_step(&cut).unwrap();
    assert!(
        at_kill < 3000,
        "killed before the end (checkpoint at {at_kill})"
    );

    let out = train_cmd(&data, &cut, true).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let resumed = std::fs::read_to_string(cut.join("metrics.jsonl")).unwrap();
    assert_eq!(
        resumed, reference,
        "metrics after kill + resume must equal the uninterrupted run's"
    );
    assert_eq!(
        tensors(&cut.join("head.safetensors")),
        tensors(&full.join("head.safetensors")),
        "final weights identical"
    );

    // eval prints the validation metrics of the encoder folder as JSON.
    let out = bin()
        .arg("eval")
        .arg("--encoder")
        .arg(&full)
        .arg("--dataset")
        .arg(&data)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let metrics: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let last: serde_json::Value = serde_json::from_str(reference.lines().last().unwrap()).unwrap();
    for key in ["val_loss", "val_cosine", "val_top1"] {
        let (a, b) = (metrics[key].as_f64().unwrap(), last[key].as_f64().unwrap());
        // Same weights, same data: only the f32 summation order of the batches may differ.
        assert!(
            (a - b).abs() <= 1e-6 * b.abs().max(1.0),
            "{key}: eval {a} vs training log {b}"
        );
    }
}

#[test]
fn bad_training_input_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let out = bin()
        .arg("train")
        .arg("--dataset")
        .arg(dir.path().join("none"))
        .arg("--out")
        .arg(dir.path().join("o"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(e.contains("dataset.json"), "{e}");
    let data = dir.path().join("data");
    synthetic_dataset(&data, 4, 2, 1, 1).unwrap();
    let out = bin()
        .arg("train")
        .arg("--dataset")
        .arg(&data)
        .arg("--out")
        .arg(dir.path().join("o"))
        .args(["--eval-every", "7", "--checkpoint-every", "10"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(e.contains("multiple of eval_every"), "{e}");
    let out = bin()
        .arg("train")
        .arg("--dataset")
        .arg(&data)
        .arg("--out")
        .arg(dir.path().join("o"))
        .arg("--resume")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("state.json"));
}
