//! SDXL: locating a model's files (diffusers folder or single-file checkpoint) and its
//! text side (prompt encoding with both CLIP text encoders, name text-coding).
pub mod pipeline;
pub mod png;
pub mod source;
pub mod text_encoders;

pub use pipeline::{GenerateOptions, GenerateOutput, SdxlPipeline};
pub use source::SdxlSource;
pub use text_encoders::{PromptEmbeds, SdxlTextEncoders};
