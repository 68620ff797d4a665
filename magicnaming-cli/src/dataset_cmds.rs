//! `dataset build`: a training dataset folder from a manifest of photos and names.
use std::path::PathBuf;

use anyhow::{Context, Result};
use burn::tensor::backend::Backend;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use magicnaming_models::face::{MtcnnConfig, CLIP_CROP_SIZE};
use magicnaming_models::name_encoder::InputCrop;
use magicnaming_models::train::curate::ShardSpec;
use magicnaming_models::train::{build_dataset, BuildConfig, BuildSources, Split};

use crate::args::{FaceArg, ModelArgs};
use crate::device::Job;
use crate::outputs::check_output_dir;

/// Arguments of `dataset build`.
#[derive(Args, Debug)]
// The shared `--model` with this command's own help text (in place: `mut_arg` would move
// it to the end of the usage line).
#[command(mut_args(|a| if a.get_id() == "model" {
    a.help("SDXL model (for its text encoders): diffusers folder or single-file .safetensors")
} else {
    a
}))]
pub struct BuildArgs {
    /// Manifest: .jsonl lines `{"image": PATH, "name": NAME}` or .csv with header
    /// `image,name`; image paths relative to the manifest's folder, or absolute.
    #[arg(long)]
    manifest: PathBuf,
    #[command(flatten)]
    model: ModelArgs,
    /// CLIP_L image tower: folder or .safetensors file.
    #[arg(long)]
    tower_l: PathBuf,
    /// CLIP_G image tower: folder or .safetensors file.
    #[arg(long)]
    tower_g: PathBuf,
    /// Output dataset folder: new or empty, or an interrupted build of the same inputs
    /// (which is resumed).
    #[arg(long)]
    out: PathBuf,
    #[command(flatten)]
    settings: BuildSettings,
}

/// The build's settings, shared by `dataset build` and `dataset curate`.
#[derive(Args, Debug, Clone)]
pub struct BuildSettings {
    /// Share of the people held out for validation (at least one when there are two).
    #[arg(long, default_value_t = BuildConfig::default().val_fraction)]
    val_fraction: f64,
    /// Seed of the train/validation split.
    #[arg(long, default_value_t = BuildConfig::default().seed)]
    seed: u64,
    /// Name tokens kept after the start token.
    #[arg(long, default_value_t = BuildConfig::default().num_tokens)]
    tokens: usize,
    /// Images (and names) per forward pass.
    #[arg(long, default_value_t = BuildConfig::default().batch_size)]
    batch: usize,
    /// Images per shard file (a multiple of --batch makes resumed builds exact).
    #[arg(long, default_value_t = BuildConfig::default().shard_rows)]
    shard_rows: usize,
    /// What the towers embed: auto = each photo's largest face, aligned to the ArcFace
    /// template (photos without a face are skipped and listed); none = the whole photo.
    /// Recorded in dataset.json; `train` copies it into the encoder.
    #[arg(long, value_enum, default_value_t = FaceArg::Auto)]
    face: FaceArg,
    /// Side of the aligned face crop, in pixels.
    #[arg(long, default_value_t = CLIP_CROP_SIZE)]
    face_size: u32,
    /// Smallest face searched for, in pixels.
    #[arg(long, default_value_t = MtcnnConfig::default().min_face_size)]
    min_face: f64,
}

impl BuildSettings {
    /// The library's build configuration.
    pub fn config(&self) -> BuildConfig {
        BuildConfig {
            val_fraction: self.val_fraction,
            seed: self.seed,
            num_tokens: self.tokens,
            batch_size: self.batch,
            shard_rows: self.shard_rows,
            stop_after: None,
            input_crop: match self.face {
                FaceArg::Auto => InputCrop::Face {
                    size: self.face_size,
                    min_face_size: self.min_face,
                },
                FaceArg::None => InputCrop::WholeImage,
            },
        }
    }
}

impl Job for BuildArgs {
    fn run<B: Backend>(self, device: B::Device) -> Result<()> {
        check_output_dir(&self.out)?;
        let sources = BuildSources {
            manifest: self.manifest.clone(),
            model: self.model.model,
            config: self.model.config,
            tower_l: self.tower_l,
            tower_g: self.tower_g,
        };
        let config = self.settings.config();
        // Drawn only on a terminal (indicatif hides itself otherwise).
        let bar = ProgressBar::no_length().with_style(
            ProgressStyle::with_template(
                "{spinner} embedding images {pos}/{len} [{bar:30}] {per_sec} eta {eta}",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        let report =
            build_dataset::<B>(&sources, &self.out, &config, &device, &mut |done, total| {
                bar.set_length(total as u64);
                bar.set_position(done as u64);
            })
            .with_context(|| format!("building a dataset from {}", self.manifest.display()))?;
        bar.finish_and_clear();
        let index = report
            .index
            .context("the build stopped before the end; run it again to resume")?;
        let val = index
            .identities
            .iter()
            .filter(|i| i.split == Split::Val)
            .count();
        let summary = serde_json::json!({
            "out": self.out.display().to_string(),
            "identities": index.identities.len(),
            "train_identities": index.identities.len() - val,
            "val_identities": val,
            "images": index.shards.iter().map(|s| s.count).sum::<usize>(),
            "skipped": index.skipped.len(),
            "dropped_identities": report.dropped,
            "resumed_at": report.resumed_at,
        });
        println!("{summary}");
        Ok(())
    }
}

/// Arguments of `dataset extract-names`.
#[derive(Args, Debug)]
pub struct ExtractNamesArgs {
    /// Captioned images: a .jsonl / .csv file of `image` and `caption`, or a folder of
    /// webdataset shards (`NNNNN.tar` with `key.jpg` / `.png` / `.webp` and `key.txt`).
    #[arg(long)]
    input: PathBuf,
    /// The people to find: one per line, `Name` or `Name<TAB>alias<TAB>alias...`.
    #[arg(long)]
    names: PathBuf,
    /// Output folder: manifest.jsonl (for `dataset build`), images/ (from shards),
    /// extract.json (counts and drops).
    #[arg(long)]
    out: PathBuf,
    /// Keep captions that name several people (one manifest entry each); by default they
    /// are dropped and counted.
    #[arg(long)]
    allow_multi: bool,
    /// Only the people of shard I of N (`I/N`, from 0), partitioned by name.
    #[arg(long, default_value = "0/1")]
    shard: ShardSpec,
}

impl ExtractNamesArgs {
    /// Runs on the host only (no model).
    pub fn run(self) -> Result<()> {
        check_output_dir(&self.out)?;
        let r = magicnaming_models::train::curate::extract_names(
            &self.input,
            &self.names,
            &self.out,
            self.allow_multi,
            self.shard,
        )?;
        println!(
            "{} records: {} kept ({} manifest entries, {} through aliases); dropped: {} naming nobody, {} naming several{}; {} skipped",
            r.records,
            r.kept,
            r.entries,
            r.alias_matches,
            r.no_name,
            r.several_names,
            if self.allow_multi { " (kept: --allow-multi)" } else { "" },
            r.skipped.len()
        );
        if !r.never_found.is_empty() {
            log::warn!("never named: {}", r.never_found.join(", "));
        }
        log::info!("wrote {}", self.out.join("manifest.jsonl").display());
        Ok(())
    }
}

/// Arguments of `dataset filter`.
#[derive(Args, Debug)]
pub struct FilterArgs {
    /// Manifest (.jsonl / .csv of image, name[, caption]), e.g. what `extract-names` wrote.
    #[arg(long)]
    manifest: PathBuf,
    /// Output folder: manifest.jsonl (the kept entries) and filter.json (counts, drops).
    #[arg(long)]
    out: PathBuf,
    /// CLIP image tower for near duplicates (folder or .safetensors); without it only exact
    /// copies are removed.
    #[arg(long)]
    tower: Option<PathBuf>,
    /// Near-duplicate threshold: cosine of CLIP image embeddings.
    #[arg(long, default_value_t = magicnaming_models::train::curate::FilterConfig::default().dedup)]
    dedup: f64,
    /// People need at least this many images left (the paper keeps more than 5).
    #[arg(long, default_value_t = magicnaming_models::train::curate::FilterConfig::default().min_images)]
    min_images: usize,
}

impl Job for FilterArgs {
    fn run<B: Backend>(self, device: B::Device) -> Result<()> {
        use magicnaming_models::clip::tower::ClipVisionTower;
        use magicnaming_models::train::curate::{filter_manifest, FilterConfig};
        check_output_dir(&self.out)?;
        let tower = match &self.tower {
            Some(t) => Some(ClipVisionTower::<B>::load(t, &device)?),
            None => None,
        };
        let config = FilterConfig {
            dedup: self.dedup,
            min_images: self.min_images,
        };
        let r = filter_manifest(&self.manifest, &self.out, &config, tower.as_ref())?;
        println!(
            "{} entries of {} people: {} exact and {} near duplicates, {} unreadable; {} people with fewer than {} images dropped; {} entries of {} people kept",
            r.entries_in,
            r.people_in,
            r.exact_duplicates,
            r.near_duplicates,
            r.unreadable,
            r.too_few.len(),
            self.min_images,
            r.entries_out,
            r.per_name.len()
        );
        Ok(())
    }
}
