//! `--lora FILE[:SCALE]` on `generate` and `encode-prompt`, and `lora info`, on the tiny
//! model and the LoRA fixtures of tools/reference/make_lora_fixtures.py.
use std::path::{Path, PathBuf};
use std::process::Output;

use crate::common::{bin, fixtures, read_f32, write_f32};

fn lora(name: &str) -> String {
    fixtures()
        .join(format!("lora/{name}.safetensors"))
        .display()
        .to_string()
}

fn model() -> String {
    fixtures().join("text/tiny-sdxl").display().to_string()
}

fn generate(dir: &Path, loras: &[String]) -> (Output, PathBuf) {
    let reference = fixtures().join("pipeline/reference.safetensors");
    let (init, shape) = read_f32(&reference, "init_latents");
    let init_path = dir.join("init.safetensors");
    write_f32(&init_path, "latents", shape, &init);
    let saved = dir.join("final.safetensors");
    let mut c = bin();
    c.args([
        "generate",
        "--model",
        &model(),
        "--prompt",
        "a photo of a person",
    ]);
    c.args(["--width", "64", "--height", "48", "--steps", "5"]);
    c.arg("--init-latents").arg(&init_path);
    c.arg("--save-latents").arg(&saved);
    c.arg("--out").arg(dir.join("out.png"));
    for l in loras {
        c.args(["--lora", l]);
    }
    (c.output().unwrap(), saved)
}

#[test]
fn generate_with_two_loras_reproduces_diffusers() {
    let dir = tempfile::tempdir().unwrap();
    let loras = [
        format!("{}:0.7", lora("kohya-sgm")),
        format!("{}:0.4", lora("peft")),
    ];
    let (out, saved) = generate(dir.path(), &loras);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (got, _) = read_f32(&saved, "latents");
    let (want, _) = read_f32(
        &fixtures().join("lora/reference.safetensors"),
        "final_latents.two",
    );
    let d = crate::common::max_abs_diff(&got, &want);
    // As the library's LoRA test: the required 1e-3 bound on O(10) latents after 5 steps.
    assert!(d <= 1e-3, "final latents differ by {d}");
    let png = std::fs::read(dir.path().join("out.png")).unwrap();
    let text = String::from_utf8_lossy(&png);
    assert!(text.contains("loras"), "PNG lacks the loras chunk");
    assert!(
        text.contains("kohya-sgm.safetensors:0.7, peft.safetensors:0.4"),
        "PNG loras chunk"
    );
}

#[test]
fn encode_prompt_fuses_the_text_encoder_parts() {
    let dir = tempfile::tempdir().unwrap();
    let run = |out: &Path, extra: &[&str]| {
        let mut c = bin();
        c.args([
            "encode-prompt",
            "--model",
            &model(),
            "--prompt",
            "a photo of a person",
        ]);
        c.arg("--out").arg(out).args(extra);
        let o = c.output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    };
    let (plain, fused) = (
        dir.path().join("plain.safetensors"),
        dir.path().join("fused.safetensors"),
    );
    run(&plain, &[]);
    run(&fused, &["--lora", &lora("kohya-sgm")]);
    let (a, _) = read_f32(&plain, "prompt_embeds");
    let (b, _) = read_f32(&fused, "prompt_embeds");
    assert_ne!(a, b, "the text-encoder modules changed the embeddings");
}

#[test]
fn bad_loras_fail_by_name_and_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (format!("{}:strong", lora("kohya-sgm")), "`strong`"),
        (lora("bad-sd15"), "[320, 768]"),
        (
            lora("bad-sd15"),
            "down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k",
        ),
        (lora("bad-no-lora"), "no LoRA keys"),
        (lora("bad-rank"), "ranks disagree"),
        (lora("bad-nan"), "NaN"),
        (
            "/no/such/lora.safetensors".to_string(),
            "/no/such/lora.safetensors",
        ),
    ];
    for (arg, needle) in cases {
        let (out, saved) = generate(dir.path(), std::slice::from_ref(&arg));
        assert!(!out.status.success(), "{arg} should fail");
        let e = String::from_utf8_lossy(&out.stderr);
        assert!(e.contains(needle), "{arg}: expected {needle:?} in {e}");
        assert!(!e.contains("denoising"), "{arg}: failed after work started");
        assert!(!saved.exists() && !dir.path().join("out.png").exists());
    }
}

#[test]
fn lora_info_lists_format_and_targets() {
    let out = bin()
        .args(["lora", "info", &lora("kohya-sgm"), "--model", &model()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "Kohya naming, LoRA (1 on convolutions)",
        "ranks: 2 (5), 3 (4), 4 (5)",
        "alphas: 1.5 (14)",
        "UNet: 10 modules",
        "text encoder 1: 2 modules",
        "text encoder 2: 2 modules",
        "0 keys match nothing",
    ] {
        assert!(text.contains(needle), "expected {needle:?} in {text}");
    }
}
