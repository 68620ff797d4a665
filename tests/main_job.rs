//! The main job through the facade crate, as examples/generate.rs runs it: the bundled
//! face photo -> the bundled (random, tiny) encoder -> a name -> an image of that person
//! from the bundled tiny SDXL, and names interpolated between two people.
use std::path::PathBuf;

use burn::backend::NdArray;
use magicnaming::models::name_encoder::NameEncoder;
use magicnaming::models::sdxl::{GenerateOptions, SdxlPipeline, SdxlSource};
use magicnaming::{interpolate, prepend};

type B = NdArray<f32>;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn photo_to_name_to_image_and_interpolation() {
    let device = Default::default();
    let encoder = NameEncoder::<B>::load(&root().join("assets/tiny-encoder"), &device).unwrap();
    let a = encoder
        .predict(&[root().join("assets/face_a.png")], true)
        .unwrap()
        .remove(0);
    let b = encoder
        .predict(&[root().join("assets/face_b.png")], true)
        .unwrap()
        .remove(0);
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

    let mut options = GenerateOptions::new("a photo of a person");
    (options.width, options.height, options.steps) = (32, 24, 2);
    let mut images = Vec::new();
    for t in [0.0, 0.5, 1.0] {
        options.name = Some(interpolate(&a, &b, t).unwrap());
        let out = pipeline.generate(&options, &mut |_, _| {}).unwrap();
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
