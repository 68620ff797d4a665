//! # magicnaming
//!
//! Facade of the MagicNaming workspace (Zhao et al., AAAI 2025: consistent-identity
//! generation with SDXL by finding a person's *name* in the text encoders' output space).
//!
//! - [`core`] (`magicnaming-core`, `no_std`): name embeddings and the name-space
//!   operations (prepend, interpolate, slerp, mix) and the name head.
//! - [`models`] (`magicnaming-models`): SDXL's text stack, CLIP towers and weight loaders,
//!   generic over burn backends.
//!
//! Backends are cargo features: `ndarray` (default, CPU), `wgpu`, `cuda`.
pub use magicnaming_core as core;
pub use magicnaming_core::{
    interpolate, mix, prepend, slerp, NameEmbedding, NameError, NameHead, NameHeadConfig,
};
pub use magicnaming_models as models;
