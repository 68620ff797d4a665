//! The host generator for data order: [`magicnaming_core::rng::SplitMix64`], so that data
//! order (and so resumed runs) never depends on a library's generator.
pub use magicnaming_core::rng::SplitMix64;
