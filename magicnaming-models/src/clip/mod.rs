//! CLIP: tokenizer, text and image transformers (transformers' `modeling_clip.py` twins),
//! the image processor, the full `CLIPModel` (CLIP-T), and the remap tables of the formats the towers load
//! (transformers and open_clip layouts, SDXL single-file encoders).
pub mod clip_model;
pub mod config;
pub mod encoder;
pub mod image_processor;
pub mod image_transforms;
pub mod image_utils;
pub mod remap_text;
pub mod remap_vision;
pub mod text;
pub mod tokenizer;
pub mod tower;
pub mod vision;
pub mod vision_arch;
