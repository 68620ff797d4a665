//! Stored tensors to the values module parameters take, several tensors at a time over
//! the cores: each tensor's element conversion (f16 / bf16 / f64 to f32), its remap
//! [`Transform`] and, for Linear weights, the transpose from PyTorch's `[out, in]` to
//! burn's `[in, out]` happen in one pass over the stored bytes, straight into the buffer
//! the parameter then owns.
use std::sync::Mutex;

use burn::tensor::{DType, TensorData};
use safetensors::Dtype;

/// How a stored tensor becomes the tensor a module parameter expects (in PyTorch layout;
/// Linear transposition and norm renaming are left to [`PyTorchToBurnAdapter`]).
#[derive(Debug, Clone, PartialEq)]
pub enum Transform {
    /// As stored.
    Identity,
    /// Chunk `index` of `count` equal chunks along dim 0 (open_clip's fused `in_proj`).
    Chunk {
        /// Which chunk.
        index: usize,
        /// How many chunks.
        count: usize,
    },
    /// A 2-D transpose (open_clip stores `text_projection` as `[hidden, proj]`).
    Transpose,
    /// Reshape to this shape (1x1 convolutions stored where Linear weights are expected).
    Reshape(Vec<usize>),
}

/// Stored tensors by key: their bytes (little-endian), dtype and shape.
pub(crate) trait StoredTensors: Sync {
    /// One tensor, `None` for an unknown key.
    fn raw(&self, key: &str) -> Option<(&[u8], Dtype, &[usize])>;
}

/// One stored tensor to convert.
pub(crate) struct Job<'a> {
    /// Key in the file.
    pub source: &'a str,
    /// The remap table's transform.
    pub transform: &'a Transform,
    /// The target is a Linear weight: transposed to `[in, out]` when it is 2-D.
    pub linear: bool,
}

/// Converts every job of `file` into a tensor of `dtype` (F32, F16 or BF16), on up to
/// as many threads as the machine has cores, the largest tensors first. `Err` carries
/// the reason, without the key.
pub(crate) fn convert_all(
    file: &impl StoredTensors,
    jobs: &[Job<'_>],
    dtype: DType,
) -> Vec<Result<TensorData, String>> {
    let mut order: Vec<usize> = (0..jobs.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(out_len(file, &jobs[i])));
    // The buffers are allocated here, on the calling thread, and only filled by the
    // workers: memory a worker thread allocates stays with its allocator arena, where
    // the buffers of models freed later were not reused by the next load (a 2.7 GiB
    // higher peak loading SDXL's text encoders, then its UNet).
    let queue: Vec<(usize, Vec<f32>)> = order
        .into_iter()
        .map(|i| {
            // f16 / bf16 targets keep another buffer, which the conversion allocates.
            let n = if dtype == DType::F32 {
                out_len(file, &jobs[i])
            } else {
                0
            };
            (i, Vec::with_capacity(n))
        })
        .collect();
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(jobs.len());
    let mut results: Vec<Option<Result<TensorData, String>>> =
        (0..jobs.len()).map(|_| None).collect();
    if threads <= 1 {
        for (i, out) in queue {
            results[i] = Some(convert_one(file, &jobs[i], dtype, out));
        }
    } else {
        let queue = Mutex::new(queue.into_iter());
        let work = || {
            let mut done = Vec::new();
            loop {
                let next = queue.lock().map(|mut q| q.next());
                let Ok(Some((i, out))) = next else { break };
                done.push((i, convert_one(file, &jobs[i], dtype, out)));
            }
            done
        };
        let finished: Vec<Vec<(usize, Result<TensorData, String>)>> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..threads).map(|_| s.spawn(work)).collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
                .collect()
        });
        for (i, r) in finished.into_iter().flatten() {
            results[i] = Some(r);
        }
    }
    results
        .into_iter()
        .map(|r| r.unwrap_or_else(|| Err("not converted".to_string())))
        .collect()
}

/// The number of f32 values a job yields (0 where its transform cannot apply: the
/// conversion reports that).
fn out_len(file: &impl StoredTensors, job: &Job<'_>) -> usize {
    let n: usize = file
        .raw(job.source)
        .map_or(0, |(_, _, shape)| shape.iter().product());
    match job.transform {
        Transform::Chunk { count, .. } => n.checked_div(*count).unwrap_or(0),
        _ => n,
    }
}

/// One tensor: the stored bytes (a chunk of them for [`Transform::Chunk`]) converted to
/// f32, transposed where the transform and the Linear layout ask for it (two transposes
/// cancel), then cast to `dtype`.
fn convert_one(
    file: &impl StoredTensors,
    job: &Job<'_>,
    dtype: DType,
    out: Vec<f32>,
) -> Result<TensorData, String> {
    let (bytes, stored, shape) = file
        .raw(job.source)
        .ok_or_else(|| "is not in the file".to_string())?;
    let width = element_width(stored)?;
    // The values in stored order, their shape after the transform, and the matrix
    // `[rows, cols]` whose transpose the transform asks for.
    let (bytes, shape_after, transposed) = match job.transform {
        Transform::Identity => (bytes, shape.to_vec(), None),
        Transform::Reshape(target) => {
            if target.iter().product::<usize>() != shape.iter().product::<usize>() {
                return Err(format!(
                    "of shape {shape:?} cannot be reshaped to {target:?}"
                ));
            }
            (bytes, target.clone(), None)
        }
        Transform::Chunk { index, count } => {
            let split = shape
                .split_first()
                .filter(|(rows, _)| *count > 0 && *rows % count == 0 && index < count);
            let Some((rows, rest)) = split else {
                return Err(format!(
                    "of shape {shape:?} does not split into {count} chunks along dim 0"
                ));
            };
            let per = rows / count;
            let inner: usize = rest.iter().product();
            let start = index * per * inner * width;
            let mut s = shape.to_vec();
            s[0] = per;
            (&bytes[start..start + per * inner * width], s, None)
        }
        Transform::Transpose => {
            let &[r, c] = shape else {
                return Err(format!("of shape {shape:?} cannot be transposed"));
            };
            (bytes, vec![c, r], Some((r, c)))
        }
    };
    let linear = job.linear && shape_after.len() == 2;
    let (matrix, shape_out) = match (transposed, linear) {
        (Some(_), true) => (None, shape_after.iter().rev().copied().collect()),
        (Some(rc), false) => (Some(rc), shape_after),
        (None, true) => (
            Some((shape_after[0], shape_after[1])),
            vec![shape_after[1], shape_after[0]],
        ),
        (None, false) => (None, shape_after),
    };
    let values = match matrix {
        None => converted(stored, bytes, bytes.len() / width, out),
        Some((rows, cols)) => transpose_converted(stored, bytes, rows, cols, out),
    };
    if dtype == DType::F16 {
        let max = values.iter().fold(0f32, |m, v| m.max(v.abs()));
        if max > f32::from(half::f16::MAX) {
            return Err(format!(
                "has values up to {max:e}, beyond f16's range: load it in f32 or bf16"
            ));
        }
    }
    let data = TensorData::new(values, shape_out);
    Ok(if dtype == DType::F32 {
        data
    } else {
        data.convert_dtype(dtype)
    })
}

/// Bytes per stored element of a float dtype.
pub(crate) fn element_width(stored: Dtype) -> Result<usize, String> {
    match stored {
        Dtype::F32 => Ok(4),
        Dtype::F16 | Dtype::BF16 => Ok(2),
        Dtype::F64 => Ok(8),
        other => Err(format!("has dtype {other:?}; a float tensor was expected")),
    }
}

/// The first `n` little-endian elements of `stored` in `src`, as f32, in `out` (emptied
/// first), written once into fresh memory (no zeroing pass before the conversion).
pub(crate) fn converted(stored: Dtype, src: &[u8], n: usize, mut out: Vec<f32>) -> Vec<f32> {
    const BLOCK: usize = 1024;
    let width = element_width(stored).unwrap_or(4);
    out.clear();
    out.reserve_exact(n);
    let mut buf = [0f32; BLOCK];
    for (src, dst) in src[..n * width]
        .chunks(BLOCK * width)
        .zip(out.spare_capacity_mut()[..n].chunks_mut(BLOCK))
    {
        convert_run(stored, src, &mut buf[..dst.len()]);
        for (d, &v) in dst.iter_mut().zip(&buf) {
            d.write(v);
        }
    }
    // SAFETY: the chunks above cover the first `n` elements of the capacity, each written.
    unsafe { out.set_len(n) };
    out
}

/// Little-endian elements of `stored` (a float dtype) to f32: `dst.len()` of them from the
/// start of `src`. 16-bit floats go a block at a time through an aligned buffer (the stored
/// bytes may sit at any offset) and `half`'s slice conversion (F16C / NEON where the CPU
/// has them).
fn convert_run(stored: Dtype, src: &[u8], dst: &mut [f32]) {
    match stored {
        Dtype::F16 => halves(src, dst, |h: &[half::f16], out| {
            half::slice::HalfFloatSliceExt::convert_to_f32_slice(h, out)
        }),
        Dtype::BF16 => halves(src, dst, |h: &[half::bf16], out| {
            half::slice::HalfFloatSliceExt::convert_to_f32_slice(h, out)
        }),
        Dtype::F64 => {
            for (d, c) in dst.iter_mut().zip(src.chunks_exact(8)) {
                *d = f64::from_le_bytes(c.try_into().expect("8 bytes")) as f32;
            }
        }
        _ => {
            for (d, c) in dst.iter_mut().zip(src.chunks_exact(4)) {
                *d = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
            }
        }
    }
}

fn halves<H: Copy + Default + HalfBits>(
    src: &[u8],
    dst: &mut [f32],
    convert: impl Fn(&[H], &mut [f32]),
) {
    // Small: the transposing conversion calls this for 32 elements at a time.
    const BLOCK: usize = 64;
    let mut buf = [H::default(); BLOCK];
    for (src, dst) in src.chunks(2 * BLOCK).zip(dst.chunks_mut(BLOCK)) {
        let m = dst.len();
        for (b, c) in buf[..m].iter_mut().zip(src.chunks_exact(2)) {
            *b = H::from_bits(u16::from_le_bytes([c[0], c[1]]));
        }
        convert(&buf[..m], dst);
    }
}

/// The 16-bit float types of `half`, built from their bits.
trait HalfBits {
    fn from_bits(bits: u16) -> Self;
}

impl HalfBits for half::f16 {
    fn from_bits(bits: u16) -> Self {
        half::f16::from_bits(bits)
    }
}

impl HalfBits for half::bf16 {
    fn from_bits(bits: u16) -> Self {
        half::bf16::from_bits(bits)
    }
}

/// The `[cols, rows]` f32 transpose of a stored row-major `[rows, cols]` matrix, in
/// 32 x 32 tiles: each stored row's 32 elements are converted together, then written down
/// a column of the tile, so that reads and writes both stay within a few cache lines.
fn transpose_converted(
    stored: Dtype,
    src: &[u8],
    rows: usize,
    cols: usize,
    mut out: Vec<f32>,
) -> Vec<f32> {
    const TILE: usize = 32;
    let width = element_width(stored).unwrap_or(4);
    let n = rows * cols;
    out.clear();
    out.reserve_exact(n);
    if n == 0 {
        return out;
    }
    let mut run = [0f32; TILE];
    for (b, block) in out.spare_capacity_mut()[..n]
        .chunks_mut(TILE * rows)
        .enumerate()
    {
        let j0 = b * TILE;
        let w = block.len() / rows;
        for i in 0..rows {
            let at = (i * cols + j0) * width;
            convert_run(stored, &src[at..at + w * width], &mut run[..w]);
            for (dj, &v) in run[..w].iter().enumerate() {
                block[dj * rows + i].write(v);
            }
        }
    }
    // SAFETY: the blocks cover the first `n` elements of the capacity; in each block of
    // `w` output rows every `(dj, i)` with `dj < w`, `i < rows` is written.
    unsafe { out.set_len(n) };
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f16_bytes(values: &[f32]) -> Vec<u8> {
        values
            .iter()
            .flat_map(|&v| half::f16::from_f32(v).to_le_bytes())
            .collect()
    }

    #[test]
    fn transposed_conversion_is_a_transpose_for_every_stored_type() {
        // Sizes around and across the tile edge.
        for (rows, cols) in [(1, 1), (3, 70), (64, 33), (65, 1), (100, 130)] {
            // Small integers: exact in every stored type.
            let values: Vec<f32> = (0..rows * cols).map(|v| (v % 1000) as f32).collect();
            let f32_bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
            let f64_bytes: Vec<u8> = values
                .iter()
                .flat_map(|&v| f64::from(v).to_le_bytes())
                .collect();
            let bf16_bytes: Vec<u8> = values
                .iter()
                .flat_map(|&v| half::bf16::from_f32(v).to_le_bytes())
                .collect();
            for (stored, bytes) in [
                (Dtype::F32, f32_bytes),
                (Dtype::F64, f64_bytes),
                (Dtype::F16, f16_bytes(&values)),
                (Dtype::BF16, bf16_bytes),
            ] {
                let t = transpose_converted(stored, &bytes, rows, cols, Vec::new());
                for i in 0..rows {
                    for j in 0..cols {
                        let want = match stored {
                            // bf16 keeps 8 significant bits: compare with its rounding.
                            Dtype::BF16 => half::bf16::from_f32(values[i * cols + j]).to_f32(),
                            _ => values[i * cols + j],
                        };
                        assert_eq!(t[j * rows + i], want, "{stored:?} {rows}x{cols} at {i},{j}");
                    }
                }
            }
        }
    }

    #[test]
    fn runs_convert_at_any_byte_offset() {
        // Halves of integers below 1024: exact in f16.
        let values: Vec<f32> = (0..2000).map(|v| v as f32 * 0.5).collect();
        let mut bytes = vec![0u8];
        bytes.extend(f16_bytes(&values));
        let mut out = vec![0f32; values.len()];
        convert_run(Dtype::F16, &bytes[1..], &mut out);
        assert_eq!(out, values);
    }
}
