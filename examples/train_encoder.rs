//! Encoder fine-tuning end to end, as the paper trains E_image (`docs/METHOD.md`, (a), (b)):
//! a manifest of (photo, person's name) -> dataset (names text-coded with SDXL's text
//! encoders, photos embedded with both CLIP towers) -> the name head trained with AdamW
//! against the text-coded names -> an encoder folder that `name from-image` uses.
//!
//! ```sh
//! # Offline on the repo's small assets (tiny random towers and text encoders):
//! cargo run --release --example train_encoder
//! # On real data: a JSONL/CSV manifest of {"image": ..., "name": ...} lines
//! cargo run --release --example train_encoder -- --manifest laioncele.jsonl \
//!     --model /models/stable-diffusion-xl-base-1.0 --tower-l /models/clip-vit-large-patch14 \
//!     --tower-g /models/CLIP-ViT-bigG-14 --out out/encoder --steps 20000
//! # (each photo's largest face, aligned, is embedded; `--face none`: whole photos)
//! # On the backend a feature selects:
//! cargo run --release --example train_encoder --features cuda -- --device cuda
//! ```
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use magicnaming::burn::backend::Autodiff;
use magicnaming::models::train::{
    BuildConfig, BuildSources, Dataset, TrainConfig, build_dataset, train,
};
use magicnaming::prelude::*;

/// The job, generic over the backend `--device` names.
struct TrainEncoder {
    sources: BuildSources,
    out: PathBuf,
    steps: usize,
    /// The view of each photo the towers embed (`--face auto|none`).
    input_crop: InputCrop,
}

impl Job for TrainEncoder {
    type Output = Result<()>;

    fn run<B: Backend>(self, devices: Vec<B::Device>) -> Result<()> {
        run::<B>(self, devices[0].clone())
    }
}

fn main() -> Result<()> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    magicnaming::memory::reuse_freed_memory();
    let mut device = DeviceSpec::default().to_string();
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut out = PathBuf::from("out/train_encoder");
    let mut sources = BuildSources {
        manifest: PathBuf::new(),
        model: root.join("tests/fixtures/text/tiny-sdxl"),
        config: None,
        tower_l: root.join("tests/fixtures/vision/tower-l"),
        tower_g: root.join("tests/fixtures/vision/tower-g"),
    };
    let mut steps = 200;
    let mut input_crop = InputCrop::face();
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--device" => device = value()?,
            "--manifest" => sources.manifest = value()?.into(),
            "--model" => sources.model = value()?.into(),
            "--config" => sources.config = Some(value()?.into()),
            "--tower-l" => sources.tower_l = value()?.into(),
            "--tower-g" => sources.tower_g = value()?.into(),
            "--out" => out = value()?.into(),
            "--steps" => steps = value()?.parse()?,
            "--face" => {
                input_crop = match value()?.as_str() {
                    "auto" => InputCrop::face(),
                    "none" => InputCrop::WholeImage,
                    other => bail!("--face {other}: expected auto or none"),
                }
            }
            other => bail!("unknown flag {other} (see the header of examples/train_encoder.rs)"),
        }
    }
    std::fs::create_dir_all(&out)?;
    if sources.manifest.as_os_str().is_empty() {
        // The repo's small assets, labelled with made-up people (two photos each where
        // possible); one unreadable file shows that bad images are skipped, not fatal.
        // Most of these images show no face, so the towers see whole photos here.
        input_crop = InputCrop::WholeImage;
        let img = |f: &str| root.join("tests/fixtures/vision/images").join(f);
        let rows = [
            (root.join("assets/face_a.png"), "Ada Lovelace"),
            (img("rgb.jpg"), "Ada Lovelace"),
            (root.join("assets/face_b.png"), "Alan Turing"),
            (img("rgb.webp"), "Alan Turing"),
            (img("alpha.png"), "Grace Hopper"),
            (img("gray.png"), "grace  hopper"),
            (img("palette.gif"), "Katherine Johnson"),
            (img("rgb.bmp"), "Katherine Johnson"),
            (img("exif6.jpg"), "Edsger Dijkstra"),
            (img("big.png"), "Edsger Dijkstra"),
            (img("truncated.jpg"), "Edsger Dijkstra"),
        ];
        let lines: Vec<String> = rows
            .iter()
            .map(|(p, n)| serde_json::json!({"image": p, "name": n}).to_string())
            .collect();
        sources.manifest = out.join("manifest.jsonl");
        std::fs::write(&sources.manifest, lines.join("\n") + "\n")?;
    }
    let job = TrainEncoder {
        sources,
        out,
        steps,
        input_crop,
    };
    dispatch(&parse_devices(&device)?, job)?
}

fn run<B: Backend>(job: TrainEncoder, device: B::Device) -> Result<()> {
    let TrainEncoder {
        sources,
        out,
        steps,
        input_crop,
    } = job;
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let started = std::time::Instant::now();

    // 1. Dataset: text-code every name, embed every photo with both towers.
    let data_dir = out.join("dataset");
    let config = BuildConfig {
        val_fraction: 0.2,
        input_crop,
        ..BuildConfig::default()
    };
    let report = build_dataset::<B>(&sources, &data_dir, &config, &device, &mut |_, _| {})?;
    for s in &report.skipped {
        println!("skipped {}: {}", s.path.display(), s.reason);
    }
    let dataset = Dataset::load(&data_dir)?;
    println!(
        "dataset: {} people, {} images",
        dataset.index.identities.len(),
        dataset.identity.len()
    );

    // 2. Train the head (the towers stay frozen: their embeddings are in the dataset).
    let encoder_dir = out.join("encoder");
    let train_config = TrainConfig {
        steps: Some(steps),
        hidden_dims: vec![64, 64],
        eval_every: 50,
        checkpoint_every: 100,
        ..TrainConfig::default()
    };
    let summary = train::<Autodiff<B>>(
        &dataset,
        &encoder_dir,
        &train_config,
        false,
        std::slice::from_ref(&device),
    )?;
    let (first, last) = (
        &summary.metrics[0],
        summary.metrics.last().expect("metrics"),
    );
    println!(
        "train loss {:.4} -> {:.4} over {} steps",
        first.train_loss, last.train_loss, summary.steps
    );

    // 3. The folder is a complete encoder: predict a name from a photo.
    let encoder = NameEncoder::<B>::load(&encoder_dir, &device)?;
    let name = encoder.predict_one(root.join("assets/face_a.png"))?;
    name.save(out.join("face_a.safetensors"))?;
    println!(
        "encoder in {}; name of face_a: {} x {} ({:.1}s)",
        encoder_dir.display(),
        name.num_tokens(),
        name.dim(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
