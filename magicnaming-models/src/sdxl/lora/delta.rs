//! The weight update of one module, in f32 on the model's device, as a matrix
//! `[out, in * kh * kw]` times `alpha / rank` (the multiplier is applied by the caller).
//!
//! | kind | update |
//! |---|---|
//! | LoRA / LoCon | `up @ down` (`up` `[out, r, 1, 1]` and `down` `[r, in, kh, kw]` flattened) |
//! | LoHa | `(w1a @ w1b) * (w2a @ w2b)`; with Tucker cores each factor is `einsum("i j k l, j r, i p -> p r k l", t, w_b, w_a)` |
//! | LoKr | `kron(w1, w2)`, `w1 = w1_a @ w1_b` and `w2 = w2_a @ w2_b` when stored low-rank, `w2` from `lokr_t2` as LoHa's Tucker factor |
//!
//! DoRA (`dora_scale`, any kind) as LyCORIS merges it: `W' = (W + u) * (m * (d / |W + u| - 1) + 1)`
//! with `u` the update times `alpha / rank`, `m` the multiplier and the norm taken per
//! output row when `d` is `[out, 1, ...]`, per input channel when it is `[1, in, ...]`.
//!
//! As LyCORIS and ComfyUI read them: LoHa's rank is `hada_w1_b`'s first dimension; LoKr's is
//! that of its low-rank factor (`w2`'s when both are), and a LoKr of two whole matrices
//! ignores alpha.
use burn::tensor::backend::Backend;
use burn::tensor::{DType, Tensor, TensorData};

use super::file::LoraModule;
use super::parts::{LoraKind, Part};
use crate::Result;
use crate::weights::SafetensorsFile;

fn shape_of(file: &SafetensorsFile, m: &LoraModule, p: Part) -> Vec<usize> {
    m.parts
        .get(&p)
        .and_then(|k| file.entry(k))
        .map(|e| e.shape.clone())
        .unwrap_or_default()
}

/// The update's shape in PyTorch layout, from the stored shapes alone (for checking it
/// against the model before computing anything). A LoHa without Tucker cores has a
/// flattened `[out, in * kh * kw]` shape.
pub fn update_shape(file: &SafetensorsFile, m: &LoraModule) -> Vec<usize> {
    let s = |p| shape_of(file, m, p);
    let has = |p| m.parts.contains_key(&p);
    match m.kind {
        LoraKind::Lora => {
            let (up, down) = (s(Part::Up), s(Part::Down));
            std::iter::once(up[0])
                .chain(down[1..].iter().copied())
                .collect()
        }
        LoraKind::LoHa => tucker_or_matrix(
            s(Part::HadaW1A),
            s(Part::HadaW1B),
            has(Part::HadaT1).then(|| s(Part::HadaT1)),
        ),
        LoraKind::LoKr => {
            let w1 = if has(Part::LokrW1) {
                s(Part::LokrW1)
            } else {
                vec![s(Part::LokrW1A)[0], s(Part::LokrW1B)[1]]
            };
            let w2 = if has(Part::LokrW2) {
                s(Part::LokrW2)
            } else {
                tucker_or_matrix(
                    s(Part::LokrW2A),
                    s(Part::LokrW2B),
                    has(Part::LokrT2).then(|| s(Part::LokrT2)),
                )
            };
            let mut out = vec![w1[0] * w2[0], w1[1] * w2[1]];
            out.extend_from_slice(&w2[2..]);
            out
        }
    }
}

fn tucker_or_matrix(a: Vec<usize>, b: Vec<usize>, t: Option<Vec<usize>>) -> Vec<usize> {
    match t {
        Some(t) => vec![a[1], b[1], t[2], t[3]],
        None => vec![a[0], b[1..].iter().product()],
    }
}

/// Reads a stored tensor as an f32 matrix `[dim 0, rest]` on `device`.
fn matrix<B: Backend>(
    file: &SafetensorsFile,
    m: &LoraModule,
    p: Part,
    device: &B::Device,
) -> Result<Tensor<B, 2>> {
    let key = &m.parts[&p];
    let (values, shape) = file.read_f32(key)?;
    let rows = shape.first().copied().unwrap_or(1);
    let cols = shape.iter().skip(1).product::<usize>().max(1);
    Ok(Tensor::from_data(
        TensorData::new(values, [rows, cols]),
        (device, DType::F32),
    ))
}

fn tensor4<B: Backend>(
    file: &SafetensorsFile,
    m: &LoraModule,
    p: Part,
    device: &B::Device,
) -> Result<Tensor<B, 4>> {
    let (values, shape) = file.read_f32(&m.parts[&p])?;
    let s: [usize; 4] = shape.as_slice().try_into().map_err(|_| {
        crate::ModelError::weights(
            file.path(),
            format!(
                "Tucker core `{}` has shape {shape:?}, 4-D expected",
                m.parts[&p]
            ),
        )
    })?;
    Ok(Tensor::from_data(
        TensorData::new(values, s),
        (device, DType::F32),
    ))
}

/// `einsum("i j k l, j r, i p -> p r k l", t, b, a)` flattened to `[p, r * k * l]`:
/// `t` `[R1, R2, kh, kw]`, `b` `[R2, in]`, `a` `[R1, out]`.
fn tucker<B: Backend>(t: Tensor<B, 4>, b: Tensor<B, 2>, a: Tensor<B, 2>) -> Tensor<B, 2> {
    let [r1, r2, kh, kw] = t.dims();
    let [_, n_in] = b.dims();
    let [_, n_out] = a.dims();
    // contract j: [i, k, l, j] @ [j, r] -> [i, k * l * r]
    let x = t
        .permute([0, 2, 3, 1])
        .reshape([r1 * kh * kw, r2])
        .matmul(b)
        .reshape([r1, kh * kw * n_in]);
    // contract i: [p, i] @ [i, k * l * r] -> [p, k, l, r] -> [p, r, k, l]
    a.transpose()
        .matmul(x)
        .reshape([n_out, kh, kw, n_in])
        .permute([0, 3, 1, 2])
        .reshape([n_out, n_in * kh * kw])
}

/// `kron(a, b)` of two matrices: `[m, n] x [p, q] -> [m * p, n * q]`.
fn kron<B: Backend>(a: Tensor<B, 2>, b: Tensor<B, 2>) -> Tensor<B, 2> {
    let [m, n] = a.dims();
    let [p, q] = b.dims();
    let x = a.reshape([m, 1, n, 1]) * b.reshape([1, p, 1, q]);
    x.reshape([m * p, n * q])
}

/// The update of `m`, `[out, in * kh * kw]` in f32 on `device`, times `alpha / rank`.
///
/// # Errors
/// A tensor that cannot be read.
pub fn update<B: Backend>(
    file: &SafetensorsFile,
    m: &LoraModule,
    device: &B::Device,
) -> Result<Tensor<B, 2>> {
    let mat = |p| matrix::<B>(file, m, p, device);
    let has = |p| m.parts.contains_key(&p);
    let product = match m.kind {
        LoraKind::Lora => mat(Part::Up)?.matmul(mat(Part::Down)?),
        LoraKind::LoHa => {
            let factor = |a, b, t| -> Result<Tensor<B, 2>> {
                if has(t) {
                    Ok(tucker(tensor4(file, m, t, device)?, mat(b)?, mat(a)?))
                } else {
                    Ok(mat(a)?.matmul(mat(b)?))
                }
            };
            factor(Part::HadaW1A, Part::HadaW1B, Part::HadaT1)?
                * factor(Part::HadaW2A, Part::HadaW2B, Part::HadaT2)?
        }
        LoraKind::LoKr => {
            let w1 = if has(Part::LokrW1) {
                mat(Part::LokrW1)?
            } else {
                mat(Part::LokrW1A)?.matmul(mat(Part::LokrW1B)?)
            };
            let w2 = if has(Part::LokrW2) {
                mat(Part::LokrW2)?
            } else if has(Part::LokrT2) {
                tucker(
                    tensor4(file, m, Part::LokrT2, device)?,
                    mat(Part::LokrW2B)?,
                    mat(Part::LokrW2A)?,
                )
            } else {
                mat(Part::LokrW2A)?.matmul(mat(Part::LokrW2B)?)
            };
            kron(w1, w2)
        }
    };
    Ok(product.mul_scalar(m.scale()))
}

/// Whether `m`'s DoRA magnitude (if any) fits a weight of PyTorch shape `weight`: one
/// value per output row or per input channel.
pub fn dora_fits(file: &SafetensorsFile, m: &LoraModule, weight: &[usize]) -> bool {
    let d = shape_of(file, m, Part::DoraScale);
    let n: usize = d.iter().product();
    (d.first() == Some(&weight[0]) && n == weight[0])
        || (d.len() >= 2 && d[0] == 1 && d[1] == weight[1] && n == weight[1])
}

/// Applies `m`'s DoRA magnitude to `w` (= `W + u`, PyTorch layout flattened to
/// `[out, in * kh * kw]`, f32) at `multiplier`; `weight` is the weight's PyTorch shape.
///
/// # Errors
/// A tensor that cannot be read.
pub fn dora<B: Backend>(
    file: &SafetensorsFile,
    m: &LoraModule,
    w: Tensor<B, 2>,
    multiplier: f32,
    weight: &[usize],
) -> Result<Tensor<B, 2>> {
    let device = w.device();
    let (values, _) = file.read_f32(&m.parts[&Part::DoraScale])?;
    let [out, flat] = w.dims();
    let eps = f32::EPSILON;
    let blend = |scale: Tensor<B, 3>| scale.sub_scalar(1.0).mul_scalar(multiplier).add_scalar(1.0);
    let d = shape_of(file, m, Part::DoraScale);
    let per_output = d.first() == Some(&out);
    let (inp, k) = (weight[1], flat / weight[1]);
    let w3 = w.reshape([out, inp, k]);
    let (norm, d) = if per_output {
        let n = w3.clone().powi_scalar(2).sum_dim(2).sum_dim(1).sqrt();
        let d =
            Tensor::<B, 3>::from_data(TensorData::new(values, [out, 1, 1]), (&device, DType::F32));
        (n, d)
    } else {
        let n = w3.clone().powi_scalar(2).sum_dim(2).sum_dim(0).sqrt();
        let d =
            Tensor::<B, 3>::from_data(TensorData::new(values, [1, inp, 1]), (&device, DType::F32));
        (n, d)
    };
    let scale = blend(d / norm.add_scalar(eps));
    Ok((w3 * scale).reshape([out, flat]))
}

#[cfg(test)]
mod tests {
    use super::*;

    type B = burn::backend::NdArray<f32>;

    fn t2(v: Vec<f32>, s: [usize; 2]) -> Tensor<B, 2> {
        Tensor::from_data(TensorData::new(v, s), &Default::default())
    }

    #[test]
    fn kron_of_small_matrices() {
        let a = t2(vec![1.0, 2.0], [1, 2]);
        let b = t2(vec![1.0, 10.0, 100.0, 1000.0], [2, 2]);
        let k = kron(a, b).into_data().to_vec::<f32>().unwrap();
        assert_eq!(k, vec![1.0, 10.0, 2.0, 20.0, 100.0, 1000.0, 200.0, 2000.0]);
    }

    #[test]
    fn tucker_with_identity_core_is_a_product() {
        // t = identity over (i, j) with 1x1 kernel: einsum gives a^T @ b.
        let t = Tensor::<B, 4>::from_data(
            TensorData::new(vec![1.0, 0.0, 0.0, 1.0], [2, 2, 1, 1]),
            &Default::default(),
        );
        let a = t2(vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0], [2, 3]);
        let b = t2(vec![1.0, 0.0, 0.0, 1.0], [2, 2]);
        let got = tucker(t, b.clone(), a.clone())
            .into_data()
            .to_vec::<f32>()
            .unwrap();
        let want = a.transpose().matmul(b).into_data().to_vec::<f32>().unwrap();
        assert_eq!(got, want);
    }
}
