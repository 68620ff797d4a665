//! Steps 5 and 7 of LaionCele's construction, judged by face similarity (ArcFace cosine
//! of MTCNN-aligned faces, as `face similarity` computes it):
//!
//! - step 5, [`consistency`]: a name is kept when the largest faces of its generated
//!   images agree: at least [`MIN_GENERATED_FACES`] images show a face and the mean cosine
//!   over all pairs of those faces is `>= threshold`;
//! - step 7, [`match_real`]: each face of a real image scores its mean cosine with the
//!   person's generated faces; the image is kept when the best-scoring face reaches
//!   `threshold` and is the largest face (the one `dataset build` crops). Images without a
//!   face, whose best face falls short, or whose best face is not the largest are dropped.
use burn::tensor::backend::Backend;
use image::RgbImage;
use serde::Serialize;

use crate::Result;
use crate::eval::IdentityScorer;
use crate::face::MIN_DETECT_SIDE;

/// Generated images of one name that must show a face for step 5 to judge it.
pub const MIN_GENERATED_FACES: usize = 2;

/// Mean cosine over all pairs of (L2-normalised) embeddings, accumulated in f64;
/// `None` with fewer than two.
pub fn mean_pairwise_cosine(embeddings: &[Vec<f32>]) -> Option<f64> {
    let n = embeddings.len();
    if n < 2 {
        return None;
    }
    let mut sum = 0.0f64;
    for i in 0..n {
        for j in i + 1..n {
            sum += dot(&embeddings[i], &embeddings[j]);
        }
    }
    Some(sum / (n * (n - 1) / 2) as f64)
}

fn dot(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum()
}

/// Step 5's verdict on one name.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Consistency {
    /// Generated images looked at.
    pub images: usize,
    /// Of those, images where a face was found.
    pub faces: usize,
    /// Mean pairwise cosine of the faces (`None` with fewer than two).
    pub mean_pairwise: Option<f64>,
    /// Whether the name stays.
    pub kept: bool,
}

/// Applies step 5's rule to the faces found in `images` generated images.
pub fn consistency(images: usize, faces: &[Vec<f32>], threshold: f64) -> Consistency {
    let mean = mean_pairwise_cosine(faces);
    Consistency {
        images,
        faces: faces.len(),
        mean_pairwise: mean,
        kept: faces.len() >= MIN_GENERATED_FACES && mean.is_some_and(|m| m >= threshold),
    }
}

/// Step 7's verdict on one real image.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RealMatch {
    /// Faces found.
    pub faces: usize,
    /// The best-matching face (0 is the largest) and its mean cosine with the generated
    /// faces.
    pub best: Option<(usize, f64)>,
    /// Whether the image stays.
    pub kept: bool,
    /// Why it was dropped.
    pub reason: Option<String>,
}

/// Embeddings of every face MTCNN finds in `img`, largest first (none in an image too
/// small for the detector).
///
/// # Errors
/// `scorer` has no recognizer; a detector or recognizer failure.
pub fn all_faces<B: Backend>(scorer: &IdentityScorer<B>, img: &RgbImage) -> Result<Vec<Vec<f32>>> {
    let recognizer = scorer.recognizer.as_ref().ok_or_else(|| {
        crate::ModelError::InvalidInput("face matching needs a recognizer".into())
    })?;
    if img.width() < MIN_DETECT_SIDE || img.height() < MIN_DETECT_SIDE {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    for face in scorer.detector.detect(img)? {
        out.push(
            recognizer
                .embed_face(img, &face)?
                .into_data()
                .convert::<f32>()
                .iter::<f32>()
                .collect(),
        );
    }
    Ok(out)
}

/// Applies step 7's rule to the faces of a real image (largest first) against the
/// person's generated faces.
pub fn match_real(faces: &[Vec<f32>], generated: &[Vec<f32>], threshold: f64) -> RealMatch {
    let score = |f: &Vec<f32>| {
        generated.iter().map(|g| dot(f, g)).sum::<f64>() / generated.len().max(1) as f64
    };
    let best = faces.iter().enumerate().map(|(i, f)| (i, score(f))).fold(
        None,
        |acc: Option<(usize, f64)>, (i, s)| match acc {
            Some((_, b)) if b >= s => acc,
            _ => Some((i, s)),
        },
    );
    let reason = match best {
        None => Some("no face".to_string()),
        Some((_, s)) if s.is_nan() || s < threshold => Some(if faces.len() == 1 {
            format!("the face does not match (cosine {s:.4})")
        } else {
            format!("none of {} faces matches (best cosine {s:.4})", faces.len())
        }),
        Some((i, s)) if i > 0 => Some(format!(
            "the matching face (cosine {s:.4}) is not the largest of {}, the one the dataset crops",
            faces.len()
        )),
        Some(_) => None,
    };
    RealMatch {
        faces: faces.len(),
        best,
        kept: reason.is_none(),
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(v: &[f32]) -> Vec<f32> {
        let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.iter().map(|x| x / n).collect()
    }

    #[test]
    fn rules_of_steps_5_and_7() {
        let a = unit(&[1.0, 0.0, 0.0]);
        let b = unit(&[1.0, 1.0, 0.0]);
        let c = unit(&[0.0, 0.0, 1.0]);
        // Pairs (a,b) 0.7071, (a,c) 0, (b,c) 0: mean 0.2357.
        let m = mean_pairwise_cosine(&[a.clone(), b.clone(), c.clone()]).unwrap();
        assert!((m - 0.235_702).abs() < 1e-6, "{m}");
        assert!(consistency(4, &[a.clone(), b.clone()], 0.7).kept);
        assert!(!consistency(4, &[a.clone(), b.clone()], 0.71).kept);
        // One face cannot show a consistent identity.
        assert!(!consistency(4, std::slice::from_ref(&a), -1.0).kept);

        let generated = [a.clone(), b.clone()];
        // Mean of 1 and 0.7071.
        let r = match_real(std::slice::from_ref(&a), &generated, 0.85);
        assert_eq!((r.kept, r.best.unwrap().0), (true, 0));
        assert!((r.best.unwrap().1 - 0.853_553).abs() < 1e-6);
        assert_eq!(
            match_real(&[], &generated, 0.5).reason.as_deref(),
            Some("no face")
        );
        let r = match_real(&[c.clone(), a.clone()], &generated, 0.5);
        assert_eq!(r.best.unwrap().0, 1);
        assert!(!r.kept && r.reason.unwrap().contains("not the largest"));
        let r = match_real(&[c.clone(), c], &generated, 0.5);
        assert!(r.reason.unwrap().starts_with("none of 2 faces"));
    }
}
