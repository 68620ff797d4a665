//! `generate` as scripts drive it: --init-latents / --save-latents reproduce diffusers'
//! final latents; bad requests fail with named errors before any work, writing nothing.
use std::path::Path;

use crate::common::{bin, fixtures, read_f32, write_f32};

/// Runs `generate` on the tiny model; `extra` flags replace the defaults of the same name.
fn generate(dir: &Path, extra: &[&str]) -> std::process::Output {
    let model = fixtures().join("text/tiny-sdxl").display().to_string();
    let out = dir.join("out.png").display().to_string();
    let mut flags: Vec<(String, String)> = [
        ("--model", model.as_str()),
        ("--prompt", "a photo of a person"),
        ("--width", "64"),
        ("--height", "48"),
        ("--steps", "5"),
        ("--out", out.as_str()),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    for pair in extra.chunks(2) {
        match flags.iter_mut().find(|(k, _)| k == pair[0]) {
            Some(slot) => slot.1 = pair[1].to_string(),
            None => flags.push((pair[0].to_string(), pair[1].to_string())),
        }
    }
    let mut c = bin();
    c.arg("generate");
    for (k, v) in flags {
        c.arg(k).arg(v);
    }
    c.output().unwrap()
}

#[test]
fn init_and_save_latents_reproduce_diffusers() {
    let dir = tempfile::tempdir().unwrap();
    let reference = fixtures().join("pipeline/reference.safetensors");
    let (init, shape) = read_f32(&reference, "init_latents");
    let init_path = dir.path().join("init.safetensors");
    write_f32(&init_path, "latents", shape.clone(), &init);
    let saved = dir.path().join("final.safetensors");
    let out = generate(
        dir.path(),
        &[
            "--init-latents",
            init_path.to_str().unwrap(),
            "--save-latents",
            saved.to_str().unwrap(),
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (got, got_shape) = read_f32(&saved, "latents");
    assert_eq!(got_shape, shape);
    let (want, _) = read_f32(&reference, "final_latents.euler");
    let d = crate::common::max_abs_diff(&got, &want);
    // As the library's pipeline test: the required 1e-3 bound on O(10) latents.
    assert!(d <= 1e-3, "final latents differ by {d}");
    // The PNG is there, with its settings in text chunks.
    let png = std::fs::read(dir.path().join("out.png")).unwrap();
    assert_eq!(&png[1..4], b"PNG");
    let text = String::from_utf8_lossy(&png);
    for needle in [
        "prompt",
        "a photo of a person",
        "seed",
        "steps",
        "guidance",
        "scheduler",
        "euler",
        "precision",
        "f32",
        "model",
    ] {
        assert!(text.contains(needle), "PNG lacks {needle}");
    }
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("5/5"),
        "progress on stderr"
    );
}

#[test]
fn bad_requests_fail_by_name_and_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let cases: Vec<(Vec<String>, &str)> = vec![
        (vec!["--width".into(), "60".into()], "multiples of 8"),
        (vec!["--steps".into(), "0".into()], "--steps"),
        (vec!["--scheduler".into(), "plms".into()], "plms"),
        (
            vec![
                "--init-latents".into(),
                dir.path().join("wrong.safetensors").display().to_string(),
            ],
            "[1, 4, 6, 8]",
        ),
        (
            vec![
                "--name".into(),
                dir.path().join("narrow.safetensors").display().to_string(),
            ],
            "narrow.safetensors",
        ),
        (
            vec!["--model".into(), "/no/such/model".into()],
            "/no/such/model",
        ),
        (vec!["--precision".into(), "f8".into()], "f8"),
        // burn-ndarray has no f16: named, not silently upcast.
        (
            vec![
                "--device".into(),
                "ndarray".into(),
                "--precision".into(),
                "f16".into(),
            ],
            "ndarray",
        ),
    ];
    write_f32(
        &dir.path().join("wrong.safetensors"),
        "latents",
        vec![1, 4, 6, 8],
        &[0.0; 192],
    );
    write_f32(
        &dir.path().join("narrow.safetensors"),
        "name",
        vec![8, 12],
        &[0.5; 96],
    );
    for (extra, needle) in cases {
        let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
        let out = generate(dir.path(), &extra);
        assert!(!out.status.success(), "{extra:?} should fail");
        let e = String::from_utf8_lossy(&out.stderr);
        assert!(e.contains(needle), "{extra:?}: expected {needle:?} in {e}");
        assert!(
            !e.contains("denoising"),
            "{extra:?}: refused before any step"
        );
        assert!(!dir.path().join("out.png").exists());
    }
}
