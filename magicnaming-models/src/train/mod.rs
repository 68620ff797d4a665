//! Training the name encoder's head against name text-codings (`docs/METHOD.md`, training):
//! the dataset format and its building from a manifest of photos and names, the
//! learning-rate schedule, the training loop with exact resume, and the validation
//! metrics.
pub mod build;
pub mod checkpoint;
pub mod config;
pub mod dataset;
pub mod export;
pub mod manifest;
pub mod metrics;
pub mod rng;
pub mod schedule;
pub mod step;
pub mod synthetic;
pub mod trainer;

pub use build::{build_dataset, split_identities, BuildConfig, BuildReport, BuildSources};
pub use checkpoint::MetricsLine;
pub use config::{adamw, head_config, TrainConfig};
pub use dataset::{Dataset, DatasetIndex, DatasetWriter, Identity, Split};
pub use manifest::{clean_name, group_names, read_manifest, Manifest, ManifestEntry};
pub use metrics::{evaluate, ValMetrics};
pub use rng::SplitMix64;
pub use schedule::LrSchedule;
pub use step::train_step;
pub use trainer::{train, TrainSummary};
