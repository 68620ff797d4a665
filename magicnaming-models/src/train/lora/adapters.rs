//! Adapters on the UNet's attention projections: injecting fresh ones (PEFT's
//! `init_lora_weights="gaussian"`: `A ~ N(0, (1/r)^2)`, `B = 0`), reading them back by
//! module path, installing given values, and the set of them a checkpoint records.
use std::collections::BTreeMap;

use burn::module::{Module, ParamId};
use burn::tensor::backend::Backend;
use magicnaming_core::rng::SplitMix64;

use crate::nn::attention::AttentionLora;
use crate::nn::lora::{LoraAdapter, LoraAdapterConfig};
use crate::unet::UNet2DConditionModel;
use crate::{ModelError, Result};

/// One adapter's factors in PyTorch's layout: `lora_A` `[r, in]`, `lora_B` `[out, r]`,
/// row-major, with their shapes.
#[derive(Debug, Clone, PartialEq)]
pub struct AdapterValues {
    /// `lora_A` values.
    pub a: Vec<f32>,
    /// `lora_A` shape `[r, in]`.
    pub a_shape: [usize; 2],
    /// `lora_B` values.
    pub b: Vec<f32>,
    /// `lora_B` shape `[out, r]`.
    pub b_shape: [usize; 2],
}

/// Width of a projection (`to_q`, ...) of an attention layer: `(in, out)`.
fn projection_dims<B: Backend>(
    attn: &crate::nn::attention::Attention<B>,
    name: &str,
) -> (usize, usize) {
    let linear = match name {
        "to_q" => &attn.to_q,
        "to_k" => &attn.to_k,
        "to_v" => &attn.to_v,
        _ => &attn.to_out.0,
    };
    // burn keeps Linear weights as [in, out].
    let [i, o] = linear.weight.lazy_shape().dims::<2>();
    (i, o)
}

/// Adds an adapter to every `targets` projection of every attention layer, with `A`
/// drawn from `seed` on the host (module by module in the model's order) and `B = 0`,
/// or with `values` when given (by diffusers module path, e.g.
/// `down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q`). Returns the model and
/// the adapted paths in that order.
///
/// # Errors
/// No attention layer to adapt; `values` lacking a path or holding a misshaped factor.
pub fn inject<B: Backend>(
    mut unet: UNet2DConditionModel<B>,
    targets: &[String],
    rank: usize,
    alpha: f64,
    seed: u64,
    values: Option<&BTreeMap<String, AdapterValues>>,
    device: &B::Device,
) -> Result<(UNet2DConditionModel<B>, Vec<String>)> {
    let mut rng = SplitMix64(seed ^ 0x10A4_AD47_E4A5_0000);
    let mut paths = Vec::new();
    let mut error = None;
    unet.for_each_attention_mut(|prefix, attn| {
        let mut lora = attn.lora.take().unwrap_or_else(AttentionLora::empty);
        for name in crate::nn::attention::LORA_PROJECTIONS {
            if !targets.iter().any(|t| t == name) {
                continue;
            }
            let (d_in, d_out) = projection_dims(attn, name);
            let config = LoraAdapterConfig::new(d_in, d_out, rank, alpha);
            let path = format!("{prefix}.{name}");
            let adapter = match values {
                None => {
                    let std = 1.0 / rank as f32;
                    let a: Vec<f32> = rng
                        .normal_f32(rank * d_in)
                        .into_iter()
                        .map(|v| v * std)
                        .collect();
                    config.init_from::<B>(&a, &vec![0.0; d_out * rank], device)
                }
                Some(values) => match values.get(&path) {
                    Some(v) if v.a_shape == [rank, d_in] && v.b_shape == [d_out, rank] => {
                        config.init_from::<B>(&v.a, &v.b, device)
                    }
                    Some(v) => {
                        error.get_or_insert(format!(
                            "{path}: lora_A {:?} / lora_B {:?}, the model needs [{rank}, {d_in}] / [{d_out}, {rank}]",
                            v.a_shape, v.b_shape
                        ));
                        continue;
                    }
                    None => {
                        error.get_or_insert(format!("no adapter values for {path}"));
                        continue;
                    }
                },
            };
            *lora.slot(name).expect("a LORA_PROJECTIONS name") = Some(adapter);
            paths.push(path);
        }
        attn.lora = Some(lora);
    });
    if let Some(e) = error {
        return Err(ModelError::InvalidInput(e));
    }
    if paths.is_empty() {
        return Err(ModelError::InvalidInput(format!(
            "--targets {}: the UNet has no attention layer to adapt",
            targets.join(",")
        )));
    }
    Ok((unet, paths))
}

/// The adapters of `unet` by module path, in the model's order.
pub fn adapters<B: Backend>(unet: &mut UNet2DConditionModel<B>) -> Vec<(String, LoraAdapter<B>)> {
    let mut out = Vec::new();
    unet.for_each_attention_mut(|prefix, attn| {
        if let Some(lora) = &attn.lora {
            for (name, a) in lora.adapters() {
                out.push((format!("{prefix}.{name}"), a.clone()));
            }
        }
    });
    out
}

/// The adapters' values in PyTorch layout, by module path.
pub fn adapter_values<B: Backend>(
    unet: &mut UNet2DConditionModel<B>,
) -> BTreeMap<String, AdapterValues> {
    adapters(unet)
        .into_iter()
        .map(|(path, a)| {
            let (a_vals, a_shape) = a.lora_a();
            let (b_vals, b_shape) = a.lora_b();
            (
                path,
                AdapterValues {
                    a: a_vals,
                    a_shape,
                    b: b_vals,
                    b_shape,
                },
            )
        })
        .collect()
}

/// The ids of the adapters' parameters (all of them 2-D), in the model's order.
pub fn adapter_param_ids<B: Backend>(unet: &mut UNet2DConditionModel<B>) -> Vec<ParamId> {
    adapters(unet)
        .iter()
        .flat_map(|(_, a)| [a.down.id, a.up.id])
        .collect()
}

/// Every adapter of a model, as one module: what a checkpoint saves (values and
/// parameter ids, which the optimizer's state is keyed by).
#[derive(Module, Debug)]
pub struct LoraSet<B: Backend> {
    /// In the model's order.
    pub adapters: Vec<LoraAdapter<B>>,
}

impl<B: Backend> LoraSet<B> {
    /// The adapters of `unet`.
    pub fn of(unet: &mut UNet2DConditionModel<B>) -> Self {
        Self {
            adapters: adapters(unet).into_iter().map(|(_, a)| a).collect(),
        }
    }

    /// Puts these adapters (same order as [`Self::of`]) back into `unet`.
    ///
    /// # Errors
    /// A count that does not match the model's adapters.
    pub fn install(self, unet: &mut UNet2DConditionModel<B>) -> Result<()> {
        let expected = adapters(unet).len();
        if expected != self.adapters.len() {
            return Err(ModelError::InvalidInput(format!(
                "the checkpoint holds {} adapters, the model {expected}",
                self.adapters.len()
            )));
        }
        let mut it = self.adapters.into_iter();
        unet.for_each_attention_mut(|_, attn| {
            if let Some(lora) = &mut attn.lora {
                for name in crate::nn::attention::LORA_PROJECTIONS {
                    let slot = lora.slot(name).expect("a LORA_PROJECTIONS name");
                    if slot.is_some() {
                        *slot = it.next();
                    }
                }
            }
        });
        Ok(())
    }
}
