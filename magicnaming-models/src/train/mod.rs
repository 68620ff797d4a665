//! Training the name encoder's head against name text-codings (`docs/METHOD.md`, training):
//! the dataset format and its building from a manifest of photos and names, the
//! learning-rate schedule, the training loop with exact resume, and the validation
//! metrics; and LoRA fine-tuning of the UNet on a dataset's images ([`lora`]).
pub mod build;
pub mod checkpoint;
pub mod config;
pub mod curate;
pub mod dataset;
pub mod export;
pub mod lora;
pub mod manifest;
pub mod metrics;
pub mod rng;
pub mod schedule;
pub mod step;
pub mod synthetic;
pub mod trainer;

pub use build::{BuildConfig, BuildReport, BuildSources, build_dataset, split_identities};
pub use checkpoint::MetricsLine;
pub use config::{TrainConfig, adamw, head_config};
pub use dataset::{Dataset, DatasetIndex, DatasetWriter, Identity, Split};
pub use manifest::{Manifest, ManifestEntry, clean_name, group_names, read_manifest};
pub use metrics::{ValMetrics, evaluate};
pub use rng::SplitMix64;
pub use schedule::LrSchedule;
pub use step::train_step;
pub use trainer::{TrainSummary, train};
