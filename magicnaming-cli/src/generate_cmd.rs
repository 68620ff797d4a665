//! `generate`: an image from a prompt, with a name when given.
use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result};
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use clap::Args;
use magicnaming_core::NameEmbedding;
use magicnaming_models::sdxl::{GenerateOptions, SdxlPipeline};

use crate::args::{check_image_request, ModelArgs, PrecisionArg, SchedulerArg};
use crate::device::Job;
use crate::lora_cmds::LoraArgs;
use crate::outputs::check_output_file;
use crate::tensors::{load_f32, save_raw};

/// Arguments of `generate`.
#[derive(Args, Debug)]
pub struct GenerateArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// The prompt.
    #[arg(long)]
    prompt: String,
    /// Negative prompt (none: zero embeddings, as SDXL base asks).
    #[arg(long)]
    negative_prompt: Option<String>,
    /// Name to prepend (NAME.safetensors).
    #[arg(long)]
    name: Option<PathBuf>,
    /// Denoising steps.
    #[arg(long, default_value_t = 30)]
    steps: usize,
    /// Classifier-free guidance scale.
    #[arg(long, default_value_t = 5.0)]
    guidance: f64,
    /// Width in pixels (multiple of 8).
    #[arg(long, default_value_t = 1024)]
    width: usize,
    /// Height in pixels (multiple of 8).
    #[arg(long, default_value_t = 1024)]
    height: usize,
    /// Seed of the initial latents and stochastic schedulers.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Scheduler (sampler) of the denoising loop.
    #[arg(long, value_enum, default_value_t = SchedulerArg::Euler)]
    scheduler: SchedulerArg,
    /// Initial latents (tensor `latents` [1, 4, H/8, W/8]), as diffusers' `latents=`.
    #[arg(long)]
    init_latents: Option<PathBuf>,
    /// Also save the final latents before the VAE (tensor `latents`).
    #[arg(long)]
    save_latents: Option<PathBuf>,
    /// Float type of the weights: auto (f16 files run in f16 on a GPU backend, f32 on
    /// the CPU), f32, f16 or bf16. Latents and the scheduler stay f32; SDXL's VAE
    /// decodes in f32 under f16 (force_upcast).
    #[arg(long, value_enum, default_value_t = PrecisionArg::Auto)]
    precision: PrecisionArg,
    #[command(flatten)]
    lora: LoraArgs,
    /// Output PNG.
    #[arg(long)]
    out: PathBuf,
}

impl Job for GenerateArgs {
    fn run<B: Backend>(self, device: B::Device) -> Result<()> {
        // Checks that need no model, before any work.
        check_image_request(self.width, self.height, self.steps)?;
        let mut inputs: Vec<&std::path::Path> = vec![&self.model.model];
        inputs.extend(self.name.as_deref());
        inputs.extend(self.init_latents.as_deref());
        inputs.extend(self.lora.loras.iter().map(|l| l.path.as_path()));
        check_output_file(&self.out, &inputs)?;
        if let Some(p) = &self.save_latents {
            check_output_file(p, &inputs)?;
        }
        log::info!(
            "{}x{}, {} steps, writing {}: loading {}",
            self.width,
            self.height,
            self.steps,
            self.out.display(),
            self.model.model.display()
        );
        let name = match &self.name {
            Some(p) => Some(NameEmbedding::<B>::load(p, &device)?),
            None => None,
        };
        let init_latents = match &self.init_latents {
            Some(p) => {
                let (values, shape) = load_f32(p, "latents", 4)?;
                let shape: [usize; 4] = shape.try_into().expect("rank checked");
                Some(Tensor::<B, 4>::from_data(
                    TensorData::new(values, shape),
                    &device,
                ))
            }
            None => None,
        };
        let source = self.model.source()?;
        let load = self.lora.load_options(self.precision.into())?;
        let pipeline = SdxlPipeline::<B>::load_with(&source, &device, &load)
            .with_context(|| format!("loading {}", self.model.model.display()))?;
        let mut options = GenerateOptions::new(self.prompt.clone());
        options.negative_prompt = self.negative_prompt.clone();
        options.name = name;
        options.steps = self.steps;
        options.guidance = self.guidance;
        options.width = self.width;
        options.height = self.height;
        options.seed = self.seed;
        options.scheduler = Some(self.scheduler.into());
        options.init_latents = init_latents;
        pipeline.check(&options).with_context(|| {
            let mut what = String::from("checking the request");
            if let Some(p) = &self.init_latents {
                what += &format!(" (--init-latents {})", p.display());
            }
            if let Some(p) = &self.name {
                what += &format!(" (--name {})", p.display());
            }
            what
        })?;
        let started = std::time::Instant::now();
        let mut out = pipeline.generate_with_progress(&options, |done, total| {
            let _ = write!(
                std::io::stderr(),
                "\rdenoising {done}/{total} ({:.1}s)",
                started.elapsed().as_secs_f64()
            );
            if done == total {
                let _ = writeln!(std::io::stderr());
            }
        })?;
        if let Some(p) = &self.save_latents {
            let shape = out.latents.dims().to_vec();
            let bytes = out
                .latents
                .clone()
                .into_data()
                .iter::<f32>()
                .flat_map(|v| v.to_le_bytes())
                .collect();
            save_raw(
                p,
                vec![("latents".into(), shape, bytes)],
                &[("prompt", self.prompt.clone())],
            )?;
        }
        // The text chunks the library writes, with the model and the name as given.
        out.set_text("model", self.model.model.display().to_string());
        if let Some(p) = &self.name {
            out.set_text("name", p.display().to_string());
        }
        out.save_png(&self.out)?;
        log::info!("wrote {}", self.out.display());
        Ok(())
    }
}
