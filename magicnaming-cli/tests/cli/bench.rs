//! `magicnaming bench` on tiny random-weight models: every component is timed, and the
//! JSON report carries what tools/bench/compare.py reads.
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

use crate::common::{bin, fixtures};

/// A diffusers-style configuration folder of the tiny fixtures (no weights).
fn tiny_config(root: &Path) -> PathBuf {
    let dir = root.join("tiny-config");
    for (from, to) in [
        ("text/tiny-sdxl/unet/config.json", "unet/config.json"),
        ("text/tiny-sdxl/vae/config.json", "vae/config.json"),
        (
            "text/tiny-sdxl/text_encoder/config.json",
            "text_encoder/config.json",
        ),
        (
            "text/tiny-sdxl/text_encoder_2/config.json",
            "text_encoder_2/config.json",
        ),
        ("text/tiny-sdxl/model_index.json", "model_index.json"),
    ] {
        let dst = dir.join(to);
        std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
        std::fs::copy(fixtures().join(from), dst).unwrap();
    }
    dir
}

fn output(c: &mut Command) -> Output {
    c.output().unwrap()
}

#[test]
fn bench_times_every_component_and_writes_the_json_report() {
    let tmp = tempfile::tempdir().unwrap();
    let config = tiny_config(tmp.path());
    let json = tmp.path().join("bench.json");
    let tower_l_config = fixtures().join("vision/tower-l/config.json");
    let tower_g_folder = fixtures().join("vision/tower-g");
    let out = output(
        bin()
            .args(["bench", "--device", "cpu", "--config"])
            .arg(&config)
            .args(["--resolution", "32", "--steps", "2", "--tower-batch", "2"])
            .args(["--iters", "2", "--warmup", "0", "--tower"])
            .arg(&tower_l_config)
            .arg("--tower")
            .arg(&tower_g_folder)
            .arg("--json")
            .arg(&json),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "bench failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("median ms"), "no table on stdout: {stdout}");

    let report: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(report["schema"], "magicnaming-bench/1");
    assert_eq!(report["tool"], "magicnaming");
    assert_eq!(report["dtype"], "f32");
    for key in ["implementation", "device", "device_name", "date", "command"] {
        assert!(report[key].as_str().is_some_and(|s| !s.is_empty()), "{key}");
    }
    let s = &report["settings"];
    assert_eq!(
        (
            &s["resolution"],
            &s["steps"],
            &s["tower_batch"],
            &s["iters"],
            &s["warmup"]
        ),
        (&32.into(), &2.into(), &2.into(), &2.into(), &0.into())
    );
    assert!(report["memory"]["host_peak_rss_bytes"].as_u64().unwrap() > 0);

    let components = report["components"].as_array().unwrap();
    let names: Vec<&str> = components
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "text",
            "unet",
            "vae",
            "image",
            "tower:tower-l",
            "tower:tower-g"
        ]
    );
    for c in components {
        let samples = c["samples_ms"].as_array().unwrap();
        assert_eq!(samples.len(), 2, "{}", c["name"]);
        assert_eq!(c["iters"], 2);
        // No warm-up asked: no first-call time.
        assert!(c["first_ms"].is_null(), "{}", c["name"]);
        let (min, med, max) = (
            c["min_ms"].as_f64().unwrap(),
            c["median_ms"].as_f64().unwrap(),
            c["max_ms"].as_f64().unwrap(),
        );
        assert!(0.0 < min && min <= med && med <= max, "{c}");
        assert!(c["what"].as_str().is_some_and(|w| !w.is_empty()));
    }
    // The latents of the tiny VAE (2 downsamplings): 32 / 4.
    assert!(components[1]["what"]
        .as_str()
        .unwrap()
        .contains("latents 8x8"));
}

#[test]
fn a_time_budget_cuts_the_timed_runs_after_the_first() {
    let tmp = tempfile::tempdir().unwrap();
    let config = tiny_config(tmp.path());
    let json = tmp.path().join("bench.json");
    let out = output(
        bin()
            .args(["bench", "--config"])
            .arg(&config)
            .args(["--components", "unet,vae", "--resolution", "32"])
            .args(["--iters", "5", "--warmup", "1", "--budget-s", "0", "--json"])
            .arg(&json),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(report["settings"]["budget_s"], 0.0);
    for c in report["components"].as_array().unwrap() {
        // A zero budget is spent by the warm-up: one timed run, not five.
        assert_eq!(c["samples_ms"].as_array().unwrap().len(), 1, "{c}");
        assert!(c["first_ms"].as_f64().unwrap() > 0.0);
    }
}

#[test]
fn bench_rejects_bad_requests_before_any_work() {
    let tmp = tempfile::tempdir().unwrap();
    let config = tiny_config(tmp.path());
    let err = |args: &[&str]| {
        let out = output(bin().arg("bench").args(args));
        assert!(!out.status.success(), "{args:?} should fail");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let cfg = config.to_str().unwrap();
    assert!(err(&["--config", cfg, "--resolution", "30"]).contains("multiple of 8"));
    assert!(err(&["--config", cfg, "--iters", "0"]).contains("at least 1"));
    assert!(err(&["--config", cfg, "--budget-s=-1"]).contains("--budget-s"));
    assert!(err(&["--config", cfg, "--components", "unet,bogus"]).contains("bogus"));
    // The ndarray backend computes in f32 only.
    assert!(err(&[
        "--device",
        "ndarray",
        "--config",
        cfg,
        "--dtype",
        "f16",
        "--components",
        "text"
    ])
    .contains("--dtype"));
    // A configuration folder must hold every needed component's file.
    std::fs::remove_file(config.join("vae/config.json")).unwrap();
    assert!(err(&["--config", cfg, "--components", "vae"]).contains("vae/config.json"));
    assert!(
        err(&["--components", "towers", "--tower", "/nonexistent/tower"])
            .contains("/nonexistent/tower")
    );
    assert!(err(&["--components", "faces"]).contains("--face-image"));
}

#[test]
fn bench_faces_times_mtcnn_and_iresnet50() {
    let tmp = tempfile::tempdir().unwrap();
    let json = tmp.path().join("bench.json");
    let photo = fixtures().join("face/astronaut.png");
    let out = output(
        bin()
            .args(["bench", "--components", "faces", "--face-image"])
            .arg(&photo)
            .args([
                "--face-batch",
                "1",
                "--iters",
                "1",
                "--warmup",
                "0",
                "--json",
            ])
            .arg(&json),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let s = &report["settings"];
    assert_eq!(s["face_batch"], 1);
    assert_eq!(s["face_image"], photo.display().to_string());
    let components = report["components"].as_array().unwrap();
    let row = |name: &str| {
        components
            .iter()
            .find(|c| c["name"] == name)
            .unwrap_or_else(|| panic!("no {name} row in {components:?}"))
    };
    let what = |name: &str| row(name)["what"].as_str().unwrap().to_string();
    // The astronaut: one face, found at the photo's own size.
    assert!(what("face:detect").contains("256x256 photo"));
    assert!(what("face:detect").ends_with("; 1 faces"));
    // facenet-pytorch's pyramid for 256 px: scales 0.6 * 0.709^k while 256 * scale >= 12.
    assert!(what("face:detect:pyramid").contains("8 area resizes"));
    assert!(what("face:detect:pnet").contains("largest 154x154"));
    assert!(what("face:iresnet50").contains("batch 1 at 112x112"));
    // arcface_torch iresnet50: 43,590,848 PyTorch parameters; burn also counts the batch
    // norms' running means and variances (2 x 19,072 channels).
    assert_eq!(row("face:iresnet50")["params"], 43_590_848 + 2 * 19_072);
    for c in components {
        assert_eq!(c["samples_ms"].as_array().unwrap().len(), 1, "{c}");
        assert!(c["median_ms"].as_f64().unwrap() > 0.0, "{c}");
    }
}
