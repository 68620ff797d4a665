//! LoRA fine-tuning of SDXL's UNet on name-conditioned images (`docs/METHOD.md`, "LoRA
//! fine-tuning"): a manifest of (photo, person's name, caption) -> dataset (names
//! text-coded) -> the UNet trained with adapters on its attention projections, each image
//! captioned with its person's name spliced in -> a kohya LoRA file -> the file fused into
//! the model at load, generating that person.
//!
//! ```sh
//! # Offline on the repo's small assets (tiny random SDXL, towers and demo images), seconds:
//! cargo run --release --example train_lora
//! # On real data (a dataset folder `dataset build` wrote, its images at hand):
//! cargo run --release --example train_lora --features cuda -- --device cuda \
//!     --dataset data/laioncele --model /models/stable-diffusion-xl-base-1.0 \
//!     --resolution 1024 --steps 2000 --out out/lora
//! ```
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use magicnaming::burn::backend::Autodiff;
use magicnaming::models::train::lora::{LoraSources, LoraTrainConfig, train_lora};
use magicnaming::models::train::{BuildConfig, BuildSources, Dataset, build_dataset};
use magicnaming::prelude::*;

/// The job, generic over the backend `--device` names.
struct TrainLora {
    model: PathBuf,
    dataset: Option<PathBuf>,
    out: PathBuf,
    config: LoraTrainConfig,
}

impl Job for TrainLora {
    type Output = Result<()>;

    fn run<B: Backend>(self, devices: Vec<B::Device>) -> Result<()> {
        run::<B>(self, devices[0].clone())
    }
}

fn main() -> Result<()> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    magicnaming::memory::reuse_freed_memory();
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut device = DeviceSpec::default().to_string();
    let mut job = TrainLora {
        model: root.join("tests/fixtures/text/tiny-sdxl"),
        dataset: None,
        out: PathBuf::from("out/train_lora"),
        config: LoraTrainConfig {
            resolution: 32,
            steps: Some(60),
            batch: 2,
            lr: 1e-3,
            log_every: 10,
            checkpoint_every: 30,
            eval_every: Some(30),
            ..LoraTrainConfig::default()
        },
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--device" => device = value()?,
            "--model" => job.model = value()?.into(),
            "--dataset" => job.dataset = Some(value()?.into()),
            "--out" => job.out = value()?.into(),
            "--resolution" => job.config.resolution = value()?.parse()?,
            "--steps" => job.config.steps = Some(value()?.parse()?),
            other => bail!("unknown flag {other} (see the header of examples/train_lora.rs)"),
        }
    }
    dispatch(&parse_devices(&device)?, job)?
}

fn run<B: Backend>(job: TrainLora, device: B::Device) -> Result<()> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let started = std::time::Instant::now();
    if job.out.join("checkpoint").exists() {
        bail!(
            "{} holds an earlier run: remove it first",
            job.out.display()
        );
    }
    std::fs::create_dir_all(&job.out)?;

    // 1. A dataset: the given one, or one built from the demo images (two made-up people,
    //    captions in the manifest), with the tiny towers.
    let dataset = match &job.dataset {
        Some(d) => d.clone(),
        None => {
            let img = |f: &str| root.join("tests/fixtures/vision/images").join(f);
            let rows = [
                (root.join("assets/face_a.png"), "Ada Lovelace", "a portrait"),
                (img("rgb.jpg"), "Ada Lovelace", "a photo in a garden"),
                (img("exif6.jpg"), "Ada Lovelace", "a photo at the sea"),
                (root.join("assets/face_b.png"), "Alan Turing", "a portrait"),
                (img("rgb.webp"), "Alan Turing", "a photo in a library"),
                (img("big.png"), "Alan Turing", "a photo in the city"),
            ];
            let lines: Vec<String> = rows
                .iter()
                .map(|(p, n, c)| {
                    serde_json::json!({"image": p, "name": n, "caption": c}).to_string()
                })
                .collect();
            let manifest = job.out.join("manifest.jsonl");
            std::fs::write(&manifest, lines.join("\n") + "\n")?;
            let sources = BuildSources {
                manifest,
                model: job.model.clone(),
                config: None,
                tower_l: root.join("tests/fixtures/vision/tower-l"),
                tower_g: root.join("tests/fixtures/vision/tower-g"),
            };
            let config = BuildConfig {
                val_fraction: 0.0,
                input_crop: InputCrop::WholeImage,
                ..BuildConfig::default()
            };
            let dir = job.out.join("dataset");
            build_dataset::<B>(&sources, &dir, &config, &device, &mut |_, _| {})?;
            dir
        }
    };
    let people = Dataset::load(&dataset)?;
    println!(
        "dataset: {} people, {} images",
        people.index.identities.len(),
        people.identity.len()
    );

    // 2. Train the adapters (the UNet stays frozen).
    let lora_dir = job.out.join("lora");
    let sources = LoraSources {
        model: job.model.clone(),
        config: None,
        dataset,
        encoder: None,
    };
    let summary = train_lora::<Autodiff<B>>(&sources, &lora_dir, &job.config, false, &device)?;
    let last = summary.metrics.last().context("no metrics")?;
    println!(
        "{} steps on {} images: held-out loss {:.4} -> {:.4}; {} adapters in {}",
        summary.steps,
        summary.images,
        summary.initial_val_loss.unwrap_or(f64::NAN),
        last.val_loss.unwrap_or(f64::NAN),
        summary.modules,
        summary.file.display()
    );

    // 3. The file fused into the model at load: the first person, by their text-coded name.
    let source = SdxlSource::from_path(&job.model, None)?;
    let options = LoadOptions::default().with_lora(ScaledLora::open(&summary.file, 1.0)?);
    let pipeline = SdxlPipeline::<B>::load_with(&source, &device, &options)?;
    let first = &people.index.identities[0].name;
    let name = pipeline.text.text_code_name_default(first)?;
    let size = job.config.resolution;
    let image = pipeline.generate(
        &GenerateOptions::new("a photo at the sea")
            .with_name(name)
            .with_size(size, size)
            .with_steps(4)
            .with_seed(0),
    )?;
    let sample = job.out.join("sample.png");
    image.save_png(&sample)?;
    println!(
        "wrote {} ({first}) in {:.1}s",
        sample.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
