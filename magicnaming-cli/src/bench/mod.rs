//! `bench`: times SDXL's components and the CLIP image towers on one device:
//! both text encoders on one prompt (with the unconditional embeddings, as a guided
//! pipeline makes them), one UNet step at batch 2 (guidance), the VAE decode, a whole
//! image through [`SdxlPipeline`](magicnaming_models::sdxl::SdxlPipeline), the image
//! towers at a batch, and (on request) face detection and recognition. Each runs
//! `--warmup` times untimed (the first run of a shape pays burn's autotune and kernel
//! compilation on GPU backends), then `--iters` times timed; the median, min and max are
//! reported.
//!
//! GPU backends are asynchronous: every run ends with `B::sync`, and its outputs stay
//! alive until then, so the clock is read once the device has finished the work.
//!
//! Models are SDXL base's presets with random weights (no files needed), the
//! configurations of a diffusers-style `--config` folder with random weights, or a real
//! model (`--model`). `tools/bench/bench_diffusers.py` times the same shapes with
//! diffusers; `tools/bench/run_gpu.sh` runs both on a GPU.
//!
//! Kernel cache: compiled kernels and autotune results persist in the directory that
//! `main` configures before the device is created (`--kernel-cache`, else
//! `$MAGICNAMING_CACHE_DIR`, else `$XDG_CACHE_HOME/magicnaming`, else
//! `~/.cache/magicnaming`; see `magicnaming_models::nn::kernels::cache`), at one autotune
//! level (`$MAGICNAMING_AUTOTUNE_LEVEL`, default balanced). A warm cache makes the
//! untimed warm-ups cheap but does not change the timed runs; `warmup` fills it.
//!
//! The files: `args` (the flags and their checks), `models` (real or random models, image
//! towers), `timing` (warm-ups, timed runs, statistics), `sdxl`, `towers` and `layers` (the
//! components), `faces` (MTCNN and IResNet-50), `lora` (fusing a LoRA), `lora_step` (a LoRA
//! training step), `report` (the JSON report and the table).
mod args;
mod faces;
mod layers;
mod lora;
mod lora_step;
mod models;
mod report;
mod sdxl;
mod timing;
mod towers;

use anyhow::{bail, Result};
use burn::tensor::backend::Backend;
use burn::tensor::DType;
use magicnaming_models::sdxl::SdxlSource;

pub use self::args::BenchArgs;
use self::args::Component;
use self::models::Models;
use self::report::{print_table, Recorder};
use crate::device::Job;

impl Job for BenchArgs {
    fn run<B: Backend>(self, device: B::Device) -> Result<()> {
        self.check()?;
        let float = self.float();
        // Weights are cast to --dtype; inputs, latents and scheduler arithmetic stay f32
        // and each model casts at its boundary, as the pipeline runs them.
        if !B::supports_dtype(&device, DType::from(float)) {
            bail!(
                "--dtype {:?} is not supported by {}",
                self.dtype,
                B::name(&device)
            );
        }
        B::seed(&device, self.seed);
        if self.no_kernels {
            magicnaming_models::nn::kernels::set_enabled(false);
        }
        let models = match &self.model {
            Some(m) => Models::Files(SdxlSource::from_path(m, self.config.as_deref())?),
            None => Models::Random(self.config.clone()),
        };
        let mut rec = Recorder::new::<B>(&self, &models, &device);
        let sdxl = [
            Component::Text,
            Component::Unet,
            Component::Vae,
            Component::Image,
        ];
        if sdxl.iter().any(|&c| self.has(c)) {
            self.bench_sdxl::<B>(&models, &device, &mut rec)?;
        }
        if self.has(Component::Towers) {
            self.bench_towers::<B>(&device, &mut rec)?;
        }
        if self.has(Component::Norms) {
            self.bench_norms::<B>(&device, &mut rec)?;
        }
        if self.has(Component::Lora) {
            self.bench_lora::<B>(&models, &device, &mut rec)?;
        }
        if self.has(Component::LoraStep) {
            self.bench_lora_step::<B>(&models, &device, &mut rec)?;
        }
        if self.has(Component::Convs) {
            self.bench_convs::<B>(&device, &mut rec)?;
        }
        if self.has(Component::Faces) {
            self.bench_faces::<B>(&device, &mut rec)?;
        }
        print_table(&rec.report());
        if let Some(p) = &self.json {
            log::info!("wrote {}", p.display());
        }
        Ok(())
    }
}
