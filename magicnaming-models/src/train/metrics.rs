//! Validation metrics of a name head: MSE, cosine to the true name, and top-1 retrieval
//! (is the predicted name's nearest true name, among all validation identities, the
//! right one?).
use burn::tensor::backend::Backend;
use burn::tensor::{ElementConversion, Tensor, TensorData};
use magicnaming_core::NameHead;
use serde::{Deserialize, Serialize};

use super::dataset::{Dataset, Split};

/// Metrics over the validation split; `None` when it holds no image.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ValMetrics {
    /// Mean squared error over all elements.
    pub val_loss: Option<f64>,
    /// Mean cosine between predicted and true flattened names.
    pub val_cosine: Option<f64>,
    /// Fraction of images whose nearest validation name (L2) is their own.
    pub val_top1: Option<f64>,
}

/// Rows per forward pass during evaluation.
const EVAL_BATCH: usize = 256;

/// Evaluates `head` on the validation split of `dataset`.
pub fn evaluate<B: Backend>(
    head: &NameHead<B>,
    dataset: &Dataset,
    device: &B::Device,
) -> ValMetrics {
    evaluate_rows(
        head,
        dataset,
        &dataset.rows(Split::Val),
        &dataset.identities(Split::Val),
        device,
    )
}

/// Evaluates `head` on `rows`, retrieving among `candidates` (identity indices).
pub fn evaluate_rows<B: Backend>(
    head: &NameHead<B>,
    dataset: &Dataset,
    rows: &[usize],
    candidates: &[usize],
    device: &B::Device,
) -> ValMetrics {
    if rows.is_empty() || candidates.is_empty() {
        return ValMetrics {
            val_loss: None,
            val_cosine: None,
            val_top1: None,
        };
    }
    let (e, n) = (dataset.embed_dim(), dataset.name_len());
    let cand: Vec<f32> = candidates
        .iter()
        .flat_map(|&i| dataset.names[i * n..(i + 1) * n].iter().copied())
        .collect();
    let cand = Tensor::<B, 2>::from_data(TensorData::new(cand, [candidates.len(), n]), device);
    let cand_sq = (cand.clone() * cand.clone())
        .sum_dim(1)
        .reshape([1, candidates.len()]);
    let (mut sq_err, mut cos_sum, mut hits) = (0f64, 0f64, 0usize);
    for chunk in rows.chunks(EVAL_BATCH) {
        let b = chunk.len();
        let x = Tensor::<B, 2>::from_data(
            TensorData::new(dataset.gather_embeds(chunk), [b, e]),
            device,
        );
        let y =
            Tensor::<B, 2>::from_data(TensorData::new(dataset.gather_names(chunk), [b, n]), device);
        let p = head.forward(x).reshape([b, n]);
        let diff = p.clone() - y.clone();
        sq_err += (diff.clone() * diff).sum().into_scalar().elem::<f64>();
        let dot = (p.clone() * y.clone()).sum_dim(1);
        let norms = (p.clone() * p.clone()).sum_dim(1).sqrt() * (y.clone() * y).sum_dim(1).sqrt();
        let cos: Vec<f32> = (dot / norms.clamp_min(1e-12))
            .into_data()
            .iter::<f32>()
            .collect();
        cos_sum += cos.iter().map(|&c| c as f64).sum::<f64>();
        // Squared distances to every candidate: |p|^2 - 2 p.c + |c|^2.
        let p_sq = (p.clone() * p.clone()).sum_dim(1);
        let dist = p_sq - p.matmul(cand.clone().transpose()).mul_scalar(2.0) + cand_sq.clone();
        let nearest: Vec<i64> = dist.argmin(1).into_data().iter::<i64>().collect();
        for (row, &j) in chunk.iter().zip(&nearest) {
            if candidates[j as usize] == dataset.identity[*row] {
                hits += 1;
            }
        }
    }
    let count = rows.len() as f64;
    ValMetrics {
        val_loss: Some(sq_err / (count * n as f64)),
        val_cosine: Some(cos_sum / count),
        val_top1: Some(hits as f64 / count),
    }
}
