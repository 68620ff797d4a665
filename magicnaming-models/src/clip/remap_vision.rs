//! Remap tables for CLIP image towers and layout detection (the architecture of a tower
//! without a transformers configuration is in `clip_vision_arch`).
//!
//! | format | stored key | module path |
//! |---|---|---|
//! | transformers `CLIPVisionModelWithProjection`, full `CLIPModel`, IP-Adapter `image_encoder/` | `vision_model.X` (or `X` when a file holds a bare `CLIPVisionModel` of transformers >= 5) | `X` |
//! | transformers | `visual_projection.weight` `[P, H]` | `visual_projection.weight` |
//! | transformers | `vision_model.embeddings.position_ids`, `text_model.*`, `text_projection.weight`, `logit_scale` | ignored (buffer / not the image tower) |
//! | open_clip (`visual.` prefix in a full model, none when a file holds only the visual tower) | `conv1.weight` `[H, 3, p, p]` | `embeddings.patch_embedding.weight` |
//! | open_clip | `class_embedding` `[H]` | `embeddings.class_embedding` |
//! | open_clip | `positional_embedding` `[L, H]` | `embeddings.position_embedding.weight` |
//! | open_clip | `ln_pre` | `pre_layrnorm` |
//! | open_clip | `transformer.resblocks.N.ln_1` / `ln_2` | `encoder.layers.N.layer_norm1` / `layer_norm2` |
//! | open_clip | `transformer.resblocks.N.attn.in_proj_weight` / `_bias` `[3H, ...]` | `q_proj`, `k_proj`, `v_proj` (thirds, in that order) |
//! | open_clip | `transformer.resblocks.N.attn.out_proj` | `encoder.layers.N.self_attn.out_proj` |
//! | open_clip | `transformer.resblocks.N.mlp.c_fc` / `c_proj` | `encoder.layers.N.mlp.fc1` / `fc2` |
//! | open_clip | `ln_post` (applied to the class token) | `post_layernorm` |
//! | open_clip | `proj` `[H, P]` (used as `x @ proj`) | `visual_projection.weight` `[P, H]` (transposed) |
//! | open_clip full model | text keys (no `visual.` prefix), `logit_scale` | ignored (not the image tower) |
//!
//! Any other key of the tower's scope (layer scale `ls_1`, attention pooling...) is kept
//! under an `<unmapped>.` name so the load report names it as unused.
use crate::weights::{Mapped, SafetensorsFile, Transform, keys_under};
use crate::{ModelError, Result};

/// Where a file keeps its image tower.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VisionLayout {
    /// transformers names under `prefix` (`vision_model.` or ``), `visual_projection.weight`
    /// at the root.
    Transformers {
        /// Prefix of the vision transformer's keys.
        prefix: String,
    },
    /// open_clip names under `prefix` (`visual.` or ``).
    OpenClip {
        /// Prefix of the visual tower's keys.
        prefix: String,
    },
}

impl VisionLayout {
    /// Recognises the layout from the keys of `file`.
    ///
    /// # Errors
    /// No key of any known image tower.
    pub fn detect(file: &SafetensorsFile) -> Result<Self> {
        let has = |k: &str| file.entry(k).is_some();
        if has("vision_model.embeddings.patch_embedding.weight") {
            Ok(Self::Transformers {
                prefix: "vision_model.".into(),
            })
        } else if has("embeddings.patch_embedding.weight") {
            Ok(Self::Transformers {
                prefix: String::new(),
            })
        } else if has("visual.conv1.weight") {
            Ok(Self::OpenClip {
                prefix: "visual.".into(),
            })
        } else if has("conv1.weight") {
            Ok(Self::OpenClip {
                prefix: String::new(),
            })
        } else {
            Err(ModelError::weights(
                file.path(),
                "no CLIP image tower in this file: expected `vision_model.embeddings.patch_embedding.weight` \
                 (transformers) or `visual.conv1.weight` / `conv1.weight` (open_clip)",
            ))
        }
    }

    /// The remap table of this layout for `file`.
    pub fn remap(&self, file: &SafetensorsFile) -> Vec<Mapped> {
        match self {
            Self::Transformers { prefix } => hf_vision(file, prefix),
            Self::OpenClip { prefix } => open_clip_vision(file, prefix),
        }
    }

    /// Short name for messages.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Transformers { .. } => "transformers",
            Self::OpenClip { .. } => "open_clip",
        }
    }
}

/// Remap for a transformers image tower whose vision transformer sits under `prefix`.
/// Text-tower keys of a full `CLIPModel`, `logit_scale` and `position_ids` buffers are
/// left out; other keys under `prefix` are reported if unused.
pub fn hf_vision(file: &SafetensorsFile, prefix: &str) -> Vec<Mapped> {
    let mut out = Vec::new();
    for key in file.keys() {
        if key == "visual_projection.weight" {
            out.push(Mapped::new(key, key));
            continue;
        }
        if key.starts_with("text_model.")
            || key.starts_with("text_projection.")
            || key == "logit_scale"
        {
            continue;
        }
        let Some(rest) = key.strip_prefix(prefix) else {
            // Outside the tower (prefix `vision_model.`): not ours unless it looks like it.
            out.push(Mapped::new(format!("<unmapped>.{key}"), key));
            continue;
        };
        if rest == "embeddings.position_ids" {
            continue;
        }
        out.push(Mapped::new(rest, key));
    }
    out
}

/// Remap for an open_clip visual tower stored under `prefix` (`visual.` in a full
/// open_clip model; `` when the file holds only the visual tower).
pub fn open_clip_vision(file: &SafetensorsFile, prefix: &str) -> Vec<Mapped> {
    let mut out = Vec::new();
    for (full, k) in keys_under(file, prefix) {
        if prefix.is_empty() && k == "logit_scale" {
            continue;
        }
        match k {
            "conv1.weight" => out.push(Mapped::new("embeddings.patch_embedding.weight", full)),
            "class_embedding" => out.push(Mapped::new("embeddings.class_embedding", full)),
            "positional_embedding" => {
                out.push(Mapped::new("embeddings.position_embedding.weight", full))
            }
            "proj" => out.push(Mapped::with(
                "visual_projection.weight",
                full,
                Transform::Transpose,
            )),
            _ => {
                if let Some(rest) = k.strip_prefix("ln_pre.") {
                    out.push(Mapped::new(format!("pre_layrnorm.{rest}"), full));
                } else if let Some(rest) = k.strip_prefix("ln_post.") {
                    out.push(Mapped::new(format!("post_layernorm.{rest}"), full));
                } else if let Some(rest) = k.strip_prefix("transformer.resblocks.") {
                    resblock(&mut out, full, rest);
                } else {
                    out.push(Mapped::new(format!("<unmapped>.{k}"), full));
                }
            }
        }
    }
    out
}

/// One `transformer.resblocks.` key (`rest` = `N.param`) of an open_clip transformer
/// (text or vision): the shared layer table of both towers.
pub(crate) fn resblock(out: &mut Vec<Mapped>, full: &str, rest: &str) {
    let (layer, param) = rest.split_once('.').unwrap_or((rest, ""));
    let base = format!("encoder.layers.{layer}");
    let simple = [
        ("ln_1.", "layer_norm1."),
        ("ln_2.", "layer_norm2."),
        ("attn.out_proj.", "self_attn.out_proj."),
        ("mlp.c_fc.", "mlp.fc1."),
        ("mlp.c_proj.", "mlp.fc2."),
    ];
    if let Some((from, to)) = simple.iter().find(|(from, _)| param.starts_with(from)) {
        out.push(Mapped::new(
            format!("{base}.{to}{}", &param[from.len()..]),
            full,
        ));
    } else if let Some(kind) = param
        .strip_prefix("attn.in_proj_")
        .filter(|kind| *kind == "weight" || *kind == "bias")
    {
        for (index, proj) in ["q_proj", "k_proj", "v_proj"].iter().enumerate() {
            out.push(Mapped::with(
                format!("{base}.self_attn.{proj}.{kind}"),
                full,
                Transform::Chunk { index, count: 3 },
            ));
        }
    } else {
        out.push(Mapped::new(
            format!("<unmapped>.transformer.resblocks.{rest}"),
            full,
        ));
    }
}
