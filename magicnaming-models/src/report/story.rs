//! The record of a story or an interpolation (`story.json`); the schema it follows is
//! `docs/schemas/story.schema.json` in the repository.
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::eval::Summary;

/// The value of [`StoryReport::format`].
pub const STORY_FORMAT: &str = "magicnaming-story";

/// One generated picture.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Panel {
    /// 0-based position.
    pub index: usize,
    /// The image file, relative to the report's folder (`01.png`).
    pub file: String,
    /// The prompt.
    pub prompt: String,
    /// The seed of its initial latents.
    pub seed: u64,
    /// Interpolation parameter between name A (0) and name B (1), for interpolations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub t: Option<f64>,
    /// Whether a face was found.
    pub face_found: bool,
    /// Face Sim to the identity reference (`None`: no face, no recognizer, or a reference
    /// without a face).
    pub identity: Option<f32>,
    /// Face Sim to the end A of an interpolation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub similarity_a: Option<f32>,
    /// Face Sim to the end B of an interpolation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub similarity_b: Option<f32>,
    /// CLIP-T of the image with its prompt (`None` without a CLIP model).
    pub clip_t: Option<f32>,
}

/// An identity reference shown on the page.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reference {
    /// What it is: `"photo"` (the input photo), `"first panel"` (a name without a photo),
    /// `"name A"` / `"name B"` (the ends of an interpolation).
    pub role: String,
    /// The image file relative to the report's folder, when there is one to show.
    pub file: Option<String>,
    /// Where it came from (the photo's or the name's path as given).
    pub source: String,
}

/// `story.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoryReport {
    /// [`STORY_FORMAT`].
    pub format: String,
    /// `"story"` or `"interpolate"`.
    pub kind: String,
    /// The SDXL model as given.
    pub model: String,
    /// The identity references (what `identity` / `similarity_a` / `similarity_b`
    /// compare with).
    pub references: Vec<Reference>,
    /// Generation settings as text (steps, size, guidance...).
    pub settings: BTreeMap<String, String>,
    /// The pictures, in order.
    pub panels: Vec<Panel>,
    /// Aggregates over the panels (Face Sim is the `identity` column).
    pub summary: Summary,
    /// The contact sheet, relative to the folder.
    pub sheet: String,
    /// The HTML page, relative to the folder.
    pub page: String,
}
