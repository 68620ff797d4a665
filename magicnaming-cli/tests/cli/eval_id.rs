//! `eval-id` as users drive it: Face Sim equal to `face similarity` on the faces test
//! photos, CLIP-T equal to transformers' on the tiny CLIP model, bad input named.
use std::path::Path;

use serde_json::Value;

use crate::common::{bin, fixtures};
use crate::story::{fails_with, json, ok, recognizer, tiny_clip};

#[test]
fn eval_id_face_sim_equals_face_similarity_and_clip_t_equals_transformers() {
    let dir = tempfile::tempdir().unwrap();
    let faces = fixtures().join("face");
    let (a, g) = (faces.join("astronaut.png"), faces.join("group.png"));
    let sim = bin()
        .args([
            "face",
            "similarity",
            "--json",
            "--recognizer",
            &recognizer(),
        ])
        .arg(&a)
        .arg(&g)
        .output()
        .unwrap();
    ok(&sim);
    let want: Value = serde_json::from_slice(&sim.stdout).unwrap();
    // CLIP-T of (astronaut, prompt 0) and (group, prompt 1) from transformers.
    let reference = json(&fixtures().join("clip_model/reference.json"));
    let prompts = dir.path().join("prompts.txt");
    std::fs::write(
        &prompts,
        format!(
            "{}\n{}\n",
            reference["prompts"][0].as_str().unwrap(),
            reference["prompts"][1].as_str().unwrap()
        ),
    )
    .unwrap();
    let out = bin()
        .args(["eval-id", "--reference"])
        .arg(&a)
        .arg("--images")
        .arg(&a)
        .arg(&g)
        .args([
            "--recognizer",
            &recognizer(),
            "--clip",
            &tiny_clip(),
            "--prompts",
        ])
        .arg(&prompts)
        .output()
        .unwrap();
    ok(&out);
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let images = report["images"].as_array().unwrap();
    // Both are the same f32 (`face similarity` prints it widened to f64).
    let f32_of = |v: &Value| v.as_f64().unwrap() as f32;
    assert_eq!(
        f32_of(&images[1]["face_sim"]),
        f32_of(&want["similarity"]),
        "Face Sim = face similarity"
    );
    let self_sim = images[0]["face_sim"].as_f64().unwrap();
    // An image against itself: one f32 dot product of unit vectors of 512 values.
    assert!((self_sim - 1.0).abs() < 1e-5, "{self_sim}");
    for (i, img) in images.iter().enumerate() {
        let got = img["clip_t"].as_f64().unwrap();
        let want = reference["clip_t"][i][i].as_f64().unwrap();
        // The bound for CLIP-T against transformers.
        assert!((got - want).abs() <= 1e-4, "CLIP-T {i}: {got} vs {want}");
    }
    let s = &report["summary"];
    assert_eq!(
        (s["images"].as_u64(), s["with_face"].as_u64()),
        (Some(2), Some(2))
    );
    assert_eq!(s["face_rate"], 1.0);
    let mean = (self_sim + want["similarity"].as_f64().unwrap()) / 2.0;
    assert!((s["face_sim_mean"].as_f64().unwrap() - mean).abs() < 1e-6);
    assert_eq!(
        s["face_sim_median"], s["face_sim_mean"],
        "two values: median = mean"
    );

    // Bad input, by name: a reference without a face, prompts that do not match the
    // images, CLIP-T without prompts, a missing image.
    let plain = dir.path().join("plain.png");
    image::RgbImage::from_pixel(96, 96, image::Rgb([120, 130, 140]))
        .save(&plain)
        .unwrap();
    let eval = |reference: &Path, extra: &[&str]| {
        bin()
            .args(["eval-id", "--recognizer", &recognizer(), "--reference"])
            .arg(reference)
            .args(extra)
            .output()
            .unwrap()
    };
    let gs = g.to_str().unwrap();
    fails_with(&eval(&plain, &["--images", gs]), "plain.png: no face found");
    fails_with(
        &eval(
            &a,
            &[
                "--images",
                gs,
                "--clip",
                &tiny_clip(),
                "--prompts",
                prompts.to_str().unwrap(),
            ],
        ),
        "2 prompts for 1 images",
    );
    fails_with(
        &eval(&a, &["--images", gs, "--clip", &tiny_clip()]),
        "--prompts",
    );
    fails_with(
        &eval(&a, &["--images", "/no/such/image.png"]),
        "/no/such/image.png",
    );
    // A picture without a face counts in the face rate but has no Face Sim.
    let out = eval(&a, &["--images", gs, plain.to_str().unwrap()]);
    ok(&out);
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["summary"]["face_rate"], 0.5);
    assert!(report["images"][1]["face_sim"].is_null());
}
