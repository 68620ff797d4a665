//! Linear layers of f32 tensors on burn-flex as one `gemm` product over all leading axes,
//! the bias written first and the product accumulated onto it.
//!
//! burn's linear reshapes the weight to the input's rank (`[1, K, N]`) and burn-flex then runs one
//! product per batch entry (each on one thread once there are four or more), followed by
//! a separate pass adding the bias. Here `[B, L, K]` is one `[B * L, K]` matrix: one
//! product, split over the threads by `gemm`, one packing of the weight, no extra pass.
use burn::nn::Linear;
use burn::tensor::backend::Backend;
use burn::tensor::{DType, Tensor, TensorData};
use burn_flex::FlexTensor;
use rayon::prelude::*;

use super::flex::{Output, from_flex, param, to_flex};
use super::switch::enabled;

/// Products of at least this many multiply-adds are split over the threads (burn-flex's
/// own threshold for its 2-D products).
const PARALLEL_MACS: usize = 192 * 192 * 192;

/// Inputs of at least this many rows per thread are split by rows.
const ROW_SPLIT: usize = 256;

/// Column blocks start at multiples of this (a cache line of f32, and a multiple of
/// `gemm`'s register-tile widths).
const COLUMN_ALIGN: usize = 16;

/// See [`super::linear`].
pub(super) fn forward<B: Backend, const D: usize>(
    linear: &Linear<B>,
    x: Tensor<B, D>,
) -> Result<Tensor<B, D>, Tensor<B, D>> {
    let dims = x.dims();
    let [k, n] = linear.weight.dims();
    if !enabled() || x.dtype() != DType::F32 || D < 2 || dims[D - 1] != k {
        return Err(x);
    }
    let m: usize = dims[..D - 1].iter().product();
    let bias_ok = linear
        .bias
        .as_ref()
        .is_none_or(|b| b.val().dtype() == DType::F32 && b.dims()[0] == n);
    if m == 0 || k == 0 || n == 0 || linear.weight.val().dtype() != DType::F32 || !bias_ok {
        return Err(x);
    }
    let x = to_flex(x)?.to_contiguous();
    let mut weight = param(linear.weight.val());
    if weight.layout().strides().iter().any(|&s| s < 0) {
        weight = weight.to_contiguous();
    }
    let (w_rs, w_cs) = (weight.layout().strides()[0], weight.layout().strides()[1]);
    let w = &weight.storage::<f32>()[weight.layout().start_offset()..];
    let bias = linear.bias.as_ref().map(|b| param(b.val()).to_contiguous());

    let mut out = vec![0.0f32; m * n];
    if let Some(bias) = &bias {
        let bias = bias.storage::<f32>();
        out.chunks_exact_mut(n)
            .for_each(|row| row.copy_from_slice(bias));
    }
    let x = x.storage::<f32>();
    // One block per thread, one product each on one thread: `ROW_SPLIT` rows or more are
    // split by rows, fewer by columns (each thread then packs only its share of the
    // weight). Measured on the CLIP towers (1028 rows) and the text encoders (77), both
    // faster than letting `gemm` split one product over the threads.
    let threads = if m.saturating_mul(n).saturating_mul(k) >= PARALLEL_MACS {
        rayon::current_num_threads().max(1)
    } else {
        1
    };
    let blocks: Vec<[usize; 4]> = if m >= ROW_SPLIT * threads {
        let rows = m.div_ceil(threads);
        (0..m)
            .step_by(rows)
            .map(|i| [i, rows.min(m - i), 0, n])
            .collect()
    } else {
        let cols = n.div_ceil(threads).next_multiple_of(COLUMN_ALIGN).min(n);
        (0..n)
            .step_by(cols)
            .map(|j| [0, m, j, cols.min(n - j)])
            .collect()
    };
    let dst = Output(out.as_mut_ptr());
    blocks.into_par_iter().for_each(|[i0, rows, j0, cols]| {
        // SAFETY: `x` is `[m, k]` and `out` `[m, n]`, row-major; this block writes rows
        // `[i0, i0 + rows)` x columns `[j0, j0 + cols)` of `out` (no other block does)
        // from those rows of `x` and those columns of the weight, whose `[k, n]`
        // elements lie at `w_rs * i + w_cs * j` from `w`'s start (its layout's own
        // strides, within its storage).
        unsafe {
            gemm::gemm(
                rows,
                cols,
                k,
                dst.at(i0 * n + j0),
                1,
                n as isize,
                bias.is_some(),
                x.as_ptr().add(i0 * k),
                1,
                k as isize,
                w.as_ptr().offset(j0 as isize * w_cs),
                w_cs,
                w_rs,
                1.0,
                1.0,
                false,
                false,
                false,
                gemm::Parallelism::None,
            );
        }
    });
    let mut out_dims = dims;
    out_dims[D - 1] = n;
    Ok(from_flex(FlexTensor::from_data(TensorData::new(
        out,
        out_dims.to_vec(),
    ))))
}

#[cfg(test)]
mod tests {
    use burn::backend::Flex;
    use burn::nn::{LinearConfig, LinearLayout};
    use burn::tensor::{Distribution, Tensor, Tolerance};

    type B = Flex;

    /// Against burn's `Linear::forward` on burn-flex: 2-D and 3-D inputs, with and without
    /// bias, a row-major and a column-major (transposed view) weight, products below the
    /// threading threshold and above it split by rows (1028 rows) and by columns (77
    /// rows, also with the column-major weight), in a pool of 4 threads so that the
    /// blocks exist whatever this machine's core count.
    #[test]
    fn matches_burn_linear() {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(4)
            .build()
            .expect("a thread pool");
        pool.install(|| {
            let device = Default::default();
            let x2 = Tensor::<B, 2>::random([3, 5], Distribution::Normal(0.0, 1.0), &device);
            let linear = LinearConfig::new(5, 7).init::<B>(&device);
            let expected = linear.forward(x2.clone());
            let got = super::forward(&linear, x2).expect("an f32 Flex linear takes this path");
            // Sums of 5 products of unit-scale values: a few ulps.
            got.into_data()
                .assert_approx_eq::<f32>(&expected.into_data(), Tolerance::absolute(1e-5));
            for (shape, n, bias, layout) in [
                ([2, 9, 16], 4, false, LinearLayout::Row),
                ([4, 257, 64], 192, true, LinearLayout::Col),
                ([1, 77, 256], 384, true, LinearLayout::Row),
                ([1, 77, 256], 400, false, LinearLayout::Col),
            ] {
                let linear = LinearConfig::new(shape[2], n)
                    .with_bias(bias)
                    .with_layout(layout)
                    .init::<B>(&device);
                let x = Tensor::<B, 3>::random(shape, Distribution::Normal(0.0, 1.0), &device);
                let expected = linear.forward(x.clone());
                let got = super::forward(&linear, x).expect("an f32 Flex linear takes this path");
                assert_eq!(got.dims(), expected.dims());
                // Sums of up to 256 products of unit-scale values in another order: a few
                // ulps of the largest partial sums (~16).
                got.into_data()
                    .assert_approx_eq::<f32>(&expected.into_data(), Tolerance::absolute(1e-4));
            }
        });
    }
}
