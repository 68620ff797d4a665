//! The CLI as scripts and users drive it: each test runs the built `magicnaming` binary.
//! One test binary for the whole crate (each `tests/*.rs` file would link on its own); run
//! one group with a filter, e.g. `cargo test --release -p magicnaming-cli --test cli train::`.

mod common;

mod bench;
mod curate;
mod dataset;
mod eval_id;
mod face;
mod generate;
mod hostile;
mod lora;
mod schema;
mod story;
mod text;
mod train;
mod train_lora;
mod warmup;
