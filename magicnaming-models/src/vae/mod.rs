//! SDXL's VAE: diffusers' `AutoencoderKL` (encoder, decoder, latent scaling), its blocks,
//! and the remap tables of the weight formats it loads (diffusers folders, current and
//! legacy attention names, LDM single-file keys).
pub mod autoencoder_kl;
pub mod blocks;
pub mod config;
pub mod decoder;
pub mod encoder;
pub mod remap;

pub use autoencoder_kl::{AutoencoderKL, SINGLE_FILE_VAE_PREFIXES};
pub use config::AutoencoderKLConfig;
pub use decoder::{Decoder, DecoderConfig};
pub use encoder::{DiagonalGaussianDistribution, Encoder, EncoderConfig};
