//! SDXL: locating a model's files (diffusers folder or single-file checkpoint) and its
//! text side (prompt encoding with both CLIP text encoders, name text-coding).
pub mod source;
pub mod text_encoders;

pub use source::SdxlSource;
pub use text_encoders::{PromptEmbeds, SdxlTextEncoders};
