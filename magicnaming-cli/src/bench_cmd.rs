//! `bench`: times SDXL's components and the CLIP image towers on one device:
//! both text encoders on one prompt (with the unconditional embeddings, as a guided
//! pipeline makes them), one UNet step at batch 2 (guidance), the VAE decode, a whole
//! image through [`SdxlPipeline`], and the image towers at a batch. Each runs `--warmup`
//! times untimed (the first run of a shape pays burn's autotune and kernel compilation on
//! GPU backends), then `--iters` times timed; the median, min and max are reported.
//!
//! GPU backends are asynchronous: every run ends with `B::sync`, and its outputs stay
//! alive until then, so the clock is read once the device has finished the work.
//!
//! Models are SDXL base's presets with random weights (no files needed), the
//! configurations of a diffusers-style `--config` folder with random weights, or a real
//! model (`--model`). `tools/bench/bench_diffusers.py` times the same shapes with
//! diffusers; `tools/bench/run_gpu.sh` runs both on a GPU.
//!
//! Autotune cache (burn 0.21 / cubecl 0.10): results persist in
//! `<nearest ancestor of the working directory holding a Cargo.toml>/target/autotune/`,
//! or in `<user cache dir>/cubecl/autotune/` when there is none; a `cubecl.toml` (or a
//! `[cubecl]` section of `burn.toml`) in the working directory or above, holding
//! `[autotune]` / `cache = { file = "DIR" }`, moves it to `DIR/autotune/`. There is no
//! environment variable for the location; `CUBECL_AUTOTUNE_LEVEL` sets the effort.
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};
use burn::module::Module;
use burn::nn::GroupNormConfig;
use burn::tensor::activation::silu;
use burn::tensor::backend::Backend;
use burn::tensor::{DType, Distribution, FloatDType, Tensor, TensorData};
use clap::{Args, ValueEnum};
use magicnaming_models::clip::config::{ClipTextConfig, ClipVisionConfig};
use magicnaming_models::clip::tokenizer::ClipTokenizer;
use magicnaming_models::clip::tower::{parse_config_value, ClipVisionTower};
use magicnaming_models::clip::vision::ClipVisionModel;
use magicnaming_models::json::read_json;
use magicnaming_models::nn::precision;
use magicnaming_models::schedulers::SchedulerConfig;
use magicnaming_models::sdxl::{GenerateOptions, SdxlPipeline, SdxlSource, SdxlTextEncoders};
use magicnaming_models::unet::{UNet2DConditionModel, UNet2DConditionModelConfig};
use magicnaming_models::vae::{AutoencoderKL, AutoencoderKLConfig};
use serde_json::{json, Value};

use crate::device::Job;

/// What `bench` can time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Component {
    /// Both text encoders, one prompt.
    Text,
    /// One UNet step at batch 2.
    Unet,
    /// The VAE decode of one latent.
    Vae,
    /// A whole image through the pipeline.
    Image,
    /// The CLIP image towers.
    Towers,
    /// GroupNorm + SiLU at the UNet's three level shapes (batch 2): burn's module, our
    /// generic path, our kernel. Not in the default set.
    Norms,
    /// 3x3 convolutions at the UNet's three level shapes (batch 2): burn's, and
    /// `conv::conv2d` where our rule applies (f16 in f32 without tensor cores). Not in
    /// the default set.
    Convs,
}

/// Float type of the models and activations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DtypeArg {
    /// 32-bit floats.
    F32,
    /// 16-bit floats (GPU backends).
    F16,
    /// bfloat16 (GPU backends).
    Bf16,
}

/// Arguments of `bench`.
#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Real SDXL model (diffusers folder or single .safetensors); random weights without it.
    #[arg(long)]
    model: Option<PathBuf>,
    /// Diffusers-style folder of configurations: with --model as `generate`'s; without,
    /// random weights of these sizes (default: SDXL base's presets).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Image tower, repeatable: vit-l-14, vit-bigg-14 (presets, random weights), a
    /// configuration .json (random weights), or a tower folder / .safetensors.
    #[arg(long = "tower")]
    towers: Vec<String>,
    /// Components to time, comma-separated.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "text,unet,vae,image,towers"
    )]
    components: Vec<Component>,
    /// Image side in pixels (latents are side / 8 for SDXL).
    #[arg(long, default_value_t = 1024)]
    resolution: usize,
    /// Denoising steps of the whole image.
    #[arg(long, default_value_t = 30)]
    steps: usize,
    /// Guidance scale of the whole image (> 1: batch-2 UNet calls).
    #[arg(long, default_value_t = 5.0)]
    guidance: f64,
    /// Images per image-tower call.
    #[arg(long, default_value_t = 64)]
    tower_batch: usize,
    /// Untimed runs first (the whole image: one when > 0, its steps repeat the UNet's).
    #[arg(long, default_value_t = 2)]
    warmup: usize,
    /// Timed runs per component.
    #[arg(long, default_value_t = 10)]
    iters: usize,
    /// Timed runs of the whole image (default: --iters).
    #[arg(long)]
    image_iters: Option<usize>,
    /// Stop a component's timed runs once it has taken this many seconds (warm-ups
    /// included), after at least one; for time-limited machines.
    #[arg(long)]
    budget_s: Option<f64>,
    /// Float type of the weights (and so of each model's activations); inputs, latents and
    /// the scheduler stay f32, and a `force_upcast` VAE (SDXL's) decodes in f32 under f16,
    /// as in `generate`.
    #[arg(long, value_enum, default_value_t = DtypeArg::F32)]
    dtype: DtypeArg,
    /// The prompt of the text encoders and the whole image.
    #[arg(long, default_value = "a photograph of an astronaut riding a horse")]
    prompt: String,
    /// Seed of the random weights and inputs.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Also write the results as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Run burn's ops where we have kernels of our own (`magicnaming_models::nn::kernels`,
    /// cubecl backends only), to measure what the kernels change.
    #[arg(long)]
    no_kernels: bool,
}

/// Median, extremes and mean of timed runs, in milliseconds.
#[derive(Debug, Clone, PartialEq)]
pub struct Stats {
    /// Middle sample (mean of the two middle ones for an even count).
    pub median: f64,
    /// Fastest run.
    pub min: f64,
    /// Slowest run.
    pub max: f64,
    /// Arithmetic mean.
    pub mean: f64,
}

impl Stats {
    /// Statistics of `samples`; `None` when empty or when a sample is not finite.
    pub fn of(samples: &[f64]) -> Option<Self> {
        if samples.is_empty() || samples.iter().any(|s| !s.is_finite()) {
            return None;
        }
        let mut s = samples.to_vec();
        s.sort_by(f64::total_cmp);
        let n = s.len();
        let median = if n % 2 == 1 {
            s[n / 2]
        } else {
            (s[n / 2 - 1] + s[n / 2]) / 2.0
        };
        Some(Self {
            median,
            min: s[0],
            max: s[n - 1],
            mean: s.iter().sum::<f64>() / n as f64,
        })
    }
}

/// One timed component.
struct Row {
    name: String,
    what: String,
    build_s: f64,
    params: usize,
    first_ms: Option<f64>,
    samples: Vec<f64>,
}

impl Row {
    fn to_json(&self) -> Value {
        let stats = Stats::of(&self.samples);
        let ms = |f: fn(&Stats) -> f64| stats.as_ref().map(f);
        json!({
            "name": self.name, "what": self.what, "build_s": self.build_s, "params": self.params,
            "first_ms": self.first_ms, "iters": self.samples.len(),
            "median_ms": ms(|s| s.median), "min_ms": ms(|s| s.min),
            "max_ms": ms(|s| s.max), "mean_ms": ms(|s| s.mean), "samples_ms": self.samples,
        })
    }
}

/// Runs `f` `warmup` times, then `iters` times timed; each run's outputs are kept until
/// the device is synchronised. With a `budget` (seconds), the timed runs stop once the
/// component has taken that long, after at least one. Returns the first warm-up's time and
/// the timed samples.
fn time_runs<B: Backend, T>(
    device: &B::Device,
    (warmup, iters, budget): (usize, usize, Option<f64>),
    mut f: impl FnMut() -> Result<T>,
) -> Result<Runs> {
    let sync = || B::sync(device).map_err(|e| anyhow!("synchronising the device: {e:?}"));
    let mut run = || -> Result<f64> {
        sync()?;
        let start = Instant::now();
        let out = f()?;
        sync()?;
        let ms = start.elapsed().as_secs_f64() * 1e3;
        drop(out);
        Ok(ms)
    };
    let began = Instant::now();
    let mut first = None;
    for i in 0..warmup {
        let ms = run()?;
        if i == 0 {
            first = Some(ms);
        }
    }
    let mut samples = Vec::with_capacity(iters);
    while samples.len() < iters {
        if budget.is_some_and(|b| !samples.is_empty() && began.elapsed().as_secs_f64() > b) {
            log::warn!(
                "--budget-s reached: {} of {iters} timed runs",
                samples.len()
            );
            break;
        }
        samples.push(run()?);
    }
    Ok((first, samples))
}

/// Initialises every float parameter now, in the float type the run uses (burn
/// initialises parameters lazily, on first use, which would put the random
/// initialisation into the first run; loaded weights keep the file's float type), waits
/// for the device; returns the module and its parameter count.
fn materialise<B: Backend, M: Module<B>>(
    module: M,
    dtype: FloatDType,
    device: &B::Device,
) -> Result<(M, usize)> {
    let module = precision::cast_module(module, dtype);
    B::sync(device).map_err(|e| anyhow!("synchronising the device: {e:?}"))?;
    let n = module.num_params();
    Ok((module, n))
}

/// Where the SDXL components come from.
enum Models {
    /// Real weights.
    Files(SdxlSource),
    /// Random weights from a configuration folder, or SDXL base's presets when `None`.
    Random(Option<PathBuf>),
}

impl Models {
    /// `<config>/<component>/<file>`: `None` for presets; an error when a given folder
    /// lacks it.
    fn config_file(dir: &Option<PathBuf>, component: &str, file: &str) -> Result<Option<PathBuf>> {
        let Some(dir) = dir else { return Ok(None) };
        let p = dir.join(component).join(file);
        if !p.is_file() {
            bail!(
                "{} is missing (--config without --model needs {component}/{file})",
                p.display()
            );
        }
        Ok(Some(p))
    }

    fn text<B: Backend>(&self, device: &B::Device) -> Result<SdxlTextEncoders<B>> {
        let dir = match self {
            Self::Files(source) => return Ok(SdxlTextEncoders::load(source, device)?),
            Self::Random(dir) => dir,
        };
        let config = |component, preset: fn() -> ClipTextConfig| -> Result<ClipTextConfig> {
            Ok(match Self::config_file(dir, component, "config.json")? {
                Some(p) => ClipTextConfig::from_file(&p)?,
                None => preset(),
            })
        };
        let tokenizer = |component: &str, pad: &str| -> Result<ClipTokenizer> {
            match dir
                .as_ref()
                .map(|d| d.join(component))
                .filter(|d| d.is_dir())
            {
                Some(d) => Ok(ClipTokenizer::from_folder(&d)?),
                None => Ok(ClipTokenizer::bundled(pad)?),
            }
        };
        let index = dir
            .as_ref()
            .map(|d| d.join("model_index.json"))
            .filter(|p| p.is_file());
        let force_zeros = match index {
            Some(p) => read_json(&p)?
                .get("force_zeros_for_empty_prompt")
                .and_then(Value::as_bool)
                .unwrap_or(true),
            None => true,
        };
        Ok(SdxlTextEncoders {
            tokenizer: tokenizer("tokenizer", "<|endoftext|>")?,
            tokenizer_2: tokenizer("tokenizer_2", "!")?,
            text_encoder: config("text_encoder", ClipTextConfig::sdxl_text_encoder)?
                .init(false, device),
            text_encoder_2: config("text_encoder_2", ClipTextConfig::sdxl_text_encoder_2)?
                .init(true, device),
            force_zeros_for_empty_prompt: force_zeros,
        })
    }

    fn unet<B: Backend>(&self, device: &B::Device) -> Result<UNet2DConditionModel<B>> {
        Ok(match self {
            Self::Files(source) => UNet2DConditionModel::load(source, device)?,
            Self::Random(dir) => match Self::config_file(dir, "unet", "config.json")? {
                Some(p) => UNet2DConditionModelConfig::from_file(&p)?.init(device),
                None => UNet2DConditionModelConfig::sdxl_base().init(device),
            },
        })
    }

    fn vae_config(&self) -> Result<AutoencoderKLConfig> {
        let file = match self {
            Self::Files(source) => source.component_file("vae", "config.json"),
            Self::Random(dir) => Self::config_file(dir, "vae", "config.json")?,
        };
        Ok(match file {
            Some(p) => AutoencoderKLConfig::from_file(&p)?,
            None => AutoencoderKLConfig::sdxl_base(),
        })
    }

    fn vae<B: Backend>(&self, device: &B::Device) -> Result<AutoencoderKL<B>> {
        Ok(match self {
            Self::Files(source) => AutoencoderKL::load(source, device)?,
            Self::Random(_) => self.vae_config()?.init(device),
        })
    }

    /// Where the models come from, as the pipeline records it (random weights: the
    /// configuration folder, or "random" for SDXL base's configurations).
    fn source(&self) -> SdxlSource {
        match self {
            Self::Files(source) => source.clone(),
            Self::Random(dir) => SdxlSource::Diffusers {
                root: dir.clone().unwrap_or_else(|| "random".into()),
                config: None,
            },
        }
    }

    fn scheduler(&self) -> Result<SchedulerConfig> {
        let file = match self {
            Self::Files(SdxlSource::Diffusers { root, .. }) => {
                Some(root.join("scheduler/scheduler_config.json"))
            }
            Self::Files(source) => source.component_file("scheduler", "scheduler_config.json"),
            Self::Random(dir) => dir
                .as_ref()
                .map(|d| d.join("scheduler/scheduler_config.json"))
                .filter(|p| p.is_file()),
        };
        Ok(match file {
            Some(p) => SchedulerConfig::from_file(&p)?,
            None => SchedulerConfig::sdxl_base(),
        })
    }

    fn describe(&self) -> String {
        match self {
            Self::Files(s) => s.display_path().display().to_string(),
            Self::Random(Some(d)) => format!("random weights, configurations of {}", d.display()),
            Self::Random(None) => "random weights, SDXL base presets".into(),
        }
    }
}

/// An image tower to time: its name and how to make it.
fn tower<B: Backend>(spec: &str, device: &B::Device) -> Result<(String, ClipVisionModel<B>)> {
    let preset = match spec {
        "vit-l-14" => Some(ClipVisionConfig::vit_l_14()),
        "vit-bigg-14" => Some(ClipVisionConfig::vit_bigg_14()),
        _ => None,
    };
    if let Some(c) = preset {
        return Ok((spec.to_string(), c.init(device)));
    }
    let path = Path::new(spec);
    let stem = |p: &Path| p.file_stem().map(|s| s.to_string_lossy().into_owned());
    if path.extension().is_some_and(|e| e == "json") {
        let (config, _) = parse_config_value(&read_json(path)?, path)?;
        let name = path.parent().and_then(stem).or_else(|| stem(path));
        return Ok((name.unwrap_or_else(|| spec.into()), config.init(device)));
    }
    if !path.exists() {
        bail!("--tower {spec}: not vit-l-14, vit-bigg-14, a .json configuration or a tower path");
    }
    let tower = ClipVisionTower::<B>::load(path, device)?;
    Ok((stem(path).unwrap_or_else(|| spec.into()), tower.model))
}

/// Peak resident memory of this process (`VmHWM`), Linux only.
fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// The 1, 5 and 15-minute load averages (`/proc/loadavg`), Linux only: CPU timings on a
/// shared machine need them to be read.
fn loadavg() -> Option<[f64; 3]> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    let mut it = text.split_whitespace().map(|v| v.parse::<f64>().ok());
    Some([it.next()??, it.next()??, it.next()??])
}

/// `YYYY-MM-DDTHH:MM:SSZ` of a Unix time (proleptic Gregorian, UTC).
pub fn utc_iso8601(unix_s: u64) -> String {
    let (days, secs) = ((unix_s / 86_400) as i64, unix_s % 86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    let (h, mi, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    format!("{y:04}-{m:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z")
}

fn device_name<B: Backend>(device: &B::Device) -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo").ok().and_then(|s| {
        s.lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split(':').nth(1))
            .map(|m| m.trim().to_string())
    });
    let threads = std::thread::available_parallelism().map_or(0, |n| n.get());
    let host = format!(
        "{} ({threads} threads)",
        cpu.unwrap_or_else(|| "unknown CPU".into())
    );
    format!("{} {device:?}; host {host}", B::name(device))
}

fn command_line() -> String {
    std::env::args()
        .map(|a| {
            if a.is_empty() || a.contains(|c: char| c.is_whitespace() || "'\"$`\\".contains(c)) {
                format!("'{}'", a.replace('\'', r"'\''"))
            } else {
                a
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

impl BenchArgs {
    fn check(&self) -> Result<()> {
        if self.resolution == 0 || !self.resolution.is_multiple_of(8) {
            bail!(
                "--resolution {}: must be a positive multiple of 8",
                self.resolution
            );
        }
        if self.steps == 0 || self.iters == 0 || self.tower_batch == 0 {
            bail!("--steps, --iters and --tower-batch must be at least 1");
        }
        if self.image_iters == Some(0) {
            bail!("--image-iters must be at least 1");
        }
        if self.budget_s.is_some_and(|b| b.is_nan() || b < 0.0) {
            bail!("--budget-s must be a number of seconds >= 0");
        }
        if let Some(c) = self.config.as_ref().filter(|c| !c.is_dir()) {
            bail!("--config {}: not a folder", c.display());
        }
        Ok(())
    }

    /// Warm-ups, timed runs and time budget of a component.
    fn plan(&self) -> (usize, usize, Option<f64>) {
        (self.warmup, self.iters, self.budget_s)
    }

    fn float(&self) -> FloatDType {
        match self.dtype {
            DtypeArg::F32 => FloatDType::F32,
            DtypeArg::F16 => FloatDType::F16,
            DtypeArg::Bf16 => FloatDType::BF16,
        }
    }

    fn has(&self, c: Component) -> bool {
        self.components.contains(&c)
    }
}

/// Collects the rows and writes the JSON report after each one, so that a run stopped
/// part-way (a time limit on a shared machine) still leaves the components it finished.
struct Recorder {
    header: Value,
    json: Option<PathBuf>,
    rows: Vec<Row>,
}

impl Recorder {
    fn report(&self) -> Value {
        let mut r = self.header.clone();
        r["components"] = self.rows.iter().map(Row::to_json).collect();
        r["host_load"]["end"] = json!(loadavg());
        r["memory"]["host_peak_rss_bytes"] = json!(peak_rss_bytes());
        r
    }

    fn push(&mut self, name: &str, what: String, built: (f64, usize), r: Runs) -> Result<()> {
        let ((build_s, params), (first_ms, samples)) = (built, r);
        let row = Row {
            name: name.into(),
            what,
            build_s,
            params,
            first_ms,
            samples,
        };
        log::info!("{}: {:?}", row.name, Stats::of(&row.samples));
        self.rows.push(row);
        if let Some(p) = &self.json {
            let text = serde_json::to_string_pretty(&self.report())? + "\n";
            magicnaming_core::write_atomic(p, text.as_bytes())
                .with_context(|| format!("writing {}", p.display()))?;
        }
        Ok(())
    }
}

/// The first warm-up's time and the timed samples, in milliseconds.
type Runs = (Option<f64>, Vec<f64>);

fn build_log(what: &str, from: &str) -> Instant {
    log::info!("building {what} ({from})");
    Instant::now()
}

impl BenchArgs {
    /// Text encoders, UNet step, VAE decode and whole image; each model is freed as soon
    /// as nothing later needs it.
    fn bench_sdxl<B: Backend>(
        &self,
        models: &Models,
        device: &B::Device,
        rec: &mut Recorder,
    ) -> Result<()> {
        let (res, from) = (self.resolution, models.describe());
        let vae_config = models.vae_config()?;
        let f = vae_config.downscale_factor();
        let image = self.has(Component::Image);
        let normal = Distribution::Normal(0.0, 1.0);
        let mut text = None;
        if self.has(Component::Text) || image {
            let t0 = build_log("the text encoders", &from);
            let mut enc = models
                .text::<B>(device)
                .context("building the text encoders")?;
            let (te, n1) = materialise(enc.text_encoder, self.float(), device)?;
            let (te2, n2) = materialise(enc.text_encoder_2, self.float(), device)?;
            (enc.text_encoder, enc.text_encoder_2) = (te, te2);
            let n = n1 + n2;
            text = Some((enc, (t0.elapsed().as_secs_f64(), n)));
        }
        if let (true, Some((enc, built))) = (self.has(Component::Text), &text) {
            // As a guided pipeline: the prompt, and the unconditional embeddings.
            let r = time_runs::<B, _>(device, self.plan(), || {
                let pos = enc.encode_prompt(&[self.prompt.as_str()])?;
                let neg = enc.encode_negative_prompt(None, 1)?;
                Ok((pos, neg))
            })?;
            let what = "both text encoders, 1 prompt + unconditional".to_string();
            rec.push("text", what, *built, r)?;
        }
        if !image {
            text = None; // frees its memory before the UNet is built
        }
        let mut unet = None;
        if self.has(Component::Unet) || image {
            let t0 = build_log("the UNet", &from);
            let u = models.unet::<B>(device).context("building the UNet")?;
            let (u, n) = materialise(u, self.float(), device)?;
            let built = (t0.elapsed().as_secs_f64(), n);
            if self.has(Component::Unet) {
                let c = u.config();
                let down = f << (c.levels() - 1);
                if res % down != 0 {
                    bail!("--resolution {res}: must be a multiple of {down} for this UNet");
                }
                let l = res / f;
                // The UNet's own widths: prompt embeddings, pooled embedding.
                let token_dim = c.cross_attention_dim[0];
                let pooled_dim = c
                    .projection_class_embeddings_input_dim
                    .checked_sub(6 * c.addition_time_embed_dim)
                    .filter(|&p| p > 0)
                    .ok_or_else(|| anyhow!("the UNet takes no 6 SDXL time ids"))?;
                let sample = Tensor::<B, 4>::random([2, c.in_channels, l, l], normal, device);
                let ctx = Tensor::<B, 3>::random([2, 77, token_dim], normal, device);
                let pooled = Tensor::<B, 2>::random([2, pooled_dim], normal, device);
                let ids = [res, res, 0, 0, res, res].map(|v| v as f32);
                let ids: Vec<f32> = ids.iter().chain(ids.iter()).copied().collect();
                let time_ids = Tensor::<B, 2>::from_data(TensorData::new(ids, [2, 6]), device);
                let r = time_runs::<B, _>(device, self.plan(), || {
                    let (s, c, p, t) = (
                        sample.clone(),
                        ctx.clone(),
                        pooled.clone(),
                        time_ids.clone(),
                    );
                    Ok(u.forward(s, 500.0f64, c, p, t)?)
                })?;
                let what = format!("one UNet step, batch 2 (guidance), latents {l}x{l}");
                rec.push("unet", what, built, r)?;
            }
            if image {
                unet = Some(u);
            }
        }
        let mut vae = None;
        if self.has(Component::Vae) || image {
            let t0 = build_log("the VAE", &from);
            let v = models.vae::<B>(device).context("building the VAE")?;
            // SDXL's VAE decodes in f32 under f16 (force_upcast), as in the pipeline.
            let (v, n) = materialise(v, vae_config.run_dtype(self.float()), device)?;
            let built = (t0.elapsed().as_secs_f64(), n);
            if self.has(Component::Vae) {
                let l = res / f;
                let z =
                    Tensor::<B, 4>::random([1, vae_config.latent_channels, l, l], normal, device);
                let r = time_runs::<B, _>(device, self.plan(), || {
                    Ok(v.decode(v.unscale_latents(z.clone()))?)
                })?;
                let what = format!("VAE decode, {l}x{l} -> {res}x{res}");
                rec.push("vae", what, built, r)?;
            }
            if image {
                vae = Some(v);
            }
        }
        if let (Some((text, _)), Some(unet), Some(vae)) = (text, unet, vae) {
            let pipeline = SdxlPipeline {
                text,
                unet,
                vae,
                scheduler_config: models.scheduler()?,
                source: models.source(),
            };
            let mut options = GenerateOptions::<B>::new(self.prompt.clone());
            options.steps = self.steps;
            options.guidance = self.guidance;
            options.width = res;
            options.height = res;
            options.seed = self.seed;
            pipeline.check(&options)?;
            let iters = self.image_iters.unwrap_or(self.iters);
            let r = time_runs::<B, _>(device, (self.warmup.min(1), iters, self.budget_s), || {
                Ok(pipeline.generate(&options)?)
            })?;
            let what = format!(
                "whole image {res}x{res}, {} steps, guidance {}, default scheduler",
                self.steps, self.guidance
            );
            rec.push("image", what, (0.0, 0), r)?;
        }
        Ok(())
    }

    /// SDXL's UNet level widths 320/640/1280 with their latent sides l, l/2, l/4 (`l` =
    /// resolution / 8), for the `norms` and `convs` components.
    fn level_shapes(&self) -> Result<[(usize, usize); 3]> {
        let l = self.resolution / 8;
        if l / 4 == 0 {
            bail!(
                "--resolution {}: too small for the level shapes (at least 32)",
                self.resolution
            );
        }
        Ok([(320, l), (640, l / 2), (1280, l / 4)])
    }

    /// A random activation `[2, c, side, side]` in the --dtype float type.
    fn activation<B: Backend>(&self, c: usize, side: usize, device: &B::Device) -> Tensor<B, 4> {
        precision::cast(
            Tensor::<B, 4>::random([2, c, side, side], Distribution::Normal(0.0, 1.0), device),
            DType::from(self.float()),
        )
    }

    /// GroupNorm (32 groups) + SiLU, as in every ResnetBlock2D, on `[2, C, l, l]` for
    /// SDXL's level widths 320/640/1280 at latent sides l, l/2, l/4 (`l` = resolution /
    /// 8): burn's module then `silu`; our generic path (f32 statistics for f16 by casting);
    /// our fused kernel where this backend has one.
    fn bench_norms<B: Backend>(&self, device: &B::Device, rec: &mut Recorder) -> Result<()> {
        use magicnaming_models::nn::{kernels, norm};
        for (c, side) in self.level_shapes()? {
            let norm = GroupNormConfig::new(32, c)
                .with_epsilon(1e-5)
                .init::<B>(device);
            let (norm, n) = materialise(norm, self.float(), device)?;
            let x = self.activation::<B>(c, side, device);
            let shape = format!("[2, {c}, {side}, {side}], 32 groups");
            let r = time_runs::<B, _>(device, self.plan(), || Ok(silu(norm.forward(x.clone()))))?;
            let what = format!("burn GroupNorm::forward + silu, {shape}");
            rec.push(&format!("norm:burn:{c}x{side}"), what, (0.0, n), r)?;

            let was = kernels::enabled();
            kernels::set_enabled(false);
            let r = time_runs::<B, _>(device, self.plan(), || {
                Ok(norm::group_norm_silu(&norm, x.clone()))
            });
            kernels::set_enabled(was);
            let what = format!("norm::group_norm_silu without kernels (f32 statistics), {shape}");
            rec.push(&format!("norm:generic:{c}x{side}"), what, (0.0, n), r?)?;

            if kernels::group_norm(&norm, x.clone(), true).is_err() {
                log::info!(
                    "no GroupNorm kernel of ours for {} (or --no-kernels)",
                    B::name(device)
                );
                continue;
            }
            let r = time_runs::<B, _>(device, self.plan(), || {
                Ok(norm::group_norm_silu(&norm, x.clone()))
            })?;
            let what = format!("kernels::group_norm fused with SiLU, {shape}");
            rec.push(&format!("norm:kernel:{c}x{side}"), what, (0.0, n), r)?;
        }
        Ok(())
    }

    /// A 3x3 convolution (padding 1) C -> C on `[2, C, l, l]` at SDXL's level shapes, as
    /// `bench_norms`: burn's op, then ours where it applies.
    fn bench_convs<B: Backend>(&self, device: &B::Device, rec: &mut Recorder) -> Result<()> {
        use burn::nn::conv::Conv2dConfig;
        use burn::nn::PaddingConfig2d;
        use magicnaming_models::nn::{conv, kernels};
        for (c, side) in self.level_shapes()? {
            let conv = Conv2dConfig::new([c, c], [3, 3])
                .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                .init::<B>(device);
            let (conv, n) = materialise(conv, self.float(), device)?;
            let x = self.activation::<B>(c, side, device);
            let shape = format!("3x3, [2, {c}, {side}, {side}] -> {c} channels");
            let r = time_runs::<B, _>(device, self.plan(), || Ok(conv.forward(x.clone())))?;
            rec.push(
                &format!("conv:burn:{c}x{side}"),
                format!("burn Conv2d::forward, {shape}"),
                (0.0, n),
                r,
            )?;
            if kernels::conv2d(&conv, x.clone()).is_err() {
                log::info!(
                    "no conv kernel of ours applies here ({}, {:?})",
                    B::name(device),
                    self.dtype
                );
                continue;
            }
            let r = time_runs::<B, _>(device, self.plan(), || Ok(conv::conv2d(&conv, x.clone())))?;
            let what = format!("conv::conv2d (f16 computed in f32), {shape}");
            rec.push(&format!("conv:ours:{c}x{side}"), what, (0.0, n), r)?;
        }
        Ok(())
    }

    /// The image towers, one at a time.
    fn bench_towers<B: Backend>(&self, device: &B::Device, rec: &mut Recorder) -> Result<()> {
        let specs = if self.towers.is_empty() {
            vec!["vit-l-14".to_string(), "vit-bigg-14".to_string()]
        } else {
            self.towers.clone()
        };
        for spec in &specs {
            let t0 = build_log("an image tower", spec);
            let (name, model) = tower::<B>(spec, device)?;
            let (model, n) = materialise(model, self.float(), device)?;
            let built = (t0.elapsed().as_secs_f64(), n);
            let s = model.image_size();
            let shape = [self.tower_batch, 3, s, s];
            let pixels = Tensor::<B, 4>::random(shape, Distribution::Normal(0.0, 1.0), device);
            let r = time_runs::<B, _>(device, self.plan(), || {
                Ok(model.forward(pixels.clone())?.image_embeds)
            })?;
            let what = format!("image tower {name}, batch {} at {s}x{s}", self.tower_batch);
            // Two towers of one name (a config and its weights) get distinct rows.
            let mut row = format!("tower:{name}");
            let same = rec
                .rows
                .iter()
                .filter(|r| r.name.split('#').next() == Some(&row))
                .count();
            if same > 0 {
                row = format!("{row}#{}", same + 1);
            }
            rec.push(&row, what, built, r)?;
        }
        Ok(())
    }
}

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
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let header = json!({
            "schema": "magicnaming-bench/1",
            "tool": "magicnaming",
            "implementation": format!("magicnaming {} (burn 0.21, {})", env!("CARGO_PKG_VERSION"), B::name(&device)),
            "device": format!("{device:?}"),
            "device_name": device_name::<B>(&device),
            "dtype": format!("{:?}", self.dtype).to_lowercase(),
            "date": utc_iso8601(now),
            "command": command_line(),
            "settings": {
                "model": models.describe(), "resolution": self.resolution, "steps": self.steps,
                "guidance": self.guidance, "tower_batch": self.tower_batch,
                "warmup": self.warmup, "iters": self.iters,
                "image_iters": self.image_iters.unwrap_or(self.iters),
                "image_warmup": self.warmup.min(1), "prompt": self.prompt, "seed": self.seed,
                "budget_s": self.budget_s,
                "kernels": !self.no_kernels && magicnaming_models::nn::kernels::COMPILED,
            },
            "components": [],
            "host_load": { "start": loadavg(), "end": null },
            "memory": {
                "host_peak_rss_bytes": null,
                "device_peak_bytes": null,
                "note": "burn 0.21 does not expose cubecl's device memory usage through its Backend trait; on GPUs tools/bench/run_gpu.sh samples nvidia-smi instead",
            },
        });
        let mut rec = Recorder {
            header,
            json: self.json.clone(),
            rows: Vec::new(),
        };
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
        if self.has(Component::Convs) {
            self.bench_convs::<B>(&device, &mut rec)?;
        }
        print_table(&rec.report());
        if let Some(p) = &self.json {
            log::info!("wrote {}", p.display());
        }
        Ok(())
    }
}

fn print_table(report: &Value) {
    let s = &report["settings"];
    println!(
        "magicnaming bench on {} ({}), {}; {}",
        report["device"].as_str().unwrap_or_default(),
        report["device_name"].as_str().unwrap_or_default(),
        report["dtype"].as_str().unwrap_or_default(),
        s["model"].as_str().unwrap_or_default()
    );
    println!(
        "warm-up {} (image {}), timed runs {} (image {})",
        s["warmup"], s["image_warmup"], s["iters"], s["image_iters"]
    );
    println!(
        "{:<22} {:>12} {:>12} {:>12} {:>12} {:>9}  what",
        "component", "median ms", "min ms", "max ms", "first ms", "build s"
    );
    let num = |v: &Value| v.as_f64().map_or("-".into(), |x| format!("{x:.1}"));
    for c in report["components"].as_array().into_iter().flatten() {
        println!(
            "{:<22} {:>12} {:>12} {:>12} {:>12} {:>9.1}  {}",
            c["name"].as_str().unwrap_or_default(),
            num(&c["median_ms"]),
            num(&c["min_ms"]),
            num(&c["max_ms"]),
            num(&c["first_ms"]),
            c["build_s"].as_f64().unwrap_or(0.0),
            c["what"].as_str().unwrap_or_default()
        );
    }
    if let Some(b) = report["memory"]["host_peak_rss_bytes"].as_u64() {
        println!(
            "peak host memory (VmHWM): {:.2} GiB",
            b as f64 / (1u64 << 30) as f64
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_odd_even_and_order() {
        let s = Stats::of(&[5.0, 1.0, 3.0]).unwrap();
        assert_eq!((s.median, s.min, s.max, s.mean), (3.0, 1.0, 5.0, 3.0));
        // Even count: mean of the two middle samples, whatever the input order.
        let s = Stats::of(&[4.0, 10.0, 1.0, 2.0]).unwrap();
        assert_eq!((s.median, s.min, s.max, s.mean), (3.0, 1.0, 10.0, 4.25));
        let s = Stats::of(&[7.5]).unwrap();
        assert_eq!((s.median, s.min, s.max), (7.5, 7.5, 7.5));
    }

    #[test]
    fn stats_reject_empty_and_non_finite() {
        assert_eq!(Stats::of(&[]), None);
        assert_eq!(Stats::of(&[1.0, f64::NAN]), None);
        assert_eq!(Stats::of(&[f64::INFINITY]), None);
    }

    #[test]
    fn dates() {
        // Expected values from GNU `date -u -d @N +%Y-%m-%dT%H:%M:%SZ`.
        assert_eq!(utc_iso8601(0), "1970-01-01T00:00:00Z");
        // 2000-02-29 (a leap day of a century divisible by 400), 12:34:56.
        assert_eq!(utc_iso8601(951_827_696), "2000-02-29T12:34:56Z");
        assert_eq!(utc_iso8601(1_795_000_000), "2026-11-18T11:06:40Z");
    }

    fn v<C: burn::config::Config>(c: &C) -> Value {
        serde_json::from_str(&burn::config::config_to_json(c)).expect("configs are JSON")
    }

    /// The presets the bench uses without `--config` are the files that
    /// tools/bench/bench_diffusers.py builds diffusers' models from.
    #[test]
    fn presets_match_tools_bench_configs() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tools/bench/configs/sdxl-base");
        let pairs: Vec<(Value, Value)> = vec![
            (
                v(&UNet2DConditionModelConfig::from_file(&dir.join("unet/config.json")).unwrap()),
                v(&UNet2DConditionModelConfig::sdxl_base()),
            ),
            (
                v(&AutoencoderKLConfig::from_file(&dir.join("vae/config.json")).unwrap()),
                v(&AutoencoderKLConfig::sdxl_base()),
            ),
            (
                v(&ClipTextConfig::from_file(&dir.join("text_encoder/config.json")).unwrap()),
                v(&ClipTextConfig::sdxl_text_encoder()),
            ),
            (
                v(&ClipTextConfig::from_file(&dir.join("text_encoder_2/config.json")).unwrap()),
                v(&ClipTextConfig::sdxl_text_encoder_2()),
            ),
            (
                v(&ClipVisionConfig::from_file(&dir.join("../vit-l-14.json")).unwrap()),
                v(&ClipVisionConfig::vit_l_14()),
            ),
            (
                v(
                    &parse_config_value(
                        &read_json(&dir.join("../vit-bigg-14.json")).unwrap(),
                        &dir,
                    )
                    .unwrap()
                    .0,
                ),
                v(&ClipVisionConfig::vit_bigg_14()),
            ),
        ];
        for (i, (file, preset)) in pairs.iter().enumerate() {
            assert_eq!(file, preset, "pair {i}");
        }
        let sched =
            SchedulerConfig::from_file(&dir.join("scheduler/scheduler_config.json")).unwrap();
        let preset = SchedulerConfig::sdxl_base();
        assert_eq!(sched.class_name(), preset.class_name());
        for key in [
            "beta_start",
            "beta_end",
            "beta_schedule",
            "steps_offset",
            "timestep_spacing",
        ] {
            assert_eq!(sched.field(key), preset.field(key), "{key}");
        }
    }
}
