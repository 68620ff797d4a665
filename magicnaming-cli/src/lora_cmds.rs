//! `--lora FILE[:SCALE]` (on `generate` and `encode-prompt`) and `lora info`.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use burn::tensor::backend::Backend;
use clap::Args;
use magicnaming_models::sdxl::lora::{Component, Lora, LoraFusion, ModelNames, ScaledLora};
use magicnaming_models::sdxl::{LoadOptions, SdxlSource};
use magicnaming_models::Precision;

use crate::device::Job;

/// One `--lora` value: a file and its multiplier.
#[derive(Debug, Clone, PartialEq)]
pub struct LoraSpec {
    /// The LoRA file.
    pub path: PathBuf,
    /// Its multiplier.
    pub scale: f32,
}

/// Parses `FILE[:SCALE]`. The scale follows the last `:`; a file name that contains `:`
/// (or a Windows drive path, `C:\loras\x.safetensors`) is kept whole when it exists or when
/// what follows the last `:` looks like a path.
pub fn parse_lora_spec(s: &str) -> std::result::Result<LoraSpec, String> {
    let whole = || LoraSpec {
        path: PathBuf::from(s),
        scale: 1.0,
    };
    if s.is_empty() {
        return Err("empty --lora value (expected FILE[:SCALE])".into());
    }
    if Path::new(s).exists() {
        return Ok(whole());
    }
    let Some((file, scale)) = s.rsplit_once(':') else {
        return Ok(whole());
    };
    if scale.contains(['/', '\\']) || scale.ends_with(".safetensors") || file.is_empty() {
        return Ok(whole());
    }
    match scale.trim().parse::<f32>() {
        Ok(v) if v.is_finite() => Ok(LoraSpec {
            path: PathBuf::from(file),
            scale: v,
        }),
        Ok(v) => Err(format!("`{s}`: the scale {v} is not a finite number")),
        Err(_) => Err(format!(
            "`{s}`: the scale `{scale}` after the last `:` is not a number (expected FILE[:SCALE])"
        )),
    }
}

/// `--lora` and `--lora-ignore-unmatched`.
#[derive(Args, Debug, Clone, Default)]
pub struct LoraArgs {
    /// A LoRA to fuse into the weights at load (kohya, diffusers/PEFT, LoHa, LoKr
    /// .safetensors), with its multiplier (default 1.0); repeatable.
    #[arg(long = "lora", value_name = "FILE[:SCALE]", value_parser = parse_lora_spec)]
    pub loras: Vec<LoraSpec>,
    /// LoRA keys that match no module of the model are a warning instead of an error.
    #[arg(long)]
    pub lora_ignore_unmatched: bool,
}

impl LoraArgs {
    /// Opens and checks every LoRA (before any model is loaded) into load options.
    pub fn load_options(&self, precision: Precision) -> Result<LoadOptions> {
        let mut options = LoadOptions::default().with_precision(precision);
        options.ignore_unmatched = self.lora_ignore_unmatched;
        for spec in &self.loras {
            let lora = ScaledLora::open(&spec.path, spec.scale)
                .with_context(|| format!("--lora {}", spec.path.display()))?;
            options = options.with_lora(lora);
        }
        Ok(options)
    }
}

/// Arguments of `lora info`.
#[derive(Args, Debug)]
pub struct InfoArgs {
    /// The LoRA file.
    file: PathBuf,
    /// An SDXL model (diffusers folder or single file) to list the keys that match none of
    /// its modules (only its configurations are read).
    #[arg(long)]
    model: Option<PathBuf>,
    /// Diffusers-style folder of configurations for --model.
    #[arg(long)]
    config: Option<PathBuf>,
}

fn counts<K: std::fmt::Display>(m: &BTreeMap<K, usize>) -> String {
    m.iter()
        .map(|(k, n)| format!("{k} ({n})"))
        .collect::<Vec<_>>()
        .join(", ")
}

impl Job for InfoArgs {
    fn run<B: Backend>(self, device: B::Device) -> Result<()> {
        let lora = Lora::open(&self.file)?;
        let namings: Vec<String> = lora.namings().iter().map(|n| format!("{n:?}")).collect();
        let kinds: Vec<&str> = lora.kinds().iter().map(|k| k.name()).collect();
        let conv = lora
            .modules()
            .iter()
            .filter(|m| m.is_conv(lora.file()))
            .count();
        println!("file: {}", self.file.display());
        println!(
            "format: {} naming, {} ({} on convolutions)",
            namings.join(" + "),
            kinds.join(" + "),
            conv
        );
        let ranks: BTreeMap<String, usize> = lora
            .ranks()
            .into_iter()
            .map(|(r, n)| (r.map_or("none".into(), |r| r.to_string()), n))
            .collect();
        println!("ranks: {}", counts(&ranks));
        println!("alphas: {}", counts(&lora.alphas()));
        let t = lora.targets();
        for (c, what) in [
            (Component::Unet, "UNet"),
            (Component::TextEncoder1, "text encoder 1"),
            (Component::TextEncoder2, "text encoder 2"),
        ] {
            println!("{what}: {} modules", t.get(&c).copied().unwrap_or(0));
        }
        if !lora.other_keys().is_empty() {
            println!(
                "other keys (no SDXL module, not a LoRA part): {}",
                lora.other_keys().len()
            );
        }
        if let Some(model) = &self.model {
            let source = SdxlSource::from_path(model, self.config.as_deref())?;
            let names = ModelNames::from_configs::<B>(&source, &device)?;
            let loras = [ScaledLora::new(lora, 1.0)];
            let fusion = LoraFusion::plan(&loras, &names, true)
                .with_context(|| format!("matching against {}", model.display()))?;
            println!(
                "matching {}: {} keys match nothing",
                model.display(),
                fusion.unmatched().len()
            );
            for k in fusion.unmatched() {
                println!("  {k}");
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_and_scale() {
        let p = |s| parse_lora_spec(s);
        assert_eq!(
            p("a.safetensors:0.7").unwrap(),
            LoraSpec {
                path: "a.safetensors".into(),
                scale: 0.7
            }
        );
        assert_eq!(p("a.safetensors").unwrap().scale, 1.0);
        assert_eq!(
            p("dir/a:b.safetensors:-0.5").unwrap().path,
            PathBuf::from("dir/a:b.safetensors")
        );
        assert_eq!(p("dir/a:b.safetensors:-0.5").unwrap().scale, -0.5);
        // A Windows path: what follows the last `:` is a path, not a scale.
        let w = p(r"C:\loras\x.safetensors").unwrap();
        assert_eq!(
            (w.path, w.scale),
            (PathBuf::from(r"C:\loras\x.safetensors"), 1.0)
        );
        let w = p(r"C:\loras\x.safetensors:0.3").unwrap();
        assert_eq!(
            (w.path, w.scale),
            (PathBuf::from(r"C:\loras\x.safetensors"), 0.3)
        );
        assert_eq!(
            p("my:lora.safetensors").unwrap().path,
            PathBuf::from("my:lora.safetensors")
        );
        let e = p("a.safetensors:strong").unwrap_err();
        assert!(e.contains("`strong`") && e.contains("not a number"), "{e}");
        assert!(p("a.safetensors:inf")
            .unwrap_err()
            .contains("not a finite number"));
        assert!(p("").is_err());
    }
}
