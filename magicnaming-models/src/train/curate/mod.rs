//! Building a LaionCele-style dataset from crawled, captioned images (`docs/METHOD.md`,
//! "The LaionCele dataset"): steps 1 (finding listed people's names in captions) and 2
//! (merging aliases), from a JSON Lines / CSV file or webdataset shards to a manifest that
//! [`super::build`] turns into a dataset (step 3, text-coding the names); and steps 6
//! (deduplication) and 8 (quantity control) on such a manifest ([`filter`]).
pub mod captions;
pub mod extract;
pub mod filter;
pub mod names;

pub use captions::{CaptionRecord, ImageSource, Skipped, read_records};
pub use extract::{ExtractReport, extract_names};
pub use filter::{Dropped, FilterConfig, FilterReport, filter_manifest};
pub use names::{Found, NameList, words};
