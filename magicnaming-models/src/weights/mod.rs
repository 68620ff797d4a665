//! Weight loading for every supported format.
//!
//! A checkpoint is read as safetensors (memory-mapped; F32, F16, BF16 and F64 tensors),
//! each format's remap table (owned by the model family that reads it) turns its keys into the burn module
//! paths, which follow transformers'/diffusers' names. The tensors are converted to the
//! run type several at a time over the cores (element conversion, the table's transform
//! and Linear's transpose in one pass per tensor, into the buffer the parameter keeps)
//! and applied through burn-store with [`burn_store::PyTorchToBurnAdapter`]'s names
//! (norm `gamma`/`beta`).
//! After loading, missing keys, unused keys and shape mismatches are errors that name
//! the keys.
//!
//! This module is format machinery only: reading safetensors (also sharded) and
//! PyTorch `torch.save` state dicts (ZIP and legacy formats, through a restricted pickle
//! reader), the float
//! type weights load in, applying remap tables with load reports, writing safetensors,
//! and locating a model's files. Each model family owns the remap tables of the formats
//! it reads (`clip::remap_text`, `unet::remap`, ...).
mod convert;
pub mod dtype;
pub mod file;
pub mod load;
pub mod onnx;
pub mod pickle;
pub mod pickle_value;
pub mod source;
pub mod torch_file;
pub mod write;

pub use dtype::{Precision, stored_dtype};
pub use file::{SafetensorsFile, TensorEntry, file_entries};
pub use load::{
    Mapped, Transform, keys_under, linear_or_conv, load_module, load_module_as, load_module_auto,
    mapped_dtype,
};
pub use source::{SdxlSource, diffusers_weights_file};
pub use torch_file::{TorchTensor, read_torch_file, torch_as_safetensors};
