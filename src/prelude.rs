//! The user path in one import: `use magicnaming::prelude::*;`.
//!
//! Photo -> name ([`NameEncoder`]), name-space operations ([`interpolate`], [`slerp`],
//! [`mix`], [`prepend`]), name -> image ([`SdxlSource`], [`SdxlPipeline`],
//! [`GenerateOptions`], [`GenerateOutput`]; LoRAs fused at load through [`LoadOptions`]
//! with [`ScaledLora`] / [`Lora`]), and the backend the cargo features select
//! ([`DefaultBackend`]) with the runtime device choice ([`DeviceSpec`]).
#[cfg(any(
    feature = "flex",
    feature = "ndarray",
    feature = "wgpu",
    feature = "cuda"
))]
pub use crate::backend::DefaultBackend;
pub use crate::backend::{DeviceSpec, Job, dispatch, parse_devices};
pub use burn::tensor::backend::Backend;
pub use magicnaming_core::{
    DEFAULT_NAME_TOKENS, NameEmbedding, NameError, interpolate, mix, prepend, slerp,
};
pub use magicnaming_models::name_encoder::{
    BatchOptions, InputCrop, NameEncoder, NamePrediction, OnBadImage, Reduce, SkippedImage,
};
pub use magicnaming_models::schedulers::SchedulerKind;
pub use magicnaming_models::sdxl::lora::{Lora, ScaledLora};
pub use magicnaming_models::sdxl::{
    GenerateOptions, GenerateOutput, LoadOptions, SdxlPipeline, SdxlSource,
};
pub use magicnaming_models::{ModelError, Precision};
