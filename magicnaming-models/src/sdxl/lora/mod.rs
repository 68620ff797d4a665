//! LoRA files fused into the model at load time: kohya / A1111 (`lora_unet_*`,
//! `lora_te1_*`, `lora_te2_*`, UNet names in the SGM or diffusers spelling, LoCon
//! convolutions), diffusers / PEFT (`unet.<path>.lora_A.weight`, older `.lora.down`),
//! LyCORIS LoHa and LoKr; several at once, each with its own multiplier.
//!
//! [`Lora::open`] reads and checks a file; [`LoadOptions`](super::LoadOptions) carries
//! [`ScaledLora`]s into [`SdxlPipeline::load_with`](super::SdxlPipeline::load_with) and
//! [`SdxlTextEncoders::load_with`](super::SdxlTextEncoders::load_with). Matching is
//! model-first ([`names`]): every Linear and Conv2d weight of the loaded models is spelled
//! each way files name it, and the file's names are looked up.
//!
//! ```no_run
//! use magicnaming_models::sdxl::lora::ScaledLora;
//! use magicnaming_models::sdxl::{LoadOptions, SdxlPipeline, SdxlSource};
//! type B = burn::backend::NdArray<f32>;
//! let source = SdxlSource::from_path("sd_xl_base_1.0.safetensors", None)?;
//! let options = LoadOptions::default()
//!     .with_lora(ScaledLora::open("pixel-art-xl.safetensors", 0.8)?)
//!     .with_lora(ScaledLora::open("add-detail-xl.safetensors", 0.5)?);
//! let pipeline = SdxlPipeline::<B>::load_with(&source, &Default::default(), &options)?;
//! # Ok::<(), magicnaming_models::ModelError>(())
//! ```
pub mod delta;
pub mod file;
pub mod fuse;
pub mod names;
pub mod parts;

pub use file::{Component, Lora, LoraModule, Naming, ScaledLora};
pub use fuse::LoraFusion;
pub use names::ModelNames;
pub use parts::{LoraKind, Part};
