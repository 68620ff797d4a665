//! The face crop of the name encoder and the dataset build (`name_encoder::InputCrop`):
//! what the towers see is the largest face, aligned, of each photo; the crop is recorded
//! by encoder folders and datasets, and a photo without a face is a named error or a
//! listed skip. Photos: tests/fixtures/face/ (real faces) and tests/fixtures/vision/images
//! (synthetic, no face).
use std::path::{Path, PathBuf};

use super::common::{B, max_abs_diff};
use burn::tensor::Tensor;
use image::DynamicImage;
use magicnaming_models::ModelError;
use magicnaming_models::face::{FaceDetector, load_rgb, norm_crop};
use magicnaming_models::name_encoder::{
    BatchOptions, InputCrop, NameEncoder, NameEncoderConfig, OnBadImage,
};
use magicnaming_models::train::{BuildConfig, BuildSources, Dataset, build_dataset};

/// The same f32 operations on the same pixels, batched or not: equal up to the blocking
/// of the matrix products (~1 ulp of O(1) values); 1e-6 would catch any other crop, as a
/// different view moves the names by far more (checked below: > 1e-3).
const SAME_VIEW_TOL: f32 = 1e-6;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn photo(name: &str) -> PathBuf {
    root().join("tests/fixtures/face").join(name)
}

fn no_face() -> PathBuf {
    root().join("tests/fixtures/vision/images/rgb.jpg")
}

fn encoder() -> NameEncoder<B> {
    NameEncoder::load(root().join("assets/tiny-encoder"), &Default::default()).unwrap()
}

fn values<const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data().iter::<f32>().collect()
}

/// The aligned crop of the largest face, computed with the face API directly.
fn largest_face_crop(path: &Path, size: u32) -> DynamicImage {
    let img = load_rgb(path).unwrap();
    let det = FaceDetector::<B>::load(None, &Default::default()).unwrap();
    let faces = det.detect(&img).unwrap();
    assert!(!faces.is_empty(), "{} shows a face", path.display());
    DynamicImage::ImageRgb8(norm_crop(&img, &faces[0].landmarks, size).unwrap())
}

#[test]
fn an_encoder_recording_a_face_crop_names_the_largest_aligned_face() {
    let enc = encoder();
    assert_eq!(enc.input_crop(), InputCrop::face());
    // The group photo has three faces of different sizes: the largest is the one named.
    let group = photo("group.png");
    let name = values(enc.predict_one(&group).unwrap().tokens().clone());
    let crop = largest_face_crop(&group, 224);
    let whole = enc.with_input_crop(InputCrop::WholeImage).unwrap();
    let from_crop = values(whole.predict_image(&crop).unwrap().tokens().clone());
    let d = max_abs_diff(&name, &from_crop);
    assert!(
        d <= SAME_VIEW_TOL,
        "face-cropped name vs the crop's name: {d}"
    );
    let uncropped = values(whole.predict_one(&group).unwrap().tokens().clone());
    assert!(
        max_abs_diff(&name, &uncropped) > 1e-3,
        "the whole photo gives another name"
    );
}

#[test]
fn a_photo_without_a_face_is_named_or_skipped() {
    let enc = encoder();
    let e = enc.predict_one(no_face()).unwrap_err();
    assert!(matches!(e, ModelError::NoFace { .. }), "{e}");
    assert!(e.to_string().contains("rgb.jpg"), "{e}");

    let photos = vec![no_face(), photo("astronaut.png")];
    let strict = enc.predict_batch(&photos, &BatchOptions::default());
    assert!(matches!(strict, Err(ModelError::NoFace { .. })));
    let lenient = BatchOptions::default().with_on_bad_image(OnBadImage::Skip);
    let p = enc.predict_batch(&photos, &lenient).unwrap();
    assert_eq!(p.used, vec![photo("astronaut.png")]);
    assert_eq!(p.skipped.len(), 1);
    assert_eq!(p.skipped[0].path, no_face());
    assert!(
        p.skipped[0].reason.starts_with("no face found"),
        "{}",
        p.skipped[0].reason
    );

    // The whole-image view needs no face.
    let whole = enc.with_input_crop(InputCrop::WholeImage).unwrap();
    assert!(whole.predict_one(no_face()).is_ok());
}

#[test]
fn the_crop_is_read_written_and_checked_in_config_json() {
    let dir = tempfile::tempdir().unwrap();
    let enc = encoder();
    enc.save(dir.path()).unwrap();
    let again = NameEncoder::<B>::load(dir.path(), &Default::default()).unwrap();
    assert_eq!(again.input_crop(), InputCrop::face());

    let base: serde_json::Value = serde_json::from_slice(
        &std::fs::read(root().join("assets/tiny-encoder/config.json")).unwrap(),
    )
    .unwrap();
    let file = dir.path().join("config.json");
    let with = |crop: serde_json::Value| {
        let mut v = base.clone();
        v["input_crop"] = crop;
        NameEncoderConfig::from_json_value(&v, &file)
    };
    let mut absent = base.clone();
    absent.as_object_mut().unwrap().remove("input_crop");
    let cfg = NameEncoderConfig::from_json_value(&absent, &file).unwrap();
    assert_eq!(
        cfg.input_crop,
        InputCrop::WholeImage,
        "older folders saw whole photos"
    );
    let custom = with(serde_json::json!({"type": "face", "size": 160, "min_face_size": 40}));
    assert_eq!(
        custom.unwrap().input_crop,
        InputCrop::Face {
            size: 160,
            min_face_size: 40.0
        }
    );
    for bad in [
        serde_json::json!({"type": "body"}),
        serde_json::json!({"type": "face", "size": 0}),
        serde_json::json!({"type": "face", "size": 224, "min_face_size": 3}),
        serde_json::json!({"type": "face", "size": 224, "margin": 0.2}),
        serde_json::json!("face"),
    ] {
        let e = with(bad.clone()).unwrap_err().to_string();
        assert!(
            e.contains("config.json") && e.contains("input_crop"),
            "{bad}: {e}"
        );
    }
}

#[test]
fn a_dataset_embeds_face_crops_and_records_the_crop() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("m.jsonl");
    let rows = [
        (photo("astronaut.png"), "Eileen Collins"),
        (photo("group.png"), "Eileen Collins"),
        (no_face(), "Nobody Here"),
    ];
    let text: String = rows
        .iter()
        .map(|(p, n)| serde_json::json!({"image": p, "name": n}).to_string() + "\n")
        .collect();
    std::fs::write(&manifest, text).unwrap();
    let fixtures = root().join("tests/fixtures");
    let sources = BuildSources {
        manifest,
        model: fixtures.join("text/tiny-sdxl"),
        config: None,
        tower_l: fixtures.join("vision/tower-l"),
        tower_g: fixtures.join("vision/tower-g"),
    };
    let out = dir.path().join("data");
    let config = BuildConfig {
        val_fraction: 0.0,
        ..BuildConfig::default()
    };
    assert_eq!(config.input_crop, InputCrop::face(), "faces by default");
    let device = Default::default();
    let report = build_dataset::<B>(&sources, &out, &config, &device, &mut |_, _| {}).unwrap();
    assert_eq!(report.dropped, vec!["Nobody Here".to_string()]);
    assert_eq!(report.skipped.len(), 1);
    assert!(report.skipped[0].reason.starts_with("no face found"));

    let data = Dataset::load(&out).unwrap();
    assert_eq!(data.index.input_crop, InputCrop::face());
    // Each row is the embedding of the photo's aligned largest face.
    let whole = encoder().with_input_crop(InputCrop::WholeImage).unwrap();
    let crops = [
        largest_face_crop(&photo("astronaut.png"), 224),
        largest_face_crop(&photo("group.png"), 224),
    ];
    let expected = values(whole.embedder.embed_images(&crops).unwrap());
    let d = max_abs_diff(&data.embeds, &expected);
    assert!(d <= SAME_VIEW_TOL, "dataset rows vs crop embeddings: {d}");
}
