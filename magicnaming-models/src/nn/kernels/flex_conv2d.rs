//! 2-D convolution of f32 tensors on burn-flex: im2col over a band of output rows, then
//! one `gemm` product per band written straight into the NCHW output.
//!
//! burn-flex's general convolution first copies the whole input to NHWC on one thread,
//! allocates an im2col tile and a result buffer per tile, and scatters each result into
//! the output one element at a time. Here the input stays NCHW: a band's im2col matrix
//! `[C_in * kh * kw, rows * W_out]` is built from contiguous row copies (stride 1) in a
//! buffer each worker reuses, and the product `weight [C_out, C_in * kh * kw] x im2col`
//! is written by `gemm` into the band's place in the output (bias first, then
//! accumulated onto it). Bands of every image are shared out over rayon's pool (burn-flex's
//! own); when there are fewer bands than threads, `gemm` splits each product instead.
//!
//! Taken for f32 tensors with one group and `Valid` or explicit padding; anything else
//! (f16/bf16/f64, grouped or depthwise convolutions, `Same` padding, mismatched channel
//! counts, empty tensors) goes to burn's op.
use burn::nn::PaddingConfig2d;
use burn::nn::conv::Conv2d;
use burn::tensor::backend::Backend;
use burn::tensor::{DType, Tensor, TensorData};
use burn_flex::FlexTensor;
use rayon::prelude::*;

use super::flex::{Output, from_flex, param, to_flex};
use super::switch::enabled;

/// Bytes of im2col buffer per band: a band holds as many output rows as fit, but at least
/// [`MIN_COLUMNS`] output positions (or the whole image). 2 MiB keeps a band's matrix
/// within a core's share of the last-level cache at the face models' and the VAE's
/// widths (IResNet-50 at 64 channels: 576 rows x 896 columns).
const BAND_BYTES: usize = 2 << 20;

/// Output positions per band at least: each band packs the whole weight again, so at
/// SDXL's 1280 channels (11520 im2col rows, a 59 MB weight) a band of one 32-wide row would
/// read the weight once per 32 columns.
const MIN_COLUMNS: usize = 256;

/// The geometry of one convolution, in elements.
#[derive(Debug, Clone, Copy)]
struct Geometry {
    batch: usize,
    c_in: usize,
    h: usize,
    w: usize,
    c_out: usize,
    kh: usize,
    kw: usize,
    stride: [usize; 2],
    dilation: [usize; 2],
    /// Top and left padding (bottom and right only shape the output size).
    pad: [usize; 2],
    out_h: usize,
    out_w: usize,
}

impl Geometry {
    /// Rows of the im2col matrix (`C_in * kh * kw`).
    fn depth(&self) -> usize {
        self.c_in * self.kh * self.kw
    }
}

/// Output length of one axis, `None` when the padded input is shorter than the kernel.
fn out_len(
    len: usize,
    pads: usize,
    kernel: usize,
    stride: usize,
    dilation: usize,
) -> Option<usize> {
    let span = dilation
        .checked_mul(kernel.checked_sub(1)?)?
        .checked_add(1)?;
    let padded = len.checked_add(pads)?;
    (padded >= span && stride > 0).then(|| (padded - span) / stride + 1)
}

/// See [`super::conv2d`].
pub(super) fn forward<B: Backend>(
    conv: &Conv2d<B>,
    x: Tensor<B, 4>,
) -> Result<Tensor<B, 4>, Tensor<B, 4>> {
    if !enabled() || x.dtype() != DType::F32 || conv.groups != 1 {
        return Err(x);
    }
    let [top, left, bottom, right] = match conv.padding {
        PaddingConfig2d::Valid => [0; 4],
        PaddingConfig2d::Explicit(t, l, b, r) => [t, l, b, r],
        PaddingConfig2d::Same => return Err(x),
    };
    let [batch, c_in, h, w] = x.dims();
    let [c_out, w_in, kh, kw] = conv.weight.dims();
    let out_h = out_len(h, top + bottom, kh, conv.stride[0], conv.dilation[0]);
    let out_w = out_len(w, left + right, kw, conv.stride[1], conv.dilation[1]);
    let (Some(out_h), Some(out_w)) = (out_h, out_w) else {
        return Err(x);
    };
    let geometry = Geometry {
        batch,
        c_in,
        h,
        w,
        c_out,
        kh,
        kw,
        stride: conv.stride,
        dilation: conv.dilation,
        pad: [top, left],
        out_h,
        out_w,
    };
    let sizes = [batch, c_in, h, w, c_out, kh, kw, out_h, out_w];
    let bias_ok = conv
        .bias
        .as_ref()
        .is_none_or(|b| b.val().dtype() == DType::F32 && b.dims()[0] == c_out);
    if w_in != c_in || sizes.contains(&0) || conv.weight.val().dtype() != DType::F32 || !bias_ok {
        return Err(x);
    }
    let x = to_flex(x)?.to_contiguous();
    let weight = param(conv.weight.val()).to_contiguous();
    let bias = conv.bias.as_ref().map(|b| param(b.val()).to_contiguous());

    let mut out = vec![0.0f32; batch * c_out * out_h * out_w];
    convolve(
        &geometry,
        x.storage::<f32>(),
        weight.storage::<f32>(),
        bias.as_ref().map(|b| b.storage::<f32>()),
        &mut out,
    );
    let out = TensorData::new(out, [batch, c_out, out_h, out_w]);
    Ok(from_flex(FlexTensor::from_data(out)))
}

/// `out = conv(x, weight) + bias`, all NCHW / `[C_out, C_in, kh, kw]`, contiguous.
fn convolve(g: &Geometry, x: &[f32], weight: &[f32], bias: Option<&[f32]>, out: &mut [f32]) {
    let depth = g.depth();
    let rows_per_band = (BAND_BYTES / (4 * depth * g.out_w))
        .max(MIN_COLUMNS.div_ceil(g.out_w))
        .clamp(1, g.out_h);
    let bands_per_image = g.out_h.div_ceil(rows_per_band);
    let bands: Vec<(usize, usize)> = (0..g.batch)
        .flat_map(|b| (0..bands_per_image).map(move |i| (b, i * rows_per_band)))
        .collect();
    let parallelism = if bands.len() < rayon::current_num_threads() {
        gemm::Parallelism::Rayon(0)
    } else {
        gemm::Parallelism::None
    };
    let out_plane = g.out_h * g.out_w;
    let dst = Output(out.as_mut_ptr());
    bands
        .par_iter()
        .for_each_init(Vec::new, |col: &mut Vec<f32>, &(b, row0)| {
            let rows = rows_per_band.min(g.out_h - row0);
            let cols = rows * g.out_w;
            col.resize(depth * cols, 0.0);
            im2col(
                g,
                &x[b * g.c_in * g.h * g.w..][..g.c_in * g.h * g.w],
                row0,
                rows,
                col,
            );
            // SAFETY: the band starts inside `out` (`b < batch`, `row0 < out_h`), and
            // rows `[0, c_out)` of `cols` elements at stride `out_plane` from it stay
            // inside image `b` of `out`, which no other band writes.
            let band = unsafe { dst.at(b * g.c_out * out_plane + row0 * g.out_w) };
            if let Some(bias) = bias {
                for (co, &v) in bias.iter().enumerate() {
                    // SAFETY: as above, row `co` of the band.
                    unsafe { core::slice::from_raw_parts_mut(band.add(co * out_plane), cols) }
                        .fill(v);
                }
            }
            // SAFETY: `weight` is `[c_out, depth]`, `col` is `[depth, cols]`, the band is
            // `[c_out, cols]` at row stride `out_plane` (see above); all row-major.
            unsafe {
                gemm::gemm(
                    g.c_out,
                    cols,
                    depth,
                    band,
                    1,
                    out_plane as isize,
                    bias.is_some(),
                    weight.as_ptr(),
                    1,
                    depth as isize,
                    col.as_ptr(),
                    1,
                    cols as isize,
                    1.0,
                    1.0,
                    false,
                    false,
                    false,
                    parallelism,
                );
            }
        });
}

/// The im2col matrix of output rows `[row0, row0 + rows)` of one image `x` (`[C_in, H,
/// W]`) into `col` (`[C_in * kh * kw, rows * W_out]`): row `(c, ky, kx)`, column
/// `(oy, ox)` holds `x[c, oy * sh + ky * dh - top, ox * sw + kx * dw - left]`, zero
/// outside the image.
fn im2col(g: &Geometry, x: &[f32], row0: usize, rows: usize, col: &mut [f32]) {
    let cols = rows * g.out_w;
    let [sh, sw] = g.stride;
    let [dh, dw] = g.dilation;
    let [top, left] = g.pad;
    let mut chunks = col.chunks_exact_mut(cols);
    for c in 0..g.c_in {
        let plane = &x[c * g.h * g.w..][..g.h * g.w];
        for ky in 0..g.kh {
            for kx in 0..g.kw {
                let row = chunks.next().expect("col holds C_in * kh * kw rows");
                // Output columns whose input column lies inside the image:
                // ox * sw + kx * dw - left in [0, w).
                let shift = kx * dw;
                let lo = left.saturating_sub(shift).div_ceil(sw).min(g.out_w);
                let hi = (g.w + left)
                    .checked_sub(shift)
                    .map_or(0, |end| end.div_ceil(sw))
                    .clamp(lo, g.out_w);
                for (i, dst) in row.chunks_exact_mut(g.out_w).enumerate() {
                    let iy = (row0 + i) * sh + ky * dh;
                    if iy < top || iy - top >= g.h {
                        dst.fill(0.0);
                        continue;
                    }
                    dst[..lo].fill(0.0);
                    dst[hi..].fill(0.0);
                    if lo == hi {
                        // The kernel column lies in the padding for every output column.
                        continue;
                    }
                    let src = &plane[(iy - top) * g.w..][..g.w];
                    // `lo < hi`: input columns `first + i * sw` (i < hi - lo) are in the image.
                    let first = lo * sw + shift - left;
                    if sw == 1 {
                        dst[lo..hi].copy_from_slice(&src[first..first + (hi - lo)]);
                    } else {
                        for (d, s) in dst[lo..hi].iter_mut().zip(src[first..].iter().step_by(sw)) {
                            *d = *s;
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use burn::backend::Flex;
    use burn::module::Param;
    use burn::nn::PaddingConfig2d;
    use burn::nn::conv::Conv2dConfig;
    use burn::tensor::{DType, Distribution, Tensor, Tolerance};

    type B = Flex;

    /// Every geometry the im2col indexing distinguishes: stride 1 and 2, dilation, each
    /// padding side, a kernel wider than the left padding, bias or none, a 1x1 kernel, a
    /// band count above and below the thread count, several bands in one image and a
    /// shorter last band, kernel columns that fall in the padding for every output. The
    /// reference is burn-flex's own op (`Conv2d::forward`) on the same module and input.
    #[test]
    fn matches_burn_flex_on_every_geometry() {
        let device = Default::default();
        // (input, C_out, kernel, stride, dilation, [top, left, bottom, right], bias)
        type Case = (
            [usize; 4],
            usize,
            [usize; 2],
            [usize; 2],
            [usize; 2],
            [usize; 4],
            bool,
        );
        #[rustfmt::skip]
        let cases: &[Case] = &[
            ([2, 3, 13, 11], 5, [3, 3], [1, 1], [1, 1], [1, 1, 1, 1], true),
            ([1, 4, 17, 16], 6, [3, 3], [2, 2], [1, 1], [1, 1, 1, 1], true),
            ([3, 2, 9, 12], 4, [3, 5], [1, 2], [2, 1], [0, 2, 3, 1], false),
            ([1, 8, 10, 10], 8, [1, 1], [1, 1], [1, 1], [0, 0, 0, 0], true),
            ([2, 3, 28, 28], 7, [14, 14], [14, 14], [1, 1], [0, 0, 0, 0], false),
            ([1, 3, 40, 33], 10, [3, 3], [1, 1], [1, 1], [0, 0, 0, 0], true),
            ([2, 64, 14, 14], 32, [3, 3], [1, 1], [1, 1], [1, 1, 1, 1], true),
            // 576 x 90 columns per output row: 10 rows per band, 9 bands per image.
            ([1, 64, 90, 90], 8, [3, 3], [1, 1], [1, 1], [1, 1, 1, 1], true),
            // Two images of 9 bands, the last one of 8 rows.
            ([2, 64, 88, 90], 8, [3, 3], [1, 1], [1, 1], [1, 1, 1, 1], false),
            // Kernel columns entirely in the padding, strides wider than the input, left
            // padding wider than the image.
            ([1, 2, 1, 1], 3, [5, 5], [1, 1], [1, 1], [2, 2, 2, 2], true),
            ([1, 1, 1, 1], 2, [3, 3], [4, 4], [1, 1], [1, 1, 1, 1], false),
            ([1, 1, 3, 1], 2, [3, 3], [1, 1], [1, 1], [0, 5, 0, 0], true),
            ([1, 2, 5, 4], 3, [3, 3], [1, 1], [3, 3], [6, 6, 6, 6], true),
        ];
        for &(shape, c_out, kernel, stride, dilation, [t, l, b, r], bias) in cases {
            let conv = Conv2dConfig::new([shape[1], c_out], kernel)
                .with_stride(stride)
                .with_dilation(dilation)
                .with_padding(PaddingConfig2d::Explicit(t, l, b, r))
                .with_bias(bias)
                .init::<B>(&device);
            let x = Tensor::<B, 4>::random(shape, Distribution::Normal(0.0, 1.0), &device);
            let expected = conv.forward(x.clone());
            let got = super::forward(&conv, x).expect("an f32 Flex convolution takes this path");
            assert_eq!(
                got.dims(),
                expected.dims(),
                "{shape:?} {kernel:?} {stride:?}"
            );
            // Both sum the same products in f32 in different orders: a few ulps of the
            // sum's magnitude (sums of up to 576 products of unit-scale values).
            got.into_data()
                .assert_approx_eq::<f32>(&expected.into_data(), Tolerance::absolute(1e-4));
        }
    }

    #[test]
    fn other_dtypes_settings_and_shapes_go_to_burn() {
        let device = Default::default();
        let conv = Conv2dConfig::new([2, 3], [3, 3])
            .with_padding(PaddingConfig2d::Same)
            .init::<B>(&device);
        let x = Tensor::<B, 4>::ones([1, 2, 5, 5], &device);
        assert!(super::forward(&conv, x.clone()).is_err(), "Same padding");
        let conv = Conv2dConfig::new([2, 4], [3, 3])
            .with_groups(2)
            .init::<B>(&device);
        assert!(super::forward(&conv, x.clone()).is_err(), "two groups");
        let conv = Conv2dConfig::new([2, 3], [3, 3]).init::<B>(&device);
        assert!(
            super::forward(&conv, x.clone().cast(DType::F16)).is_err(),
            "f16 input"
        );
        let wide = Conv2dConfig::new([3, 3], [3, 3]).init::<B>(&device);
        assert!(
            super::forward(&wide, x.clone()).is_err(),
            "channel mismatch"
        );
        let mut short_bias = conv.clone();
        short_bias.bias = Some(Param::from_tensor(Tensor::<B, 1>::zeros([2], &device)));
        assert!(
            super::forward(&short_bias, x.clone()).is_err(),
            "bias of 2 for 3 channels"
        );
        let mut f16_bias = conv;
        f16_bias.bias = Some(Param::from_tensor(
            Tensor::<B, 1>::zeros([3], &device).cast(DType::F16),
        ));
        assert!(super::forward(&f16_bias, x).is_err(), "f16 bias");
    }
}
