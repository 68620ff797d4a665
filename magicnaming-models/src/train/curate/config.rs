//! What a curation reads and its settings (`dataset curate`).
use std::path::PathBuf;

use super::generate::GenerateConfig;
use super::identity::MIN_GENERATED_FACES;
use super::shard::ShardSpec;
use crate::train::build::BuildConfig;
use crate::{ModelError, Result};

/// What a curation reads.
#[derive(Debug, Clone)]
pub struct CurateSources {
    /// Captioned images: `.jsonl` / `.csv` or a folder of webdataset `.tar` shards.
    pub input: PathBuf,
    /// The people (`Name<TAB>alias...` per line).
    pub names: PathBuf,
    /// SDXL (diffusers folder or single file): generation and the build's text encoders.
    pub model: PathBuf,
    /// Diffusers-style configuration folder for a single file of non-standard size.
    pub config: Option<PathBuf>,
    /// CLIP_L image tower (near-duplicates and the build).
    pub tower_l: PathBuf,
    /// CLIP_G image tower (the build).
    pub tower_g: PathBuf,
    /// Face recognizer (insightface ONNX or arcface_torch `.pth`).
    pub recognizer: PathBuf,
    /// MTCNN weights (facenet-pytorch's, built in when `None`).
    pub detector: Option<PathBuf>,
    /// Generated images made elsewhere, laid out as step 4 writes them; step 4 then draws
    /// nothing.
    pub generated: Option<PathBuf>,
}

/// Thresholds and settings of a curation.
#[derive(Debug, Clone, PartialEq)]
pub struct CurateConfig {
    /// Keep captions naming several people (one entry each).
    pub allow_multi: bool,
    /// The part of the people this run handles.
    pub shard: ShardSpec,
    /// Step 4.
    pub generate: GenerateConfig,
    /// Step 5: mean pairwise cosine of a name's generated faces.
    pub gen_consistency: f64,
    /// Step 6: near-duplicate CLIP cosine.
    pub dedup: f64,
    /// Step 7: mean cosine of a real face with the person's generated faces.
    pub real_match: f64,
    /// Step 8: images a person needs.
    pub min_images: usize,
    /// The build after step 8.
    pub build: BuildConfig,
}

impl Default for CurateConfig {
    fn default() -> Self {
        Self {
            allow_multi: false,
            shard: ShardSpec::WHOLE,
            generate: GenerateConfig::default(),
            gen_consistency: 0.5,
            dedup: 0.95,
            real_match: 0.4,
            min_images: 6,
            build: BuildConfig::default(),
        }
    }
}

pub(super) fn check_config(c: &CurateConfig) -> Result<()> {
    let cos = |v: f64, flag: &str| {
        if (-1.0..=1.0).contains(&v) {
            Ok(())
        } else {
            Err(ModelError::InvalidInput(format!(
                "{flag} must be a cosine in [-1, 1], got {v}"
            )))
        }
    };
    cos(c.gen_consistency, "--gen-consistency")?;
    cos(c.real_match, "--real-match")?;
    if !(c.dedup > 0.0 && c.dedup <= 1.0) {
        return Err(ModelError::InvalidInput(format!(
            "--dedup must be a cosine in (0, 1], got {}",
            c.dedup
        )));
    }
    if c.generate.count < MIN_GENERATED_FACES {
        return Err(ModelError::InvalidInput(format!(
            "--gen-count must be at least {MIN_GENERATED_FACES} (step 5 compares faces), got {}",
            c.generate.count
        )));
    }
    if c.shard.count == 0 || c.shard.index >= c.shard.count {
        return Err(ModelError::InvalidInput(format!(
            "shard {} is not one of 0..{}",
            c.shard.index, c.shard.count
        )));
    }
    crate::train::build::check_config(&c.build)?;
    if c.min_images == 0 {
        return Err(ModelError::InvalidInput(
            "--min-images must be at least 1".into(),
        ));
    }
    Ok(())
}
