//! `face detect`, `face crop`, `face embed`, `face similarity`.
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use burn::tensor::backend::Backend;
use clap::Args;
use image::RgbImage;
use magicnaming_models::face::{
    load_rgb, norm_crop, Face, FaceDetector, FaceRecognizer, MtcnnConfig, CLIP_CROP_SIZE,
    RECOGNITION_SIZE,
};
use magicnaming_models::ModelError;

use crate::device::Job;
use crate::outputs::check_output_file;
use crate::tensors::save_raw;

/// Detector options shared by the commands that detect.
#[derive(Args, Debug, Clone)]
pub struct DetectorArgs {
    /// MTCNN weights: a folder with {pnet,rnet,onet}.pt or .safetensors, or one
    /// .safetensors with pnet./rnet./onet. keys (default: facenet-pytorch's, built in).
    #[arg(long)]
    detector: Option<PathBuf>,
    /// Smallest face searched for, in pixels.
    #[arg(long, default_value_t = 20.0)]
    min_face: f64,
}

impl DetectorArgs {
    pub fn load<B: Backend>(&self, device: &B::Device) -> Result<FaceDetector<B>> {
        let config = MtcnnConfig {
            min_face_size: self.min_face,
            ..MtcnnConfig::default()
        };
        Ok(FaceDetector::load(self.detector.as_deref(), device)?.with_config(config))
    }
}

/// The faces of `path`, largest first; [`ModelError::NoFace`] when there is none.
fn faces_of<B: Backend>(det: &FaceDetector<B>, path: &Path) -> Result<(RgbImage, Vec<Face>)> {
    let img = load_rgb(path)?;
    let faces = det.detect(&img)?;
    if faces.is_empty() {
        return Err(ModelError::NoFace {
            path: path.to_path_buf(),
            detail: format!(
                " (MTCNN, minimum face {} px, thresholds {:?})",
                det.config.min_face_size, det.config.thresholds
            ),
        }
        .into());
    }
    Ok((img, faces))
}

fn png_bytes(img: &RgbImage) -> Result<Vec<u8>> {
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png)?;
    Ok(out.into_inner())
}

fn write(path: &Path, bytes: &[u8]) -> Result<()> {
    magicnaming_core::write_atomic(path, bytes)
        .with_context(|| format!("writing {}", path.display()))
}

/// Arguments of `face detect`.
#[derive(Args, Debug)]
pub struct DetectArgs {
    /// The image.
    #[arg(long)]
    image: PathBuf,
    #[command(flatten)]
    detector: DetectorArgs,
    /// Output FACES.json (default: stdout): {"image", "width", "height", "faces": [{"box",
    /// "score", "landmarks"}]}, largest box first.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Also write the image with the boxes and landmarks drawn (PNG).
    #[arg(long)]
    draw: Option<PathBuf>,
}

fn faces_json(image: &Path, img: &RgbImage, faces: &[Face]) -> serde_json::Value {
    serde_json::json!({
        "image": image.display().to_string(),
        "width": img.width(),
        "height": img.height(),
        "faces": faces.iter().map(|f| serde_json::json!({
            "box": f.bbox,
            "score": f.score,
            "landmarks": f.landmarks,
        })).collect::<Vec<_>>(),
    })
}

/// Draws each box (2 px, green; the largest red) and its landmarks (5 x 5 dots, yellow).
fn draw(img: &RgbImage, faces: &[Face]) -> RgbImage {
    let mut out = img.clone();
    let (w, h) = (out.width() as i64, out.height() as i64);
    let mut put = |x: i64, y: i64, c: [u8; 3]| {
        if x >= 0 && y >= 0 && x < w && y < h {
            out.put_pixel(x as u32, y as u32, image::Rgb(c));
        }
    };
    for (i, f) in faces.iter().enumerate() {
        let c = if i == 0 { [255, 0, 0] } else { [0, 255, 0] };
        let [x1, y1, x2, y2] = f.bbox.map(|v| v.round() as i64);
        for t in 0..2 {
            for x in x1..=x2 {
                put(x, y1 + t, c);
                put(x, y2 - t, c);
            }
            for y in y1..=y2 {
                put(x1 + t, y, c);
                put(x2 - t, y, c);
            }
        }
        for [px, py] in f.landmarks {
            let (px, py) = (px.round() as i64, py.round() as i64);
            for dy in -2..=2 {
                for dx in -2..=2 {
                    put(px + dx, py + dy, [255, 255, 0]);
                }
            }
        }
    }
    out
}

impl Job for DetectArgs {
    fn run<B: Backend>(self, device: B::Device) -> Result<()> {
        for out in [&self.out, &self.draw].into_iter().flatten() {
            check_output_file(out, &[&self.image])?;
        }
        let det = self.detector.load::<B>(&device)?;
        let img = load_rgb(&self.image)?;
        let faces = det.detect(&img)?;
        let json = serde_json::to_string_pretty(&faces_json(&self.image, &img, &faces))? + "\n";
        if let Some(path) = &self.draw {
            write(path, &png_bytes(&draw(&img, &faces))?)?;
        }
        match &self.out {
            Some(path) => {
                write(path, json.as_bytes())?;
                log::info!("wrote {} ({} faces)", path.display(), faces.len());
            }
            None => print!("{json}"),
        }
        Ok(())
    }
}

/// Arguments of `face crop`.
#[derive(Args, Debug)]
pub struct CropArgs {
    /// The image.
    #[arg(long)]
    image: PathBuf,
    #[command(flatten)]
    detector: DetectorArgs,
    /// Side of the crop: the ArcFace template scaled to it.
    #[arg(long, default_value_t = CLIP_CROP_SIZE)]
    size: u32,
    /// Which face, by box area (0: the largest).
    #[arg(long, default_value_t = 0)]
    index: usize,
    /// Output PNG.
    #[arg(long)]
    out: PathBuf,
}

impl Job for CropArgs {
    fn run<B: Backend>(self, device: B::Device) -> Result<()> {
        anyhow::ensure!(self.size > 0, "--size must be > 0");
        check_output_file(&self.out, &[&self.image])?;
        let det = self.detector.load::<B>(&device)?;
        let (img, faces) = faces_of(&det, &self.image)?;
        let face = faces.get(self.index).with_context(|| {
            format!(
                "{}: --index {} but only {} face(s) found",
                self.image.display(),
                self.index,
                faces.len()
            )
        })?;
        let crop = norm_crop(&img, &face.landmarks, self.size)?;
        write(&self.out, &png_bytes(&crop)?)?;
        log::info!(
            "wrote {} (face {} of {})",
            self.out.display(),
            self.index,
            faces.len()
        );
        Ok(())
    }
}

/// The embedding `[1, F]` of the largest face of `path` (or of `path` as an aligned crop).
fn embed<B: Backend>(
    rec: &FaceRecognizer<B>,
    det: Option<&FaceDetector<B>>,
    path: &Path,
) -> Result<Vec<f32>> {
    let emb = match det {
        Some(det) => {
            let (img, faces) = faces_of(det, path)?;
            rec.embed_face(&img, &faces[0])?
        }
        None => {
            let img = load_rgb(path)?;
            anyhow::ensure!(
                img.dimensions() == (RECOGNITION_SIZE, RECOGNITION_SIZE),
                "{}: --aligned needs a {RECOGNITION_SIZE}x{RECOGNITION_SIZE} crop, got {}x{}",
                path.display(),
                img.width(),
                img.height()
            );
            rec.embed_aligned(&[img])?
        }
    };
    emb.into_data()
        .convert::<f32>()
        .into_vec()
        .map_err(|e| anyhow::anyhow!("{e:?}"))
}

/// Arguments of `face embed`.
#[derive(Args, Debug)]
pub struct EmbedArgs {
    /// ArcFace IResNet: an arcface_torch .pth state dict (or its tensors as .safetensors),
    /// or an insightface ONNX model (w600k_r50.onnx, glintr100.onnx).
    #[arg(long)]
    recognizer: PathBuf,
    /// The image.
    #[arg(long)]
    image: PathBuf,
    /// IMG is already an aligned 112 x 112 crop (no detection).
    #[arg(long)]
    aligned: bool,
    #[command(flatten)]
    detector: DetectorArgs,
    /// Output .safetensors: f32 `embedding` [1, F], L2-normalised.
    #[arg(long)]
    out: PathBuf,
}

impl Job for EmbedArgs {
    fn run<B: Backend>(self, device: B::Device) -> Result<()> {
        check_output_file(&self.out, &[&self.image, &self.recognizer])?;
        let rec = FaceRecognizer::<B>::load(&self.recognizer, &device)?;
        let det = if self.aligned {
            None
        } else {
            Some(self.detector.load::<B>(&device)?)
        };
        let values = embed(&rec, det.as_ref(), &self.image)?;
        let n = values.len();
        let bytes = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        save_raw(
            &self.out,
            vec![("embedding".into(), vec![1, n], bytes)],
            &[("image", self.image.display().to_string())],
        )?;
        log::info!("wrote {} (embedding [1, {n}])", self.out.display());
        Ok(())
    }
}

/// Arguments of `face similarity`.
#[derive(Args, Debug)]
pub struct SimilarityArgs {
    /// ArcFace IResNet: an arcface_torch .pth state dict (or its tensors as .safetensors),
    /// or an insightface ONNX model (w600k_r50.onnx, glintr100.onnx).
    #[arg(long)]
    recognizer: PathBuf,
    /// First image (its largest face).
    image_a: PathBuf,
    /// Second image (its largest face).
    image_b: PathBuf,
    #[command(flatten)]
    detector: DetectorArgs,
    /// Print {"a", "b", "similarity"} as JSON instead of the bare number.
    #[arg(long)]
    json: bool,
}

impl Job for SimilarityArgs {
    fn run<B: Backend>(self, device: B::Device) -> Result<()> {
        let rec = FaceRecognizer::<B>::load(&self.recognizer, &device)?;
        let det = self.detector.load::<B>(&device)?;
        let a = embed(&rec, Some(&det), &self.image_a)?;
        let b = embed(&rec, Some(&det), &self.image_b)?;
        let s = magicnaming_models::face::cosine_similarity(&a, &b)?;
        if self.json {
            let v = serde_json::json!({
                "a": self.image_a.display().to_string(),
                "b": self.image_b.display().to_string(),
                "similarity": s,
            });
            println!("{v}");
        } else {
            println!("{s:.6}");
        }
        Ok(())
    }
}
