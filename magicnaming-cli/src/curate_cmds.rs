//! `dataset curate`, `dataset merge` and `dataset report`: LaionCele's eight steps from
//! captioned images to a dataset folder, sharded by person across machines.
use std::path::PathBuf;

use anyhow::{Context, Result};
use burn::tensor::backend::Backend;
use clap::Args;
use magicnaming_models::train::curate::{
    curate, funnel_table, merge_curations, write_report, CurateConfig, CurateReport, CurateSources,
    GenerateConfig, ShardSpec,
};

use crate::args::ModelArgs;
use crate::dataset_cmds::BuildSettings;
use crate::device::Job;
use crate::outputs::check_output_dir;

/// Arguments of `dataset curate`.
#[derive(Args, Debug)]
#[command(mut_args(|a| if a.get_id() == "model" {
    a.help("SDXL model (step 4's images and the build's text encoders): diffusers folder or single-file .safetensors")
} else {
    a
}))]
pub struct CurateArgs {
    /// Captioned images: a .jsonl / .csv file of `image` and `caption`, or a folder of
    /// webdataset shards (`NNNNN.tar` with `key.jpg` / `.png` / `.webp` and `key.txt`).
    #[arg(long)]
    input: PathBuf,
    /// The people: one per line, `Name` or `Name<TAB>alias<TAB>alias...`.
    #[arg(long)]
    names: PathBuf,
    /// Output folder: new or empty, or an interrupted curation of the same inputs (which
    /// is resumed at its first unfinished step).
    #[arg(long)]
    out: PathBuf,
    #[command(flatten)]
    model: ModelArgs,
    /// CLIP_L image tower (step 6's near duplicates, and the build).
    #[arg(long)]
    tower_l: PathBuf,
    /// CLIP_G image tower (the build).
    #[arg(long)]
    tower_g: PathBuf,
    /// Face recognizer for steps 5 and 7: insightface ONNX or arcface_torch .pth.
    #[arg(long)]
    recognizer: PathBuf,
    /// MTCNN weights (facenet-pytorch's; built in by default).
    #[arg(long)]
    detector: Option<PathBuf>,
    /// Keep captions naming several people (one entry each); by default they are dropped.
    #[arg(long)]
    allow_multi: bool,
    /// Process only the people of shard I of N (`I/N`, from 0; partitioned by name), then
    /// join the shards with `dataset merge`.
    #[arg(long, default_value = "0/1")]
    shard: ShardSpec,
    /// Step 4: use the images under this folder (`<person>/*.png`, laid out as step 4
    /// writes them) instead of generating.
    #[arg(long)]
    generated: Option<PathBuf>,
    /// Step 4: the prompt each name embedding is prepended to.
    #[arg(long, default_value_t = GenerateConfig::default().prompt)]
    gen_prompt: String,
    /// Step 4: negative prompt.
    #[arg(long)]
    gen_negative_prompt: Option<String>,
    /// Step 4: images per name.
    #[arg(long, default_value_t = GenerateConfig::default().count)]
    gen_count: usize,
    /// Step 4: seed of the first image (image i uses seed + i).
    #[arg(long, default_value_t = GenerateConfig::default().seed)]
    gen_seed: u64,
    /// Step 4: denoising steps.
    #[arg(long, default_value_t = GenerateConfig::default().steps)]
    gen_steps: usize,
    /// Step 4: guidance scale.
    #[arg(long, default_value_t = GenerateConfig::default().guidance)]
    gen_guidance: f64,
    /// Step 4: image width and height in pixels.
    #[arg(long, default_value_t = GenerateConfig::default().width)]
    gen_size: usize,
    /// Step 5: keep a name when the mean pairwise cosine of its generated faces (ArcFace)
    /// reaches this (see the README for the default).
    #[arg(long, default_value_t = CurateConfig::default().gen_consistency)]
    gen_consistency: f64,
    /// Step 6: near-duplicate threshold, cosine of CLIP_L image embeddings.
    #[arg(long, default_value_t = CurateConfig::default().dedup)]
    dedup: f64,
    /// Step 7: keep a real image when its best-matching face (mean cosine with the
    /// person's generated faces) reaches this and is its largest face.
    #[arg(long, default_value_t = CurateConfig::default().real_match)]
    real_match: f64,
    /// Step 8: people need at least this many images (the paper keeps more than 5).
    #[arg(long, default_value_t = CurateConfig::default().min_images)]
    min_images: usize,
    #[command(flatten)]
    build: BuildSettings,
}

fn print_report(out: &std::path::Path, r: &CurateReport) {
    print!("{}", funnel_table(&r.funnel));
    match &r.dataset {
        Some(index) => println!(
            "dataset: {} ({} people, {} images)",
            out.join("dataset").display(),
            index.identities.len(),
            index.shards.iter().map(|s| s.count).sum::<usize>()
        ),
        None => println!("no dataset built (a shard, or no one left)"),
    }
}

impl Job for CurateArgs {
    fn run<B: Backend>(self, device: B::Device) -> Result<()> {
        check_output_dir(&self.out)?;
        let sources = CurateSources {
            input: self.input.clone(),
            names: self.names,
            model: self.model.model,
            config: self.model.config,
            tower_l: self.tower_l,
            tower_g: self.tower_g,
            recognizer: self.recognizer,
            detector: self.detector,
            generated: self.generated,
        };
        let config = CurateConfig {
            allow_multi: self.allow_multi,
            shard: self.shard,
            generate: GenerateConfig {
                prompt: self.gen_prompt,
                negative_prompt: self.gen_negative_prompt,
                count: self.gen_count,
                seed: self.gen_seed,
                steps: self.gen_steps,
                guidance: self.gen_guidance,
                width: self.gen_size,
                height: self.gen_size,
                num_tokens: self.build.config().num_tokens,
            },
            gen_consistency: self.gen_consistency,
            dedup: self.dedup,
            real_match: self.real_match,
            min_images: self.min_images,
            build: self.build.config(),
        };
        let r = curate::<B>(
            &sources,
            &config,
            &self.out,
            &device,
            &mut |step, done, total| {
                log::info!("step {step}: {done}/{total}");
            },
        )
        .with_context(|| format!("curating {}", self.input.display()))?;
        print_report(&self.out, &r);
        Ok(())
    }
}

/// Arguments of `dataset merge`.
#[derive(Args, Debug)]
pub struct MergeArgs {
    /// Output folder (new or empty): what one `dataset curate` over everyone writes.
    #[arg(long)]
    out: PathBuf,
    /// The shards' `dataset curate --shard I/N` folders, all N of them, in any order.
    #[arg(required = true)]
    shards: Vec<PathBuf>,
}

impl Job for MergeArgs {
    fn run<B: Backend>(self, device: B::Device) -> Result<()> {
        check_output_dir(&self.out)?;
        let r = merge_curations::<B>(&self.shards, &self.out, &device)
            .context("merging curation shards")?;
        print_report(&self.out, &r);
        Ok(())
    }
}

/// Arguments of `dataset report`.
#[derive(Args, Debug)]
pub struct ReportArgs {
    /// A `dataset curate` (or `dataset merge`) folder.
    dir: PathBuf,
}

impl ReportArgs {
    /// Prints the funnel and writes it to DIR/report.json (host only).
    pub fn run(self) -> Result<()> {
        let rows = write_report(&self.dir)
            .with_context(|| format!("reading the curation in {}", self.dir.display()))?;
        print!("{}", funnel_table(&rows));
        log::info!("wrote {}", self.dir.join("report.json").display());
        Ok(())
    }
}
