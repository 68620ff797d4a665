//! The full CLIP model (CLIP-T) against transformers' `CLIPModel` on a tiny random model
//! with CLIP's real vocabulary (tools/reference/make_clip_model_fixtures.py), and the
//! Face Sim scorer against the face module.
use std::path::{Path, PathBuf};

use super::common::{B, max_abs_diff};
use magicnaming_models::ModelError;
use magicnaming_models::clip::clip_model::{ClipModel, row_cosines};
use magicnaming_models::eval::{IdentityScorer, face_sim};
use magicnaming_models::face::{FaceDetector, FaceRecognizer, cosine_similarity, load_rgb};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn reference() -> serde_json::Value {
    let text = std::fs::read_to_string(root().join("tests/fixtures/clip_model/reference.json"))
        .expect("reference.json");
    serde_json::from_str(&text).unwrap()
}

fn matrix(v: &serde_json::Value) -> Vec<Vec<f32>> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|r| {
            r.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap() as f32)
                .collect()
        })
        .collect()
}

fn values(t: burn::tensor::Tensor<B, 2>) -> Vec<f32> {
    t.into_data().convert::<f32>().into_vec().unwrap()
}

#[test]
fn clip_t_matches_transformers_clip_model() {
    let device = Default::default();
    let model =
        ClipModel::<B>::load(&root().join("tests/fixtures/clip_model/tiny-clip"), &device).unwrap();
    let r = reference();
    let prompts: Vec<&str> = r["prompts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    let images: Vec<PathBuf> = r["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| root().join(p.as_str().unwrap()))
        .collect();
    // Tokenized as CLIPProcessor(padding="max_length", truncation=True) (the long prompt
    // truncated to 77).
    let want_ids: Vec<Vec<u32>> = r["input_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| {
            row.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_u64().unwrap() as u32)
                .collect()
        })
        .collect();
    assert_eq!(model.tokenizer.encode_batch(&prompts).unwrap(), want_ids);

    // Embeddings within 1e-5 of transformers' (f32 on both sides; the widths are 4 and 8,
    // so the sums are short); from files and from decoded images alike.
    let img_files = values(model.image_file_embeds(&images).unwrap());
    let decoded: Vec<_> = images.iter().map(|p| load_rgb(p).unwrap()).collect();
    let img = values(model.image_embeds(&decoded).unwrap());
    let want_img: Vec<f32> = matrix(&r["image_embeds"]).concat();
    let want_txt: Vec<f32> = matrix(&r["text_embeds"]).concat();
    let txt = values(model.text_embeds(&prompts).unwrap());
    let (di, dt) = (
        max_abs_diff(&img_files, &want_img),
        max_abs_diff(&txt, &want_txt),
    );
    assert!(
        di < 1e-5 && dt < 1e-5,
        "image embeds {di}, text embeds {dt}"
    );
    assert_eq!(img, img_files, "decoded and read images embed alike");

    // CLIP-T for every (image, prompt) pair within the required 1e-4.
    let want = matrix(&r["clip_t"]);
    let mut worst = 0f32;
    for (i, row) in want.iter().enumerate() {
        for (j, &w) in row.iter().enumerate() {
            let got = model
                .clip_t(std::slice::from_ref(&decoded[i]), &[prompts[j]])
                .unwrap()[0];
            worst = worst.max((got - w).abs());
        }
    }
    eprintln!("CLIP-T max abs diff vs transformers: {worst:e}");
    assert!(worst <= 1e-4, "CLIP-T differs by {worst}");
    let r4 = (r["logit_scale"].as_f64().unwrap() as f32 - model.logit_scale).abs();
    assert!(r4 < 1e-6, "logit_scale");

    // Pairs of different counts, and no text, are named errors.
    assert!(matches!(
        model.clip_t(&decoded, &prompts),
        Err(ModelError::InvalidInput(m)) if m.contains("3 images with 4 texts")
    ));
    assert!(model.text_embeds(&[]).is_err());
}

#[test]
fn a_tower_or_a_text_encoder_is_not_a_clip_model() {
    let device = Default::default();
    let e =
        ClipModel::<B>::load(&root().join("tests/fixtures/vision/tower-l"), &device).unwrap_err();
    assert!(e.to_string().contains("text_config"), "{e}");
    let e = ClipModel::<B>::load(&root().join("no/such/clip"), &device).unwrap_err();
    assert!(matches!(e, ModelError::MissingFile { .. }), "{e}");
}

#[test]
fn row_cosines_are_cosines() {
    let device = Default::default();
    let a = burn::tensor::Tensor::<B, 2>::from_floats([[3.0, 4.0], [1.0, 0.0]], &device);
    let b = burn::tensor::Tensor::<B, 2>::from_floats([[6.0, 8.0], [0.0, 2.0]], &device);
    let c = row_cosines(a, b);
    // f32 arithmetic on exact inputs: within a few ulps of 1 and 0.
    assert!((c[0] - 1.0).abs() < 1e-6 && c[1].abs() < 1e-6, "{c:?}");
}

/// Face Sim of the scorer is the face module's cosine of the same embeddings, bit for bit.
#[test]
fn face_sim_equals_the_face_modules_similarity() {
    let device = Default::default();
    let faces = root().join("tests/fixtures/face");
    let rec_path = faces.join("iresnet_tiny.pth");
    let scorer = IdentityScorer::<B>::new(
        FaceDetector::load(None, &device).unwrap(),
        Some(FaceRecognizer::load(&rec_path, &device).unwrap()),
    );
    let a = scorer.reference(&faces.join("astronaut.png")).unwrap();
    let b = scorer.embed_file(&faces.join("group.png")).unwrap();
    assert!(a.face_found && b.face_found);
    let got = face_sim(&b, &[&a]).unwrap().unwrap();
    // The face module's own path: detect, largest face, embed_face, cosine.
    let det = FaceDetector::<B>::load(None, &device).unwrap();
    let rec = FaceRecognizer::<B>::load(&rec_path, &device).unwrap();
    let emb = |p: &Path| {
        let img = load_rgb(p).unwrap();
        let f = det.detect(&img).unwrap();
        values(rec.embed_face(&img, &f[0]).unwrap())
    };
    let want = cosine_similarity(
        &emb(&faces.join("group.png")),
        &emb(&faces.join("astronaut.png")),
    )
    .unwrap();
    assert_eq!(got, want);
    assert!(got.is_finite() && got.abs() <= 1.0, "{got}");
    // Against itself and a copy of itself, the mean of two cosines of 1.
    let same = face_sim(&a, &[&a, &a]).unwrap().unwrap();
    assert!((same - 1.0).abs() < 1e-6, "{same}");
    // A picture without a face has no score, and cannot be a reference.
    let none = scorer
        .embed(&image::RgbImage::from_pixel(
            64,
            48,
            image::Rgb([128, 128, 128]),
        ))
        .unwrap();
    assert!(!none.face_found && face_sim(&none, &[&a]).unwrap().is_none());
    // Under MTCNN's smallest window: no face rather than an error.
    let tiny = scorer.embed(&image::RgbImage::new(8, 8)).unwrap();
    assert!(!tiny.face_found && tiny.embedding.is_none());
    let plain = std::env::temp_dir().join(format!("plain-{}.png", std::process::id()));
    image::RgbImage::from_pixel(64, 48, image::Rgb([128, 128, 128]))
        .save(&plain)
        .unwrap();
    let e = scorer.reference(&plain).unwrap_err();
    let _ = std::fs::remove_file(&plain);
    assert!(matches!(e, ModelError::NoFace { .. }), "{e}");
}
