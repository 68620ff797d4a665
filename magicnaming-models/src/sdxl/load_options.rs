//! How to load a pipeline: [`LoadOptions`], the weights' float type and the LoRAs to fuse.
use super::lora::ScaledLora;
use crate::weights::Precision;

/// How to load an SDXL pipeline (or its text encoders).
///
/// ```
/// use magicnaming_models::Precision;
/// use magicnaming_models::sdxl::LoadOptions;
/// let options = LoadOptions::default().with_precision(Precision::F32);
/// assert!(options.loras.is_empty() && !options.ignore_unmatched);
/// ```
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// The weights' float type.
    pub precision: Precision,
    /// LoRAs fused into the weights at load, in order, each with its multiplier.
    pub loras: Vec<ScaledLora>,
    /// LoRA keys that match no module are a warning (with their count) instead of an
    /// error.
    pub ignore_unmatched: bool,
}

impl LoadOptions {
    /// With a float type for the weights.
    pub fn with_precision(mut self, precision: Precision) -> Self {
        self.precision = precision;
        self
    }

    /// With one more LoRA.
    pub fn with_lora(mut self, lora: ScaledLora) -> Self {
        self.loras.push(lora);
        self
    }

    /// Keys that match nothing are a warning instead of an error.
    pub fn ignoring_unmatched(mut self) -> Self {
        self.ignore_unmatched = true;
        self
    }

    /// `name:scale` of each LoRA, comma-separated (the PNG `loras` text chunk).
    pub fn lora_summary(&self) -> String {
        self.loras
            .iter()
            .map(|l| format!("{}:{}", l.lora.file_name(), l.multiplier))
            .collect::<Vec<_>>()
            .join(", ")
    }
}
