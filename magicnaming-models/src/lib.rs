//! # magicnaming-models
//!
//! The networks MagicNaming needs, in burn and generic over `B: Backend`: SDXL's two CLIP
//! text encoders with their tokenizers and prompt encoding (plus the text-coding of
//! names), the SDXL UNet and VAE, the noise schedulers (Euler, Euler ancestral, DDIM,
//! DPM++ 2M Karras), the CLIP image towers, the training of the name head, and the
//! loaders that read real weight formats (diffusers folders, single-file SDXL
//! checkpoints, transformers and open_clip towers).
//!
//! # Layers
//!
//! Each module imports only from its own layer's neutral modules and from the layers
//! below it; no two files import each other; the model families do not import each
//! other. A test (`layering.rs`) reads the sources and enforces it.
//!
//! ```text
//!   train/                       dataset build, training loop, metrics
//!     |
//!   sdxl/          name_encoder/ the pipeline, prompt encoding | photo -> name
//!   eval/          report/       Face Sim, CLIP-T | contact sheets, story.json, HTML page
//!     |                 |
//!   clip/  unet/  vae/  schedulers/  face/   model families, each with the remap
//!     |                                      tables of the weight formats it reads
//!   nn/                          shared blocks: attention, resnet, norm, conv,
//!     |                          precision casts, our kernels
//!   weights/  json  error        format machinery: safetensors (also sharded),
//!   image_file                   torch.save, ONNX, float types, remap application and
//!                                load reports, locating a model's files; image files
//!                                read within limits
//! ```
#![warn(missing_docs)]

pub mod bounded_read;
pub mod clip;
pub mod error;
pub mod eval;
pub mod face;
pub mod image_file;
pub mod json;
pub mod name_encoder;
pub mod nn;
pub mod report;
pub mod schedulers;
pub mod sdxl;
pub mod train;
pub mod unet;
pub mod vae;
pub mod weights;

pub use error::{LoraShapeMismatch, ModelError, Result};
pub use magicnaming_core as core;
pub use weights::Precision;

#[cfg(test)]
mod layering;
