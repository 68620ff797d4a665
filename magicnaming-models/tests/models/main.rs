//! The CPU integration tests of magicnaming-models, one test binary (each `tests/*.rs`
//! file is a binary of its own that links burn: one binary links once). Run one group
//! with a filter, e.g. `cargo test --release -p magicnaming-models --test models schedulers::`.
//!
//! The wgpu kernel tests (`tests/kernels_*.rs`, `--features wgpu` and a Vulkan device)
//! stay separate binaries.

mod common;
mod diffusion_common;

mod dataset_build;
mod face;
mod lora;
mod norm;
mod pipeline;
mod precision;
mod schedulers;
mod text_stack;
mod tokenizer;
mod train;
mod unet;
mod vae;
mod vision;
