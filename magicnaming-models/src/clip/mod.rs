//! CLIP: tokenizer, text and image transformers (transformers' `modeling_clip.py` twins).
pub mod config;
pub mod encoder;
pub mod text;
pub mod tokenizer;
