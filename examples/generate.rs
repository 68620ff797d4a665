//! The main job: face photo -> name -> an image of that person, and a contact sheet of
//! fictional people interpolated between two names (t = 0, 0.25, 0.5, 0.75, 1), as in
//! the paper's interpolation figure. The encoder sees each photo's largest face, aligned
//! (its `config.json` records `input_crop`); the bundled photos are real faces.
//!
//! ```sh
//! # Offline, on the bundled tiny model (RANDOM weights: the pictures are noise-like):
//! cargo run --release --example generate
//! # On real weights:
//! cargo run --release --example generate -- --model /models/stable-diffusion-xl-base-1.0 \
//!     --encoder /models/magicnaming-encoder --photo me.jpg --photo-b friend.jpg \
//!     --width 1024 --height 1024 --steps 30 --out out/real
//! # On the backend a feature selects (the device defaults to that backend's):
//! cargo run --release --example generate --features cuda -- --device cuda
//! cargo run --release --example generate --features wgpu -- --device wgpu
//! ```
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use magicnaming::models::report::contact_sheet;
use magicnaming::models::sdxl::png::encode_png;
use magicnaming::prelude::*;

struct Args {
    device: String,
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
        device: DeviceSpec::default().to_string(),
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
            "--device" => a.device = value()?,
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

/// The job, generic over the backend `--device` names.
struct Generate(Args);

impl Job for Generate {
    type Output = Result<()>;

    fn run<B: Backend>(self, devices: Vec<B::Device>) -> Result<()> {
        run::<B>(self.0, &devices[0])
    }
}

fn main() -> Result<()> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    magicnaming::memory::reuse_freed_memory();
    let args = parse()?;
    let devices = parse_devices(&args.device)?;
    dispatch(&devices, Generate(args))?
}

fn run<B: Backend>(args: Args, device: &B::Device) -> Result<()> {
    std::fs::create_dir_all(&args.out)?;
    let started = std::time::Instant::now();

    // 1. Photo -> name, with the image encoder (two CLIP towers + the name head).
    let encoder = NameEncoder::<B>::load(&args.encoder, device)?;
    let name_a = encoder.predict_one(&args.photo)?;
    let name_b = encoder.predict_one(&args.photo_b)?;
    name_a.save(args.out.join("name_a.safetensors"))?;
    println!(
        "name of {}: {} x {} (on {})",
        args.photo.display(),
        name_a.num_tokens(),
        name_a.dim(),
        B::name(device)
    );

    // 2. Name -> image, with an unmodified SDXL.
    let source = SdxlSource::from_path(&args.model, None)?;
    let pipeline = SdxlPipeline::<B>::load(&source, device)?;
    let options = GenerateOptions::new(args.prompt.clone())
        .with_size(args.width, args.height)
        .with_steps(args.steps)
        .with_seed(args.seed);
    let person = args.out.join("person.png");
    pipeline
        .generate(&options.clone().with_name(name_a.clone()))?
        .save_png(&person)?;
    println!("wrote {}", person.display());

    // 3. Fictional people between the two names: a contact sheet.
    let mut tiles = Vec::new();
    for t in [0.0, 0.25, 0.5, 0.75, 1.0] {
        let options = options.clone().with_name(interpolate(&name_a, &name_b, t)?);
        tiles.push(pipeline.generate(&options)?.to_rgb_image()?);
    }
    // The contact sheet of `magicnaming story` / `interpolate`: one row, 4 px apart.
    let sheet = contact_sheet(&tiles, tiles.len(), 4)?;
    let sheet_path = args.out.join("interpolation.png");
    let text = [
        ("prompt", args.prompt.clone()),
        ("t", "0, 0.25, 0.5, 0.75, 1 (left to right)".into()),
    ];
    let png = encode_png(
        sheet.width() as usize,
        sheet.height() as usize,
        sheet.as_raw(),
        &text,
    )?;
    magicnaming::core::write_atomic(&sheet_path, &png)?;
    println!(
        "wrote {} (t = 0, 0.25, 0.5, 0.75, 1) in {:.1}s",
        sheet_path.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
