//! Per-channel affine transform and PReLU of f32 tensors on burn-flex, in one pass.
//!
//! burn-flex broadcasts a `[1, C, 1, 1]` operand against `[N, C, H, W]` through its
//! strided iterator, one element at a time on one thread, for `N > 1` (its fast broadcast
//! patterns need the batch axis to step through the operand) and for PReLU always (a
//! custom op without a fast path). Here each `(n, c)` row of `H * W` values is scaled,
//! shifted and rectified in one pass, rows shared out over rayon's pool, in place when
//! the tensor is not shared.
use burn::tensor::backend::Backend;
use burn::tensor::{DType, Tensor, TensorData};
use burn_flex::FlexTensor;
use rayon::prelude::*;

use super::flex::{from_flex, to_flex};
use super::switch::enabled;

/// Values per rayon task: large enough that scheduling is noise, small enough that a
/// `[1, 10, 615, 615]` tensor (MTCNN's largest) spreads over the threads.
const TASK_ELEMS: usize = 1 << 16;

/// Per-channel values of a parameter (`len` is `C`, or 1 for a shared PReLU slope),
/// `None` when it is not f32 or of another length.
fn values<B: Backend>(t: Tensor<B, 1>, c: usize, shared_ok: bool) -> Option<Vec<f32>> {
    let len = t.dims()[0];
    if t.dtype() != DType::F32 || !(len == c || shared_ok && len == 1) {
        return None;
    }
    let v = t.into_data().into_vec::<f32>().ok()?;
    Some(if len == c { v } else { vec![v[0]; c] })
}

/// See [`super::channel_affine_prelu`].
pub(super) fn forward<B: Backend, const D: usize>(
    x: Tensor<B, D>,
    affine: Option<(Tensor<B, 1>, Tensor<B, 1>)>,
    alpha: Option<Tensor<B, 1>>,
) -> Result<Tensor<B, D>, Tensor<B, D>> {
    if !enabled() || x.dtype() != DType::F32 || D < 2 || (affine.is_none() && alpha.is_none()) {
        return Err(x);
    }
    let dims = x.dims();
    let c = dims[1];
    // The backend first: the parameters are read back to the host only on burn-flex.
    let x = to_flex(x)?;
    let affine = match affine {
        Some((scale, shift)) => match (values(scale, c, false), values(shift, c, false)) {
            (Some(s), Some(t)) => Some((s, t)),
            _ => return Err(from_flex(x)),
        },
        None => None,
    };
    let alpha = match alpha.map(|a| values(a, c, true)) {
        Some(None) => return Err(from_flex(x)),
        Some(Some(a)) => Some(a),
        None => None,
    };
    let inner: usize = dims[2..].iter().product();
    if inner == 0 || x.layout().num_elements() == 0 {
        return Ok(from_flex(x));
    }
    let row = |i: usize, values: &mut [f32]| {
        let ch = i % c;
        match (&affine, &alpha) {
            (Some((s, t)), Some(a)) => {
                let (s, t, a) = (s[ch], t[ch], a[ch]);
                for v in values {
                    let y = *v * s + t;
                    *v = if y >= 0.0 { y } else { a * y };
                }
            }
            (Some((s, t)), None) => {
                let (s, t) = (s[ch], t[ch]);
                values.iter_mut().for_each(|v| *v = *v * s + t);
            }
            (None, Some(a)) => {
                let a = a[ch];
                for v in values {
                    *v = if *v >= 0.0 { *v } else { a * *v };
                }
            }
            (None, None) => {}
        }
    };
    let rows_per_task = (TASK_ELEMS / inner).max(1);
    let run = |data: &mut [f32]| {
        data.par_chunks_mut(inner * rows_per_task)
            .enumerate()
            .for_each(|(task, chunk)| {
                for (j, values) in chunk.chunks_exact_mut(inner).enumerate() {
                    row(task * rows_per_task + j, values);
                }
            });
    };
    // `to_contiguous` of a contiguous tensor is another handle on the same buffer: drop
    // the first, so that an input nobody else holds is written in place.
    let mut x = {
        let contiguous = x.to_contiguous();
        drop(x);
        contiguous
    };
    let out = match x.try_storage_mut::<f32>() {
        Some(data) => {
            run(data);
            x
        }
        None => {
            let mut data = x.storage::<f32>().to_vec();
            run(&mut data);
            FlexTensor::from_data(TensorData::new(data, dims.to_vec()))
        }
    };
    Ok(from_flex(out))
}

#[cfg(test)]
mod tests {
    use burn::backend::Flex;
    use burn::tensor::activation::prelu;
    use burn::tensor::{Distribution, Tensor, TensorData};

    type B = Flex;

    /// Against burn-flex's own broadcast ops: affine then PReLU, each alone, a shared
    /// slope, a 2-D input (`[N, C]`, as after a Linear), and a shared input (`x` still
    /// used afterwards: the result must not overwrite it).
    #[test]
    fn matches_burn_ops_and_leaves_shared_inputs_alone() {
        let device = Default::default();
        let x = Tensor::<B, 4>::random([3, 5, 7, 9], Distribution::Normal(0.0, 1.0), &device);
        let c = |v: &[f32]| Tensor::<B, 1>::from_data(TensorData::from(v), &device);
        let scale = c(&[0.5, -1.0, 2.0, 1.5, 0.25]);
        let shift = c(&[0.1, -0.2, 0.0, 0.3, -1.0]);
        let alpha = c(&[0.25, 0.1, -0.5, 1.0, 0.0]);
        let b = |t: Tensor<B, 1>| t.reshape([1, 5, 1, 1]);
        let affine = x.clone() * b(scale.clone()) + b(shift.clone());
        let before = x.clone().into_data();
        // The same f32 products and sums in the same order as burn-flex's ops: equal.
        let eq = |got: Tensor<B, 4>, expected: Tensor<B, 4>| {
            assert_eq!(got.into_data(), expected.into_data());
        };

        let both = Some((scale.clone(), shift.clone()));
        let got = super::forward(x.clone(), both.clone(), Some(alpha.clone()));
        eq(
            got.expect("f32 on Flex"),
            prelu(affine.clone(), alpha.clone()),
        );
        eq(
            super::forward(x.clone(), both, None).expect("f32 on Flex"),
            affine,
        );
        let got = super::forward(x.clone(), None, Some(alpha.clone()));
        eq(got.expect("f32 on Flex"), prelu(x.clone(), alpha));
        let shared = c(&[0.2]);
        let got = super::forward(x.clone(), None, Some(shared.clone()));
        eq(got.expect("f32 on Flex"), prelu(x.clone(), shared));
        assert_eq!(x.into_data(), before, "the shared input was overwritten");

        let x2 = Tensor::<B, 2>::random([4, 5], Distribution::Normal(0.0, 1.0), &device);
        let expected = x2.clone() * scale.clone().reshape([1, 5]) + shift.clone().reshape([1, 5]);
        let got = super::forward(x2, Some((scale, shift)), None).expect("f32 on Flex");
        assert_eq!(got.into_data(), expected.into_data());
    }

    /// Rows spread over several tasks (5 channels of 5000 values: 13 rows per task, not a
    /// multiple of the channel count), and an input nobody else holds is written in place.
    #[test]
    fn rows_across_tasks_and_in_place() {
        let device = Default::default();
        let x = Tensor::<B, 4>::random([7, 5, 50, 100], Distribution::Normal(0.0, 1.0), &device);
        let c = |v: &[f32]| Tensor::<B, 1>::from_data(TensorData::from(v), &device);
        let alpha = c(&[0.25, 0.1, -0.5, 1.0, 0.0]);
        let expected = prelu(x.clone(), alpha.clone()).into_data();
        let buffer = |t: &Tensor<B, 4>| {
            let flex: burn_flex::FlexTensor = t.clone().into_primitive().tensor();
            flex.bytes().as_ptr()
        };
        let before = buffer(&x);
        let got = super::forward(x, None, Some(alpha)).expect("f32 on Flex");
        assert_eq!(
            buffer(&got),
            before,
            "a tensor nobody else holds was copied"
        );
        assert_eq!(got.into_data(), expected);
    }

    #[test]
    fn wrong_lengths_go_to_burn() {
        let device = Default::default();
        let x = Tensor::<B, 4>::ones([1, 3, 2, 2], &device);
        let two = Tensor::<B, 1>::ones([2], &device);
        assert!(super::forward(x.clone(), None, Some(two.clone())).is_err());
        assert!(super::forward(x, Some((two.clone(), two)), None).is_err());
    }
}
