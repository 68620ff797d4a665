//! Remap tables for the VAE (`AutoencoderKL`).
//!
//! **diffusers** (`vae/diffusion_pytorch_model[.fp16].safetensors`): keys are the module
//! paths, except in files written before diffusers 0.14, whose mid-block attentions use
//! the old `AttentionBlock` names (diffusers' `ModelMixin._fix_state_dict_keys_on_load`):
//!
//! | stored (old diffusers) | module path |
//! |---|---|
//! | `*.attentions.0.query` / `key` / `value` | `*.attentions.0.to_q` / `to_k` / `to_v` |
//! | `*.attentions.0.proj_attn` | `*.attentions.0.to_out.0` |
//! | `*.attentions.0.group_norm` | unchanged |
//!
//! **Single file** (Stability "sgm"/LDM, keys under `first_stage_model.` or `vae.`), as
//! diffusers' `convert_ldm_vae_checkpoint` (`loaders/single_file_utils.py`), for any number
//! of levels (`n` = `len(block_out_channels)`):
//!
//! | LDM key | module path |
//! |---|---|
//! | `encoder.conv_in`, `encoder.conv_out`, `decoder.conv_in`, `decoder.conv_out` | same |
//! | `encoder.norm_out` / `decoder.norm_out` | `encoder.conv_norm_out` / `decoder.conv_norm_out` |
//! | `quant_conv`, `post_quant_conv` | same |
//! | `encoder.down.i.block.j.R` | `encoder.down_blocks.i.resnets.j.R'` |
//! | `encoder.down.i.downsample.conv` | `encoder.down_blocks.i.downsamplers.0.conv` |
//! | `decoder.up.i.block.j.R` | `decoder.up_blocks.(n-1-i).resnets.j.R'` (reversed levels) |
//! | `decoder.up.i.upsample.conv` | `decoder.up_blocks.(n-1-i).upsamplers.0.conv` |
//! | `{encoder,decoder}.mid.block_1` / `block_2` | `*.mid_block.resnets.0` / `resnets.1` |
//! | `{encoder,decoder}.mid.attn_1.norm` | `*.mid_block.attentions.0.group_norm` |
//! | `{encoder,decoder}.mid.attn_1.q` / `k` / `v` / `proj_out` | `*.mid_block.attentions.0.to_q` / `to_k` / `to_v` / `to_out.0` |
//!
//! Resnet parameters `R -> R'`: `norm1`, `conv1`, `norm2`, `conv2` unchanged,
//! `nin_shortcut -> conv_shortcut`. LDM stores the attention projections as 1x1
//! convolutions `[C, C, 1, 1]`; they are reshaped to the Linear `[C, C]`. Unknown keys
//! under the prefix are kept under `<unmapped>.` so the load report names them.
use super::config::AutoencoderKLConfig;
use crate::weights::{Mapped, linear_or_conv};

/// Linear weights of the VAE attentions that LDM files store as 1x1 convolutions.
const ATTENTION_LINEARS: &[&str] = &[
    "to_q.weight",
    "to_k.weight",
    "to_v.weight",
    "to_out.0.weight",
];

const LEGACY_ATTENTION: &[(&str, &str)] = &[
    ("query.", "to_q."),
    ("key.", "to_k."),
    ("value.", "to_v."),
    ("proj_attn.", "to_out.0."),
];

/// Remap for a diffusers `vae/` weights file (current or old attention names).
pub fn diffusers(entries: &[(String, Vec<usize>)]) -> Vec<Mapped> {
    entries
        .iter()
        .map(|(k, shape)| {
            let target = match k.split_once(".attentions.0.") {
                Some((head, tail)) => {
                    let tail = LEGACY_ATTENTION
                        .iter()
                        .find_map(|(from, to)| tail.strip_prefix(from).map(|r| format!("{to}{r}")))
                        .unwrap_or_else(|| tail.to_string());
                    format!("{head}.attentions.0.{tail}")
                }
                None => k.clone(),
            };
            linear_or_conv(target, k, shape, ATTENTION_LINEARS)
        })
        .collect()
}

const ATTENTION_RENAMES: &[(&str, &str)] = &[
    ("norm.", "group_norm."),
    ("q.", "to_q."),
    ("k.", "to_k."),
    ("v.", "to_v."),
    ("proj_out.", "to_out.0."),
];

fn map_coder(coder: &str, rest: &str, levels: usize) -> Option<String> {
    if let Some(r) = rest.strip_prefix("norm_out.") {
        return Some(format!("{coder}.conv_norm_out.{r}"));
    }
    if rest.starts_with("conv_in.") || rest.starts_with("conv_out.") {
        return Some(format!("{coder}.{rest}"));
    }
    if let Some(mid) = rest.strip_prefix("mid.") {
        if let Some(r) = mid.strip_prefix("block_1.") {
            return Some(format!(
                "{coder}.mid_block.resnets.0.{}",
                r.replace("nin_shortcut", "conv_shortcut")
            ));
        }
        if let Some(r) = mid.strip_prefix("block_2.") {
            return Some(format!(
                "{coder}.mid_block.resnets.1.{}",
                r.replace("nin_shortcut", "conv_shortcut")
            ));
        }
        let attn = mid.strip_prefix("attn_1.")?;
        let (from, to) = ATTENTION_RENAMES
            .iter()
            .find(|(from, _)| attn.starts_with(from))?;
        return Some(format!(
            "{coder}.mid_block.attentions.0.{to}{}",
            &attn[from.len()..]
        ));
    }
    let (word, blocks, sampler, reverse) = match coder {
        "encoder" => ("down.", "down_blocks", "downsample.", false),
        _ => ("up.", "up_blocks", "upsample.", true),
    };
    let s = rest.strip_prefix(word)?;
    let (i, tail) = s.split_once('.')?;
    let i: usize = i.parse().ok().filter(|&i| i < levels)?;
    let level = if reverse { levels - 1 - i } else { i };
    if let Some(r) = tail.strip_prefix("block.") {
        return Some(format!(
            "{coder}.{blocks}.{level}.resnets.{}",
            r.replace("nin_shortcut", "conv_shortcut")
        ));
    }
    let r = tail.strip_prefix(sampler)?.strip_prefix("conv.")?;
    let resampler = if reverse {
        "upsamplers"
    } else {
        "downsamplers"
    };
    Some(format!("{coder}.{blocks}.{level}.{resampler}.0.conv.{r}"))
}

/// Remap for the VAE of a single-file checkpoint, keys under `prefix`
/// (`first_stage_model.` or `vae.`).
pub fn ldm(
    entries: &[(String, Vec<usize>)],
    prefix: &str,
    config: &AutoencoderKLConfig,
) -> Vec<Mapped> {
    let levels = config.block_out_channels.len();
    entries
        .iter()
        .filter_map(|(full, shape)| {
            let k = full.strip_prefix(prefix)?;
            let target = if k.starts_with("quant_conv.") || k.starts_with("post_quant_conv.") {
                Some(k.to_string())
            } else {
                k.split_once('.')
                    .filter(|(coder, _)| *coder == "encoder" || *coder == "decoder")
                    .and_then(|(coder, rest)| map_coder(coder, rest, levels))
            };
            let target = target.unwrap_or_else(|| format!("<unmapped>.{k}"));
            Some(linear_or_conv(target, full, shape, ATTENTION_LINEARS))
        })
        .collect()
}
