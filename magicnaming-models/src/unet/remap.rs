//! Remap tables for the SDXL UNet (`UNet2DConditionModel`).
//!
//! **diffusers** (`unet/diffusion_pytorch_model[.fp16].safetensors`): keys are the module
//! paths. The only transform: `proj_in` / `proj_out` stored as 1x1 convolutions
//! `[out, in, 1, 1]` (`use_linear_projection: false`) are reshaped to the Linear layers
//! this crate always uses (the same per-pixel map).
//!
//! **Single file** (Stability "sgm"/LDM, keys under `model.diffusion_model.`), as diffusers'
//! `convert_ldm_unet_checkpoint` (`loaders/single_file_utils.py`), driven by the
//! configuration (`layers_per_block`, number of levels, block types):
//!
//! | LDM key | module path |
//! |---|---|
//! | `time_embed.0` / `time_embed.2` | `time_embedding.linear_1` / `linear_2` |
//! | `label_emb.0.0` / `label_emb.0.2` | `add_embedding.linear_1` / `linear_2` |
//! | `input_blocks.0.0` | `conv_in` |
//! | `input_blocks.I.0.R` (layer `j` of level `b`) | `down_blocks.b.resnets.j.R'` |
//! | `input_blocks.I.1.X` | `down_blocks.b.attentions.j.X` |
//! | `input_blocks.I.0.op` (after the layers of level `b`) | `down_blocks.b.downsamplers.0.conv` |
//! | `middle_block.0` / `.1` / `.2` | `mid_block.resnets.0` / `attentions.0` / `resnets.1` |
//! | `output_blocks.O.0.R` (layer `j` of up block `u`) | `up_blocks.u.resnets.j.R'` |
//! | `output_blocks.O.1.X` | `up_blocks.u.attentions.j.X` |
//! | `output_blocks.O.1.conv` (no attention) / `output_blocks.O.2.conv` | `up_blocks.u.upsamplers.0.conv` |
//! | `out.0` / `out.2` | `conv_norm_out` / `conv_out` |
//!
//! Input blocks count from 1: level `b` has `layers_per_block[b]` layers then (except the
//! last level) its downsampler; output blocks count from 0: up block `u` (level
//! `levels - 1 - u`) has `layers_per_block[level] + 1` layers, the upsampler sitting in
//! the last one. Resnet parameters `R -> R'`: `in_layers.0 -> norm1`, `in_layers.2 ->
//! conv1`, `emb_layers.1 -> time_emb_proj`, `out_layers.0 -> norm2`, `out_layers.3 ->
//! conv2`, `skip_connection -> conv_shortcut`. Transformer parameters (`X`) keep their
//! names (`norm`, `proj_in`, `transformer_blocks.N.{norm1,attn1,norm2,attn2,norm3,ff}`,
//! `proj_out`). Unknown keys under the prefix are kept under `<unmapped>.` so the load
//! report names them.
use super::config::{UNet2DConditionModelConfig, UpBlockType};
use crate::weights::{Mapped, linear_or_conv};

/// Linear weights of the UNet that 1x1-convolution checkpoints store as 4-D.
const PROJECTIONS: &[&str] = &["proj_in.weight", "proj_out.weight"];

/// Remap for a diffusers `unet/` weights file.
pub fn diffusers(entries: &[(String, Vec<usize>)]) -> Vec<Mapped> {
    entries
        .iter()
        .map(|(k, shape)| linear_or_conv(k.clone(), k, shape, PROJECTIONS))
        .collect()
}

const RESNET_RENAMES: &[(&str, &str)] = &[
    ("in_layers.0.", "norm1."),
    ("in_layers.2.", "conv1."),
    ("emb_layers.1.", "time_emb_proj."),
    ("out_layers.0.", "norm2."),
    ("out_layers.3.", "conv2."),
    ("skip_connection.", "conv_shortcut."),
];

const FIXED: &[(&str, &str)] = &[
    ("time_embed.0.", "time_embedding.linear_1."),
    ("time_embed.2.", "time_embedding.linear_2."),
    ("label_emb.0.0.", "add_embedding.linear_1."),
    ("label_emb.0.2.", "add_embedding.linear_2."),
    ("input_blocks.0.0.", "conv_in."),
    ("out.0.", "conv_norm_out."),
    ("out.2.", "conv_out."),
];

fn resnet(rest: &str) -> Option<String> {
    RESNET_RENAMES
        .iter()
        .find_map(|(from, to)| rest.strip_prefix(from).map(|r| format!("{to}{r}")))
}

/// What an LDM `input_blocks` / `output_blocks` index holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    /// Layer `j` of level / up block `b`.
    Layer(usize, usize),
    /// The downsampler of level `b`.
    Down(usize),
}

/// Splits `"12.0.rest"` into `(12, 0, "rest")`.
fn split_indices(s: &str) -> Option<(usize, usize, &str)> {
    let (i, s) = s.split_once('.')?;
    let (k, rest) = s.split_once('.')?;
    Some((i.parse().ok()?, k.parse().ok()?, rest))
}

/// The single-file (LDM) block layout of a UNet configuration: which diffusers block,
/// layer or sampler each `input_blocks.I` / `output_blocks.O` index holds. It turns keys
/// both ways: [`LdmLayout::to_diffusers`] reads checkpoints, [`LdmLayout::to_ldm`] spells a
/// module of the model the way single-file tools (kohya's LoRA names) do.
#[derive(Debug, Clone)]
pub struct LdmLayout {
    inputs: Vec<Option<Slot>>,
    outputs: Vec<Slot>,
    /// Whether up block `u` has attentions (its upsampler then sits in slot 2, else 1).
    up_attention: Vec<bool>,
}

impl LdmLayout {
    /// The layout of `config`.
    pub fn new(config: &UNet2DConditionModelConfig) -> Self {
        let levels = config.levels();
        let mut inputs = vec![None]; // input_blocks.0 is conv_in
        for b in 0..levels {
            inputs.extend((0..config.layers_per_block[b]).map(|j| Some(Slot::Layer(b, j))));
            if b + 1 < levels {
                inputs.push(Some(Slot::Down(b)));
            }
        }
        let mut outputs = Vec::new();
        for u in 0..levels {
            let layers = config.layers_per_block[levels - 1 - u] + 1;
            outputs.extend((0..layers).map(|j| Slot::Layer(u, j)));
        }
        let up_attention = config
            .up_block_types
            .iter()
            .map(|t| *t == UpBlockType::CrossAttnUpBlock2D)
            .collect();
        Self {
            inputs,
            outputs,
            up_attention,
        }
    }

    /// The module path of an LDM key (without the `model.diffusion_model.` prefix), `None`
    /// for a key outside the table.
    pub fn to_diffusers(&self, k: &str) -> Option<String> {
        if let Some(t) = FIXED
            .iter()
            .find_map(|(from, to)| k.strip_prefix(from).map(|r| format!("{to}{r}")))
        {
            return Some(t);
        }
        if let Some(s) = k.strip_prefix("input_blocks.") {
            let (i, slot, rest) = split_indices(s)?;
            return match (self.inputs.get(i).copied().flatten()?, slot) {
                (Slot::Layer(b, j), 0) => {
                    Some(format!("down_blocks.{b}.resnets.{j}.{}", resnet(rest)?))
                }
                (Slot::Layer(b, j), 1) => Some(format!("down_blocks.{b}.attentions.{j}.{rest}")),
                (Slot::Down(b), 0) => rest
                    .strip_prefix("op.")
                    .map(|r| format!("down_blocks.{b}.downsamplers.0.conv.{r}")),
                _ => None,
            };
        }
        if let Some(s) = k.strip_prefix("middle_block.") {
            let (slot, rest) = s.split_once('.')?;
            return match slot {
                "0" => Some(format!("mid_block.resnets.0.{}", resnet(rest)?)),
                "1" => Some(format!("mid_block.attentions.0.{rest}")),
                "2" => Some(format!("mid_block.resnets.1.{}", resnet(rest)?)),
                _ => None,
            };
        }
        if let Some(s) = k.strip_prefix("output_blocks.") {
            let (o, slot, rest) = split_indices(s)?;
            let Slot::Layer(u, j) = *self.outputs.get(o)? else {
                return None;
            };
            // diffusers: `output_blocks.O.1.conv` is the upsampler, other `.1` keys the attention.
            return match (slot, rest.strip_prefix("conv.")) {
                (0, _) => Some(format!("up_blocks.{u}.resnets.{j}.{}", resnet(rest)?)),
                (1 | 2, Some(r)) => Some(format!("up_blocks.{u}.upsamplers.0.conv.{r}")),
                (1, None) => Some(format!("up_blocks.{u}.attentions.{j}.{rest}")),
                _ => None,
            };
        }
        None
    }

    /// The LDM key of a module path (`down_blocks.1.attentions.0.proj_in.weight` ->
    /// `input_blocks.4.1.proj_in.weight`), the inverse of [`Self::to_diffusers`]; `None`
    /// for a path outside the table.
    pub fn to_ldm(&self, p: &str) -> Option<String> {
        if let Some(t) = FIXED
            .iter()
            .find_map(|(to, from)| p.strip_prefix(from).map(|r| format!("{to}{r}")))
        {
            return Some(t);
        }
        let unresnet = |rest: &str| {
            RESNET_RENAMES
                .iter()
                .find_map(|(to, from)| rest.strip_prefix(from).map(|r| format!("{to}{r}")))
        };
        if let Some(s) = p.strip_prefix("down_blocks.") {
            let (b, s) = s.split_once('.')?;
            let b: usize = b.parse().ok()?;
            let input = |slot: Slot| {
                self.inputs
                    .iter()
                    .position(|x| x.is_some_and(|x| x == slot))
            };
            if let Some(r) = s.strip_prefix("downsamplers.0.conv.") {
                return Some(format!("input_blocks.{}.0.op.{r}", input(Slot::Down(b))?));
            }
            let (kind, s) = s.split_once('.')?;
            let (j, rest) = s.split_once('.')?;
            let i = input(Slot::Layer(b, j.parse().ok()?))?;
            return match kind {
                "resnets" => Some(format!("input_blocks.{i}.0.{}", unresnet(rest)?)),
                "attentions" => Some(format!("input_blocks.{i}.1.{rest}")),
                _ => None,
            };
        }
        if let Some(s) = p.strip_prefix("mid_block.") {
            return match s.split_once('.')? {
                ("resnets", s) => {
                    let (j, rest) = s.split_once('.')?;
                    let slot = match j {
                        "0" => 0,
                        "1" => 2,
                        _ => return None,
                    };
                    Some(format!("middle_block.{slot}.{}", unresnet(rest)?))
                }
                ("attentions", s) => Some(format!("middle_block.1.{}", s.strip_prefix("0.")?)),
                _ => None,
            };
        }
        if let Some(s) = p.strip_prefix("up_blocks.") {
            let (u, s) = s.split_once('.')?;
            let u: usize = u.parse().ok()?;
            let output = |j: usize| self.outputs.iter().position(|x| *x == Slot::Layer(u, j));
            if let Some(r) = s.strip_prefix("upsamplers.0.conv.") {
                let last = self
                    .outputs
                    .iter()
                    .rposition(|x| matches!(x, Slot::Layer(v, _) if *v == u))?;
                let slot = if *self.up_attention.get(u)? { 2 } else { 1 };
                return Some(format!("output_blocks.{last}.{slot}.conv.{r}"));
            }
            let (kind, s) = s.split_once('.')?;
            let (j, rest) = s.split_once('.')?;
            let o = output(j.parse().ok()?)?;
            return match kind {
                "resnets" => Some(format!("output_blocks.{o}.0.{}", unresnet(rest)?)),
                "attentions" => Some(format!("output_blocks.{o}.1.{rest}")),
                _ => None,
            };
        }
        None
    }
}

/// Remap for the UNet of a single-file checkpoint, keys under `prefix`
/// (`model.diffusion_model.`).
pub fn ldm(
    entries: &[(String, Vec<usize>)],
    prefix: &str,
    config: &UNet2DConditionModelConfig,
) -> Vec<Mapped> {
    let layout = LdmLayout::new(config);
    entries
        .iter()
        .filter_map(|(full, shape)| {
            let k = full.strip_prefix(prefix)?;
            let target = layout
                .to_diffusers(k)
                .unwrap_or_else(|| format!("<unmapped>.{k}"));
            Some(linear_or_conv(target, full, shape, PROJECTIONS))
        })
        .collect()
}
