//! The main job through the facade crate, as examples/generate.rs runs it: the bundled
//! face photo -> the bundled (random, tiny) encoder -> a name -> an image of that person
//! from the bundled tiny SDXL, and names interpolated between two people.
use std::path::PathBuf;

use magicnaming::prelude::*;

type B = magicnaming::backend::CpuBackend;

/// The README's library program (`examples/user_path.rs`), compiled here unchanged.
mod user_path {
    include!("../examples/user_path.rs");

    pub fn run() -> anyhow::Result<()> {
        main()
    }
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn photo_to_name_to_image_and_interpolation() {
    let device = Default::default();
    let encoder = NameEncoder::<B>::load(root().join("assets/tiny-encoder"), &device).unwrap();
    let a = encoder
        .predict_one(root().join("assets/face_a.png"))
        .unwrap();
    let b = encoder
        .predict_one(root().join("assets/face_b.png"))
        .unwrap();
    assert_eq!((a.num_tokens(), a.dim()), (8, 40));
    let gap: f32 = (a.tokens().clone() - b.tokens().clone())
        .abs()
        .max()
        .into_scalar();
    assert!(gap > 1e-3, "two different photos give two different names");

    let source = SdxlSource::from_path(root().join("tests/fixtures/text/tiny-sdxl"), None).unwrap();
    let pipeline = SdxlPipeline::<B>::load(&source, &device).unwrap();
    // The name really reaches the UNet: prompt embeddings with and without it differ.
    let plain = pipeline
        .text
        .encode_prompt(&["a photo of a person"])
        .unwrap()
        .prompt_embeds;
    let named = prepend(plain.clone(), &a).unwrap();
    assert_eq!(named.dims(), plain.dims());

    let options = GenerateOptions::new("a photo of a person")
        .with_size(32, 24)
        .with_steps(2);
    let mut images = Vec::new();
    for t in [0.0, 0.5, 1.0] {
        let options = options.clone().with_name(interpolate(&a, &b, t).unwrap());
        let out = pipeline.generate(&options).unwrap();
        assert_eq!(out.image.dims(), [1, 3, 24, 32]);
        let (lo, hi): (f32, f32) = (
            out.image.clone().min().into_scalar(),
            out.image.clone().max().into_scalar(),
        );
        assert!(
            (0.0..=1.0).contains(&lo) && (0.0..=1.0).contains(&hi),
            "image in [0, 1]"
        );
        images.push(out.latents.into_data().to_vec::<f32>().unwrap());
    }
    assert_ne!(images[0], images[2], "different names, different images");
}

/// The README's program runs unchanged in a folder laid out as it expects (the tiny
/// model, the tiny encoder, the two bundled photos), and writes a PNG whose text chunks
/// record the request.
#[test]
fn the_library_contract_program_runs() {
    let dir = tempfile::tempdir().unwrap();
    let link = |from: &str, to: &str| {
        std::os::unix::fs::symlink(root().join(from), dir.path().join(to)).unwrap();
    };
    link("assets/tiny-encoder", "encoder");
    link("tests/fixtures/text/tiny-sdxl", "sdxl");
    link("assets/face_a.png", "me.png");
    link("assets/face_b.png", "friend.png");
    // The program uses relative paths; no other test of this binary depends on the
    // working directory.
    std::env::set_current_dir(dir.path()).unwrap();
    user_path::run().unwrap();
    let png = std::fs::read(dir.path().join("surf.png")).unwrap();
    let decoder = png::Decoder::new(std::io::Cursor::new(png));
    let reader = decoder.read_info().unwrap();
    let info = reader.info();
    assert_eq!((info.width, info.height), (64, 48));
    let text: Vec<(String, String)> = info
        .uncompressed_latin1_text
        .iter()
        .map(|c| (c.keyword.clone(), c.text.clone()))
        .collect();
    let get = |k: &str| {
        text.iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
    };
    assert_eq!(get("prompt"), Some("a photo of a person surfing"));
    assert_eq!(get("seed"), Some("7"));
    assert_eq!(get("steps"), Some("5"));
    assert!(
        get("name").is_some_and(|n| n.contains("me.png")),
        "{text:?}"
    );
}
