//! `story` (one identity across a list of prompts) and `interpolate` (fictional people
//! between two names), each written as a folder: panels, `story.json`, a contact sheet
//! and an HTML page.
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use burn::tensor::backend::Backend;
use clap::Args;
use magicnaming_core::{interpolate, slerp, NameEmbedding};
use magicnaming_models::eval::face_sim;
use magicnaming_models::face::load_rgb;
use magicnaming_models::name_encoder::NameEncoder;
use magicnaming_models::report::Reference;

use crate::device::Job;
use crate::story_run::{
    panel_file, panels, read_prompts, render_all, write_png, write_report, Picture, RenderArgs,
};

/// Arguments of `story`.
#[derive(Args, Debug)]
pub struct StoryArgs {
    /// The person's name (NAME.safetensors).
    #[arg(long)]
    name: Option<PathBuf>,
    /// A photo of the person: their name is predicted with --encoder (unless --name is
    /// given), and identity similarity is measured against its face.
    #[arg(long)]
    photo: Option<PathBuf>,
    /// A trained name encoder folder, to predict the name from --photo.
    #[arg(long)]
    encoder: Option<PathBuf>,
    /// The story: one prompt per line (blank lines skipped).
    #[arg(long)]
    prompts: PathBuf,
    #[command(flatten)]
    render: RenderArgs,
}

impl Job for StoryArgs {
    fn run<B: Backend>(self, device: B::Device) -> Result<()> {
        if self.name.is_none() && (self.photo.is_none() || self.encoder.is_none()) {
            bail!("give --name, or --photo with --encoder");
        }
        let prompts = read_prompts(&self.prompts)?;
        let files: Vec<String> = (0..prompts.len())
            .map(|i| panel_file(i, prompts.len()))
            .collect();
        let mut outputs = files.clone();
        outputs
            .extend(["story.json", "sheet.png", "index.html", "reference.png"].map(String::from));
        let mut inputs = vec![self.render.model.model.as_path(), self.prompts.as_path()];
        inputs.extend(self.name.as_deref());
        inputs.extend(self.photo.as_deref());
        inputs.extend(self.encoder.as_deref());
        inputs.extend(self.render.recognizer.as_deref());
        inputs.extend(self.render.clip.as_deref());
        self.render.check(&inputs, &outputs)?;

        // The photo must show a face: checked before anything long.
        let scorer = self.render.scorer::<B>(&device)?;
        let reference = match &self.photo {
            Some(p) => Some(scorer.reference(p)?),
            None => None,
        };
        let clip = self.render.clip::<B>(&device)?;
        let name = match (&self.name, &self.photo, &self.encoder) {
            (Some(n), _, _) => NameEmbedding::<B>::load(n, &device)
                .with_context(|| format!("--name {}", n.display()))?,
            (None, Some(photo), Some(enc)) => {
                let encoder = NameEncoder::<B>::load(enc, &device)
                    .with_context(|| format!("--encoder {}", enc.display()))?;
                encoder.predict_one(photo)?
            }
            _ => unreachable!("checked above"),
        };
        log::info!(
            "{} panels, {}x{}, {} steps: loading {}",
            prompts.len(),
            self.render.width,
            self.render.height,
            self.render.steps,
            self.render.model.model.display()
        );
        let pipeline = self.render.pipeline::<B>(&device)?;
        let jobs: Vec<Picture<B>> = prompts
            .iter()
            .zip(&files)
            .map(|(p, f)| Picture {
                prompt: p.clone(),
                name: name.clone(),
                file: f.clone(),
                t: None,
            })
            .collect();
        let mut text = vec![("story", self.prompts.display().to_string())];
        if let Some(n) = &self.name {
            text.push(("name", n.display().to_string()));
        }
        if let Some(p) = &self.photo {
            text.push(("photo", p.display().to_string()));
        }
        let rendered = render_all(
            &self.render,
            &pipeline,
            &scorer,
            clip.as_ref(),
            &jobs,
            &text,
        )?;
        let mut panels = panels(&jobs, &rendered);
        // Identity: against the photo, or against the first panel when only a name is
        // given.
        let (references, against) = match (&self.photo, reference) {
            (Some(p), Some(r)) => {
                write_png(
                    &self.render.out.join("reference.png"),
                    &load_rgb(p)?,
                    &[("source", p.display().to_string())],
                )?;
                let refs = vec![Reference {
                    role: "photo".into(),
                    file: Some("reference.png".into()),
                    source: p.display().to_string(),
                }];
                (refs, r)
            }
            _ => {
                let refs = vec![Reference {
                    role: "first panel".into(),
                    file: Some(files[0].clone()),
                    source: self
                        .name
                        .as_ref()
                        .map(|n| n.display().to_string())
                        .unwrap_or_default(),
                }];
                (refs, rendered[0].face.clone())
            }
        };
        // With a name alone the first panel is the reference: it gets no score of its own.
        let skip = usize::from(self.photo.is_none());
        for (p, r) in panels.iter_mut().zip(&rendered).skip(skip) {
            p.identity = face_sim(&r.face, &[&against])?;
        }
        write_report(&self.render, "story", &rendered, panels, references)?;
        Ok(())
    }
}

/// Arguments of `interpolate`.
#[derive(Args, Debug)]
pub struct InterpolateArgs {
    /// Name at t = 0 (NAME.safetensors).
    #[arg(long)]
    name_a: PathBuf,
    /// Name at t = 1 (NAME.safetensors).
    #[arg(long)]
    name_b: PathBuf,
    /// Positions between the names, comma-separated; outside [0, 1] extrapolates.
    #[arg(
        long,
        value_delimiter = ',',
        allow_negative_numbers = true,
        default_value = "0,0.25,0.5,0.75,1"
    )]
    points: Vec<f64>,
    /// Spherical interpolation per token vector instead of linear.
    #[arg(long)]
    slerp: bool,
    /// The prompt of every panel.
    #[arg(long)]
    prompt: String,
    #[command(flatten)]
    render: RenderArgs,
}

impl Job for InterpolateArgs {
    fn run<B: Backend>(self, device: B::Device) -> Result<()> {
        if self.points.is_empty() {
            bail!("--points: give at least one position");
        }
        if let Some(t) = self.points.iter().find(|t| !t.is_finite()) {
            bail!("--points: {t} is not a finite number");
        }
        // The ends: panels at t = 0 and 1 when asked for, extra renders otherwise.
        let mut ts = self.points.clone();
        let end_a = ts.iter().position(|&t| t == 0.0);
        let end_b = ts.iter().position(|&t| t == 1.0);
        let n = self.points.len();
        let mut files: Vec<String> = (0..n).map(|i| panel_file(i, n)).collect();
        if end_a.is_none() {
            ts.push(0.0);
            files.push("a.png".into());
        }
        if end_b.is_none() {
            ts.push(1.0);
            files.push("b.png".into());
        }
        let mut outputs = files.clone();
        outputs.extend(["story.json", "sheet.png", "index.html"].map(String::from));
        let mut inputs = vec![
            self.render.model.model.as_path(),
            self.name_a.as_path(),
            self.name_b.as_path(),
        ];
        inputs.extend(self.render.recognizer.as_deref());
        inputs.extend(self.render.clip.as_deref());
        self.render.check(&inputs, &outputs)?;
        let a = NameEmbedding::<B>::load(&self.name_a, &device)
            .with_context(|| format!("--name-a {}", self.name_a.display()))?;
        let b = NameEmbedding::<B>::load(&self.name_b, &device)
            .with_context(|| format!("--name-b {}", self.name_b.display()))?;
        let mix = |t: f64| {
            if self.slerp {
                slerp(&a, &b, t)
            } else {
                interpolate(&a, &b, t)
            }
        };
        let names = ts.iter().map(|&t| mix(t)).collect::<Result<Vec<_>, _>>()?;
        let scorer = self.render.scorer::<B>(&device)?;
        let clip = self.render.clip::<B>(&device)?;
        let pipeline = self.render.pipeline::<B>(&device)?;
        let jobs: Vec<Picture<B>> = names
            .into_iter()
            .zip(&files)
            .zip(&ts)
            .map(|((name, f), &t)| Picture {
                prompt: self.prompt.clone(),
                name,
                file: f.clone(),
                t: Some(t),
            })
            .collect();
        let text = [
            ("name_a", self.name_a.display().to_string()),
            ("name_b", self.name_b.display().to_string()),
            (
                "interpolation",
                if self.slerp { "slerp" } else { "linear" }.to_string(),
            ),
        ];
        let rendered = render_all(
            &self.render,
            &pipeline,
            &scorer,
            clip.as_ref(),
            &jobs,
            &text,
        )?;
        let (ia, ib) = (
            end_a.unwrap_or(n),
            end_b.unwrap_or(n + usize::from(end_a.is_none())),
        );
        let (fa, fb) = (rendered[ia].face.clone(), rendered[ib].face.clone());
        let mut all = panels(&jobs, &rendered);
        for (p, r) in all.iter_mut().zip(&rendered) {
            p.similarity_a = face_sim(&r.face, &[&fa])?;
            p.similarity_b = face_sim(&r.face, &[&fb])?;
        }
        let references = vec![
            Reference {
                role: "name A (t = 0)".into(),
                file: Some(files[ia].clone()),
                source: self.name_a.display().to_string(),
            },
            Reference {
                role: "name B (t = 1)".into(),
                file: Some(files[ib].clone()),
                source: self.name_b.display().to_string(),
            },
        ];
        // Only the asked-for points are panels (and on the sheet).
        all.truncate(n);
        write_report(&self.render, "interpolate", &rendered[..n], all, references)?;
        Ok(())
    }
}
