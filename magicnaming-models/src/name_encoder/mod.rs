//! The image encoder E_image of `docs/METHOD.md`, (b): two frozen CLIP image towers (CLIP_L =
//! ViT-L/14, 768-d; CLIP_G = OpenCLIP ViT-bigG/14, 1280-d) whose image embeddings are
//! concatenated (`[B, 768 + 1280]`, L first) and mapped by the trainable [`NameHead`] to
//! names `[B, K, D]`.
//!
//! On disk an encoder is a folder:
//! - `config.json`:
//!   ```json
//!   {"tower_l": "clip-vit-large-patch14", "tower_g": "/models/bigG/open_clip_model.safetensors",
//!    "head": {"hidden_dims": [2048, 2048], "activation": "gelu"},
//!    "num_tokens": 8, "token_dim": 2048, "image_embed_dims": [768, 1280],
//!    "input_crop": {"type": "face", "size": 224}}
//!   ```
//!   A tower is a path (relative to the folder, or absolute) to anything
//!   [`ClipVisionTower::load`] reads, or `{"path": ..., "config": {...},
//!   "preprocessor": {...}}` embedding a transformers/open_clip configuration and a
//!   `preprocessor_config.json` that replace the files'. `head` takes the fields of
//!   [`NameHeadConfig`](magicnaming_core::NameHeadConfig); `input_dim`, `num_tokens` and
//!   `token_dim` default to the top-level values (`sum(image_embed_dims)`, 8, 2048) and must agree with them.
//!   `input_crop` ([`InputCrop`]) is the view of each photo the towers see: the largest
//!   face, aligned, or (absent) the whole photo.
//! - `head.safetensors`: the head's f32 weights in PyTorch layout, `layers.{i}.weight`
//!   `[out, in]` and `layers.{i}.bias` `[out]` (an `nn.Sequential` of Linear/GELU with its
//!   Linear indices renumbered 0, 1, 2).
mod config;
mod encoder;
mod head_io;
mod image_embedder;
mod input_crop;

pub use config::{NameEncoderConfig, TowerRef};
pub use encoder::{BatchOptions, NameEncoder, NamePrediction, Reduce};
pub use head_io::{HEAD_FORMAT, head_to_safetensors_bytes, load_head, save_head};
pub use image_embedder::{
    DEFAULT_BATCH_SIZE, EmbeddedImages, ImageEmbedder, OnBadImage, SkippedImage, TowerPixels,
};
pub use input_crop::{Cropper, InputCrop};
