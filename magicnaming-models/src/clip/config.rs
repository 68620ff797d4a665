//! CLIP configurations, deserialised from transformers' `config.json` (`CLIPTextConfig`,
//! `CLIPVisionConfig`, or a full `CLIPConfig` with `text_config` / `vision_config`).
//! Fields absent from a file take transformers' defaults for that class.
use std::path::Path;

use burn::config::Config;
use serde_json::{Map, Value, json};

use crate::ModelError;
use crate::json::read_json;

/// Activation of the CLIP MLPs, as transformers names it in `hidden_act`.
#[derive(Config, Debug, Copy, PartialEq, Eq)]
pub enum ClipActivation {
    /// `quick_gelu`: `x * sigmoid(1.702 x)` (OpenAI CLIP ViT-L/14).
    QuickGelu,
    /// `gelu`: exact erf GELU (OpenCLIP ViT-bigG/14).
    Gelu,
    /// `gelu_new` / `gelu_pytorch_tanh`: tanh approximation.
    GeluTanh,
}

impl ClipActivation {
    /// Parses transformers' `hidden_act` string.
    pub fn from_hf(name: &str) -> Option<Self> {
        match name {
            "quick_gelu" => Some(Self::QuickGelu),
            "gelu" => Some(Self::Gelu),
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Some(Self::GeluTanh),
            _ => None,
        }
    }
}

/// The text transformer of CLIP (transformers' `CLIPTextConfig`).
#[derive(Config, Debug)]
pub struct ClipTextConfig {
    /// Vocabulary size (49408 for CLIP's BPE).
    pub vocab_size: usize,
    /// Width of the transformer.
    pub hidden_size: usize,
    /// Width of the MLPs.
    pub intermediate_size: usize,
    /// Output width of `text_projection` (used by `CLIPTextModelWithProjection`).
    pub projection_dim: usize,
    /// Number of transformer layers.
    pub num_hidden_layers: usize,
    /// Number of attention heads.
    pub num_attention_heads: usize,
    /// Sequence length of the position table (77).
    pub max_position_embeddings: usize,
    /// MLP activation.
    pub hidden_act: ClipActivation,
    /// LayerNorm epsilon.
    pub layer_norm_eps: f64,
    /// End-of-text id; the legacy value 2 means "pool at the largest id" (transformers).
    pub eos_token_id: usize,
}

/// The vision transformer of CLIP (transformers' `CLIPVisionConfig`).
#[derive(Config, Debug)]
pub struct ClipVisionConfig {
    /// Width of the transformer.
    pub hidden_size: usize,
    /// Width of the MLPs.
    pub intermediate_size: usize,
    /// Output width of `visual_projection`.
    pub projection_dim: usize,
    /// Number of transformer layers.
    pub num_hidden_layers: usize,
    /// Number of attention heads.
    pub num_attention_heads: usize,
    /// Input channels (3).
    pub num_channels: usize,
    /// Input resolution.
    pub image_size: usize,
    /// Patch size of the stem convolution.
    pub patch_size: usize,
    /// MLP activation.
    pub hidden_act: ClipActivation,
    /// LayerNorm epsilon.
    pub layer_norm_eps: f64,
}

/// transformers' `CLIPTextConfig` defaults.
fn text_defaults() -> Value {
    json!({
        "vocab_size": 49408, "hidden_size": 512, "intermediate_size": 2048,
        "projection_dim": 512, "num_hidden_layers": 12, "num_attention_heads": 8,
        "max_position_embeddings": 77, "hidden_act": "quick_gelu", "layer_norm_eps": 1e-5,
        "eos_token_id": 2
    })
}

/// transformers' `CLIPVisionConfig` defaults.
fn vision_defaults() -> Value {
    json!({
        "hidden_size": 768, "intermediate_size": 3072, "projection_dim": 512,
        "num_hidden_layers": 12, "num_attention_heads": 12, "num_channels": 3,
        "image_size": 224, "patch_size": 32, "hidden_act": "quick_gelu", "layer_norm_eps": 1e-5
    })
}

/// Overlays `file` on `defaults`, keeping only the keys the defaults know, and turns the
/// activation name into [`ClipActivation`]'s serialised form.
fn merge(defaults: Value, file: &Map<String, Value>, path: &Path) -> crate::Result<Value> {
    let mut out = defaults;
    let obj = out.as_object_mut().expect("defaults are an object");
    for (key, slot) in obj.iter_mut() {
        if let Some(v) = file.get(key)
            && !v.is_null()
        {
            *slot = v.clone();
        }
    }
    let act = obj["hidden_act"].as_str().unwrap_or_default().to_string();
    let parsed = ClipActivation::from_hf(&act).ok_or_else(|| {
        ModelError::config(
            path,
            format!("unsupported hidden_act {act:?} (quick_gelu, gelu, gelu_new)"),
        )
    })?;
    obj.insert(
        "hidden_act".into(),
        serde_json::to_value(parsed).expect("enum serialises"),
    );
    Ok(out)
}

fn section<'a>(root: &'a Value, key: &str, path: &Path) -> crate::Result<&'a Map<String, Value>> {
    let obj = root
        .as_object()
        .ok_or_else(|| ModelError::config(path, "expected a JSON object"))?;
    match obj.get(key) {
        Some(Value::Object(sub)) => Ok(sub),
        _ => Ok(obj),
    }
}

fn check_positive(path: &Path, fields: &[(&str, usize)]) -> crate::Result<()> {
    for (name, value) in fields {
        if *value == 0 {
            return Err(ModelError::config(path, format!("`{name}` must be > 0")));
        }
    }
    Ok(())
}

impl ClipTextConfig {
    /// Parses a text configuration from a parsed `config.json` (a `CLIPTextConfig`, or a
    /// `CLIPConfig` whose `text_config` is used); `path` names the file in errors.
    pub fn from_json_value(root: &Value, path: &Path) -> crate::Result<Self> {
        crate::json::check_config_sizes(root, path)?;
        let merged = merge(text_defaults(), section(root, "text_config", path)?, path)?;
        let c: Self = serde_json::from_value(merged)
            .map_err(|e| ModelError::config(path, format!("text config: {e}")))?;
        check_positive(
            path,
            &[
                ("hidden_size", c.hidden_size),
                ("num_attention_heads", c.num_attention_heads),
                ("num_hidden_layers", c.num_hidden_layers),
                ("max_position_embeddings", c.max_position_embeddings),
                ("vocab_size", c.vocab_size),
            ],
        )?;
        if !c.hidden_size.is_multiple_of(c.num_attention_heads) {
            return Err(ModelError::config(
                path,
                format!(
                    "hidden_size {} is not divisible by num_attention_heads {}",
                    c.hidden_size, c.num_attention_heads
                ),
            ));
        }
        Ok(c)
    }

    /// Reads `config.json`.
    pub fn from_file(path: &Path) -> crate::Result<Self> {
        Self::from_json_value(&read_json(path)?, path)
    }

    /// stabilityai/stable-diffusion-xl-base-1.0 `text_encoder/config.json` (CLIP ViT-L/14).
    pub fn sdxl_text_encoder() -> Self {
        Self::new(
            49408,
            768,
            3072,
            768,
            12,
            12,
            77,
            ClipActivation::QuickGelu,
            1e-5,
            2,
        )
    }

    /// stabilityai/stable-diffusion-xl-base-1.0 `text_encoder_2/config.json`
    /// (OpenCLIP ViT-bigG/14).
    pub fn sdxl_text_encoder_2() -> Self {
        Self::new(
            49408,
            1280,
            5120,
            1280,
            32,
            20,
            77,
            ClipActivation::Gelu,
            1e-5,
            2,
        )
    }
}

impl ClipVisionConfig {
    /// Parses a vision configuration from a parsed `config.json` (a `CLIPVisionConfig`,
    /// or a `CLIPConfig` whose `vision_config` is used).
    pub fn from_json_value(root: &Value, path: &Path) -> crate::Result<Self> {
        crate::json::check_config_sizes(root, path)?;
        let sec = section(root, "vision_config", path)?;
        let mut merged = merge(vision_defaults(), sec, path)?;
        // A full CLIPConfig keeps projection_dim at the top level, and CLIPModel's
        // visual_projection uses that one even when vision_config has its own (transformers
        // 5 writes the CLIPVisionConfig default, 512, there).
        let full = root.get("vision_config").is_some_and(Value::is_object);
        if (full || !sec.contains_key("projection_dim"))
            && let Some(p) = root.get("projection_dim").filter(|v| !v.is_null())
        {
            merged["projection_dim"] = p.clone();
        }
        let c: Self = serde_json::from_value(merged)
            .map_err(|e| ModelError::config(path, format!("vision config: {e}")))?;
        check_positive(
            path,
            &[
                ("hidden_size", c.hidden_size),
                ("num_attention_heads", c.num_attention_heads),
                ("num_hidden_layers", c.num_hidden_layers),
                ("patch_size", c.patch_size),
                ("image_size", c.image_size),
            ],
        )?;
        if !c.hidden_size.is_multiple_of(c.num_attention_heads)
            || !c.image_size.is_multiple_of(c.patch_size)
        {
            return Err(ModelError::config(
                path,
                format!(
                    "hidden_size {} must divide by num_attention_heads {}, image_size {} by patch_size {}",
                    c.hidden_size, c.num_attention_heads, c.image_size, c.patch_size
                ),
            ));
        }
        Ok(c)
    }

    /// Reads `config.json`.
    pub fn from_file(path: &Path) -> crate::Result<Self> {
        Self::from_json_value(&read_json(path)?, path)
    }

    /// openai/clip-vit-large-patch14 vision tower (CLIP_L image embeddings, 768-d).
    pub fn vit_l_14() -> Self {
        Self::new(
            1024,
            4096,
            768,
            24,
            16,
            3,
            224,
            14,
            ClipActivation::QuickGelu,
            1e-5,
        )
    }

    /// laion/CLIP-ViT-bigG-14-laion2B-39B-b160k vision tower (CLIP_G image embeddings,
    /// 1280-d).
    pub fn vit_bigg_14() -> Self {
        Self::new(
            1664,
            8192,
            1280,
            48,
            16,
            3,
            224,
            14,
            ClipActivation::Gelu,
            1e-5,
        )
    }
}
