//! SDXL: prompt encoding with both CLIP text encoders (with name prepending and name
//! text-coding), the generation pipeline and its PNG output.
pub mod load_options;
pub mod lora;
pub mod options;
pub mod output;
pub mod pipeline;
pub mod png;
pub mod text_encoders;

pub use crate::weights::SdxlSource;
pub use load_options::LoadOptions;
pub use options::GenerateOptions;
pub use output::GenerateOutput;
pub use pipeline::SdxlPipeline;
pub use text_encoders::{PromptEmbeds, SdxlTextEncoders};
