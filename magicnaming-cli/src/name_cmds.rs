//! `name mix` and `name info`.
use std::path::PathBuf;

use anyhow::Result;
use burn::tensor::backend::Backend;
use clap::Args;
use magicnaming_core::{interpolate, slerp, NameEmbedding};

use crate::device::Job;
use crate::outputs::check_output_file;

/// Arguments of `name mix`.
#[derive(Args, Debug)]
pub struct MixArgs {
    /// First name (t = 0).
    a: PathBuf,
    /// Second name (t = 1).
    b: PathBuf,
    /// Position between the names; outside [0, 1] extrapolates.
    #[arg(long, allow_negative_numbers = true)]
    t: f64,
    /// Spherical interpolation per token vector instead of linear.
    #[arg(long)]
    slerp: bool,
    /// Output NAME.safetensors.
    #[arg(long)]
    out: PathBuf,
}

impl Job for MixArgs {
    fn run<B: Backend>(self, device: B::Device) -> Result<()> {
        check_output_file(&self.out, &[&self.a, &self.b])?;
        let a = NameEmbedding::<B>::load(&self.a, &device)?;
        let b = NameEmbedding::<B>::load(&self.b, &device)?;
        let mixed = if self.slerp {
            slerp(&a, &b, self.t)?
        } else {
            interpolate(&a, &b, self.t)?
        };
        mixed.save(&self.out)?;
        log::info!("wrote {}: {}", self.out.display(), mixed.source());
        Ok(())
    }
}

/// Arguments of `name info`.
#[derive(Debug)]
pub struct InfoArgs {
    /// The name file.
    pub file: PathBuf,
}

impl Job for InfoArgs {
    fn run<B: Backend>(self, device: B::Device) -> Result<()> {
        let n = NameEmbedding::<B>::load(&self.file, &device)?;
        let norms: Vec<f32> = (n.tokens().clone() * n.tokens().clone())
            .sum_dim(1)
            .sqrt()
            .into_data()
            .iter::<f32>()
            .collect();
        println!(
            "{}: {} tokens x {} dims; source: {}; token norms: {:?}",
            self.file.display(),
            n.num_tokens(),
            n.dim(),
            n.source(),
            norms
        );
        Ok(())
    }
}
