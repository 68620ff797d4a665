//! Remap tables for CLIP text towers.
//!
//! | format | stored key | module path |
//! |---|---|---|
//! | transformers (`CLIPTextModel[WithProjection]`, diffusers `text_encoder*/`) | `text_model.X` (transformers < 5.6) or `X` | `X` |
//! | transformers | `text_projection.weight` | `text_projection.weight` |
//! | transformers | `text_model.embeddings.position_ids` | ignored (buffer) |
//! | open_clip (`conditioner.embedders.1.model.` in SDXL single files) | `token_embedding.weight` | `embeddings.token_embedding.weight` |
//! | open_clip | `positional_embedding` | `embeddings.position_embedding.weight` |
//! | open_clip | `transformer.resblocks.N.ln_1` / `ln_2` | `encoder.layers.N.layer_norm1` / `layer_norm2` |
//! | open_clip | `transformer.resblocks.N.attn.in_proj_weight` / `_bias` `[3H, ...]` | `q_proj`, `k_proj`, `v_proj` (thirds, in that order) |
//! | open_clip | `transformer.resblocks.N.attn.out_proj` | `encoder.layers.N.self_attn.out_proj` |
//! | open_clip | `transformer.resblocks.N.mlp.c_fc` / `c_proj` | `encoder.layers.N.mlp.fc1` / `fc2` |
//! | open_clip | `ln_final` | `final_layer_norm` |
//! | open_clip | `text_projection` `[H, P]` (used as `x @ W`) | `text_projection.weight` `[P, H]` (transposed) |
//! | open_clip | `logit_scale`, `attn_mask`, `visual.*` | ignored (not part of the text tower) |
use crate::weights::{Mapped, SafetensorsFile, Transform, keys_under};

/// Remap for a transformers CLIP text tower stored under `prefix` (`""` for a diffusers
/// `text_encoder/` file, `conditioner.embedders.0.transformer.` in an SDXL single file).
/// Keys of a full `CLIPModel` that belong to the vision tower are left out.
pub fn hf_text(file: &SafetensorsFile, prefix: &str) -> Vec<Mapped> {
    let has_text_model = keys_under(file, prefix).any(|(_, k)| k.starts_with("text_model."));
    keys_under(file, prefix)
        .filter_map(|(full, k)| {
            let k = if has_text_model {
                match k.strip_prefix("text_model.") {
                    Some(rest) => rest,
                    None if k == "text_projection.weight" => k,
                    None => return None, // vision tower, logit_scale: not the text tower's
                }
            } else if k.starts_with("vision_model.")
                || k.starts_with("visual_projection")
                || k == "logit_scale"
            {
                return None;
            } else {
                k
            };
            if k == "embeddings.position_ids" {
                return None;
            }
            Some(Mapped::new(k, full))
        })
        .collect()
}

/// Remap for an open_clip text tower stored under `prefix`
/// (`conditioner.embedders.1.model.` in an SDXL single file).
pub fn open_clip_text(file: &SafetensorsFile, prefix: &str) -> Vec<Mapped> {
    let mut out = Vec::new();
    for (full, k) in keys_under(file, prefix) {
        if k == "logit_scale" || k == "attn_mask" || k.starts_with("visual.") {
            continue;
        }
        match k {
            "token_embedding.weight" => {
                out.push(Mapped::new("embeddings.token_embedding.weight", full))
            }
            "positional_embedding" => {
                out.push(Mapped::new("embeddings.position_embedding.weight", full))
            }
            "text_projection" => out.push(Mapped::with(
                "text_projection.weight",
                full,
                Transform::Transpose,
            )),
            _ => {
                if let Some(rest) = k.strip_prefix("ln_final.") {
                    out.push(Mapped::new(format!("final_layer_norm.{rest}"), full));
                } else if let Some(rest) = k.strip_prefix("transformer.resblocks.") {
                    super::remap_vision::resblock(&mut out, full, rest);
                } else {
                    out.push(Mapped::new(format!("<unmapped>.{k}"), full));
                }
            }
        }
    }
    out
}
