//! CLIP: tokenizer, text and image transformers (transformers' `modeling_clip.py` twins).
pub mod config;
pub mod encoder;
pub mod image_processor;
pub mod image_transforms;
pub mod image_utils;
pub mod text;
pub mod tokenizer;
pub mod tower;
pub mod vision;
