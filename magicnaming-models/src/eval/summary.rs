//! Aggregates and the report of `eval-id`.
use serde::{Deserialize, Serialize};

/// Aggregates over a set of images.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Number of images.
    pub images: usize,
    /// Number of images where a face was found.
    pub with_face: usize,
    /// `with_face / images` (0 for no images).
    pub face_rate: f64,
    /// Mean Face Sim over the images with a score (`None`: no score).
    pub face_sim_mean: Option<f64>,
    /// Median Face Sim over the images with a score.
    pub face_sim_median: Option<f64>,
    /// Mean CLIP-T over the images with a score.
    pub clip_t_mean: Option<f64>,
    /// Median CLIP-T over the images with a score.
    pub clip_t_median: Option<f64>,
}

/// The median of `values` (the mean of the middle two for an even count); `None` when
/// empty.
pub fn median(values: &[f64]) -> Option<f64> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| !x.is_nan()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

fn mean(values: &[f64]) -> Option<f64> {
    (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64)
}

impl Summary {
    /// Aggregates of per-image results: whether a face was found, Face Sim, CLIP-T.
    pub fn of(faces: &[bool], face_sims: &[Option<f32>], clip_ts: &[Option<f32>]) -> Self {
        let f: Vec<f64> = face_sims.iter().flatten().map(|&x| x as f64).collect();
        let c: Vec<f64> = clip_ts.iter().flatten().map(|&x| x as f64).collect();
        let with_face = faces.iter().filter(|&&b| b).count();
        Self {
            images: faces.len(),
            with_face,
            face_rate: if faces.is_empty() {
                0.0
            } else {
                with_face as f64 / faces.len() as f64
            },
            face_sim_mean: mean(&f),
            face_sim_median: median(&f),
            clip_t_mean: mean(&c),
            clip_t_median: median(&c),
        }
    }
}

/// A reference photo of `eval-id`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReferenceScore {
    /// The file.
    pub image: String,
}

/// One evaluated image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageScore {
    /// The file.
    pub image: String,
    /// Whether a face was found.
    pub face_found: bool,
    /// Face Sim against the references (mean over them), `None` without a face.
    pub face_sim: Option<f32>,
    /// The prompt CLIP-T was scored against.
    pub prompt: Option<String>,
    /// CLIP-T, `None` without a CLIP model and prompts.
    pub clip_t: Option<f32>,
}

/// The report of `eval-id`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalReport {
    /// `"magicnaming-eval-id"`.
    pub format: String,
    /// The ArcFace recognizer.
    pub recognizer: String,
    /// The CLIP model, when CLIP-T was scored.
    pub clip: Option<String>,
    /// The reference photos.
    pub references: Vec<ReferenceScore>,
    /// Every image, in order.
    pub images: Vec<ImageScore>,
    /// The aggregates.
    pub summary: Summary,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aggregates_skip_images_without_a_score() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(&[]), None);
        let s = Summary::of(
            &[true, false, true, true],
            &[Some(0.5), None, Some(0.25), Some(1.0)],
            &[None, None, None, None],
        );
        assert_eq!((s.images, s.with_face), (4, 3));
        assert_eq!(s.face_rate, 0.75);
        assert_eq!(s.face_sim_mean, Some(1.75 / 3.0));
        assert_eq!(s.face_sim_median, Some(0.5));
        assert_eq!((s.clip_t_mean, s.clip_t_median), (None, None));
    }
}
