//! The main job: face photo -> name -> an image of that person, and a contact sheet of
//! fictional people interpolated between two names (t = 0, 0.25, 0.5, 0.75, 1), as in
//! the paper's interpolation figure.
//!
//! ```sh
//! # Offline, on the bundled tiny model (RANDOM weights: the pictures are noise-like):
//! cargo run --release --example generate
//! # On real weights:
//! cargo run --release --example generate -- --model /models/stable-diffusion-xl-base-1.0 \
//!     --encoder /models/magicnaming-encoder --photo me.jpg --photo-b friend.jpg \
//!     --width 1024 --height 1024 --steps 30 --out out/real
//! ```
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use burn::backend::NdArray;
use magicnaming::interpolate;
use magicnaming::models::name_encoder::NameEncoder;
use magicnaming::models::sdxl::png::{encode_png, save_png, to_rgb8};
use magicnaming::models::sdxl::{GenerateOptions, SdxlPipeline, SdxlSource};

type B = NdArray<f32>;

struct Args {
    model: PathBuf,
    encoder: PathBuf,
    photo: PathBuf,
    photo_b: PathBuf,
    prompt: String,
    width: usize,
    height: usize,
    steps: usize,
    seed: u64,
    out: PathBuf,
}

fn parse() -> Result<Args> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut a = Args {
        model: root.join("tests/fixtures/text/tiny-sdxl"),
        encoder: root.join("assets/tiny-encoder"),
        photo: root.join("assets/face_a.png"),
        photo_b: root.join("assets/face_b.png"),
        prompt: "a photo of a person reading in a cafe, warm light".into(),
        width: 64,
        height: 48,
        steps: 10,
        seed: 42,
        out: PathBuf::from("out/generate"),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--model" => a.model = value()?.into(),
            "--encoder" => a.encoder = value()?.into(),
            "--photo" => a.photo = value()?.into(),
            "--photo-b" => a.photo_b = value()?.into(),
            "--prompt" => a.prompt = value()?,
            "--width" => a.width = value()?.parse()?,
            "--height" => a.height = value()?.parse()?,
            "--steps" => a.steps = value()?.parse()?,
            "--seed" => a.seed = value()?.parse()?,
            "--out" => a.out = value()?.into(),
            other => bail!("unknown flag {other} (see the header of examples/generate.rs)"),
        }
    }
    Ok(a)
}

fn main() -> Result<()> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let args = parse()?;
    std::fs::create_dir_all(&args.out)?;
    let device = Default::default();
    let started = std::time::Instant::now();

    // 1. Photo -> name, with the image encoder (two CLIP towers + the name head).
    let encoder = NameEncoder::<B>::load(&args.encoder, &device)?;
    let name_a = encoder
        .predict(std::slice::from_ref(&args.photo), true)?
        .remove(0);
    let name_b = encoder
        .predict(std::slice::from_ref(&args.photo_b), true)?
        .remove(0);
    name_a.save(args.out.join("name_a.safetensors"))?;
    println!(
        "name of {}: {} x {}",
        args.photo.display(),
        name_a.num_tokens(),
        name_a.dim()
    );

    // 2. Name -> image, with an unmodified SDXL.
    let source = SdxlSource::from_path(&args.model, None)?;
    let pipeline = SdxlPipeline::<B>::load(&source, &device)?;
    let mut options = GenerateOptions::new(args.prompt.clone());
    (options.width, options.height, options.steps, options.seed) =
        (args.width, args.height, args.steps, args.seed);
    options.name = Some(name_a.clone());
    let image = pipeline.generate(&options, &mut |_, _| {})?.image;
    let person = args.out.join("person.png");
    let text = [
        ("prompt", args.prompt.clone()),
        ("name", args.photo.display().to_string()),
        ("seed", args.seed.to_string()),
    ];
    save_png(&person, image, &text)?;
    println!("wrote {}", person.display());

    // 3. Fictional people between the two names: a contact sheet.
    let mut tiles = Vec::new();
    for t in [0.0, 0.25, 0.5, 0.75, 1.0] {
        options.name = Some(interpolate(&name_a, &name_b, t)?);
        tiles.push(to_rgb8(pipeline.generate(&options, &mut |_, _| {})?.image)?);
    }
    let (w, h) = (tiles[0].0, tiles[0].1);
    let gap = 4;
    let sheet_w = tiles.len() * w + (tiles.len() - 1) * gap;
    let mut sheet = vec![255u8; sheet_w * h * 3];
    for (i, (_, _, rgb)) in tiles.iter().enumerate() {
        for y in 0..h {
            let dst = (y * sheet_w + i * (w + gap)) * 3;
            sheet[dst..dst + w * 3].copy_from_slice(&rgb[y * w * 3..(y + 1) * w * 3]);
        }
    }
    let sheet_path = args.out.join("interpolation.png");
    let text = [
        ("prompt", args.prompt.clone()),
        ("t", "0, 0.25, 0.5, 0.75, 1 (left to right)".into()),
    ];
    magicnaming::core::write_atomic(&sheet_path, &encode_png(sheet_w, h, &sheet, &text)?)?;
    println!(
        "wrote {} (t = 0, 0.25, 0.5, 0.75, 1) in {:.1}s",
        sheet_path.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
