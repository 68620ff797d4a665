//! # magicnaming-models
//!
//! The networks MagicNaming needs, in burn and generic over `B: Backend`: SDXL's two CLIP
//! text encoders with their tokenizers and prompt encoding (plus the text-coding of
//! names), the SDXL UNet and VAE, the noise schedulers (Euler, Euler ancestral, DDIM,
//! DPM++ 2M Karras), the CLIP image towers, the training of the name head, and the
//! loaders that read real weight formats (diffusers folders, single-file SDXL
//! checkpoints, transformers and open_clip towers).
#![warn(missing_docs)]

pub mod clip;
pub mod error;
pub mod face;
pub mod json;
pub mod name_encoder;
pub mod nn;
pub mod schedulers;
pub mod sdxl;
pub mod train;
pub mod unet;
pub mod vae;
pub mod weights;

pub use error::{ModelError, Result};
pub use magicnaming_core as core;
pub use weights::Precision;

#[cfg(test)]
mod layering;
