//! The CLI contracts of the text stack, driven as other tools drive them.
use std::path::PathBuf;
use std::process::Command;

use crate::common::{self, bin, read_f32, write_f32};

fn fixtures() -> PathBuf {
    common::fixtures().join("text")
}

fn run_ok(c: &mut Command) {
    let out = c.output().unwrap();
    assert!(
        out.status.success(),
        "{:?} failed: {}",
        c,
        String::from_utf8_lossy(&out.stderr)
    );
}

fn run_err(c: &mut Command) -> String {
    let out = c.output().unwrap();
    assert!(!out.status.success(), "{c:?} should fail");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Same bound as the library parity tests: f32 CPU vs PyTorch f32 on O(1) values.
const TOL: f32 = 1e-4;

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn encode_prompt_name_from_text_and_prepend_reproduce_the_reference() {
    let dir = tempfile::tempdir().unwrap();
    let model = fixtures().join("tiny-sdxl");
    let reference = fixtures().join("reference_a.safetensors");
    let out = dir.path().join("p.safetensors");
    run_ok(
        bin()
            .args(["encode-prompt", "--prompt", "a photo of a person", "--out"])
            .arg(&out)
            .arg("--model")
            .arg(&model),
    );
    let (pe, shape) = read_f32(&out, "prompt_embeds");
    assert_eq!(shape, vec![1, 77, 40]);
    assert!(max_diff(&pe, &read_f32(&reference, "prompt_embeds.0").0) <= TOL);
    let (pooled, shape) = read_f32(&out, "pooled_prompt_embeds");
    assert_eq!(shape, vec![1, 20]);
    assert!(max_diff(&pooled, &read_f32(&reference, "pooled_prompt_embeds.0").0) <= TOL);

    let name = dir.path().join("obama.safetensors");
    run_ok(
        bin()
            .args(["name", "from-text", "--text", "Barack Obama", "--out"])
            .arg(&name)
            .arg("--model")
            .arg(&model),
    );
    let (n, shape) = read_f32(&name, "name");
    assert_eq!(shape, vec![8, 40]);
    assert!(max_diff(&n, &read_f32(&reference, "name.0").0) <= TOL);

    // With --name: start token, the 8 name vectors, then the prompt's tokens 1..69.
    let named = dir.path().join("named.safetensors");
    run_ok(
        bin()
            .args(["encode-prompt", "--prompt", "a photo of a person", "--out"])
            .arg(&named)
            .arg("--model")
            .arg(&model)
            .arg("--name")
            .arg(&name),
    );
    let (np, shape) = read_f32(&named, "prompt_embeds");
    assert_eq!(shape, vec![1, 77, 40]);
    let d = 40;
    assert!(max_diff(&np[..d], &pe[..d]) <= TOL);
    assert!(max_diff(&np[d..9 * d], &n) <= TOL);
    assert!(max_diff(&np[9 * d..], &pe[d..69 * d]) <= TOL);
    // The pooled embedding is not touched by name prepending.
    assert!(max_diff(&read_f32(&named, "pooled_prompt_embeds").0, &pooled) <= TOL);
}

#[test]
fn name_mix_interpolates_and_slerps() {
    let dir = tempfile::tempdir().unwrap();
    let model = fixtures().join("tiny-sdxl");
    let (a, b) = (
        dir.path().join("a.safetensors"),
        dir.path().join("b.safetensors"),
    );
    run_ok(
        bin()
            .args(["name", "from-text", "--text", "Barack Obama", "--out"])
            .arg(&a)
            .arg("--model")
            .arg(&model),
    );
    run_ok(
        bin()
            .args(["name", "from-text", "--text", "Jet Li", "--out"])
            .arg(&b)
            .arg("--model")
            .arg(&model),
    );
    let (va, vb) = (read_f32(&a, "name").0, read_f32(&b, "name").0);
    let mid = dir.path().join("mid.safetensors");
    run_ok(
        bin()
            .arg("name")
            .arg("mix")
            .arg(&a)
            .arg(&b)
            .args(["--t", "0.25", "--out"])
            .arg(&mid),
    );
    let want: Vec<f32> = va
        .iter()
        .zip(&vb)
        .map(|(x, y)| 0.75 * x + 0.25 * y)
        .collect();
    // Linear interpolation in f32: a few ulps of O(1) values.
    assert!(max_diff(&read_f32(&mid, "name").0, &want) <= 1e-5);
    let s = dir.path().join("s.safetensors");
    run_ok(
        bin()
            .arg("name")
            .arg("mix")
            .arg(&a)
            .arg(&b)
            .args(["--t", "1.0", "--slerp", "--out"])
            .arg(&s),
    );
    assert!(
        max_diff(&read_f32(&s, "name").0, &vb) <= 1e-4,
        "slerp at t=1 is b"
    );
}

#[test]
fn bad_input_is_named_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("never.safetensors");
    let model = fixtures().join("tiny-sdxl");
    let e = run_err(
        bin()
            .args(["name", "from-text", "--text", "  ", "--model"])
            .arg(&model)
            .arg("--out")
            .arg(&out),
    );
    assert!(e.contains("empty"), "{e}");
    let e = run_err(
        bin()
            .args([
                "name",
                "from-text",
                "--text",
                "x",
                "--model",
                "/no/such/model",
                "--out",
            ])
            .arg(&out),
    );
    assert!(e.contains("/no/such/model"), "{e}");
    let e = run_err(
        bin()
            .args([
                "encode-prompt",
                "--prompt",
                "x",
                "--name",
                "/no/name.safetensors",
                "--model",
            ])
            .arg(&model)
            .arg("--out")
            .arg(&out),
    );
    assert!(e.contains("/no/name.safetensors"), "{e}");
    // A name of the wrong width for this model.
    let wrong = dir.path().join("wrong.safetensors");
    write_f32(&wrong, "name", vec![8, 3], &[0.0; 8 * 3]);
    let e = run_err(
        bin()
            .args(["encode-prompt", "--prompt", "x", "--model"])
            .arg(&model)
            .arg("--name")
            .arg(&wrong)
            .arg("--out")
            .arg(&out),
    );
    assert!(e.contains("wrong.safetensors") && e.contains("40"), "{e}");
    // A tensor of the wrong dtype in a name file.
    let f16 = dir.path().join("f16.safetensors");
    let view =
        safetensors::tensor::TensorView::new(safetensors::Dtype::F16, vec![8, 40], &[0u8; 640])
            .unwrap();
    std::fs::write(
        &f16,
        safetensors::serialize([("name", view)], None).unwrap(),
    )
    .unwrap();
    let e = run_err(
        bin()
            .arg("name")
            .arg("mix")
            .arg(&f16)
            .arg(&f16)
            .args(["--t", "0.5", "--out"])
            .arg(&out),
    );
    assert!(e.contains("F16"), "{e}");
    let e = run_err(bin().args(["--device", "tpu", "backends"]));
    assert!(e.contains("tpu"), "{e}");
    assert!(!out.exists());
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        2,
        "only the two inputs made here"
    );
}

#[test]
fn missing_backends_are_named() {
    let out = bin().arg("backends").output().unwrap();
    let compiled = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(compiled.contains("cpu"), "{compiled}");
    if !compiled.contains("cuda") {
        let e = run_err(bin().args(["--device", "cuda:0", "name", "info", "x.safetensors"]));
        assert!(e.contains("not compiled") && e.contains("cpu"), "{e}");
    }
}
