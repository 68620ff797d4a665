//! Building a LaionCele-style dataset from crawled, captioned images (`docs/METHOD.md`,
//! "The LaionCele dataset"). [`run::curate`] runs all eight steps, resumable and
//! shardable by person ([`shard`]), and [`merge::merge_curations`] joins shards; each step
//! also exists on its own: [`extract`] (steps 1 and 2: listed people's names found in
//! captions, aliases merged), [`generate`] (step 4), [`identity`] (the face rules of steps 5
//! and 7), [`filter`] (steps 6 and 8 on a manifest), [`report`] (what each step did, and
//! the funnel).
pub mod captions;
pub mod config;
pub mod extract;
pub mod filter;
pub mod generate;
pub mod identity;
pub mod merge;
pub mod names;
pub mod parquet;
pub mod people;
pub mod report;
pub mod run;
pub mod shard;
mod steps;

pub use captions::{CaptionRecord, ImageSource, Skipped, read_records};
pub use config::{CurateConfig, CurateSources};
pub use extract::{ExtractReport, extract_names};
pub use filter::{
    Dedup, Dropped, FilterConfig, FilterReport, Verdict, dedup_rule, deduplicate, enough_images,
    filter_manifest,
};
pub use generate::{GenerateConfig, generate_images, generated_images, person_dir};
pub use identity::{Consistency, RealMatch, consistency, match_real, mean_pairwise_cosine};
pub use merge::merge_curations;
pub use names::{Found, NameList, words};
pub use report::{FunnelRow, StepRecord, funnel, funnel_table, write_report};
pub use run::{CurateReport, curate};
pub use shard::ShardSpec;
pub use steps::read_faces;
