//! Name-space operations: name prepending (NP) and making new names from old ones.
use alloc::format;
use alloc::vec;
use alloc::vec::Vec;
use burn::tensor::{Tensor, TensorData, backend::Backend};

use crate::{NameEmbedding, NameError, Result};

/// The name tokens handed to [`prepend`]: one name for the whole batch, or one per sample.
#[derive(Debug, Clone)]
pub enum NameTokens<B: Backend> {
    /// `[K, D]`, broadcast over the batch.
    Shared(Tensor<B, 2>),
    /// `[B, K, D]`, one name per prompt.
    PerSample(Tensor<B, 3>),
}

impl<B: Backend> From<Tensor<B, 2>> for NameTokens<B> {
    fn from(t: Tensor<B, 2>) -> Self {
        Self::Shared(t)
    }
}

impl<B: Backend> From<Tensor<B, 3>> for NameTokens<B> {
    fn from(t: Tensor<B, 3>) -> Self {
        Self::PerSample(t)
    }
}

impl<B: Backend> From<&NameEmbedding<B>> for NameTokens<B> {
    fn from(n: &NameEmbedding<B>) -> Self {
        Self::Shared(n.tokens().clone())
    }
}

impl<B: Backend> From<NameEmbedding<B>> for NameTokens<B> {
    fn from(n: NameEmbedding<B>) -> Self {
        Self::Shared(n.into_tokens())
    }
}

/// Name prepending, NP(F_prompt, F_ID) of `docs/METHOD.md`, (c)/(d): keeps the start-token vector,
/// inserts the `K` name vectors right after it, then the prompt's own vectors `1..`, and
/// cuts the sequence back to `L` (the prompt's last `K` vectors, usually padding, are
/// dropped). The pooled embedding is not touched by NP.
///
/// # Shapes
/// - `prompt_embeds`: `[B, L, D]`
/// - `name`: `[K, D]` (shared) or `[B, K, D]` (per sample)
/// - output: `[B, L, D]`
///
/// # Errors
/// [`NameError::DimMismatch`] when the `D`s differ, [`NameError::TooManyTokens`] when
/// `K >= L`, [`NameError::BatchMismatch`] when per-sample names do not match `B`.
pub fn prepend<B: Backend>(
    prompt_embeds: Tensor<B, 3>,
    name: impl Into<NameTokens<B>>,
) -> Result<Tensor<B, 3>> {
    let [batch, seq_len, dim] = prompt_embeds.dims();
    let name = match name.into() {
        NameTokens::Shared(t) => {
            let [k, d] = t.dims();
            t.reshape([1, k, d]).expand([batch, k, d])
        }
        NameTokens::PerSample(t) => {
            let [b, _, _] = t.dims();
            if b != batch {
                return Err(NameError::BatchMismatch {
                    names: b,
                    prompts: batch,
                });
            }
            t
        }
    };
    let [_, k, name_dim] = name.dims();
    if name_dim != dim {
        return Err(NameError::DimMismatch {
            name_dim,
            prompt_dim: dim,
        });
    }
    if k >= seq_len {
        return Err(NameError::TooManyTokens { tokens: k, seq_len });
    }
    let start = prompt_embeds.clone().slice([0..batch, 0..1, 0..dim]);
    let mut parts = vec![start];
    if k > 0 {
        parts.push(name);
    }
    // Prompt tokens 1..L-K survive; the last K fall off the end.
    let keep_end = seq_len - k;
    if keep_end > 1 {
        parts.push(prompt_embeds.slice([0..batch, 1..keep_end, 0..dim]));
    }
    Ok(Tensor::cat(parts, 1))
}

fn check_same_shape<B: Backend>(
    what: &'static str,
    a: &NameEmbedding<B>,
    b: &NameEmbedding<B>,
) -> Result<()> {
    let (sa, sb) = (a.tokens().dims(), b.tokens().dims());
    if sa != sb {
        return Err(NameError::ShapeMismatch {
            what,
            left: sa.to_vec(),
            right: sb.to_vec(),
        });
    }
    Ok(())
}

fn check_parameter(what: &'static str, value: f64) -> Result<()> {
    if value.is_finite() {
        Ok(())
    } else {
        Err(NameError::NonFiniteParameter { what, value })
    }
}

/// Linear interpolation `(1 - t) a + t b`, token by token: the fictional identities of
/// `docs/METHOD.md`, "Fictional people" (the paper's interpolation figure uses t = 0, 0.25, 0.5, 0.75, 1). `t` outside `[0, 1]`
/// extrapolates.
///
/// # Errors
/// Shape mismatch, or a non-finite `t`.
pub fn interpolate<B: Backend>(
    a: &NameEmbedding<B>,
    b: &NameEmbedding<B>,
    t: f64,
) -> Result<NameEmbedding<B>> {
    check_parameter("interpolation parameter t", t)?;
    check_same_shape("interpolate", a, b)?;
    let out = a.tokens().clone().mul_scalar(1.0 - t) + b.tokens().clone().mul_scalar(t);
    NameEmbedding::new(
        out,
        format!("interpolate({}, {}, t={t})", a.source(), b.source()),
    )
}

/// Below this `sin(omega)` two token vectors count as parallel and slerp uses the linear
/// weights, which are its limit as `omega -> 0` (error O(omega^2), under f32 rounding
/// for omega < ~1e-4 rad).
const SLERP_PARALLEL_SIN: f64 = 1e-6;

/// Spherical interpolation, per token vector:
/// `sin((1-t) w)/sin(w) a_k + sin(t w)/sin(w) b_k` with `w` the angle between `a_k` and
/// `b_k`. Nearly parallel vectors (and zero vectors, which have no direction) use the
/// linear weights, slerp's own limit, so the result stays stable. `t` outside `[0, 1]`
/// extrapolates along the great circle.
///
/// # Errors
/// Shape mismatch, non-finite `t`, or [`NameError::Antiparallel`] for opposite vectors.
pub fn slerp<B: Backend>(
    a: &NameEmbedding<B>,
    b: &NameEmbedding<B>,
    t: f64,
) -> Result<NameEmbedding<B>> {
    check_parameter("interpolation parameter t", t)?;
    check_same_shape("slerp", a, b)?;
    let (ta, tb) = (a.tokens().clone(), b.tokens().clone());
    let [k, _] = ta.dims();
    // Angles from per-token sums (K values each) computed in f64 on the host.
    let dot = host_f64((ta.clone() * tb.clone()).sum_dim(1));
    let na = host_f64((ta.clone() * ta.clone()).sum_dim(1));
    let nb = host_f64((tb.clone() * tb.clone()).sum_dim(1));
    let mut wa = Vec::with_capacity(k);
    let mut wb = Vec::with_capacity(k);
    for token in 0..k {
        let norm = (na[token] * nb[token]).sqrt();
        let cosine = if norm > 0.0 {
            (dot[token] / norm).clamp(-1.0, 1.0)
        } else {
            1.0
        };
        let omega = libm::acos(cosine);
        let sin_omega = libm::sin(omega);
        if sin_omega < SLERP_PARALLEL_SIN {
            if cosine < 0.0 {
                return Err(NameError::Antiparallel { token, cosine });
            }
            wa.push((1.0 - t) as f32);
            wb.push(t as f32);
        } else {
            wa.push((libm::sin((1.0 - t) * omega) / sin_omega) as f32);
            wb.push((libm::sin(t * omega) / sin_omega) as f32);
        }
    }
    let device = ta.device();
    let wa = Tensor::<B, 2>::from_data(TensorData::new(wa, [k, 1]), &device);
    let wb = Tensor::<B, 2>::from_data(TensorData::new(wb, [k, 1]), &device);
    NameEmbedding::new(
        ta * wa + tb * wb,
        format!("slerp({}, {}, t={t})", a.source(), b.source()),
    )
}

/// Weighted mix of several names, `sum_i w_i n_i / sum_i w_i`: the weights are
/// normalised to sum to 1.
///
/// # Errors
/// No names, shape mismatch, a negative or non-finite weight, or all weights zero.
pub fn mix<B: Backend>(names: &[(&NameEmbedding<B>, f64)]) -> Result<NameEmbedding<B>> {
    let Some((first, _)) = names.first() else {
        return Err(NameError::Empty { what: "mix" });
    };
    let mut total = 0.0;
    for (index, (name, weight)) in names.iter().enumerate() {
        check_parameter("mixing weight", *weight)?;
        if *weight < 0.0 {
            return Err(NameError::NegativeWeight {
                index,
                weight: *weight,
            });
        }
        check_same_shape("mix", first, name)?;
        total += weight;
    }
    if total == 0.0 {
        return Err(NameError::AllZeroWeights { count: names.len() });
    }
    let mut acc = first.tokens().zeros_like();
    let mut sources = Vec::with_capacity(names.len());
    for (name, weight) in names {
        acc = acc + name.tokens().clone().mul_scalar(weight / total);
        sources.push(format!("{}*{:.4}", name.source(), weight / total));
    }
    NameEmbedding::new(acc, format!("mix({})", sources.join(" + ")))
}

fn host_f64<B: Backend>(x: Tensor<B, 2>) -> Vec<f64> {
    x.into_data().iter::<f64>().collect()
}
