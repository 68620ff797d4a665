//! Where `bench`'s models come from: a real SDXL model, or random weights of SDXL base's
//! presets or of a configuration folder; and the image towers to time.
use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use burn::tensor::backend::Backend;
use magicnaming_models::clip::config::{ClipTextConfig, ClipVisionConfig};
use magicnaming_models::clip::tokenizer::ClipTokenizer;
use magicnaming_models::clip::tower::{parse_config_value, ClipVisionTower};
use magicnaming_models::clip::vision::ClipVisionModel;
use magicnaming_models::json::read_json;
use magicnaming_models::schedulers::SchedulerConfig;
use magicnaming_models::sdxl::{SdxlSource, SdxlTextEncoders};
use magicnaming_models::unet::{UNet2DConditionModel, UNet2DConditionModelConfig};
use magicnaming_models::vae::{AutoencoderKL, AutoencoderKLConfig};
use serde_json::Value;

/// Where the SDXL components come from.
pub(super) enum Models {
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

    /// Both text encoders with their tokenizers (random weights: the folder's tokenizers,
    /// else the bundled vocabulary).
    pub(super) fn text<B: Backend>(&self, device: &B::Device) -> Result<SdxlTextEncoders<B>> {
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

    /// The UNet.
    pub(super) fn unet<B: Backend>(&self, device: &B::Device) -> Result<UNet2DConditionModel<B>> {
        Ok(match self {
            Self::Files(source) => UNet2DConditionModel::load(source, device)?,
            Self::Random(dir) => match Self::config_file(dir, "unet", "config.json")? {
                Some(p) => UNet2DConditionModelConfig::from_file(&p)?.init(device),
                None => UNet2DConditionModelConfig::sdxl_base().init(device),
            },
        })
    }

    /// The VAE's configuration (its downscale factor and latent channels size the inputs).
    pub(super) fn vae_config(&self) -> Result<AutoencoderKLConfig> {
        let file = match self {
            Self::Files(source) => source.component_file("vae", "config.json"),
            Self::Random(dir) => Self::config_file(dir, "vae", "config.json")?,
        };
        Ok(match file {
            Some(p) => AutoencoderKLConfig::from_file(&p)?,
            None => AutoencoderKLConfig::sdxl_base(),
        })
    }

    /// The VAE.
    pub(super) fn vae<B: Backend>(&self, device: &B::Device) -> Result<AutoencoderKL<B>> {
        Ok(match self {
            Self::Files(source) => AutoencoderKL::load(source, device)?,
            Self::Random(_) => self.vae_config()?.init(device),
        })
    }

    /// Where the models come from, as the pipeline records it (random weights: the
    /// configuration folder, or "random" for SDXL base's configurations).
    pub(super) fn source(&self) -> SdxlSource {
        match self {
            Self::Files(source) => source.clone(),
            Self::Random(dir) => SdxlSource::Diffusers {
                root: dir.clone().unwrap_or_else(|| "random".into()),
                config: None,
            },
        }
    }

    /// The scheduler configuration of the whole image.
    pub(super) fn scheduler(&self) -> Result<SchedulerConfig> {
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

    /// Where the models come from, for the report.
    pub(super) fn describe(&self) -> String {
        match self {
            Self::Files(s) => s.display_path().display().to_string(),
            Self::Random(Some(d)) => format!("random weights, configurations of {}", d.display()),
            Self::Random(None) => "random weights, SDXL base presets".into(),
        }
    }
}

/// An image tower to time: its name and how to make it.
pub(super) fn tower<B: Backend>(
    spec: &str,
    device: &B::Device,
) -> Result<(String, ClipVisionModel<B>)> {
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

#[cfg(test)]
mod tests {
    use super::*;

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
