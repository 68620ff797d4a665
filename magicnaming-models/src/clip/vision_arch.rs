//! The architecture of a CLIP image tower that comes without a transformers
//! `config.json`: from an open_clip model configuration, or from the tensor shapes of
//! its weights plus the built-in preset with those sizes.
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde_json::Value;

use super::config::{ClipActivation, ClipVisionConfig};
use super::remap_vision::VisionLayout;
use crate::weights::SafetensorsFile;
use crate::{ModelError, Result};

/// Whether a parsed JSON file is an open_clip model configuration (`open_clip_config.json`
/// with `model_cfg`, or a model config with `vision_cfg`) rather than a transformers one.
pub fn is_open_clip_config(root: &Value) -> bool {
    root.get("model_cfg").is_some() || root.get("vision_cfg").is_some()
}

/// The image tower of an open_clip model configuration (`open_clip_config.json`'s
/// `model_cfg`, or a bare model config as in open_clip's `model_configs/*.json`):
/// `heads = width / head_width`, `intermediate = int(width * mlp_ratio)`,
/// `projection = embed_dim`, exact GELU unless `quick_gelu` is true.
///
/// # Errors
/// A missing `vision_cfg`/`embed_dim`, a timm or ResNet tower, or an option the burn
/// tower does not implement (layer scale, attentional pooling, ...).
pub fn vision_config_from_open_clip(root: &Value, path: &Path) -> Result<ClipVisionConfig> {
    let model = root.get("model_cfg").unwrap_or(root);
    let bad = |m: String| ModelError::config(path, m);
    let vision = model
        .get("vision_cfg")
        .and_then(Value::as_object)
        .ok_or_else(|| bad("open_clip config without `vision_cfg`".into()))?;
    let embed_dim = model
        .get("embed_dim")
        .and_then(Value::as_u64)
        .ok_or_else(|| bad("open_clip config without an integer `embed_dim`".into()))?;
    for (key, default) in [
        ("timm_model_name", Value::Null),
        ("ls_init_value", Value::Null),
        ("attentional_pool", Value::Bool(false)),
        ("no_ln_pre", Value::Bool(false)),
        ("pos_embed_type", Value::String("learnable".into())),
        ("pool_type", Value::String("tok".into())),
        ("qk_norm", Value::Bool(false)),
        ("scaled_cosine_attn", Value::Bool(false)),
        ("scale_heads", Value::Bool(false)),
        ("scale_attn_inner", Value::Bool(false)),
        ("scale_attn", Value::Bool(false)),
        ("scale_fc", Value::Bool(false)),
    ] {
        if let Some(v) = vision.get(key)
            && *v != default
            && !(v.is_null() && default.is_null())
        {
            return Err(bad(format!(
                "open_clip vision_cfg.{key} = {v} is not supported (only the plain ViT of CLIP ViT-L/14 and ViT-bigG/14)"
            )));
        }
    }
    let int = |key: &str, default: u64| -> Result<usize> {
        match vision.get(key) {
            None | Some(Value::Null) => Ok(default as usize),
            Some(v) => v.as_u64().map(|x| x as usize).ok_or_else(|| {
                bad(format!(
                    "open_clip vision_cfg.{key} = {v}: expected an integer (ViT towers only)"
                ))
            }),
        }
    };
    let width = int("width", 768)?;
    let head_width = int("head_width", 64)?;
    let layers = int("layers", 12)?;
    let mlp_ratio = vision
        .get("mlp_ratio")
        .and_then(Value::as_f64)
        .unwrap_or(4.0);
    if head_width == 0 || !width.is_multiple_of(head_width) {
        return Err(bad(format!(
            "open_clip width {width} is not a multiple of head_width {head_width}"
        )));
    }
    let quick_gelu = model
        .get("quick_gelu")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let act = if quick_gelu {
        ClipActivation::QuickGelu
    } else {
        ClipActivation::Gelu
    };
    let c = ClipVisionConfig::new(
        width,
        (width as f64 * mlp_ratio) as usize,
        embed_dim as usize,
        layers,
        width / head_width,
        3,
        int("image_size", 224)?,
        int("patch_size", 16)?,
        act,
        1e-5,
    );
    if [
        c.hidden_size,
        c.num_hidden_layers,
        c.patch_size,
        c.image_size,
        c.projection_dim,
    ]
    .contains(&0)
        || !c.image_size.is_multiple_of(c.patch_size)
    {
        return Err(bad(format!(
            "open_clip vision_cfg sizes must be > 0 with image_size a multiple of patch_size: {c:?}"
        )));
    }
    Ok(c)
}

/// Sizes of a tower read from tensor shapes; the head count and activation are not
/// recoverable from shapes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TowerShapes {
    /// Width `H`.
    pub hidden_size: usize,
    /// MLP width.
    pub intermediate_size: usize,
    /// Projection width `P`.
    pub projection_dim: usize,
    /// Layer count.
    pub num_hidden_layers: usize,
    /// Input channels.
    pub num_channels: usize,
    /// Input resolution `S`.
    pub image_size: usize,
    /// Patch size.
    pub patch_size: usize,
}

/// Reads [`TowerShapes`] from a `key -> shape` map in `layout`.
///
/// # Errors
/// A tensor needed to read a size is absent or has an unexpected rank.
pub fn tower_shapes(
    layout: &VisionLayout,
    shapes: &BTreeMap<String, Vec<usize>>,
) -> std::result::Result<TowerShapes, String> {
    let (prefix, conv, pos, fc1, proj, blocks, proj_transposed) = match layout {
        VisionLayout::Transformers { prefix } => (
            prefix.as_str(),
            "embeddings.patch_embedding.weight",
            "embeddings.position_embedding.weight",
            "encoder.layers.0.mlp.fc1.weight",
            "visual_projection.weight",
            "encoder.layers.",
            false,
        ),
        VisionLayout::OpenClip { prefix } => (
            prefix.as_str(),
            "conv1.weight",
            "positional_embedding",
            "transformer.resblocks.0.mlp.c_fc.weight",
            "proj",
            "transformer.resblocks.",
            true,
        ),
    };
    let get = |key: String, rank: usize| -> std::result::Result<Vec<usize>, String> {
        match shapes.get(&key) {
            Some(s) if s.len() == rank => Ok(s.clone()),
            Some(s) => Err(format!("`{key}` has shape {s:?}, expected rank {rank}")),
            None => Err(format!("no tensor `{key}`")),
        }
    };
    let proj_key = if matches!(layout, VisionLayout::Transformers { .. }) {
        proj.to_string()
    } else {
        format!("{prefix}{proj}")
    };
    let conv = get(format!("{prefix}{conv}"), 4)?;
    let pos = get(format!("{prefix}{pos}"), 2)?;
    let fc1 = get(format!("{prefix}{fc1}"), 2)?;
    let proj = get(proj_key, 2)?;
    let layer_prefix = format!("{prefix}{blocks}");
    let layers: BTreeSet<usize> = shapes
        .keys()
        .filter_map(|k| {
            k.strip_prefix(&layer_prefix)?
                .split('.')
                .next()?
                .parse()
                .ok()
        })
        .collect();
    let num_hidden_layers = layers.len();
    if layers.iter().copied().ne(0..num_hidden_layers) {
        return Err(format!(
            "layer indices under `{layer_prefix}` are not 0..{num_hidden_layers}"
        ));
    }
    let (hidden_size, patch_size) = (conv[0], conv[2]);
    let grid2 = pos[0].saturating_sub(1);
    let grid = (grid2 as f64).sqrt().round() as usize;
    if grid * grid != grid2 || conv[2] != conv[3] {
        return Err(format!(
            "position table of {} rows / patch {:?} do not describe a square image",
            pos[0],
            &conv[2..]
        ));
    }
    let projection_dim = if proj_transposed { proj[1] } else { proj[0] };
    Ok(TowerShapes {
        hidden_size,
        intermediate_size: fc1[0],
        projection_dim,
        num_hidden_layers,
        num_channels: conv[1],
        image_size: grid * patch_size,
        patch_size,
    })
}

/// The configuration of a tower file that comes without one: the sizes are read from
/// the tensor shapes, the head count and activation from the built-in preset with the
/// same sizes (CLIP ViT-L/14 of OpenAI: quick_gelu, 16 heads; OpenCLIP ViT-bigG/14:
/// GELU, 16 heads).
///
/// # Errors
/// Sizes that match no preset: the message lists the inferred sizes and asks for a
/// `config.json` with `num_attention_heads` and `hidden_act`.
pub fn infer_vision_config(
    file: &SafetensorsFile,
    layout: &VisionLayout,
) -> Result<ClipVisionConfig> {
    let shapes: BTreeMap<String, Vec<usize>> = file
        .keys()
        .filter_map(|k| file.entry(k).map(|e| (k.to_string(), e.shape.clone())))
        .collect();
    let s = tower_shapes(layout, &shapes).map_err(|m| {
        ModelError::weights(file.path(), format!("cannot read the tower's sizes: {m}"))
    })?;
    preset_for(&s).ok_or_else(|| {
        ModelError::config(
            file.path(),
            format!(
                "no configuration for this {} image tower, and its sizes ({s:?}) match no built-in preset \
                 (CLIP ViT-L/14, OpenCLIP ViT-bigG/14); `num_attention_heads` and `hidden_act` cannot be read \
                 from tensor shapes: put a config.json (transformers CLIPVisionConfig) or open_clip_config.json \
                 next to the file",
                layout.name()
            ),
        )
    })
}

/// The preset whose sizes equal `s`, if any.
pub fn preset_for(s: &TowerShapes) -> Option<ClipVisionConfig> {
    [
        ("CLIP ViT-L/14 (OpenAI, quick_gelu)", ClipVisionConfig::vit_l_14()),
        ("OpenCLIP ViT-bigG/14 (gelu)", ClipVisionConfig::vit_bigg_14()),
    ]
    .into_iter()
    .find(|(_, p)| {
        let sizes = TowerShapes {
            hidden_size: p.hidden_size,
            intermediate_size: p.intermediate_size,
            projection_dim: p.projection_dim,
            num_hidden_layers: p.num_hidden_layers,
            num_channels: p.num_channels,
            image_size: p.image_size,
            patch_size: p.patch_size,
        };
        sizes == *s
    })
    .map(|(name, p)| {
        log::info!("image tower without configuration: sizes match {name}, using its head count and activation");
        p
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bigg_shapes(layout: &VisionLayout) -> BTreeMap<String, Vec<usize>> {
        let mut m = BTreeMap::new();
        match layout {
            VisionLayout::OpenClip { prefix } => {
                m.insert(format!("{prefix}conv1.weight"), vec![1664, 3, 14, 14]);
                m.insert(format!("{prefix}positional_embedding"), vec![257, 1664]);
                m.insert(format!("{prefix}proj"), vec![1664, 1280]);
                for l in 0..48 {
                    m.insert(
                        format!("{prefix}transformer.resblocks.{l}.mlp.c_fc.weight"),
                        vec![8192, 1664],
                    );
                }
            }
            VisionLayout::Transformers { prefix } => {
                m.insert(
                    format!("{prefix}embeddings.patch_embedding.weight"),
                    vec![1664, 3, 14, 14],
                );
                m.insert(
                    format!("{prefix}embeddings.position_embedding.weight"),
                    vec![257, 1664],
                );
                m.insert("visual_projection.weight".into(), vec![1280, 1664]);
                for l in 0..48 {
                    m.insert(
                        format!("{prefix}encoder.layers.{l}.mlp.fc1.weight"),
                        vec![8192, 1664],
                    );
                }
            }
        }
        m
    }

    #[test]
    fn bigg_sizes_are_read_from_shapes_and_match_the_preset() {
        for layout in [
            VisionLayout::OpenClip {
                prefix: "visual.".into(),
            },
            VisionLayout::Transformers {
                prefix: "vision_model.".into(),
            },
        ] {
            let s = tower_shapes(&layout, &bigg_shapes(&layout)).unwrap();
            assert_eq!(
                (
                    s.hidden_size,
                    s.num_hidden_layers,
                    s.image_size,
                    s.projection_dim
                ),
                (1664, 48, 224, 1280)
            );
            let p = preset_for(&s).expect("bigG preset");
            assert_eq!(
                (p.num_attention_heads, p.hidden_act),
                (16, ClipActivation::Gelu)
            );
        }
        // One layer fewer: no preset.
        let layout = VisionLayout::OpenClip {
            prefix: String::new(),
        };
        let mut shapes = bigg_shapes(&layout);
        shapes.remove("transformer.resblocks.47.mlp.c_fc.weight");
        assert!(preset_for(&tower_shapes(&layout, &shapes).unwrap()).is_none());
        shapes.remove("transformer.resblocks.3.mlp.c_fc.weight");
        assert!(
            tower_shapes(&layout, &shapes)
                .unwrap_err()
                .contains("not 0..")
        );
    }

    #[test]
    fn open_clip_bigg_config_gives_the_preset() {
        let cfg = serde_json::json!({"model_cfg": {"embed_dim": 1280, "vision_cfg": {
            "image_size": 224, "layers": 48, "width": 1664, "head_width": 104,
            "mlp_ratio": 4.9231, "patch_size": 14}}});
        let c = vision_config_from_open_clip(&cfg, Path::new("open_clip_config.json")).unwrap();
        let p = ClipVisionConfig::vit_bigg_14();
        assert_eq!(
            (
                c.hidden_size,
                c.intermediate_size,
                c.num_attention_heads,
                c.num_hidden_layers,
                c.projection_dim
            ),
            (
                p.hidden_size,
                p.intermediate_size,
                p.num_attention_heads,
                p.num_hidden_layers,
                p.projection_dim
            )
        );
        let bad = serde_json::json!({"embed_dim": 8, "vision_cfg": {"ls_init_value": 0.1}});
        let e = vision_config_from_open_clip(&bad, Path::new("c.json"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("ls_init_value"), "{e}");
    }
}
