//! `embed-image` and `name from-image`.
use std::path::PathBuf;

use anyhow::Result;
use burn::tensor::backend::Backend;
use clap::Args;
use magicnaming_models::clip::tower::ClipVisionTower;
use magicnaming_models::name_encoder::{BatchOptions, InputCrop, NameEncoder, OnBadImage, Reduce};

use crate::args::FaceArg;
use crate::device::Job;
use crate::outputs::check_output_file;

/// Arguments of `embed-image`.
#[derive(Args, Debug)]
pub struct EmbedImageArgs {
    /// CLIP image tower: transformers or open_clip folder, or a .safetensors file.
    #[arg(long)]
    tower: PathBuf,
    /// The image (any format the `image` crate reads).
    #[arg(long)]
    image: PathBuf,
    /// Output .safetensors: `image_embeds` [1, P], `pixel_values` [1, 3, S, S].
    #[arg(long)]
    out: PathBuf,
}

impl Job for EmbedImageArgs {
    fn run<B: Backend>(self, device: B::Device) -> Result<()> {
        check_output_file(&self.out, &[&self.tower, &self.image])?;
        let tower = ClipVisionTower::<B>::load(&self.tower, &device)?;
        let embedding = tower.embed_image_file(&self.image)?;
        embedding.save(&self.out)?;
        log::info!(
            "wrote {} (image_embeds {:?})",
            self.out.display(),
            embedding.image_embeds.dims()
        );
        Ok(())
    }
}

/// Arguments of `name from-image`.
#[derive(Args, Debug)]
pub struct FromImageArgs {
    /// Encoder folder (config.json with both towers + head.safetensors).
    #[arg(long)]
    encoder: PathBuf,
    /// Photo(s) of one person; several are averaged into one name.
    #[arg(long, required = true)]
    image: Vec<PathBuf>,
    /// Skip unreadable images and, with a face crop, photos without a face (named on
    /// stderr) instead of failing.
    #[arg(long)]
    skip_bad: bool,
    /// What the towers see: auto = the crop the encoder records in its config.json
    /// (`input_crop`: the largest face, aligned, or the whole photo); none = the whole photo.
    #[arg(long, value_enum, default_value_t = FaceArg::Auto)]
    face: FaceArg,
    /// Output NAME.safetensors: `name` [8, D].
    #[arg(long)]
    out: PathBuf,
}

impl Job for FromImageArgs {
    fn run<B: Backend>(self, device: B::Device) -> Result<()> {
        let mut inputs: Vec<&std::path::Path> = self.image.iter().map(|p| p.as_path()).collect();
        inputs.push(&self.encoder);
        check_output_file(&self.out, &inputs)?;
        let mut encoder = NameEncoder::<B>::load(&self.encoder, &device)?;
        if self.face == FaceArg::None {
            encoder = encoder.with_input_crop(InputCrop::WholeImage)?;
        }
        log::info!("photos seen as: {}", encoder.input_crop());
        let on_bad_image = if self.skip_bad {
            OnBadImage::Skip
        } else {
            OnBadImage::Fail
        };
        let options = BatchOptions {
            reduce: Reduce::Average,
            on_bad_image,
        };
        let prediction = encoder.predict_batch(&self.image, &options)?;
        for s in &prediction.skipped {
            log::warn!("skipped {}: {}", s.path.display(), s.reason);
        }
        let name =
            prediction.names.into_iter().next().ok_or_else(|| {
                anyhow::anyhow!("no usable image among {} given", self.image.len())
            })?;
        name.save(&self.out)?;
        log::info!(
            "wrote {} from {} image(s)",
            self.out.display(),
            prediction.used.len()
        );
        Ok(())
    }
}
