//! Writing trained adapters as a LoRA file others read: kohya / A1111 (UNet modules in
//! the original SGM spelling, as kohya's sd-scripts save SDXL LoRAs) or diffusers / PEFT
//! (`save_lora_weights`' keys and its `lora_adapter_metadata`).
use std::collections::BTreeMap;
use std::path::Path;

use serde_json::json;

use super::adapters::AdapterValues;
use super::config::{LoraFormat, LoraTrainConfig};
use crate::unet::UNet2DConditionModelConfig;
use crate::unet::remap::LdmLayout;
use crate::weights::write::{F32Tensor, f32_safetensors};
use crate::{ModelError, Result};

/// The kohya module key of a UNet module (diffusers path): `lora_unet_` + its SGM name
/// with dots as underscores.
///
/// # Errors
/// A path the SGM layout has no name for.
pub fn kohya_key(layout: &LdmLayout, path: &str) -> Result<String> {
    let ldm = layout
        .to_ldm(&format!("{path}.weight"))
        .ok_or_else(|| ModelError::InvalidInput(format!("no SGM name for UNet module {path}")))?;
    let ldm = ldm.strip_suffix(".weight").unwrap_or(&ldm);
    Ok(format!("lora_unet_{}", ldm.replace('.', "_")))
}

/// The file's bytes: every adapter in `format`, with the run's settings in the metadata.
///
/// # Errors
/// A module without an SGM name (kohya).
pub fn lora_file_bytes(
    values: &BTreeMap<String, AdapterValues>,
    config: &LoraTrainConfig,
    unet: &UNet2DConditionModelConfig,
    format: LoraFormat,
) -> Result<Vec<u8>> {
    let alpha = config.alpha();
    let mut tensors: Vec<(String, Vec<f32>, Vec<usize>)> = Vec::new();
    match format {
        LoraFormat::Kohya => {
            let layout = LdmLayout::new(unet);
            for (path, v) in values {
                let key = kohya_key(&layout, path)?;
                tensors.push((
                    format!("{key}.lora_down.weight"),
                    v.a.clone(),
                    v.a_shape.to_vec(),
                ));
                tensors.push((
                    format!("{key}.lora_up.weight"),
                    v.b.clone(),
                    v.b_shape.to_vec(),
                ));
                tensors.push((format!("{key}.alpha"), vec![alpha as f32], vec![]));
            }
        }
        LoraFormat::Diffusers => {
            for (path, v) in values {
                tensors.push((
                    format!("unet.{path}.lora_A.weight"),
                    v.a.clone(),
                    v.a_shape.to_vec(),
                ));
                tensors.push((
                    format!("unet.{path}.lora_B.weight"),
                    v.b.clone(),
                    v.b_shape.to_vec(),
                ));
            }
        }
    }
    let peft = json!({
        "unet.r": config.rank,
        "unet.lora_alpha": alpha,
        "unet.init_lora_weights": "gaussian",
        "unet.target_modules": config.targets,
        "unet.lora_dropout": 0.0,
        "unet.bias": "none",
        "unet.use_rslora": false,
        "unet.use_dora": false,
    })
    .to_string();
    let settings = serde_json::to_string(config).expect("settings serialise");
    let mut metadata: Vec<(&str, &str)> = vec![
        ("format", "pt"),
        ("ss_network_module", "networks.lora"),
        ("magicnaming_train_lora", &settings),
    ];
    let dim = config.rank.to_string();
    let alpha_text = alpha.to_string();
    match format {
        LoraFormat::Kohya => {
            metadata.push(("ss_network_dim", &dim));
            metadata.push(("ss_network_alpha", &alpha_text));
        }
        LoraFormat::Diffusers => metadata.push(("lora_adapter_metadata", &peft)),
    }
    let views: Vec<F32Tensor<'_>> = tensors
        .iter()
        .map(|(n, v, s)| (n.as_str(), v.clone(), s.clone()))
        .collect();
    f32_safetensors(&views, &metadata).map_err(ModelError::InvalidInput)
}

/// Writes the file atomically into `out` under [`LoraFormat::file_name`]; returns its path.
///
/// # Errors
/// As [`lora_file_bytes`], and I/O.
pub fn write_lora_file(
    out: &Path,
    values: &BTreeMap<String, AdapterValues>,
    config: &LoraTrainConfig,
    unet: &UNet2DConditionModelConfig,
) -> Result<std::path::PathBuf> {
    let bytes = lora_file_bytes(values, config, unet, config.format)?;
    let path = out.join(config.format.file_name());
    magicnaming_core::write_atomic(&path, &bytes)?;
    Ok(path)
}
