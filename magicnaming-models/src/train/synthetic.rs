//! A learnable synthetic dataset, for tests, demos and benchmarks of the training loop
//! without images or towers: identity `i` has a latent `z_i` (6-d); its name is
//! `z_i A` and each of its images embeds as `(z_i + 0.05 noise) C`, so the name is a
//! linear function of the image embedding that generalises to unseen people.
//!
//! [`synthetic_image_dataset`] draws images instead, for LoRA training.
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

/// Writes a dataset of drawn images for LoRA training demos and tests: `identities`
/// people with `images` photos each (`width` x `height` PNGs under `dir/images/`, a
/// person's own colours and shape, jittered per photo), a `manifest.jsonl` with captions,
/// and random names `[num_tokens, token_dim]` (the width of the model the LoRA trains);
/// the image embeddings are random (a LoRA run does not read them).
pub fn synthetic_image_dataset(
    dir: &Path,
    identities: usize,
    images: usize,
    [num_tokens, token_dim]: [usize; 2],
    [width, height]: [u32; 2],
    seed: u64,
) -> Result<Dataset> {
    let mut rng = SplitMix64(seed);
    let img_dir = dir.join("images");
    std::fs::create_dir_all(&img_dir).map_err(|e| crate::ModelError::io(&img_dir, e))?;
    let dir_abs = dir
        .canonicalize()
        .map_err(|e| crate::ModelError::io(dir, e))?;
    let e = 4;
    let mut w = DatasetWriter::new(dir, num_tokens, token_dim, vec![e / 2, e / 2], 64)?;
    w.index.identities = (0..identities)
        .map(|i| Identity {
            name: format!("person {i}"),
            split: Split::Train,
            images,
        })
        .collect();
    let names: Vec<f32> = rng
        .normal_f32(identities * num_tokens * token_dim)
        .into_iter()
        .map(|v| 0.5 * v)
        .collect();
    w.write_names(&names)?;
    let mut manifest = String::new();
    for i in 0..identities {
        let unit = |r: &mut SplitMix64| (r.next_u64() % 256) as u8;
        let (bg, fg) = (
            [unit(&mut rng), unit(&mut rng), unit(&mut rng)],
            [unit(&mut rng), unit(&mut rng), unit(&mut rng)],
        );
        for j in 0..images {
            let (cx, cy) = (
                width as f64 * (0.35 + 0.3 * rng.next_f64()),
                height as f64 * (0.35 + 0.3 * rng.next_f64()),
            );
            let radius = (width.min(height) as f64) * (0.2 + 0.05 * i as f64 % 0.2);
            let img = image::RgbImage::from_fn(width, height, |x, y| {
                let d = ((x as f64 - cx).powi(2) + (y as f64 - cy).powi(2)).sqrt();
                image::Rgb(if d < radius { fg } else { bg })
            });
            let key = format!("images/{i}_{j}.png");
            let path = dir.join(&key);
            img.save(&path).map_err(|err| {
                crate::ModelError::InvalidInput(format!("{}: {err}", path.display()))
            })?;
            manifest.push_str(
                &serde_json::json!({"image": key, "name": format!("person {i}"),
                    "caption": format!("a photo of person {i} at the beach")})
                .to_string(),
            );
            manifest.push('\n');
            let embed = rng.normal_f32(e);
            w.push(&embed, i, &key)?;
        }
    }
    let manifest_path = dir_abs.join("manifest.jsonl");
    std::fs::write(&manifest_path, manifest)
        .map_err(|err| crate::ModelError::io(&manifest_path, err))?;
    w.index.source.insert(
        "manifest".into(),
        serde_json::Value::String(manifest_path.to_string_lossy().into_owned()),
    );
    w.finish()?;
    Dataset::load(dir)
}
