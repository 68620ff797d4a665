//! What `story` and `interpolate` share: their common options, the checks made before any
//! model is loaded, rendering panels with progress bars, scoring them (faces, Face Sim,
//! CLIP-T) and writing the folder: `NN.png`, `story.json`, `sheet.png`, `index.html`.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use burn::tensor::backend::Backend;
use clap::Args;
use image::RgbImage;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use magicnaming_core::NameEmbedding;
use magicnaming_models::clip::clip_model::ClipModel;
use magicnaming_models::eval::{FaceEmbedding, IdentityScorer, Summary};
use magicnaming_models::face::FaceRecognizer;
use magicnaming_models::report::story::STORY_FORMAT;
use magicnaming_models::report::{contact_sheet, render_page, Panel, Reference, StoryReport};
use magicnaming_models::schedulers::SchedulerKind;
use magicnaming_models::sdxl::png::encode_png;
use magicnaming_models::sdxl::{GenerateOptions, SdxlPipeline};

use crate::args::{check_image_request, ModelArgs, PrecisionArg, SchedulerArg};
use crate::face_cmds::DetectorArgs;
use crate::lora_cmds::LoraArgs;
use crate::outputs::check_output_dir;

/// Options of `story` and `interpolate`.
#[derive(Args, Debug)]
pub struct RenderArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Negative prompt of every panel (none: zero embeddings, as SDXL base asks).
    #[arg(long)]
    pub negative_prompt: Option<String>,
    /// Seed of the initial latents (every panel's, or the first one's with --vary-seed).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Panel i uses seed + i instead of the same seed for all.
    #[arg(long)]
    pub vary_seed: bool,
    /// Denoising steps.
    #[arg(long, default_value_t = 30)]
    pub steps: usize,
    /// Classifier-free guidance scale.
    #[arg(long, default_value_t = 5.0)]
    pub guidance: f64,
    /// Width in pixels (multiple of 8).
    #[arg(long, default_value_t = 1024)]
    pub width: usize,
    /// Height in pixels (multiple of 8).
    #[arg(long, default_value_t = 1024)]
    pub height: usize,
    /// Scheduler (sampler) of the denoising loop.
    #[arg(long, value_enum, default_value_t = SchedulerArg::Euler)]
    pub scheduler: SchedulerArg,
    /// Float type of the weights (as `generate`).
    #[arg(long, value_enum, default_value_t = PrecisionArg::Auto)]
    pub precision: PrecisionArg,
    /// ArcFace IResNet (.pth, .safetensors or .onnx) for identity similarity (without it
    /// only whether a face was found is recorded).
    #[arg(long)]
    pub recognizer: Option<PathBuf>,
    /// A full CLIP model folder (transformers `CLIPModel`) for CLIP-T.
    #[arg(long)]
    pub clip: Option<PathBuf>,
    #[command(flatten)]
    pub detector: DetectorArgs,
    #[command(flatten)]
    pub lora: LoraArgs,
    /// Panels per row of the contact sheet (default: up to 5).
    #[arg(long)]
    pub columns: Option<usize>,
    /// Write into an output folder that exists and is not empty.
    #[arg(long)]
    pub overwrite: bool,
    /// Output folder.
    #[arg(long)]
    pub out: PathBuf,
}

/// One picture to render.
pub struct Picture<B: Backend> {
    /// The prompt.
    pub prompt: String,
    /// The name spliced in.
    pub name: NameEmbedding<B>,
    /// The file, relative to the output folder.
    pub file: String,
    /// Interpolation parameter, for interpolations.
    pub t: Option<f64>,
}

/// A rendered, scored picture.
pub struct Rendered {
    /// The pixels.
    pub image: RgbImage,
    /// The seed used.
    pub seed: u64,
    /// Faces and the identity embedding.
    pub face: FaceEmbedding,
    /// CLIP-T with its prompt.
    pub clip_t: Option<f32>,
}

/// Reads a prompts file: one prompt per line, blank lines skipped.
///
/// # Errors
/// An unreadable file, or one without a prompt, named.
pub fn read_prompts(path: &Path) -> Result<Vec<String>> {
    let text = magicnaming_models::json::read_text_file(path, "prompts file")?;
    let prompts: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect();
    if prompts.is_empty() {
        bail!("{}: no prompts (one prompt per line)", path.display());
    }
    Ok(prompts)
}

/// The panel file names `01.png`, `02.png`... (more digits past 99).
pub fn panel_file(index: usize, count: usize) -> String {
    let digits = count.to_string().len().max(2);
    format!("{:0digits$}.png", index + 1)
}

impl RenderArgs {
    /// The checks that need no model: sizes, steps, the output folder (a folder that
    /// exists and is not empty only with --overwrite), and that no input lies where an
    /// output will be written.
    ///
    /// # Errors
    /// Naming the flag, the folder or the input at fault.
    pub fn check(&self, inputs: &[&Path], outputs: &[String]) -> Result<()> {
        check_image_request(self.width, self.height, self.steps)?;
        if self.columns == Some(0) {
            bail!("--columns must be at least 1");
        }
        check_output_dir(&self.out)?;
        if self.out.is_dir() && !self.overwrite {
            let mut entries = std::fs::read_dir(&self.out)
                .with_context(|| format!("reading {}", self.out.display()))?;
            if entries.next().is_some() {
                bail!(
                    "{}: the output folder exists and is not empty (--overwrite writes into it)",
                    self.out.display()
                );
            }
        }
        for input in inputs {
            if !input.exists() {
                bail!("{}: no such file or folder", input.display());
            }
            for out in outputs {
                let target = self.out.join(out);
                if let (Ok(a), Ok(b)) = (input.canonicalize(), target.canonicalize()) {
                    if a == b {
                        bail!(
                            "{}: the output would overwrite the input {}",
                            target.display(),
                            input.display()
                        );
                    }
                }
            }
        }
        Ok(())
    }

    /// The detector with the optional recognizer.
    ///
    /// # Errors
    /// Weights that cannot be loaded, named.
    pub fn scorer<B: Backend>(&self, device: &B::Device) -> Result<IdentityScorer<B>> {
        let recognizer = match &self.recognizer {
            Some(p) => Some(
                FaceRecognizer::load(p, device)
                    .with_context(|| format!("--recognizer {}", p.display()))?,
            ),
            None => None,
        };
        Ok(IdentityScorer::new(self.detector.load(device)?, recognizer))
    }

    /// The CLIP model, when --clip is given.
    ///
    /// # Errors
    /// As [`ClipModel::load`], naming --clip.
    pub fn clip<B: Backend>(&self, device: &B::Device) -> Result<Option<ClipModel<B>>> {
        self.clip
            .as_ref()
            .map(|p| ClipModel::load(p, device).with_context(|| format!("--clip {}", p.display())))
            .transpose()
    }

    /// The SDXL pipeline, with the LoRAs fused.
    ///
    /// # Errors
    /// A model or LoRA that cannot be loaded, named.
    pub fn pipeline<B: Backend>(&self, device: &B::Device) -> Result<SdxlPipeline<B>> {
        let source = self.model.source()?;
        let load = self.lora.load_options(self.precision.into())?;
        SdxlPipeline::<B>::load_with(&source, device, &load)
            .with_context(|| format!("loading {}", self.model.model.display()))
    }

    /// Generation options of one picture.
    pub fn options<B: Backend>(
        &self,
        prompt: &str,
        name: NameEmbedding<B>,
        index: usize,
    ) -> GenerateOptions<B> {
        let mut o = GenerateOptions::new(prompt.to_string());
        o.negative_prompt = self.negative_prompt.clone();
        o.name = Some(name);
        o.steps = self.steps;
        o.guidance = self.guidance;
        o.width = self.width;
        o.height = self.height;
        o.seed = if self.vary_seed {
            self.seed.wrapping_add(index as u64)
        } else {
            self.seed
        };
        o.scheduler = Some(self.scheduler.into());
        o
    }

    /// The settings shown on the page and recorded in `story.json`.
    pub fn settings(&self) -> BTreeMap<String, String> {
        let mut s = BTreeMap::new();
        s.insert("size".into(), format!("{}x{}", self.width, self.height));
        s.insert("steps".into(), self.steps.to_string());
        s.insert("guidance".into(), self.guidance.to_string());
        s.insert(
            "scheduler".into(),
            SchedulerKind::from(self.scheduler).name().to_string(),
        );
        s.insert(
            "seed".into(),
            if self.vary_seed {
                format!("{} + panel index", self.seed)
            } else {
                self.seed.to_string()
            },
        );
        if let Some(n) = &self.negative_prompt {
            s.insert("negative prompt".into(), n.clone());
        }
        if !self.lora.loras.is_empty() {
            let l: Vec<String> = self
                .lora
                .loras
                .iter()
                .map(|l| format!("{}:{}", l.path.display(), l.scale))
                .collect();
            s.insert("loras".into(), l.join(", "));
        }
        s
    }
}

/// Renders, saves (`text` chunks added to the pipeline's) and scores every job, with a
/// progress bar over the panels and one over each panel's steps.
///
/// # Errors
/// A request the pipeline refuses (before the first panel), or a failed generation,
/// scoring or write.
pub fn render_all<B: Backend>(
    args: &RenderArgs,
    pipeline: &SdxlPipeline<B>,
    scorer: &IdentityScorer<B>,
    clip: Option<&ClipModel<B>>,
    jobs: &[Picture<B>],
    text: &[(&str, String)],
) -> Result<Vec<Rendered>> {
    let all = jobs
        .iter()
        .enumerate()
        .map(|(i, j)| args.options(&j.prompt, j.name.clone(), i))
        .collect::<Vec<_>>();
    for (o, j) in all.iter().zip(jobs) {
        pipeline
            .check(o)
            .with_context(|| format!("checking the request of {}", j.file))?;
    }
    // Drawn only on a terminal (indicatif hides itself otherwise).
    let bars = MultiProgress::new();
    let style = |t: &str| {
        ProgressStyle::with_template(t)
            .expect("valid template")
            .progress_chars("=> ")
    };
    let panels = bars.add(
        ProgressBar::new(jobs.len() as u64)
            .with_style(style("panels {pos}/{len} [{bar:30}] {msg}")),
    );
    let steps = bars.add(
        ProgressBar::new(args.steps as u64)
            .with_style(style("steps  {pos}/{len} [{bar:30}] {elapsed}")),
    );
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let mut out = Vec::with_capacity(jobs.len());
    for (i, (options, job)) in all.iter().zip(jobs).enumerate() {
        panels.set_message(job.file.clone());
        steps.reset();
        let mut result = pipeline.generate_with_progress(options, |done, _| {
            steps.set_position(done as u64);
        })?;
        result.set_text("model", args.model.model.display().to_string());
        result.set_text("panel", format!("{} of {}", i + 1, jobs.len()));
        if let Some(t) = job.t {
            result.set_text("t", t.to_string());
        }
        for (k, v) in text {
            result.set_text(k, v.clone());
        }
        let path = args.out.join(&job.file);
        result.save_png(&path)?;
        let image = result.to_rgb_image()?;
        let face = scorer.embed(&image)?;
        let clip_t = match clip {
            Some(c) => Some(c.clip_t(std::slice::from_ref(&image), &[&job.prompt])?[0]),
            None => None,
        };
        log::info!(
            "{} ({}/{}): face {}, CLIP-T {:?}",
            path.display(),
            i + 1,
            jobs.len(),
            if face.face_found { "found" } else { "none" },
            clip_t
        );
        out.push(Rendered {
            image,
            seed: options.seed,
            face,
            clip_t,
        });
        panels.inc(1);
    }
    steps.finish_and_clear();
    panels.finish_and_clear();
    Ok(out)
}

/// Panels of rendered jobs (identity and similarities left to the caller).
pub fn panels<B: Backend>(jobs: &[Picture<B>], rendered: &[Rendered]) -> Vec<Panel> {
    jobs.iter()
        .zip(rendered)
        .enumerate()
        .map(|(i, (j, r))| Panel {
            index: i,
            file: j.file.clone(),
            prompt: j.prompt.clone(),
            seed: r.seed,
            t: j.t,
            face_found: r.face.face_found,
            identity: None,
            similarity_a: None,
            similarity_b: None,
            clip_t: r.clip_t,
        })
        .collect()
}

/// Writes `sheet.png`, `story.json` and `index.html` for `panels`.
///
/// # Errors
/// A file that cannot be written.
pub fn write_report(
    args: &RenderArgs,
    kind: &str,
    rendered: &[Rendered],
    panels: Vec<Panel>,
    references: Vec<Reference>,
) -> Result<StoryReport> {
    let faces: Vec<bool> = panels.iter().map(|p| p.face_found).collect();
    let ids: Vec<Option<f32>> = panels.iter().map(|p| p.identity).collect();
    let clips: Vec<Option<f32>> = panels.iter().map(|p| p.clip_t).collect();
    let report = StoryReport {
        format: STORY_FORMAT.into(),
        kind: kind.into(),
        model: args.model.model.display().to_string(),
        references,
        settings: args.settings(),
        summary: Summary::of(&faces, &ids, &clips),
        panels,
        sheet: "sheet.png".into(),
        page: "index.html".into(),
    };
    let tiles: Vec<RgbImage> = rendered.iter().map(|r| r.image.clone()).collect();
    let sheet = contact_sheet(&tiles, args.columns.unwrap_or(5), 4)?;
    let caption: Vec<String> = report
        .panels
        .iter()
        .map(|p| match p.t {
            Some(t) => format!("t={t}: {}", p.prompt),
            None => p.prompt.clone(),
        })
        .collect();
    let png = encode_png(
        sheet.width() as usize,
        sheet.height() as usize,
        sheet.as_raw(),
        &[
            ("panels", caption.join("\n")),
            ("model", report.model.clone()),
        ],
    )?;
    write(&args.out.join(&report.sheet), &png)?;
    let json = serde_json::to_string_pretty(&report)? + "\n";
    write(&args.out.join("story.json"), json.as_bytes())?;
    write(
        &args.out.join(&report.page),
        render_page(&report).as_bytes(),
    )?;
    log::info!(
        "wrote {} panels, story.json, sheet.png and index.html to {}",
        report.panels.len(),
        args.out.display()
    );
    Ok(report)
}

/// Writes a file atomically.
///
/// # Errors
/// Naming the file.
pub fn write(path: &Path, bytes: &[u8]) -> Result<()> {
    magicnaming_core::write_atomic(path, bytes)
        .with_context(|| format!("writing {}", path.display()))
}

/// Writes `img` as PNG, atomically.
///
/// # Errors
/// Naming the file.
pub fn write_png(path: &Path, img: &RgbImage, text: &[(&str, String)]) -> Result<()> {
    let png = encode_png(
        img.width() as usize,
        img.height() as usize,
        img.as_raw(),
        text,
    )?;
    write(path, &png)
}
