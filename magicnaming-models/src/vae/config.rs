//! `AutoencoderKL` configuration, read from diffusers' `vae/config.json`. Absent fields take
//! diffusers' defaults; unsupported block types or activations are errors naming the field.
use burn::tensor::FloatDType;
use std::path::Path;

use burn::config::Config;
use serde_json::{Value, json};

use crate::ModelError;
use crate::json::read_json;

/// The supported subset of diffusers' `AutoencoderKL` configuration.
#[derive(Config, Debug)]
pub struct AutoencoderKLConfig {
    /// Image channels in.
    pub in_channels: usize,
    /// Image channels out.
    pub out_channels: usize,
    /// Channels per level.
    pub block_out_channels: Vec<usize>,
    /// Resnets per encoder level (decoder levels have one more).
    pub layers_per_block: usize,
    /// Latent channels.
    pub latent_channels: usize,
    /// GroupNorm groups.
    pub norm_num_groups: usize,
    /// Latents are multiplied by this before diffusion (0.13025 for SDXL).
    pub scaling_factor: f64,
    /// Subtracted before scaling (`null` for SDXL, so 0).
    pub shift_factor: Option<f64>,
    /// Per-channel latent means (Playground-style VAEs; `null` for SDXL).
    pub latents_mean: Option<Vec<f64>>,
    /// Per-channel latent standard deviations (with `latents_mean`).
    pub latents_std: Option<Vec<f64>>,
    /// diffusers runs this VAE in float32 under float16 pipelines (informational here).
    pub force_upcast: bool,
    /// 1x1 `quant_conv` after the encoder.
    pub use_quant_conv: bool,
    /// 1x1 `post_quant_conv` before the decoder.
    pub use_post_quant_conv: bool,
    /// Single-head attention in both mid blocks.
    pub mid_block_add_attention: bool,
}

/// diffusers 0.42.1 `AutoencoderKL.__init__` defaults.
fn defaults() -> Value {
    json!({
        "in_channels": 3, "out_channels": 3, "down_block_types": ["DownEncoderBlock2D"],
        "up_block_types": ["UpDecoderBlock2D"], "block_out_channels": [64], "layers_per_block": 1,
        "act_fn": "silu", "latent_channels": 4, "norm_num_groups": 32, "scaling_factor": 0.18215,
        "shift_factor": null, "latents_mean": null, "latents_std": null, "force_upcast": true,
        "use_quant_conv": true, "use_post_quant_conv": true, "mid_block_add_attention": true
    })
}

/// stabilityai/stable-diffusion-xl-base-1.0 `vae/config.json`.
pub const SDXL_BASE_VAE_CONFIG: &str = r#"{
  "_class_name": "AutoencoderKL", "_diffusers_version": "0.20.0.dev0", "act_fn": "silu",
  "block_out_channels": [128, 256, 512, 512],
  "down_block_types": ["DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D"],
  "force_upcast": true, "in_channels": 3, "latent_channels": 4, "layers_per_block": 2,
  "norm_num_groups": 32, "out_channels": 3, "sample_size": 1024, "scaling_factor": 0.13025,
  "up_block_types": ["UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D"]
}"#;

impl AutoencoderKLConfig {
    /// Parses a diffusers `vae/config.json` already read as JSON; `path` names the file in
    /// errors.
    pub fn from_json_value(root: &Value, path: &Path) -> crate::Result<Self> {
        crate::json::check_config_sizes(root, path)?;
        let file = root
            .as_object()
            .ok_or_else(|| ModelError::config(path, "expected a JSON object"))?;
        let mut obj = defaults();
        for (key, slot) in obj.as_object_mut().expect("object").iter_mut() {
            if let Some(v) = file.get(key) {
                *slot = v.clone();
            }
        }
        let err = |m: String| ModelError::config(path, m);
        let act = obj["act_fn"].clone();
        if act != json!("silu") && act != json!("swish") {
            return Err(err(format!("unsupported `act_fn`: {act} (silu)")));
        }
        let levels = obj["block_out_channels"]
            .as_array()
            .map(Vec::len)
            .unwrap_or(0);
        for (key, kind) in [
            ("down_block_types", "DownEncoderBlock2D"),
            ("up_block_types", "UpDecoderBlock2D"),
        ] {
            let ok = obj[key]
                .as_array()
                .is_some_and(|a| a.len() == levels && a.iter().all(|t| t == &json!(kind)));
            if !ok {
                return Err(err(format!(
                    "`{key}` must list \"{kind}\" once per block_out_channels entry ({levels}), got {}",
                    obj[key]
                )));
            }
        }
        let obj = obj.as_object_mut().expect("object");
        obj.remove("act_fn");
        obj.remove("down_block_types");
        obj.remove("up_block_types");
        let c: Self = serde_json::from_value(Value::Object(obj.clone()))
            .map_err(|e| err(format!("vae config: {e}")))?;
        let g = c.norm_num_groups;
        if levels == 0
            || g == 0
            || c.block_out_channels
                .iter()
                .any(|&ch| ch == 0 || !ch.is_multiple_of(g))
        {
            return Err(err(format!(
                "block_out_channels {:?} must be non-empty multiples of norm_num_groups {g}",
                c.block_out_channels
            )));
        }
        if c.latent_channels == 0 || c.layers_per_block == 0 || c.scaling_factor == 0.0 {
            return Err(err(
                "latent_channels, layers_per_block and scaling_factor must be non-zero".into(),
            ));
        }
        for stats in [&c.latents_mean, &c.latents_std].into_iter().flatten() {
            if stats.len() != c.latent_channels {
                return Err(err(format!(
                    "latents_mean/std need {} entries, got {}",
                    c.latent_channels,
                    stats.len()
                )));
            }
        }
        if c.latents_mean.is_some() != c.latents_std.is_some() {
            return Err(err(
                "latents_mean and latents_std must be given together".into()
            ));
        }
        Ok(c)
    }

    /// Reads `vae/config.json`.
    pub fn from_file(path: &Path) -> crate::Result<Self> {
        Self::from_json_value(&read_json(path)?, path)
    }

    /// stabilityai/stable-diffusion-xl-base-1.0 `vae/config.json`.
    pub fn sdxl_base() -> Self {
        let v: Value = serde_json::from_str(SDXL_BASE_VAE_CONFIG).expect("built-in JSON");
        Self::from_json_value(&v, Path::new("<built-in SDXL base vae/config.json>"))
            .expect("the built-in SDXL configuration is valid")
    }

    /// The float type the VAE runs in for weights resolved to `resolved`: `resolved`,
    /// except f16 with `force_upcast` (SDXL's VAE), which runs in f32 as diffusers'
    /// pipelines upcast it: SDXL's VAE overflows f16 (decoder activations pass 65504
    /// and the image comes out black or NaN).
    pub fn run_dtype(&self, resolved: FloatDType) -> FloatDType {
        if resolved == FloatDType::F16 && self.force_upcast {
            log::info!("vae: f16 weights upcast to f32 (force_upcast in the VAE configuration)");
            FloatDType::F32
        } else {
            resolved
        }
    }

    /// Image-to-latent downscaling factor (8 for SDXL).
    pub fn downscale_factor(&self) -> usize {
        1 << (self.block_out_channels.len() - 1)
    }
}
