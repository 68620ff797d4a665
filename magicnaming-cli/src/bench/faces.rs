//! Faces: MTCNN detection on a photo (the whole detector, then its image pyramid and its
//! P-Net passes alone, to show where the time goes) and an ArcFace IResNet-50 forward at
//! a batch of aligned 112 x 112 crops.
use anyhow::{Context, Result};
use burn::module::Module;
use burn::tensor::backend::Backend;
use burn::tensor::{DType, Distribution, Tensor, TensorData};
use magicnaming_models::face::detect_face::{area_resize, scales, Planar};
use magicnaming_models::face::{load_rgb, FaceDetector, IResNetConfig, RECOGNITION_SIZE};
use magicnaming_models::nn::precision;

use super::args::BenchArgs;
use super::report::Recorder;
use super::timing::{build_log, materialise, time_runs};

/// The pyramid of `planar` that P-Net sees: the image area-resized to each scale,
/// normalised `(x - 127.5) / 128`, as `detect_faces` builds it.
fn pyramid<B: Backend>(planar: &Planar, scales: &[f64], device: &B::Device) -> Vec<Tensor<B, 4>> {
    let (h, w) = (planar.h, planar.w);
    scales
        .iter()
        .map(|&scale| {
            let hs = (h as f64 * scale + 1.0) as usize;
            let ws = (w as f64 * scale + 1.0) as usize;
            let mut data = Vec::with_capacity(3 * hs * ws);
            area_resize(planar, [0, h, 0, w], hs, ws, &mut data);
            for v in &mut data {
                *v = (*v - 127.5) * 0.0078125;
            }
            Tensor::from_data(TensorData::new(data, [1, 3, hs, ws]), device)
        })
        .collect()
}

impl BenchArgs {
    /// MTCNN on `--face-image` (f32, facenet-pytorch's weights, default settings): the
    /// whole detection, the pyramid alone, P-Net alone on the pyramid; then IResNet-50
    /// (random weights) at `--face-batch`.
    pub(super) fn bench_faces<B: Backend>(
        &self,
        device: &B::Device,
        rec: &mut Recorder,
    ) -> Result<()> {
        let path = self
            .face_image
            .as_deref()
            .context("the faces component needs --face-image")?;
        let img = load_rgb(path)?;
        let (w, h) = img.dimensions();
        let t0 = build_log("MTCNN", "facenet-pytorch's weights, built in");
        let det = FaceDetector::<B>::load(None, device)?;
        let built = (t0.elapsed().as_secs_f64(), det.nets.num_params());
        let cfg = &det.config;
        let settings = format!(
            "min face {}, factor {}, thresholds {:?}",
            cfg.min_face_size, cfg.factor, cfg.thresholds
        );
        let mut found = 0;
        let r = time_runs::<B, _>(device, self.plan(), || {
            let faces = det.detect(&img)?;
            found = faces.len();
            Ok(faces)
        })?;
        let what = format!("MTCNN detect, {w}x{h} photo, {settings}; {found} faces");
        rec.push("face:detect", what, built, r)?;

        let levels = scales(h as usize, w as usize, cfg);
        let r = time_runs::<B, _>(device, self.plan(), || {
            Ok(pyramid::<B>(&Planar::from_rgb(&img), &levels, device))
        })?;
        let what = format!(
            "MTCNN image pyramid alone: {} area resizes of the {w}x{h} photo, normalised",
            levels.len()
        );
        rec.push("face:detect:pyramid", what, (0.0, 0), r)?;

        let inputs = pyramid::<B>(&Planar::from_rgb(&img), &levels, device);
        let largest = inputs.first().map_or([0; 4], Tensor::dims);
        let r = time_runs::<B, _>(device, self.plan(), || {
            Ok(inputs
                .iter()
                .map(|x| det.nets.pnet.forward(x.clone()))
                .collect::<Vec<_>>())
        })?;
        let what = format!(
            "MTCNN P-Net alone on the {} pyramid levels (largest {}x{})",
            inputs.len(),
            largest[2],
            largest[3]
        );
        rec.push(
            "face:detect:pnet",
            what,
            (0.0, det.nets.pnet.num_params()),
            r,
        )?;
        drop((det, inputs));

        let t0 = build_log("IResNet-50", "random weights");
        let model = IResNetConfig::iresnet50().init::<B>(device);
        let (model, n) = materialise(model, self.float(), device)?;
        let built = (t0.elapsed().as_secs_f64(), n);
        let s = RECOGNITION_SIZE as usize;
        let x = precision::cast(
            Tensor::<B, 4>::random(
                [self.face_batch, 3, s, s],
                Distribution::Uniform(-1.0, 1.0),
                device,
            ),
            DType::from(self.float()),
        );
        let r = time_runs::<B, _>(device, self.plan(), || Ok(model.forward(x.clone())))?;
        let what = format!(
            "IResNet-50 (arcface_torch r50, random weights, 512-d), batch {} at {s}x{s}",
            self.face_batch
        );
        rec.push("face:iresnet50", what, built, r)?;
        Ok(())
    }
}
