//! The LoRA training loop: names and captions text-coded once, images VAE-encoded once
//! (the latent distribution is cached; each step samples it), the UNet frozen with
//! adapters on its attention projections, warmup + cosine learning rate, `metrics.jsonl`,
//! atomic checkpoints and exact resume (adapters, optimizer state, step; the data order,
//! noise and timesteps of step `s` are a function of the seed and `s`).
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use burn::module::{AutodiffModule, Module};
use burn::optim::{AdamWConfig, Optimizer};
use burn::record::Recorder;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{ElementConversion, Tensor, TensorData};
use magicnaming_core::prepend;
use magicnaming_core::rng::SplitMix64;
use serde::{Deserialize, Serialize};

use super::adapters::{LoraSet, adapter_param_ids, adapter_values, inject};
use super::config::{LoraTrainConfig, NameSource, PredictionChoice};
use super::data::{TrainImage, dataset_images, load_prepared};
use super::export::write_lora_file;
use super::step::{StepInputs, lora_loss, lora_step};
use crate::name_encoder::NameEncoderConfig;
use crate::name_encoder::load_head;
use crate::schedulers::{NoiseSchedule, PredictionType};
use crate::sdxl::pipeline::scheduler_config;
use crate::sdxl::{SdxlSource, SdxlTextEncoders};
use crate::train::checkpoint::{
    append_jsonl, commit_checkpoint, read_jsonl, recorder, rewrite_jsonl, start_checkpoint,
};
use crate::train::dataset::Dataset;
use crate::train::schedule::LrSchedule;
use crate::train::trainer::batch_rows;
use crate::unet::UNet2DConditionModel;
use crate::vae::AutoencoderKL;
use crate::weights::Precision;
use crate::{ModelError, Result};

/// What a run reads.
#[derive(Debug, Clone)]
pub struct LoraSources {
    /// SDXL model: diffusers folder or single-file checkpoint.
    pub model: PathBuf,
    /// Configuration folder for a single file of non-standard size.
    pub config: Option<PathBuf>,
    /// A dataset folder (`dataset build`'s output), whose images are at hand.
    pub dataset: PathBuf,
    /// Name encoder folder (`--names predicted`).
    pub encoder: Option<PathBuf>,
}

/// One line of `metrics.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoraMetricsLine {
    /// Steps done.
    pub step: usize,
    /// Learning rate of the last step.
    pub lr: f64,
    /// Mean training loss since the previous line.
    pub loss: f64,
    /// Gradient norm (before clipping) of the last step.
    pub grad_norm: f64,
    /// Held-out loss (see [`LoraTrainConfig::eval_every`]), on eval steps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub val_loss: Option<f64>,
}

/// What a finished run reports.
#[derive(Debug, Clone)]
pub struct LoraSummary {
    /// Steps done in all.
    pub steps: usize,
    /// The metrics lines, first to last.
    pub metrics: Vec<LoraMetricsLine>,
    /// The LoRA file written.
    pub file: PathBuf,
    /// Adapted modules.
    pub modules: usize,
    /// Images trained on.
    pub images: usize,
    /// Images smaller than the resolution (upscaled).
    pub upscaled: usize,
    /// The held-out loss of the model before training (with `eval_every`, fresh runs).
    pub initial_val_loss: Option<f64>,
}

#[derive(Debug, Serialize, Deserialize)]
struct LoraState {
    step: usize,
    config: LoraTrainConfig,
}

/// Per-image data kept on the host for the whole run.
struct Cached {
    mean: Vec<f32>,
    std: Vec<f32>,
    time_ids: [f32; 6],
    caption: usize,
    /// Row of [`Names::table`].
    name: usize,
}

/// The names spliced in: a table of `[K * D]` rows (per person for text-coded names, per
/// image for predicted ones) and each image's row.
struct Names {
    table: Vec<f32>,
    row_of_image: Vec<usize>,
    k: usize,
    d: usize,
}

/// Text-coded captions: prompt embeddings `[77 * D]` and pooled `[P]` each.
struct Captions {
    prompt: Vec<Vec<f32>>,
    pooled: Vec<Vec<f32>>,
    seq: usize,
    dim: usize,
}

fn host<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .into_vec::<f32>()
        .expect("converted to f32 above")
}

/// The run's state from `out/checkpoint/state.json` (resume), or a check that `out` holds
/// no earlier run (fresh start).
fn start_state(
    out: &Path,
    config: &LoraTrainConfig,
    resume: bool,
) -> Result<(LoraTrainConfig, usize)> {
    let ckpt = out.join("checkpoint");
    if !resume {
        for existing in [ckpt.clone(), out.join("metrics.jsonl")] {
            if existing.exists() {
                return Err(ModelError::InvalidInput(format!(
                    "{} already holds a run ({}): pass --resume to continue it, or choose another folder",
                    out.display(),
                    existing.display()
                )));
            }
        }
        return Ok((config.clone(), 0));
    }
    let state_path = ckpt.join("state.json");
    let state: LoraState = serde_json::from_value(crate::json::read_json(&state_path)?)
        .map_err(|e| ModelError::config(&state_path, e.to_string()))?;
    if state.config != *config {
        log::warn!("--resume: continuing with the checkpoint's settings, not the ones given now");
    }
    Ok((state.config, state.step))
}

/// Each image's name: the text-coded ground truth or the encoder's prediction.
fn image_names<B: Backend>(
    dataset: &Dataset,
    images: &[TrainImage],
    config: &LoraTrainConfig,
    encoder: Option<&Path>,
    device: &B::Device,
) -> Result<Names> {
    match config.names {
        NameSource::Text => Ok(Names {
            table: dataset.names.clone(),
            row_of_image: images.iter().map(|im| im.identity).collect(),
            k: dataset.index.num_tokens,
            d: dataset.index.token_dim,
        }),
        NameSource::Predicted => {
            let dir = encoder.ok_or_else(|| {
                ModelError::InvalidInput("--names predicted needs --encoder <DIR>".into())
            })?;
            let enc = NameEncoderConfig::from_file(&dir.join("config.json"))?;
            if enc.head.input_dim != dataset.embed_dim() {
                return Err(ModelError::InvalidInput(format!(
                    "the encoder's head takes {} values, the dataset's image embeddings have {}",
                    enc.head.input_dim,
                    dataset.embed_dim()
                )));
            }
            if enc.input_crop != dataset.index.input_crop {
                log::warn!(
                    "the encoder was trained on {:?} views, the dataset embedded {:?} views",
                    enc.input_crop,
                    dataset.index.input_crop
                );
            }
            let head = load_head::<B>(&dir.join("head.safetensors"), &enc.head, device)?;
            let rows: Vec<usize> = images.iter().map(|im| im.row).collect();
            let e = dataset.embed_dim();
            let x = Tensor::<B, 2>::from_data(
                TensorData::new(dataset.gather_embeds(&rows), [rows.len(), e]),
                device,
            );
            Ok(Names {
                table: host(head.forward(x)),
                row_of_image: (0..images.len()).collect(),
                k: enc.head.num_tokens,
                d: enc.head.token_dim,
            })
        }
    }
}

fn encode_captions<B: Backend>(text: &SdxlTextEncoders<B>, unique: &[String]) -> Result<Captions> {
    let (mut prompt, mut pooled) = (Vec::new(), Vec::new());
    let (mut seq, mut dim) = (0, 0);
    for chunk in unique.chunks(8) {
        let refs: Vec<&str> = chunk.iter().map(String::as_str).collect();
        let e = text.encode_prompt(&refs)?;
        let [b, s, d] = e.prompt_embeds.dims();
        let p = e.pooled_prompt_embeds.dims()[1];
        (seq, dim) = (s, d);
        let pe = host(e.prompt_embeds);
        let po = host(e.pooled_prompt_embeds);
        for i in 0..b {
            prompt.push(pe[i * s * d..(i + 1) * s * d].to_vec());
            pooled.push(po[i * p..(i + 1) * p].to_vec());
        }
    }
    Ok(Captions {
        prompt,
        pooled,
        seq,
        dim,
    })
}

/// One image's latent mean and standard deviation, and its micro-conditioning.
type EncodedImage = (Vec<f32>, Vec<f32>, [f32; 6]);

/// VAE latent distributions of every image (batches of 4), the count of upscaled images
/// and the latent shape.
fn encode_images<B: Backend>(
    vae: &AutoencoderKL<B>,
    images: &[TrainImage],
    res: usize,
    device: &B::Device,
) -> Result<(Vec<EncodedImage>, usize, [usize; 3])> {
    let mut out = Vec::with_capacity(images.len());
    let mut upscaled = 0;
    let mut latent_shape = [0; 3];
    for chunk in images.chunks(4) {
        let mut pixels = Vec::with_capacity(chunk.len() * 3 * res * res);
        let mut ids = Vec::new();
        for im in chunk {
            let p = load_prepared(im, res)?;
            upscaled += usize::from(p.upscaled);
            pixels.extend(p.pixels);
            ids.push(p.time_ids);
        }
        let x =
            Tensor::<B, 4>::from_data(TensorData::new(pixels, [chunk.len(), 3, res, res]), device);
        let dist = vae.encode(x)?;
        let [b, c, h, w] = dist.mean.dims();
        latent_shape = [c, h, w];
        let (mean, std) = (host(dist.mean), host(dist.std));
        let n = c * h * w;
        for i in 0..b {
            out.push((
                mean[i * n..(i + 1) * n].to_vec(),
                std[i * n..(i + 1) * n].to_vec(),
                ids[i],
            ));
        }
    }
    Ok((out, upscaled, latent_shape))
}

/// Trains a LoRA on `sources.dataset`, writing `out/` (the LoRA file, `metrics.jsonl`,
/// `checkpoint/`). With `resume`, continues from `out/checkpoint` exactly as an
/// uninterrupted run would (with the checkpoint's settings).
///
/// # Errors
/// Bad settings, a dataset without images or with missing / unreadable ones, names whose
/// width differs from the model's text width, an output folder holding another run
/// (without `resume`), a diverging loss; everything before the first step except the last.
pub fn train_lora<B: AutodiffBackend>(
    sources: &LoraSources,
    out: &Path,
    config: &LoraTrainConfig,
    resume: bool,
    device: &B::Device,
) -> Result<LoraSummary> {
    config.validate()?;
    let (config, start) = start_state(out, config, resume)?;
    config.validate()?;
    let dataset = Dataset::load(&sources.dataset)?;
    let images = dataset_images(&dataset, &config.caption)?;
    let batch = config.batch.min(images.len());
    let total = config
        .steps
        .unwrap_or(images.len().div_ceil(batch) * config.epochs);
    let schedule = LrSchedule {
        lr: config.lr,
        warmup_steps: config
            .warmup_steps
            .unwrap_or((total / 20).min(500))
            .min(total),
        total_steps: total,
        min_lr: 0.0,
    };
    let inner = device.clone();
    let names = image_names::<B::InnerBackend>(
        &dataset,
        &images,
        &config,
        sources.encoder.as_deref(),
        &inner,
    )?;
    let source = SdxlSource::from_path(&sources.model, sources.config.as_deref())?;
    let mut noise_schedule = NoiseSchedule::from_config(&scheduler_config(&source)?)?;
    match config.prediction {
        PredictionChoice::Model => {}
        PredictionChoice::Epsilon => noise_schedule.prediction_type = PredictionType::Epsilon,
        PredictionChoice::V => noise_schedule.prediction_type = PredictionType::VPrediction,
    }

    // 1. Captions, text-coded once (the text encoders are then dropped).
    let mut unique: Vec<String> = Vec::new();
    let mut caption_of: HashMap<String, usize> = HashMap::new();
    let caption_index: Vec<usize> = images
        .iter()
        .map(|im| {
            *caption_of.entry(im.caption.clone()).or_insert_with(|| {
                unique.push(im.caption.clone());
                unique.len() - 1
            })
        })
        .collect();
    let captions = {
        let text = SdxlTextEncoders::<B::InnerBackend>::load_as(&source, &inner, Precision::Auto)?;
        if text.token_dim() != names.d {
            return Err(ModelError::InvalidInput(format!(
                "the names are {} wide, the model's text embeddings {}: the dataset (or encoder) was made for another model",
                names.d,
                text.token_dim()
            )));
        }
        log::info!("text-coding {} captions", unique.len());
        encode_captions(&text, &unique)?
    };
    if names.k >= captions.seq {
        return Err(ModelError::InvalidInput(format!(
            "{} name tokens do not fit a {}-token prompt",
            names.k, captions.seq
        )));
    }

    // 2. Images, VAE-encoded once (f32: SDXL's VAE overflows in f16).
    let (latents, upscaled, [lc, lh, lw], scaling_factor, shift_factor) = {
        let vae = AutoencoderKL::<B::InnerBackend>::load_as(&source, &inner, Precision::F32)?;
        log::info!(
            "encoding {} images at {}px",
            images.len(),
            config.resolution
        );
        let r = encode_images(&vae, &images, config.resolution, &inner)?;
        (
            r.0,
            r.1,
            r.2,
            vae.scaling_factor(),
            vae.config().shift_factor,
        )
    };
    let cached: Vec<Cached> = latents
        .into_iter()
        .zip(&names.row_of_image)
        .zip(&caption_index)
        .map(|(((mean, std, time_ids), &name), &caption)| Cached {
            mean,
            std,
            time_ids,
            caption,
            name,
        })
        .collect();
    train_loop::<B>(
        TrainContext {
            source: &source,
            out,
            config: &config,
            start,
            total,
            batch,
            schedule,
            noise_schedule,
            captions: &captions,
            cached: &cached,
            names: &names,
            latent: [lc, lh, lw],
            scaling_factor,
            shift_factor,
            upscaled,
        },
        device,
    )
}

/// Everything the loop needs, prepared.
struct TrainContext<'a> {
    source: &'a SdxlSource,
    out: &'a Path,
    config: &'a LoraTrainConfig,
    start: usize,
    total: usize,
    batch: usize,
    schedule: LrSchedule,
    noise_schedule: NoiseSchedule,
    captions: &'a Captions,
    cached: &'a [Cached],
    names: &'a Names,
    latent: [usize; 3],
    scaling_factor: f64,
    shift_factor: Option<f64>,
    upscaled: usize,
}

/// The random part of a step's inputs: per sample a timestep, the latent draw and the
/// noise.
struct Draws {
    timesteps: Vec<usize>,
    latent_eps: Vec<f32>,
    noise: Vec<f32>,
}

/// Step `step`'s draws for `b` samples, from a generator seeded by `(seed, step)`.
fn step_draws(cx: &TrainContext, b: usize, step: usize) -> Draws {
    let [c, h, w] = cx.latent;
    let n = c * h * w;
    let mut rng =
        SplitMix64(cx.config.seed ^ ((step as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15)));
    let t_max = cx.noise_schedule.num_train_timesteps() as u64;
    let timesteps: Vec<usize> = (0..b).map(|_| (rng.next_u64() % t_max) as usize).collect();
    let latent_eps = rng.normal_f32(b * n);
    let noise = rng.normal_f32(b * n);
    Draws {
        timesteps,
        latent_eps,
        noise,
    }
}

/// The inputs of a batch of `rows` (an epoch-seeded permutation in training) with `draws`.
fn batch_inputs<B: Backend>(
    cx: &TrainContext,
    rows: &[usize],
    draws: Draws,
    device: &B::Device,
) -> Result<StepInputs<B>> {
    let b = rows.len();
    let [c, h, w] = cx.latent;
    let gather = |f: &dyn Fn(&Cached) -> &[f32]| -> Vec<f32> {
        rows.iter()
            .flat_map(|&r| f(&cx.cached[r]).iter().copied())
            .collect()
    };
    let t4 = |v: Vec<f32>| Tensor::<B, 4>::from_data(TensorData::new(v, [b, c, h, w]), device);
    let (seq, dim) = (cx.captions.seq, cx.captions.dim);
    let prompt: Vec<f32> = rows
        .iter()
        .flat_map(|&r| cx.captions.prompt[cx.cached[r].caption].iter().copied())
        .collect();
    let pooled_dim = cx.captions.pooled[0].len();
    let pooled: Vec<f32> = rows
        .iter()
        .flat_map(|&r| cx.captions.pooled[cx.cached[r].caption].iter().copied())
        .collect();
    let kd = cx.names.k * cx.names.d;
    let names: Vec<f32> = rows
        .iter()
        .flat_map(|&r| {
            let row = cx.cached[r].name;
            cx.names.table[row * kd..(row + 1) * kd].iter().copied()
        })
        .collect();
    let names = Tensor::<B, 3>::from_data(TensorData::new(names, [b, cx.names.k, dim]), device);
    let prompt_embeds = prepend(
        Tensor::<B, 3>::from_data(TensorData::new(prompt, [b, seq, dim]), device),
        magicnaming_core::NameTokens::PerSample(names),
    )
    .map_err(|e| ModelError::InvalidInput(e.to_string()))?;
    let time_ids: Vec<f32> = rows.iter().flat_map(|&r| cx.cached[r].time_ids).collect();
    Ok(StepInputs {
        latent_mean: t4(gather(&|c| &c.mean)),
        latent_std: t4(gather(&|c| &c.std)),
        latent_eps: t4(draws.latent_eps),
        noise: t4(draws.noise),
        timesteps: draws.timesteps,
        prompt_embeds,
        text_embeds: Tensor::from_data(TensorData::new(pooled, [b, pooled_dim]), device),
        time_ids: Tensor::from_data(TensorData::new(time_ids, [b, 6]), device),
    })
}

/// Images, timesteps (fractions of the training schedule) and seed of the held-out loss.
const EVAL_IMAGES: usize = 8;
const EVAL_T: [f64; 5] = [0.1, 0.3, 0.5, 0.7, 0.9];
const EVAL_SEED: u64 = 0xE7A1_5EED;

/// The held-out loss: the first [`EVAL_IMAGES`] images, each at every [`EVAL_T`], with
/// noise drawn from a fixed seed; evaluated image by image.
fn eval_loss<B: Backend>(
    cx: &TrainContext,
    unet: &UNet2DConditionModel<B>,
    device: &B::Device,
) -> Result<f64> {
    let n_img = cx.cached.len().min(EVAL_IMAGES);
    let t_max = cx.noise_schedule.num_train_timesteps();
    let [c, h, w] = cx.latent;
    let n = EVAL_T.len() * c * h * w;
    let mut sum = 0f64;
    for r in 0..n_img {
        let mut rng = SplitMix64(EVAL_SEED ^ r as u64);
        let draws = Draws {
            timesteps: EVAL_T
                .iter()
                .map(|f| ((f * t_max as f64) as usize).min(t_max - 1))
                .collect(),
            latent_eps: rng.normal_f32(n),
            noise: rng.normal_f32(n),
        };
        let inputs = batch_inputs::<B>(cx, &vec![r; EVAL_T.len()], draws, device)?;
        let loss = lora_loss(
            unet,
            &cx.noise_schedule,
            cx.scaling_factor,
            cx.shift_factor,
            inputs,
        )?;
        sum += loss.into_scalar().elem::<f64>();
    }
    Ok(sum / n_img as f64)
}

/// Writes `out/checkpoint` atomically (adapters, optimizer, state), then the LoRA file as
/// of this step (`metrics.jsonl` is appended line by line as the run goes).
fn checkpoint<B: AutodiffBackend, O: Optimizer<UNet2DConditionModel<B>, B>>(
    cx: &TrainContext,
    unet: &mut UNet2DConditionModel<B>,
    optim: &O,
    step: usize,
) -> Result<PathBuf> {
    let out = cx.out;
    let tmp = start_checkpoint(out)?;
    LoraSet::of(unet)
        .save_file(tmp.join("lora"), &recorder())
        .map_err(|e| ModelError::weights(tmp.join("lora.mpk"), e.to_string()))?;
    Recorder::<B>::record(&recorder(), optim.to_record(), tmp.join("optim"))
        .map_err(|e| ModelError::weights(tmp.join("optim.mpk"), e.to_string()))?;
    let state = LoraState {
        step,
        config: cx.config.clone(),
    };
    let json = serde_json::to_vec_pretty(&state).expect("state serialises");
    magicnaming_core::write_atomic(&tmp.join("state.json"), &json)?;
    commit_checkpoint(out)?;
    let mut valid = unet.clone().valid();
    write_lora_file(out, &adapter_values(&mut valid), cx.config, valid.config())
}

fn train_loop<B: AutodiffBackend>(cx: TrainContext, device: &B::Device) -> Result<LoraSummary> {
    let config = cx.config;
    std::fs::create_dir_all(cx.out).map_err(|e| ModelError::io(cx.out, e))?;
    // 3. The frozen UNet with fresh adapters (or the checkpoint's).
    let unet = UNet2DConditionModel::<B>::load_as(cx.source, device, Precision::Auto)?.no_grad();
    let (mut unet, paths) = inject(
        unet,
        &config.targets,
        config.rank,
        config.alpha(),
        config.seed,
        None,
        device,
    )?;
    let mut optim = AdamWConfig::new()
        .with_weight_decay(config.weight_decay as f32)
        .with_epsilon(1e-8)
        .init::<B, UNet2DConditionModel<B>>();
    let metrics_path = cx.out.join("metrics.jsonl");
    let mut metrics = Vec::new();
    if cx.start > 0 {
        let ckpt = cx.out.join("checkpoint");
        let set = LoraSet::of(&mut unet)
            .load_file(ckpt.join("lora"), &recorder(), device)
            .map_err(|e| ModelError::weights(ckpt.join("lora.mpk"), e.to_string()))?;
        set.install(&mut unet)?;
        let record = Recorder::<B>::load(&recorder(), ckpt.join("optim"), device)
            .map_err(|e| ModelError::weights(ckpt.join("optim.mpk"), e.to_string()))?;
        optim = optim.load_record(record);
        metrics = read_jsonl::<LoraMetricsLine>(&metrics_path)?
            .into_iter()
            .filter(|m| m.step <= cx.start)
            .collect();
        log::info!("resuming at step {} of {}", cx.start, cx.total);
    }
    rewrite_jsonl(&metrics_path, &metrics)?;
    let ids = adapter_param_ids(&mut unet);
    log::info!(
        "training {} adapters (rank {}, {} parameters) on {} images for {} steps",
        paths.len(),
        config.rank,
        ids.len(),
        cx.cached.len(),
        cx.total
    );
    let all_rows: Vec<usize> = (0..cx.cached.len()).collect();
    let initial_val_loss = match config.eval_every {
        Some(_) if cx.start == 0 => {
            let v = eval_loss::<B::InnerBackend>(&cx, &unet.valid(), device)?;
            log::info!("held-out loss before training: {v:.6}");
            Some(v)
        }
        _ => None,
    };
    let (mut loss_sum, mut loss_count) = (0f64, 0usize);
    let mut file = cx.out.join(config.format.file_name());
    for step in cx.start..cx.total {
        let started = std::time::Instant::now();
        let rows = batch_rows(&all_rows, cx.batch, config.seed, step);
        let draws = step_draws(&cx, rows.len(), step);
        let inputs = batch_inputs::<B>(&cx, &rows, draws, device)?;
        let lr = cx.schedule.at(step);
        let (next, report) = lora_step(
            unet,
            &mut optim,
            &cx.noise_schedule,
            cx.scaling_factor,
            cx.shift_factor,
            inputs,
            &ids,
            lr,
            config.max_grad_norm,
        )
        .map_err(|e| match e {
            ModelError::InvalidInput(m) => {
                ModelError::InvalidInput(format!("step {}: {m}", step + 1))
            }
            e => e,
        })?;
        unet = next;
        log::debug!(
            "step {} took {:.3} s (loss {:.6})",
            step + 1,
            started.elapsed().as_secs_f64(),
            report.loss
        );
        loss_sum += report.loss;
        loss_count += 1;
        let done = step + 1;
        if done % config.log_every == 0 || done == cx.total {
            let line = LoraMetricsLine {
                step: done,
                lr,
                loss: loss_sum / loss_count as f64,
                grad_norm: report.grad_norm,
                val_loss: match config.eval_every {
                    Some(every) if done % every == 0 || done == cx.total => {
                        Some(eval_loss::<B::InnerBackend>(&cx, &unet.valid(), device)?)
                    }
                    _ => None,
                },
            };
            log::info!("step {done}/{}: loss {:.6}", cx.total, line.loss);
            append_jsonl(&metrics_path, &line)?;
            metrics.push(line);
            (loss_sum, loss_count) = (0.0, 0);
        }
        if done % config.checkpoint_every == 0 || done == cx.total {
            file = checkpoint(&cx, &mut unet, &optim, done)?;
        }
    }
    if cx.start >= cx.total {
        log::info!("the run had already finished at step {}", cx.total);
    }
    Ok(LoraSummary {
        steps: cx.total,
        metrics,
        file,
        modules: paths.len(),
        images: cx.cached.len(),
        upscaled: cx.upscaled,
        initial_val_loss,
    })
}
