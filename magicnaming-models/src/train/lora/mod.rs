//! Fine-tuning SDXL's UNet with LoRA on name-conditioned images (`docs/METHOD.md`,
//! "LoRA fine-tuning"): each dataset image is trained with its caption and its person's
//! name spliced in after the start token, as diffusers' `train_text_to_image_lora_sdxl.py`
//! trains (same step, same defaults), in burn with autodiff on any backend.
//!
//! The output is a LoRA file in kohya format (or diffusers'), which
//! [`crate::sdxl::lora`] and diffusers' `load_lora_weights` read.
pub mod adapters;
pub mod config;
pub mod data;
pub mod export;
pub mod step;
pub mod trainer;

pub use adapters::{AdapterValues, LoraSet, adapter_values, inject};
pub use config::{LoraFormat, LoraTrainConfig, NameSource, PredictionChoice};
pub use export::{lora_file_bytes, write_lora_file};
pub use step::{StepInputs, StepReport, lora_gradients, lora_loss, lora_step};
pub use trainer::{LoraMetricsLine, LoraSources, LoraSummary, train_lora};
