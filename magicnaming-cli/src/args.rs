//! Arguments shared by several commands: the SDXL model, and the enum-valued options.
use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::{Args, ValueEnum};
use magicnaming_models::schedulers::SchedulerKind;
use magicnaming_models::sdxl::SdxlSource;
use magicnaming_models::Precision;

/// The image size and step count of `generate` and `story` / `interpolate`, checked
/// before any model loads.
///
/// # Errors
/// A side that is not a positive multiple of 8, or zero steps, naming the flags.
pub fn check_image_request(width: usize, height: usize, steps: usize) -> Result<()> {
    if width == 0 || height == 0 || !width.is_multiple_of(8) || !height.is_multiple_of(8) {
        bail!("--width {width} / --height {height}: must be positive multiples of 8");
    }
    if steps == 0 {
        bail!("--steps must be at least 1");
    }
    Ok(())
}

/// The SDXL model of `generate`, `encode-prompt`, `name from-text` and `dataset build`.
#[derive(Args, Debug, Clone)]
pub struct ModelArgs {
    /// SDXL model: diffusers folder or single-file .safetensors checkpoint.
    #[arg(long)]
    pub model: PathBuf,
    /// Diffusers-style folder of configurations (for non-standard sizes).
    #[arg(long)]
    pub config: Option<PathBuf>,
}

impl ModelArgs {
    /// Where the model's components are.
    pub fn source(&self) -> Result<SdxlSource> {
        Ok(SdxlSource::from_path(&self.model, self.config.as_deref())?)
    }
}

/// `--scheduler`: the library's [`SchedulerKind`] under its user-facing names. (The
/// variants carry `//` comments: doc comments would be listed in `--help` and switch every
/// option of the command to the long help layout.)
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SchedulerArg {
    // EulerDiscreteScheduler (SDXL base's own).
    #[value(name = "euler")]
    Euler,
    // EulerAncestralDiscreteScheduler.
    #[value(name = "euler-a")]
    EulerAncestral,
    // DDIMScheduler.
    #[value(name = "ddim")]
    Ddim,
    // DPMSolverMultistepScheduler, DPM++ 2M with Karras sigmas.
    #[value(name = "dpmpp-2m-karras")]
    DpmPp2mKarras,
}

impl From<SchedulerArg> for SchedulerKind {
    fn from(s: SchedulerArg) -> Self {
        match s {
            SchedulerArg::Euler => Self::Euler,
            SchedulerArg::EulerAncestral => Self::EulerAncestral,
            SchedulerArg::Ddim => Self::Ddim,
            SchedulerArg::DpmPp2mKarras => Self::DpmPp2mKarras,
        }
    }
}

/// `--precision`: the library's [`Precision`] (`//` variant comments, as [`SchedulerArg`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PrecisionArg {
    // The stored type when the backend supports it, f32 otherwise.
    Auto,
    // f32 (f16/bf16 files upcast).
    #[value(alias = "fp32")]
    F32,
    // f16; an error on a backend without f16.
    #[value(alias = "fp16")]
    F16,
    // bf16; an error on a backend without bf16.
    Bf16,
}

impl From<PrecisionArg> for Precision {
    fn from(p: PrecisionArg) -> Self {
        match p {
            PrecisionArg::Auto => Self::Auto,
            PrecisionArg::F32 => Self::F32,
            PrecisionArg::F16 => Self::F16,
            PrecisionArg::Bf16 => Self::Bf16,
        }
    }
}

/// `--face`: which view of each photo the image towers see (`//` variant comments, as
/// [`SchedulerArg`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FaceArg {
    // The face crop (the encoder's recorded crop for `name from-image`).
    Auto,
    // The whole photo.
    None,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every scheduler the library knows has a `--scheduler` value of the same name.
    #[test]
    fn scheduler_names_match_the_library() {
        let values = SchedulerArg::value_variants();
        assert_eq!(values.len(), SchedulerKind::ALL.len());
        for v in values {
            let name = v.to_possible_value().expect("not skipped");
            assert_eq!(name.get_name(), SchedulerKind::from(*v).name());
        }
    }

    /// `--precision` accepts what the library's parser accepts, aliases included.
    #[test]
    fn precision_spellings_match_the_library() {
        for s in ["auto", "f32", "fp32", "f16", "fp16", "bf16"] {
            let arg = PrecisionArg::from_str(s, false).expect(s);
            assert_eq!(Precision::from(arg), s.parse::<Precision>().unwrap(), "{s}");
        }
        assert!(PrecisionArg::from_str("f8", false).is_err());
    }
}
