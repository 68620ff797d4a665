//! MTCNN inference, facenet-pytorch 2.6.0's `models/utils/detect_face.py` (`detect_face`,
//! `generateBoundingBox`, `bbreg`, `rerec`, `pad`, `imresample`, `nms_numpy`) and
//! `MTCNN.detect` (largest box first). Box arithmetic is done in f32 as there; the
//! non-maximum suppressions follow torchvision's `batched_nms` (IoU without the `+1`,
//! suppress when IoU > threshold, stable descending score order) for the per-scale and
//! per-stage passes, and facenet-pytorch's numpy `'Min'` variant (areas with `+1`,
//! overlap over the smaller area, keep when <= threshold) for the final one.
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use image::RgbImage;

use super::mtcnn::MtcnnNets;
use crate::{ModelError, Result};

/// Detection settings (facenet-pytorch `MTCNN(...)` arguments).
#[derive(Debug, Clone, PartialEq)]
pub struct MtcnnConfig {
    /// Smallest face searched for, in pixels (`min_face_size`, default 20).
    pub min_face_size: f64,
    /// Score thresholds of P-Net, R-Net and O-Net (default 0.6, 0.7, 0.7).
    pub thresholds: [f32; 3],
    /// Scale step of the image pyramid (default 0.709).
    pub factor: f64,
}

impl Default for MtcnnConfig {
    fn default() -> Self {
        Self {
            min_face_size: 20.0,
            thresholds: [0.6, 0.7, 0.7],
            factor: 0.709,
        }
    }
}

/// One detected face, in pixel coordinates of the input image.
#[derive(Debug, Clone, PartialEq)]
pub struct Face {
    /// `[x1, y1, x2, y2]`.
    pub bbox: [f32; 4],
    /// O-Net's face probability.
    pub score: f32,
    /// `[x, y]` of the left eye, right eye, nose, left and right mouth corners (left and
    /// right as seen in the image).
    pub landmarks: [[f32; 2]; 5],
}

impl Face {
    /// `(x2 - x1) * (y2 - y1)`.
    pub fn area(&self) -> f32 {
        (self.bbox[2] - self.bbox[0]) * (self.bbox[3] - self.bbox[1])
    }
}

/// Smallest image side MTCNN can look at (P-Net's 12 x 12 window).
pub const MIN_DETECT_SIDE: u32 = 12;

/// A planar f32 image `[3, h, w]` (0-255).
#[derive(Debug, Clone)]
pub struct Planar {
    /// Height.
    pub h: usize,
    /// Width.
    pub w: usize,
    /// `3 * h * w` values, channel-major.
    pub data: Vec<f32>,
}

impl Planar {
    /// The pixels of `img` as f32.
    pub fn from_rgb(img: &RgbImage) -> Self {
        let (w, h) = (img.width() as usize, img.height() as usize);
        let mut data = vec![0f32; 3 * h * w];
        for (x, y, p) in img.enumerate_pixels() {
            for c in 0..3 {
                data[c * h * w + y as usize * w + x as usize] = p.0[c] as f32;
            }
        }
        Self { h, w, data }
    }
}

/// `F.interpolate(x, size, mode="area")` (adaptive average pooling) of the window
/// `[y0, y1) x [x0, x1)` of `img`, appended to `out` as `[3, oh, ow]`.
pub fn area_resize(img: &Planar, window: [usize; 4], oh: usize, ow: usize, out: &mut Vec<f32>) {
    let [y0, y1, x0, x1] = window;
    let (ih, iw) = (y1 - y0, x1 - x0);
    let span = |o: usize, n_in: usize, n_out: usize| {
        let start = o * n_in / n_out;
        let end = ((o + 1) * n_in).div_ceil(n_out);
        (start, end)
    };
    for c in 0..3 {
        let plane = &img.data[c * img.h * img.w..(c + 1) * img.h * img.w];
        for oy in 0..oh {
            let (ys, ye) = span(oy, ih, oh);
            for ox in 0..ow {
                let (xs, xe) = span(ox, iw, ow);
                let mut sum = 0f32;
                for y in ys..ye {
                    let row = &plane[(y0 + y) * img.w + x0..];
                    sum += row[xs..xe].iter().sum::<f32>();
                }
                out.push(sum / ((ye - ys) * (xe - xs)) as f32);
            }
        }
    }
}

/// A candidate: box, score and (stage 1) the P-Net regression.
#[derive(Debug, Clone, Copy)]
struct Cand {
    b: [f32; 4],
    score: f32,
    reg: [f32; 4],
}

/// torchvision `nms`: indices kept, by descending score (stable).
fn nms(c: &[Cand], threshold: f32) -> Vec<usize> {
    let mut order: Vec<usize> = (0..c.len()).collect();
    order.sort_by(|&a, &b| c[b].score.total_cmp(&c[a].score));
    let area = |b: &[f32; 4]| (b[2] - b[0]) * (b[3] - b[1]);
    let mut suppressed = vec![false; c.len()];
    let mut keep = Vec::new();
    for (oi, &i) in order.iter().enumerate() {
        if suppressed[i] {
            continue;
        }
        keep.push(i);
        let bi = &c[i].b;
        for &j in &order[oi + 1..] {
            if suppressed[j] {
                continue;
            }
            let bj = &c[j].b;
            let w = (bi[2].min(bj[2]) - bi[0].max(bj[0])).max(0.0);
            let h = (bi[3].min(bj[3]) - bi[1].max(bj[1])).max(0.0);
            let inter = w * h;
            if inter / (area(bi) + area(bj) - inter) > threshold {
                suppressed[j] = true;
            }
        }
    }
    keep
}

/// facenet-pytorch `nms_numpy(..., 'Min')`: indices kept, highest score first.
fn nms_min(c: &[Cand], threshold: f32) -> Vec<usize> {
    let area = |b: &[f32; 4]| (b[2] - b[0] + 1.0) * (b[3] - b[1] + 1.0);
    let mut order: Vec<usize> = (0..c.len()).collect();
    order.sort_by(|&a, &b| c[a].score.total_cmp(&c[b].score));
    let mut keep = Vec::new();
    while let Some(i) = order.pop() {
        keep.push(i);
        let bi = &c[i].b;
        order.retain(|&j| {
            let bj = &c[j].b;
            let w = (bi[2].min(bj[2]) - bi[0].max(bj[0]) + 1.0).max(0.0);
            let h = (bi[3].min(bj[3]) - bi[1].max(bj[1]) + 1.0).max(0.0);
            let inter = w * h;
            inter / area(bi).min(area(bj)) <= threshold
        });
    }
    keep
}

/// `rerec`: squares a box around its centre.
fn rerec(b: &mut [f32; 4]) {
    let h = b[3] - b[1];
    let w = b[2] - b[0];
    let l = w.max(h);
    b[0] = b[0] + w * 0.5 - l * 0.5;
    b[1] = b[1] + h * 0.5 - l * 0.5;
    b[2] = b[0] + l;
    b[3] = b[1] + l;
}

/// `bbreg`: applies a regression relative to the box size (`+1`).
fn bbreg(b: &mut [f32; 4], reg: &[f32]) {
    let w = b[2] - b[0] + 1.0;
    let h = b[3] - b[1] + 1.0;
    b[0] += reg[0] * w;
    b[1] += reg[1] * h;
    b[2] += reg[2] * w;
    b[3] += reg[3] * h;
}

/// `pad` then the crop of `detect_face`: the window `[y-1, ey) x [x-1, ex)` of the
/// truncated box clipped to the image, or `None` when empty.
fn crop_window(b: &[f32; 4], w: usize, h: usize) -> Option<[usize; 4]> {
    let x = (b[0].trunc() as i64).max(1);
    let y = (b[1].trunc() as i64).max(1);
    let ex = (b[2].trunc() as i64).min(w as i64);
    let ey = (b[3].trunc() as i64).min(h as i64);
    (ey > y - 1 && ex > x - 1)
        .then(|| [(y - 1) as usize, ey as usize, (x - 1) as usize, ex as usize])
}

/// Normalised crops `[N, 3, s, s]` of the candidates (those with an empty window are
/// dropped from `cands`, as their crops are from the batch).
fn crops<B: Backend>(
    img: &Planar,
    cands: &mut Vec<Cand>,
    s: usize,
    device: &B::Device,
) -> Tensor<B, 4> {
    let mut data = Vec::with_capacity(cands.len() * 3 * s * s);
    cands.retain(|c| match crop_window(&c.b, img.w, img.h) {
        Some(win) => {
            area_resize(img, win, s, s, &mut data);
            true
        }
        None => false,
    });
    for v in &mut data {
        *v = (*v - 127.5) * 0.0078125;
    }
    Tensor::from_data(TensorData::new(data, [cands.len(), 3, s, s]), device)
}

fn values<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data().convert::<f32>().into_vec().expect("f32 data")
}

/// Scales of the image pyramid for an `h x w` image (P-Net runs on the image resized to
/// `(h * scale + 1, w * scale + 1)`, truncated, at each).
pub fn scales(h: usize, w: usize, cfg: &MtcnnConfig) -> Vec<f64> {
    let m = 12.0 / cfg.min_face_size;
    let mut minl = h.min(w) as f64 * m;
    let mut scale = m;
    let mut out = Vec::new();
    while minl >= 12.0 {
        out.push(scale);
        scale *= cfg.factor;
        minl *= cfg.factor;
    }
    out
}

/// Runs the three stages on `img`; faces sorted by box area, largest first.
///
/// # Errors
/// [`ModelError::InvalidInput`] for an image under [`MIN_DETECT_SIDE`] pixels on a side
/// or a configuration out of range (minimum face under 12 px, factor outside (0, 1)).
pub fn detect_faces<B: Backend>(
    nets: &MtcnnNets<B>,
    img: &RgbImage,
    cfg: &MtcnnConfig,
    device: &B::Device,
) -> Result<Vec<Face>> {
    if img.width() < MIN_DETECT_SIDE || img.height() < MIN_DETECT_SIDE {
        return Err(ModelError::InvalidInput(format!(
            "a {}x{} image is too small for face detection: both sides must be at least {MIN_DETECT_SIDE} pixels",
            img.width(),
            img.height()
        )));
    }
    if !(cfg.min_face_size >= 12.0 && cfg.factor > 0.0 && cfg.factor < 1.0) {
        return Err(ModelError::InvalidInput(format!(
            "MTCNN needs a minimum face size >= 12 px and a pyramid factor in (0, 1), got {} and {}",
            cfg.min_face_size, cfg.factor
        )));
    }
    let planar = Planar::from_rgb(img);
    let (h, w) = (planar.h, planar.w);
    let mut cands: Vec<Cand> = Vec::new();
    for scale in scales(h, w, cfg) {
        let hs = (h as f64 * scale + 1.0) as usize;
        let ws = (w as f64 * scale + 1.0) as usize;
        let mut data = Vec::with_capacity(3 * hs * ws);
        area_resize(&planar, [0, h, 0, w], hs, ws, &mut data);
        for v in &mut data {
            *v = (*v - 127.5) * 0.0078125;
        }
        let x = Tensor::<B, 4>::from_data(TensorData::new(data, [1, 3, hs, ws]), device);
        let (reg, prob) = nets.pnet.forward(x);
        let [_, _, oh, ow] = prob.dims();
        let (reg, prob) = (values(reg), values(prob));
        let plane = oh * ow;
        let s = scale as f32;
        let mut level = Vec::new();
        for y in 0..oh {
            for x in 0..ow {
                let i = y * ow + x;
                let score = prob[plane + i];
                if score >= cfg.thresholds[0] {
                    let (bx, by) = (x as f32, y as f32);
                    level.push(Cand {
                        b: [
                            ((2.0 * bx + 1.0) / s).floor(),
                            ((2.0 * by + 1.0) / s).floor(),
                            ((2.0 * bx + 12.0) / s).floor(),
                            ((2.0 * by + 12.0) / s).floor(),
                        ],
                        score,
                        reg: [
                            reg[i],
                            reg[plane + i],
                            reg[2 * plane + i],
                            reg[3 * plane + i],
                        ],
                    });
                }
            }
        }
        cands.extend(nms(&level, 0.5).into_iter().map(|i| level[i]));
    }
    let mut cands: Vec<Cand> = nms(&cands, 0.7).into_iter().map(|i| cands[i]).collect();
    for c in &mut cands {
        let (rw, rh) = (c.b[2] - c.b[0], c.b[3] - c.b[1]);
        c.b = [
            c.b[0] + c.reg[0] * rw,
            c.b[1] + c.reg[1] * rh,
            c.b[2] + c.reg[2] * rw,
            c.b[3] + c.reg[3] * rh,
        ];
        rerec(&mut c.b);
    }
    log::debug!("MTCNN stage 1: {} candidates", cands.len());
    if cands.is_empty() {
        return Ok(Vec::new());
    }

    let mut passed = Vec::new();
    for chunk in cands.chunks(512) {
        let mut chunk = chunk.to_vec();
        let x = crops::<B>(&planar, &mut chunk, 24, device);
        if chunk.is_empty() {
            continue;
        }
        let (reg, prob) = nets.rnet.forward(x);
        let (reg, prob) = (values(reg), values(prob));
        for (k, c) in chunk.iter().enumerate() {
            if prob[2 * k + 1] > cfg.thresholds[1] {
                passed.push(Cand {
                    b: c.b,
                    score: prob[2 * k + 1],
                    reg: [reg[4 * k], reg[4 * k + 1], reg[4 * k + 2], reg[4 * k + 3]],
                });
            }
        }
    }
    let mut cands: Vec<Cand> = nms(&passed, 0.7).into_iter().map(|i| passed[i]).collect();
    for c in &mut cands {
        bbreg(&mut c.b, &c.reg);
        rerec(&mut c.b);
    }
    log::debug!("MTCNN stage 2: {} candidates", cands.len());

    let mut faces: Vec<(Cand, [[f32; 2]; 5])> = Vec::new();
    for chunk in cands.chunks(512) {
        let mut chunk = chunk.to_vec();
        let x = crops::<B>(&planar, &mut chunk, 48, device);
        if chunk.is_empty() {
            continue;
        }
        let (reg, lm, prob) = nets.onet.forward(x);
        let (reg, lm, prob) = (values(reg), values(lm), values(prob));
        for (k, c) in chunk.iter().enumerate() {
            let score = prob[2 * k + 1];
            if score <= cfg.thresholds[2] {
                continue;
            }
            let mut b = c.b;
            let wi = b[2] - b[0] + 1.0;
            let hi = b[3] - b[1] + 1.0;
            let p = &lm[10 * k..10 * k + 10];
            let mut points = [[0f32; 2]; 5];
            for (j, pt) in points.iter_mut().enumerate() {
                *pt = [wi * p[j] + b[0] - 1.0, hi * p[5 + j] + b[1] - 1.0];
            }
            bbreg(&mut b, &reg[4 * k..4 * k + 4]);
            faces.push((
                Cand {
                    b,
                    score,
                    reg: [0.0; 4],
                },
                points,
            ));
        }
    }
    let boxes: Vec<Cand> = faces.iter().map(|f| f.0).collect();
    let mut out: Vec<Face> = nms_min(&boxes, 0.7)
        .into_iter()
        .map(|i| Face {
            bbox: faces[i].0.b,
            score: faces[i].0.score,
            landmarks: faces[i].1,
        })
        .collect();
    // np.argsort(area)[::-1]: a stable ascending sort, reversed.
    out.sort_by(|a, b| a.area().total_cmp(&b.area()));
    out.reverse();
    log::debug!("MTCNN: {} faces", out.len());
    Ok(out)
}
