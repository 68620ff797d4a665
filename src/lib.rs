//! # magicnaming
//!
//! MagicNaming (Zhao et al., AAAI 2025): consistent-identity image generation with an
//! unmodified SDXL, by finding a person's *name* in the text encoders' output space. A
//! face photo goes in; out comes a name embedding (`[8, 2048]`) which, spliced into the
//! prompt embeddings right after the start token, makes SDXL draw that person in any
//! scene the prompt asks for. Names interpolate into fictional people.
//!
//! ## Use as a library
//!
//! ```no_run
//! use magicnaming::prelude::*;
//!
//! fn main() -> anyhow::Result<()> {
//!     let device = Default::default();
//!     let encoder = NameEncoder::<DefaultBackend>::load("encoder", &device)?;
//!     let me: NameEmbedding<DefaultBackend> = encoder.predict_one("me.png")?;
//!     let friend = encoder.predict_one("friend.png")?;
//!     let source = SdxlSource::from_path("sdxl", None)?;
//!     let pipe = SdxlPipeline::<DefaultBackend>::load(&source, &device)?;
//!     let options = GenerateOptions::new("a photo of a person surfing")
//!         .with_name(interpolate(&me, &friend, 0.5)?)
//!         .with_size(64, 48)
//!         .with_steps(5)
//!         .with_seed(7);
//!     let out = pipe.generate(&options)?;
//!     out.save_png("surf.png")?;
//!     let _progress = pipe.generate_with_progress(&options, |step, total| eprintln!("{step}/{total}"))?;
//!     let _rgb: image::RgbImage = out.to_rgb_image()?;
//!     Ok(())
//! }
//! ```
//!
//! `encoder` is a trained encoder folder (`config.json` + `head.safetensors`), `sdxl` a
//! diffusers folder or a single-file checkpoint. [`backend::DefaultBackend`] is the
//! backend the cargo features select (`cuda`, else `wgpu`, else the CPU backend
//! `ndarray`, the default feature); [`backend::dispatch`] picks one at run time from a
//! device string (`cpu`, `wgpu[:N]`, `cuda[:N]`).
//!
//! ## Crates
//!
//! - [`core`] (`magicnaming-core`, `no_std` + `alloc`): name embeddings, the name-space
//!   operations (prepend, interpolate, slerp, mix) and the name head.
//! - [`models`] (`magicnaming-models`): every network in burn, generic over the backend
//!   (CLIP tokenizer and towers, SDXL's UNet, VAE and schedulers, the pipeline, the name
//!   encoder, training), and the loaders of the real weight formats.
pub mod backend;
pub mod memory;
pub mod prelude;

pub use burn;
pub use image;
pub use magicnaming_core as core;
pub use magicnaming_core::{
    NameEmbedding, NameError, NameHead, NameHeadConfig, interpolate, mix, prepend, slerp,
};
pub use magicnaming_models as models;
