//! # magicnaming-core
//!
//! The name space of MagicNaming (Zhao et al., AAAI 2025): a person's *name* is a block of
//! `K` token vectors (8 x 2048 for SDXL) in the text encoders' per-token output space.
//! This crate holds what every consumer of names needs, generic over any burn backend:
//!
//! - [`NameEmbedding`]: the `K x D` block, saved and loaded as `.safetensors` with `std`;
//! - [`prepend`]: *name prepending* (NP), splicing a name right after the start token of
//!   prompt embeddings;
//! - [`interpolate`], [`slerp`] and [`mix`]: creating fictional identities between names;
//! - [`NameHead`]: the fully connected head that maps concatenated CLIP image embeddings
//!   to a name, with its MSE loss.
//!
//! The crate is `#![no_std]` + `alloc`; the `std` feature (default) adds file I/O.
#![no_std]
#![warn(missing_docs)]

extern crate alloc;
#[cfg(feature = "std")]
extern crate std;

mod error;
mod head;
#[cfg(feature = "std")]
mod io;
mod name;
mod ops;
pub mod rng;

pub use error::NameError;
pub use head::{HeadActivation, NameHead, NameHeadConfig};
#[cfg(feature = "std")]
pub use io::{NAME_FORMAT, NAME_TENSOR, write_atomic};
pub use name::NameEmbedding;
pub use ops::{NameTokens, interpolate, mix, prepend, slerp};

/// Result type of this crate.
pub type Result<T> = core::result::Result<T, NameError>;

/// Token vectors per name in MagicNaming (`docs/METHOD.md`: F_ID is 8 x 2048).
pub const DEFAULT_NAME_TOKENS: usize = 8;
/// SDXL's per-token prompt dimension: 768 (CLIP ViT-L/14) + 1280 (OpenCLIP ViT-bigG/14).
pub const SDXL_TOKEN_DIM: usize = 2048;
