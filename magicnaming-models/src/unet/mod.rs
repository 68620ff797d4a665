//! The SDXL UNet: diffusers' `UNet2DConditionModel` with `addition_embed_type:
//! "text_time"`, its blocks, and the remap tables of the weight formats it loads
//! (diffusers folders and single-file SDXL checkpoints).
pub mod blocks;
pub mod config;
pub mod embeddings;
pub mod remap;
pub mod transformer;
pub mod unet_2d_condition;

pub use config::{DownBlockType, UNet2DConditionModelConfig, UpBlockType};
pub use unet_2d_condition::{SINGLE_FILE_UNET_PREFIX, Timestep, UNet2DConditionModel};
