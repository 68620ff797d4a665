//! A learnable synthetic dataset, for tests, demos and benchmarks of the training loop
//! without images or towers: identity `i` has a latent `z_i` (6-d); its name is
//! `z_i A` and each of its images embeds as `(z_i + 0.05 noise) C`, so the name is a
//! linear function of the image embedding that generalises to unseen people.
use std::path::Path;

use super::dataset::{Dataset, DatasetWriter, Identity, Split};
use super::rng::SplitMix64;
use crate::Result;

/// Latent width of the synthetic identities.
const LATENT: usize = 6;

/// Writes (and loads) a synthetic dataset in `dir`: `identities` people with `images`
/// images each, the last `val` people held out; names are `[2, 8]`, embeddings `[12 + 12]`.
pub fn synthetic_dataset(
    dir: &Path,
    identities: usize,
    images: usize,
    val: usize,
    seed: u64,
) -> Result<Dataset> {
    let (k, d, e) = (2, 8, 24);
    let mut rng = SplitMix64(seed);
    let mut normal = || {
        // Box-Muller from two uniforms in (0, 1].
        let u1 = ((rng.next_u64() >> 11) as f64 + 1.0) / (1u64 << 53) as f64;
        let u2 = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()) as f32
    };
    let scale = (LATENT as f32).sqrt();
    let a: Vec<f32> = (0..LATENT * k * d).map(|_| normal() / scale).collect();
    let c: Vec<f32> = (0..LATENT * e).map(|_| normal() / scale).collect();
    let z: Vec<Vec<f32>> = (0..identities)
        .map(|_| (0..LATENT).map(|_| normal()).collect())
        .collect();
    let matvec = |v: &[f32], m: &[f32], cols: usize| -> Vec<f32> {
        (0..cols)
            .map(|j| (0..v.len()).map(|i| v[i] * m[i * cols + j]).sum())
            .collect()
    };
    let mut w = DatasetWriter::new(dir, k, d, vec![e / 2, e / 2], 16)?;
    w.index.identities = (0..identities)
        .map(|i| Identity {
            name: format!("person {i}"),
            split: if i + val < identities {
                Split::Train
            } else {
                Split::Val
            },
            images,
        })
        .collect();
    let names: Vec<f32> = z.iter().flat_map(|zi| matvec(zi, &a, k * d)).collect();
    w.write_names(&names)?;
    for (i, zi) in z.iter().enumerate() {
        for j in 0..images {
            let noisy: Vec<f32> = zi.iter().map(|v| v + 0.05 * normal()).collect();
            w.push(&matvec(&noisy, &c, e), i, &format!("synthetic/{i}_{j}.png"))?;
        }
    }
    w.finish()?;
    Dataset::load(dir)
}
