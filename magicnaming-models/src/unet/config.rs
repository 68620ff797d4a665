//! `UNet2DConditionModel` configuration, read from diffusers' `unet/config.json`.
//!
//! Fields absent from (or `null` in) the file take diffusers' defaults. Per-level fields
//! that diffusers accepts as an int or a list (`layers_per_block`, `attention_head_dim`,
//! `cross_attention_dim`, `transformer_layers_per_block`) are stored as lists. Options
//! that change the architecture away from SD/SDXL (class embeddings, other time embedding
//! types, `scale_shift` resnets, dual or only-cross attention...) are rejected with an
//! error naming the field, never ignored.
use std::path::Path;

use burn::config::Config;
use serde_json::{Map, Value, json};

use crate::ModelError;
use crate::json::read_json;

/// Down block types.
#[derive(Config, Debug, Copy, PartialEq, Eq)]
pub enum DownBlockType {
    /// `DownBlock2D`: resnets only.
    DownBlock2D,
    /// `CrossAttnDownBlock2D`: resnets each followed by a `Transformer2DModel`.
    CrossAttnDownBlock2D,
}

/// Up block types.
#[derive(Config, Debug, Copy, PartialEq, Eq)]
pub enum UpBlockType {
    /// `UpBlock2D`: resnets only.
    UpBlock2D,
    /// `CrossAttnUpBlock2D`: resnets each followed by a `Transformer2DModel`.
    CrossAttnUpBlock2D,
}

/// The supported subset of diffusers' `UNet2DConditionModel` configuration (SD/SDXL
/// UNets with `addition_embed_type: "text_time"`), per-level values resolved to lists.
#[derive(Config, Debug)]
pub struct UNet2DConditionModelConfig {
    /// Latent channels in.
    pub in_channels: usize,
    /// Latent channels out.
    pub out_channels: usize,
    /// Map the input `x` to `2x - 1` first.
    pub center_input_sample: bool,
    /// Cosines first in the timestep embeddings.
    pub flip_sin_to_cos: bool,
    /// `downscale_freq_shift` of the timestep embeddings.
    pub freq_shift: f64,
    /// One per level.
    pub down_block_types: Vec<DownBlockType>,
    /// One per level, deepest first.
    pub up_block_types: Vec<UpBlockType>,
    /// Channels per level.
    pub block_out_channels: Vec<usize>,
    /// Resnets per down level (up levels have one more).
    pub layers_per_block: Vec<usize>,
    /// Padding of the downsampling convolutions.
    pub downsample_padding: usize,
    /// Output divisor of the mid block's resnets.
    pub mid_block_scale_factor: f64,
    /// GroupNorm groups.
    pub norm_num_groups: usize,
    /// GroupNorm epsilon of the resnets and of `conv_norm_out`.
    pub norm_eps: f64,
    /// Width of the encoder hidden states, per level.
    pub cross_attention_dim: Vec<usize>,
    /// Transformer blocks per attention, per level.
    pub transformer_layers_per_block: Vec<usize>,
    /// Attention heads per level. diffusers' naming quirk: SDXL configs set
    /// `num_attention_heads: null` and `attention_head_dim: [5, 10, 20]`, which diffusers
    /// uses as the number of heads; this is that resolved value.
    pub num_attention_heads: Vec<usize>,
    /// Linear (SDXL) or 1x1-convolution (SD 1.x) `proj_in` / `proj_out`.
    pub use_linear_projection: bool,
    /// Attention in float32 under mixed precision; no effect in float32.
    pub upcast_attention: bool,
    /// Width of each sinusoidal embedding of the `time_ids` (256 for SDXL).
    pub addition_time_embed_dim: usize,
    /// Input width of `add_embedding`: pooled text width + `time_ids` count x
    /// `addition_time_embed_dim` (2816 = 1280 + 6 x 256 for SDXL).
    pub projection_class_embeddings_input_dim: usize,
    /// Width of the time embedding (`4 * block_out_channels[0]` when `null`).
    pub time_embedding_dim: Option<usize>,
    /// Kernel of `conv_in`.
    pub conv_in_kernel: usize,
    /// Kernel of `conv_out`.
    pub conv_out_kernel: usize,
}

/// diffusers 0.42.1 `UNet2DConditionModel.__init__` defaults.
fn defaults() -> Value {
    serde_json::from_str(
        r#"{
        "in_channels": 4, "out_channels": 4, "center_input_sample": false,
        "flip_sin_to_cos": true, "freq_shift": 0,
        "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
        "mid_block_type": "UNetMidBlock2DCrossAttn",
        "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
        "only_cross_attention": false, "block_out_channels": [320, 640, 1280, 1280],
        "layers_per_block": 2, "downsample_padding": 1, "mid_block_scale_factor": 1,
        "act_fn": "silu", "norm_num_groups": 32, "norm_eps": 1e-5, "cross_attention_dim": 1280,
        "transformer_layers_per_block": 1, "reverse_transformer_layers_per_block": null,
        "encoder_hid_dim": null, "encoder_hid_dim_type": null, "attention_head_dim": 8,
        "num_attention_heads": null, "dual_cross_attention": false, "use_linear_projection": false,
        "class_embed_type": null, "addition_embed_type": null, "addition_time_embed_dim": null,
        "num_class_embeds": null, "upcast_attention": false, "resnet_time_scale_shift": "default",
        "resnet_skip_time_act": false, "resnet_out_scale_factor": 1.0,
        "time_embedding_type": "positional", "time_embedding_dim": null,
        "time_embedding_act_fn": null, "timestep_post_act": null, "time_cond_proj_dim": null,
        "conv_in_kernel": 3, "conv_out_kernel": 3, "projection_class_embeddings_input_dim": null,
        "attention_type": "default", "class_embeddings_concat": false,
        "mid_block_only_cross_attention": null, "cross_attention_norm": null
    }"#,
    )
    .expect("built-in JSON")
}

/// stabilityai/stable-diffusion-xl-base-1.0 `unet/config.json`.
pub const SDXL_BASE_UNET_CONFIG: &str = r#"{
  "_class_name": "UNet2DConditionModel", "_diffusers_version": "0.19.0.dev0",
  "act_fn": "silu", "addition_embed_type": "text_time", "addition_embed_type_num_heads": 64,
  "addition_time_embed_dim": 256, "attention_head_dim": [5, 10, 20],
  "block_out_channels": [320, 640, 1280], "center_input_sample": false,
  "class_embed_type": null, "class_embeddings_concat": false, "conv_in_kernel": 3,
  "conv_out_kernel": 3, "cross_attention_dim": 2048, "cross_attention_norm": null,
  "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
  "downsample_padding": 1, "dual_cross_attention": false, "encoder_hid_dim": null,
  "encoder_hid_dim_type": null, "flip_sin_to_cos": true, "freq_shift": 0, "in_channels": 4,
  "layers_per_block": 2, "mid_block_only_cross_attention": null, "mid_block_scale_factor": 1,
  "mid_block_type": "UNetMidBlock2DCrossAttn", "norm_eps": 1e-05, "norm_num_groups": 32,
  "num_attention_heads": null, "num_class_embeds": null, "only_cross_attention": false,
  "out_channels": 4, "projection_class_embeddings_input_dim": 2816,
  "resnet_out_scale_factor": 1.0, "resnet_skip_time_act": false,
  "resnet_time_scale_shift": "default", "sample_size": 128, "time_cond_proj_dim": null,
  "time_embedding_act_fn": null, "time_embedding_dim": null,
  "time_embedding_type": "positional", "timestep_post_act": null,
  "transformer_layers_per_block": [1, 2, 10],
  "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
  "upcast_attention": null, "use_linear_projection": true
}"#;

struct Reader<'a> {
    obj: Map<String, Value>,
    path: &'a Path,
}

impl Reader<'_> {
    fn err(&self, message: String) -> ModelError {
        ModelError::config(self.path, message)
    }

    fn get(&self, key: &str) -> &Value {
        &self.obj[key]
    }

    fn usize(&self, key: &str) -> crate::Result<usize> {
        as_usize(self.get(key))
            .ok_or_else(|| self.err(format!("`{key}` must be a non-negative integer")))
    }

    fn f64(&self, key: &str) -> crate::Result<f64> {
        self.get(key)
            .as_f64()
            .ok_or_else(|| self.err(format!("`{key}` must be a number")))
    }

    fn bool(&self, key: &str) -> crate::Result<bool> {
        // `upcast_attention: null` (SDXL) means false, as in diffusers.
        match self.get(key) {
            Value::Null => Ok(false),
            v => v
                .as_bool()
                .ok_or_else(|| self.err(format!("`{key}` must be a boolean"))),
        }
    }

    fn strings(&self, key: &str) -> crate::Result<Vec<String>> {
        self.get(key)
            .as_array()
            .and_then(|a| a.iter().map(|v| v.as_str().map(str::to_string)).collect())
            .ok_or_else(|| self.err(format!("`{key}` must be a list of strings")))
    }

    /// An int (repeated `levels` times) or a list of `levels` ints.
    fn per_level(&self, key: &str, levels: usize) -> crate::Result<Vec<usize>> {
        let v = self.get(key);
        let list = match v {
            Value::Array(items) => items.iter().map(as_usize).collect::<Option<Vec<_>>>(),
            _ => as_usize(v).map(|n| vec![n; levels]),
        }
        .ok_or_else(|| {
            self.err(format!(
                "`{key}` must be an integer or a list of integers, got {v}"
            ))
        })?;
        if list.len() != levels {
            return Err(self.err(format!(
                "`{key}` has {} entries for {levels} levels",
                list.len()
            )));
        }
        Ok(list)
    }

    /// Rejects a field whose value is not one of `allowed` (unsupported architecture).
    fn only(&self, key: &str, allowed: &[Value]) -> crate::Result<()> {
        let v = self.get(key);
        let ok = allowed.contains(v)
            || matches!(v, Value::Array(items) if key == "only_cross_attention" && items.iter().all(|i| i == &json!(false)));
        if ok {
            Ok(())
        } else {
            Err(self.err(format!(
                "unsupported `{key}`: {v} (supported: {})",
                allowed
                    .iter()
                    .map(Value::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            )))
        }
    }
}

fn as_usize(v: &Value) -> Option<usize> {
    v.as_u64()
        .or_else(|| {
            v.as_f64()
                .filter(|f| f.fract() == 0.0 && *f >= 0.0)
                .map(|f| f as u64)
        })
        .map(|n| n as usize)
}

impl UNet2DConditionModelConfig {
    /// Parses a diffusers `unet/config.json` already read as JSON; `path` names the file in
    /// errors.
    pub fn from_json_value(root: &Value, path: &Path) -> crate::Result<Self> {
        crate::json::check_config_sizes(root, path)?;
        let file = root
            .as_object()
            .ok_or_else(|| ModelError::config(path, "expected a JSON object"))?;
        let mut obj = defaults()
            .as_object()
            .cloned()
            .expect("defaults are an object");
        for (key, slot) in obj.iter_mut() {
            if let Some(v) = file.get(key) {
                // As in diffusers, a value in the file (even `null`) replaces the default.
                *slot = v.clone();
            }
        }
        let r = Reader { obj, path };
        r.only("act_fn", &[json!("silu"), json!("swish")])?;
        r.only("mid_block_type", &[json!("UNetMidBlock2DCrossAttn")])?;
        r.only("only_cross_attention", &[json!(false)])?;
        r.only(
            "mid_block_only_cross_attention",
            &[Value::Null, json!(false)],
        )?;
        r.only("dual_cross_attention", &[json!(false)])?;
        r.only("class_embed_type", &[Value::Null])?;
        r.only("num_class_embeds", &[Value::Null])?;
        r.only("class_embeddings_concat", &[json!(false)])?;
        r.only("addition_embed_type", &[json!("text_time")])?;
        r.only("encoder_hid_dim", &[Value::Null])?;
        r.only("encoder_hid_dim_type", &[Value::Null])?;
        r.only("time_embedding_type", &[json!("positional")])?;
        r.only("time_embedding_act_fn", &[Value::Null])?;
        r.only("timestep_post_act", &[Value::Null])?;
        r.only("time_cond_proj_dim", &[Value::Null])?;
        r.only("resnet_time_scale_shift", &[json!("default")])?;
        r.only("resnet_skip_time_act", &[json!(false)])?;
        r.only("resnet_out_scale_factor", &[json!(1.0), json!(1)])?;
        r.only("attention_type", &[json!("default")])?;
        r.only("cross_attention_norm", &[Value::Null])?;
        r.only("reverse_transformer_layers_per_block", &[Value::Null])?;
        if !r.get("num_attention_heads").is_null() {
            // diffusers raises here too (huggingface/diffusers#2011).
            return Err(r.err(
                "`num_attention_heads` must be null: diffusers' UNet2DConditionModel takes the heads from `attention_head_dim`".into(),
            ));
        }
        let down_block_types = r
            .strings("down_block_types")?
            .iter()
            .map(|s| match s.strip_prefix("UNetRes").unwrap_or(s) {
                "DownBlock2D" => Ok(DownBlockType::DownBlock2D),
                "CrossAttnDownBlock2D" => Ok(DownBlockType::CrossAttnDownBlock2D),
                other => Err(r.err(format!("unsupported down block type {other:?}"))),
            })
            .collect::<crate::Result<Vec<_>>>()?;
        let up_block_types = r
            .strings("up_block_types")?
            .iter()
            .map(|s| match s.strip_prefix("UNetRes").unwrap_or(s) {
                "UpBlock2D" => Ok(UpBlockType::UpBlock2D),
                "CrossAttnUpBlock2D" => Ok(UpBlockType::CrossAttnUpBlock2D),
                other => Err(r.err(format!("unsupported up block type {other:?}"))),
            })
            .collect::<crate::Result<Vec<_>>>()?;
        let levels = down_block_types.len();
        let block_out_channels = r.per_level("block_out_channels", levels)?;
        if up_block_types.len() != levels || levels == 0 {
            return Err(r.err(format!(
                "{levels} down block types, {} up block types, {} block_out_channels: they must match",
                up_block_types.len(),
                block_out_channels.len()
            )));
        }
        if let Some(bad) = r
            .get("transformer_layers_per_block")
            .as_array()
            .filter(|a| a.iter().any(Value::is_array))
        {
            return Err(r.err(format!(
                "asymmetric `transformer_layers_per_block` {} (lists of lists) is not supported",
                Value::Array(bad.clone())
            )));
        }
        let addition_time_embed_dim = r.usize("addition_time_embed_dim").map_err(|_| {
            r.err(
                "`addition_time_embed_dim` must be set for addition_embed_type \"text_time\""
                    .into(),
            )
        })?;
        let projection_class_embeddings_input_dim = r.usize("projection_class_embeddings_input_dim").map_err(|_| {
            r.err("`projection_class_embeddings_input_dim` must be set for addition_embed_type \"text_time\"".into())
        })?;
        let time_embedding_dim = match r.get("time_embedding_dim") {
            Value::Null => None,
            _ => Some(r.usize("time_embedding_dim")?),
        };
        let c = Self {
            in_channels: r.usize("in_channels")?,
            out_channels: r.usize("out_channels")?,
            center_input_sample: r.bool("center_input_sample")?,
            flip_sin_to_cos: r.bool("flip_sin_to_cos")?,
            freq_shift: r.f64("freq_shift")?,
            down_block_types,
            up_block_types,
            layers_per_block: r.per_level("layers_per_block", levels)?,
            downsample_padding: r.usize("downsample_padding")?,
            mid_block_scale_factor: r.f64("mid_block_scale_factor")?,
            norm_num_groups: r.usize("norm_num_groups")?,
            norm_eps: r.f64("norm_eps")?,
            cross_attention_dim: r.per_level("cross_attention_dim", levels)?,
            transformer_layers_per_block: r.per_level("transformer_layers_per_block", levels)?,
            num_attention_heads: r.per_level("attention_head_dim", levels)?,
            use_linear_projection: r.bool("use_linear_projection")?,
            upcast_attention: r.bool("upcast_attention")?,
            addition_time_embed_dim,
            projection_class_embeddings_input_dim,
            time_embedding_dim,
            conv_in_kernel: r.usize("conv_in_kernel")?,
            conv_out_kernel: r.usize("conv_out_kernel")?,
            block_out_channels,
        };
        c.check(path)?;
        Ok(c)
    }

    fn check(&self, path: &Path) -> crate::Result<()> {
        let err = |m: String| Err(ModelError::config(path, m));
        let g = self.norm_num_groups;
        for (i, &ch) in self.block_out_channels.iter().enumerate() {
            let heads = self.num_attention_heads[i];
            if ch == 0 || g == 0 || !ch.is_multiple_of(g) {
                return err(format!(
                    "block_out_channels[{i}] = {ch} is not a positive multiple of norm_num_groups {g}"
                ));
            }
            if heads == 0 || !ch.is_multiple_of(heads) {
                return err(format!(
                    "block_out_channels[{i}] = {ch} does not split into {heads} attention heads"
                ));
            }
        }
        if self.in_channels == 0 || self.out_channels == 0 || self.addition_time_embed_dim == 0 {
            return err("in_channels, out_channels and addition_time_embed_dim must be > 0".into());
        }
        if self.conv_in_kernel.is_multiple_of(2) || self.conv_out_kernel.is_multiple_of(2) {
            return err("conv_in_kernel and conv_out_kernel must be odd".into());
        }
        if self.layers_per_block.contains(&0) {
            return err("layers_per_block must be > 0".into());
        }
        Ok(())
    }

    /// Reads `unet/config.json`.
    pub fn from_file(path: &Path) -> crate::Result<Self> {
        Self::from_json_value(&read_json(path)?, path)
    }

    /// stabilityai/stable-diffusion-xl-base-1.0 `unet/config.json`.
    pub fn sdxl_base() -> Self {
        let v: Value = serde_json::from_str(SDXL_BASE_UNET_CONFIG).expect("built-in JSON");
        Self::from_json_value(&v, Path::new("<built-in SDXL base unet/config.json>"))
            .expect("the built-in SDXL configuration is valid")
    }

    /// Number of levels.
    pub fn levels(&self) -> usize {
        self.block_out_channels.len()
    }

    /// Width of the time embedding.
    pub fn time_embed_dim(&self) -> usize {
        self.time_embedding_dim
            .unwrap_or(4 * self.block_out_channels[0])
    }
}
