//! `eval-id`: Face Sim and CLIP-T of generated images, as papers report them.
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use burn::tensor::backend::Backend;
use clap::Args;
use magicnaming_models::clip::clip_model::ClipModel;
use magicnaming_models::eval::{
    face_sim, EvalReport, FaceEmbedding, IdentityScorer, ImageScore, ReferenceScore, Summary,
};
use magicnaming_models::face::{load_rgb, FaceRecognizer};
use magicnaming_models::report::StoryReport;

use crate::device::Job;
use crate::face_cmds::DetectorArgs;
use crate::outputs::check_output_file;
use crate::story_run::read_prompts;

/// Image file extensions taken from a folder.
const IMAGE_EXTENSIONS: &[&str] = &["png", "jpg", "jpeg", "webp", "bmp", "gif"];

/// Arguments of `eval-id`.
#[derive(Args, Debug)]
pub struct EvalIdArgs {
    /// Reference photo(s) of the person (each must show a face); with several, an image's
    /// Face Sim is the mean over them.
    #[arg(long, num_args = 1.., required = true)]
    reference: Vec<PathBuf>,
    /// Generated images: files, or folders (a folder with a `story.json` gives its panels
    /// and their prompts; any other folder its image files, sorted by name).
    #[arg(long, num_args = 1.., required = true)]
    images: Vec<PathBuf>,
    /// ArcFace IResNet (.pth, .safetensors or .onnx).
    #[arg(long)]
    recognizer: PathBuf,
    /// A full CLIP model folder (transformers `CLIPModel`) for CLIP-T.
    #[arg(long)]
    clip: Option<PathBuf>,
    /// The images' prompts, one per line in the images' order (for CLIP-T).
    #[arg(long)]
    prompts: Option<PathBuf>,
    #[command(flatten)]
    detector: DetectorArgs,
    /// Output REPORT.json (default: stdout).
    #[arg(long)]
    out: Option<PathBuf>,
}

fn is_image(p: &Path) -> bool {
    p.extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase())
        .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.as_str()))
}

/// The images named by `--images`, with the prompts of story folders.
fn expand(args: &[PathBuf]) -> Result<(Vec<PathBuf>, Vec<Option<String>>)> {
    let (mut images, mut prompts) = (Vec::new(), Vec::new());
    for a in args {
        if a.is_dir() {
            let story = a.join("story.json");
            if story.is_file() {
                let text = magicnaming_models::json::read_text_file(&story, "story")?;
                let report: StoryReport = serde_json::from_str(&text)
                    .with_context(|| format!("{}: not a story.json", story.display()))?;
                for p in report.panels {
                    images.push(a.join(&p.file));
                    prompts.push(Some(p.prompt));
                }
            } else {
                let mut found: Vec<PathBuf> = std::fs::read_dir(a)
                    .with_context(|| format!("reading {}", a.display()))?
                    .filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| p.is_file() && is_image(p))
                    .collect();
                if found.is_empty() {
                    bail!(
                        "{}: no image files ({})",
                        a.display(),
                        IMAGE_EXTENSIONS.join(", ")
                    );
                }
                found.sort();
                prompts.extend(found.iter().map(|_| None));
                images.extend(found);
            }
        } else if a.is_file() {
            images.push(a.clone());
            prompts.push(None);
        } else {
            bail!("{}: no such image or folder", a.display());
        }
    }
    Ok((images, prompts))
}

impl Job for EvalIdArgs {
    fn run<B: Backend>(self, device: B::Device) -> Result<()> {
        let (images, mut prompts) = expand(&self.images)?;
        if let Some(p) = &self.prompts {
            let lines = read_prompts(p)?;
            if lines.len() != images.len() {
                bail!(
                    "{}: {} prompts for {} images (one prompt per image, in order)",
                    p.display(),
                    lines.len(),
                    images.len()
                );
            }
            prompts = lines.into_iter().map(Some).collect();
        }
        if self.clip.is_some() && prompts.iter().any(Option::is_none) {
            bail!("--clip needs a prompt for every image: give --prompts (or story folders)");
        }
        if self.prompts.is_some() && self.clip.is_none() {
            bail!("--prompts is for CLIP-T: give --clip too");
        }
        if let Some(out) = &self.out {
            let mut inputs: Vec<&Path> = self.reference.iter().map(PathBuf::as_path).collect();
            inputs.extend(images.iter().map(PathBuf::as_path));
            check_output_file(out, &inputs)?;
        }
        let recognizer = FaceRecognizer::<B>::load(&self.recognizer, &device)
            .with_context(|| format!("--recognizer {}", self.recognizer.display()))?;
        let scorer = IdentityScorer::new(self.detector.load::<B>(&device)?, Some(recognizer));
        let references: Vec<FaceEmbedding> = self
            .reference
            .iter()
            .map(|r| scorer.reference(r))
            .collect::<Result<_, _>>()?;
        let refs: Vec<&FaceEmbedding> = references.iter().collect();
        let clip = match &self.clip {
            Some(p) => Some(
                ClipModel::<B>::load(p, &device)
                    .with_context(|| format!("--clip {}", p.display()))?,
            ),
            None => None,
        };
        let mut scores = Vec::with_capacity(images.len());
        for (path, prompt) in images.iter().zip(prompts) {
            let img = load_rgb(path)?;
            let face = scorer.embed(&img)?;
            let clip_t = match (&clip, &prompt) {
                (Some(c), Some(p)) => Some(c.clip_t(std::slice::from_ref(&img), &[p])?[0]),
                _ => None,
            };
            scores.push(ImageScore {
                image: path.display().to_string(),
                face_found: face.face_found,
                face_sim: face_sim(&face, &refs)?,
                prompt,
                clip_t,
            });
        }
        let faces: Vec<bool> = scores.iter().map(|s| s.face_found).collect();
        let sims: Vec<Option<f32>> = scores.iter().map(|s| s.face_sim).collect();
        let clips: Vec<Option<f32>> = scores.iter().map(|s| s.clip_t).collect();
        let report = EvalReport {
            format: "magicnaming-eval-id".into(),
            recognizer: self.recognizer.display().to_string(),
            clip: self.clip.as_ref().map(|p| p.display().to_string()),
            references: self
                .reference
                .iter()
                .map(|r| ReferenceScore {
                    image: r.display().to_string(),
                })
                .collect(),
            summary: Summary::of(&faces, &sims, &clips),
            images: scores,
        };
        let s = &report.summary;
        log::info!(
            "{} images, faces in {} ({:.0}%), Face Sim mean {:?} median {:?}, CLIP-T mean {:?}",
            s.images,
            s.with_face,
            100.0 * s.face_rate,
            s.face_sim_mean,
            s.face_sim_median,
            s.clip_t_mean
        );
        let json = serde_json::to_string_pretty(&report)? + "\n";
        match &self.out {
            Some(p) => {
                magicnaming_core::write_atomic(p, json.as_bytes())
                    .with_context(|| format!("writing {}", p.display()))?;
                log::info!("wrote {}", p.display());
            }
            None => print!("{json}"),
        }
        Ok(())
    }
}
