//! Fusing LoRAs into loaded models: a plan that matches every module of every file to a
//! weight of the models (model-first, [`ModelNames`]) and checks every shape before any
//! weight changes, then a [`ModuleMapper`] that adds the updates.
//!
//! Each weight becomes `W + sum_i m_i * alpha_i / rank_i * update_i`, the updates and
//! the sum in f32, the result cast to the weight's float type.
use std::collections::BTreeMap;

use burn::module::{Module, ModuleMapper, Param};
use burn::tensor::backend::Backend;
use burn::tensor::{DType, Tensor};

use super::delta::{dora, dora_fits, update, update_shape};
use super::file::{Component, ScaledLora};
use super::names::ModelNames;
use super::parts::Part;
use crate::nn::precision::cast;
use crate::{LoraShapeMismatch, ModelError, Result};

/// One module of one LoRA going into one weight.
#[derive(Debug, Clone, Copy)]
struct Planned {
    lora: usize,
    module: usize,
}

/// Which updates go into which weights, checked.
#[derive(Debug)]
pub struct LoraFusion<'a> {
    loras: &'a [ScaledLora],
    by_target: BTreeMap<(Component, String), Vec<Planned>>,
    unmatched: Vec<String>,
}

/// Whether `update` (a LoRA's update shape) fits `weight` (PyTorch layout): equal, or
/// equal after dropping trailing 1s (a 1x1 LoCon on a Linear), or a flattened
/// `[out, in * kh * kw]` of it.
fn fits(update: &[usize], weight: &[usize]) -> bool {
    let trim = |s: &[usize]| {
        let mut v = s.to_vec();
        while v.len() > 2 && v.last() == Some(&1) {
            v.pop();
        }
        v
    };
    if trim(update) == trim(weight) {
        return true;
    }
    update.len() == 2
        && update[0] == weight[0]
        && update[1] == weight[1..].iter().product::<usize>()
}

impl<'a> LoraFusion<'a> {
    /// Matches every module of `loras` that belongs to a component `names` covers, and
    /// checks each update's shape. Modules of other components are left for another
    /// call (the UNet's when only the text encoders are loaded). Keys that match nothing
    /// are an error, or a warning with their count when `ignore_unmatched`.
    ///
    /// # Errors
    /// [`ModelError::LoraShape`] for an update that does not fit its module,
    /// [`ModelError::LoraUnmatched`] listing the keys that match nothing (unless
    /// `ignore_unmatched`), [`ModelError::Weights`] for two modules of one file naming
    /// the same weight.
    pub fn plan(
        loras: &'a [ScaledLora],
        names: &ModelNames,
        ignore_unmatched: bool,
    ) -> Result<Self> {
        let mut by_target: BTreeMap<(Component, String), Vec<Planned>> = BTreeMap::new();
        let mut unmatched = Vec::new();
        for (i, s) in loras.iter().enumerate() {
            let lora = &s.lora;
            let file = lora.file();
            let mut seen: BTreeMap<(Component, &str), &str> = BTreeMap::new();
            for (j, m) in lora.modules().iter().enumerate() {
                if !names.has(m.component) {
                    continue;
                }
                let Some(target) = names.find(m.component, m.naming, &m.name) else {
                    unmatched.push(format!("{}: {}", lora.file_name(), m.key));
                    continue;
                };
                let shape = update_shape(file, m);
                if !fits(&shape, &target.shape) {
                    return Err(ModelError::LoraShape(Box::new(LoraShapeMismatch {
                        path: lora.path().to_path_buf(),
                        key: m.key.clone(),
                        component: m.component.name().to_string(),
                        module: target.path.clone(),
                        lora_shape: shape,
                        model_shape: target.shape.clone(),
                    })));
                }
                if m.parts.contains_key(&Part::DoraScale) && !dora_fits(file, m, &target.shape) {
                    return Err(ModelError::LoraShape(Box::new(LoraShapeMismatch {
                        path: lora.path().to_path_buf(),
                        key: format!("{}.dora_scale", m.key),
                        component: m.component.name().to_string(),
                        module: target.path.clone(),
                        lora_shape: file
                            .entry(&m.parts[&Part::DoraScale])
                            .map(|e| e.shape.clone())
                            .unwrap_or_default(),
                        model_shape: target.shape.clone(),
                    })));
                }
                if let Some(other) = seen.insert((m.component, &target.path), &m.key) {
                    return Err(ModelError::weights(
                        lora.path(),
                        format!(
                            "`{other}` and `{}` both update {} module `{}`",
                            m.key,
                            m.component.name(),
                            target.path
                        ),
                    ));
                }
                by_target
                    .entry((m.component, target.path.clone()))
                    .or_default()
                    .push(Planned { lora: i, module: j });
            }
            unmatched.extend(
                lora.other_keys()
                    .iter()
                    .map(|k| format!("{}: {k}", lora.file_name())),
            );
        }
        if !unmatched.is_empty() {
            if ignore_unmatched {
                log::warn!(
                    "{} LoRA keys match no module of the model and are ignored",
                    unmatched.len()
                );
            } else {
                return Err(ModelError::LoraUnmatched { keys: unmatched });
            }
        }
        Ok(Self {
            loras,
            by_target,
            unmatched,
        })
    }

    /// The keys that matched nothing (when they were ignored).
    pub fn unmatched(&self) -> &[String] {
        &self.unmatched
    }

    /// How many weights of `component` the plan updates.
    pub fn targets(&self, component: Component) -> usize {
        self.by_target
            .keys()
            .filter(|(c, _)| *c == component)
            .count()
    }

    /// Adds the planned updates of `component` to `model`'s weights.
    ///
    /// # Errors
    /// A LoRA tensor that cannot be read (the file changed since it was opened).
    pub fn fuse<B: Backend, M: Module<B>>(&self, model: M, component: Component) -> Result<M> {
        let mut mapper = Fuser {
            fusion: self,
            component,
            stack: Vec::new(),
            error: None,
            fused: 0,
        };
        let model = model.map(&mut mapper);
        if let Some(e) = mapper.error {
            return Err(e);
        }
        log::info!(
            "LoRA: {} {} weights updated",
            mapper.fused,
            component.name()
        );
        Ok(model)
    }

    /// The sum of the planned updates times their multipliers, `[out, in * kh * kw]`.
    fn sum<B: Backend>(&self, planned: &[Planned], device: &B::Device) -> Result<Tensor<B, 2>> {
        let mut total: Option<Tensor<B, 2>> = None;
        for p in planned {
            let s = &self.loras[p.lora];
            let u = update::<B>(s.lora.file(), &s.lora.modules()[p.module], device)?
                .mul_scalar(s.multiplier);
            total = Some(match total {
                Some(t) => t + u,
                None => u,
            });
        }
        total.ok_or_else(|| ModelError::InvalidInput("a LoRA plan entry without updates".into()))
    }

    /// `w` (PyTorch layout `[out, in * kh * kw]`, f32) with the planned updates added in
    /// order, a DoRA module rescaling the weight it is added to.
    fn apply_in_order<B: Backend>(
        &self,
        planned: &[Planned],
        mut w: Tensor<B, 2>,
        weight: &[usize],
    ) -> Result<Tensor<B, 2>> {
        let device = w.device();
        for p in planned {
            let s = &self.loras[p.lora];
            let m = &s.lora.modules()[p.module];
            let u = update::<B>(s.lora.file(), m, &device)?;
            w = if m.parts.contains_key(&Part::DoraScale) {
                dora(s.lora.file(), m, w + u, s.multiplier, weight)?
            } else {
                w + u.mul_scalar(s.multiplier)
            };
        }
        Ok(w)
    }

    /// `w` (burn layout) with the planned updates, in f32: without DoRA the updates' sum
    /// is added in burn's layout; with DoRA the weight goes through PyTorch's.
    fn fused<B: Backend, const D: usize>(
        &self,
        planned: &[Planned],
        w: Tensor<B, D>,
        linear: bool,
    ) -> Result<Tensor<B, D>> {
        let shape = w.shape();
        let dims = shape.clone().dims::<D>();
        let w = cast(w, DType::F32);
        let dora = planned.iter().any(|p| {
            self.loras[p.lora].lora.modules()[p.module]
                .parts
                .contains_key(&Part::DoraScale)
        });
        if !dora {
            let sum = self.sum::<B>(planned, &w.device())?;
            // burn's Linear weight is [in, out]; the updates are [out, in].
            let sum = if linear { sum.transpose() } else { sum };
            return Ok(w + sum.reshape::<D, _>(shape));
        }
        let torch: Vec<usize> = if linear {
            vec![dims[1], dims[0]]
        } else {
            dims.to_vec()
        };
        let flat = w.reshape([dims[0], dims[1..].iter().product()]);
        let flat = if linear { flat.transpose() } else { flat };
        let fused = self.apply_in_order::<B>(planned, flat, &torch)?;
        let fused = if linear { fused.transpose() } else { fused };
        Ok(fused.reshape::<D, _>(shape))
    }
}

struct Fuser<'p, 'a> {
    fusion: &'p LoraFusion<'a>,
    component: Component,
    stack: Vec<(String, String)>,
    error: Option<ModelError>,
    fused: usize,
}

impl<B: Backend> ModuleMapper<B> for Fuser<'_, '_> {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.stack
            .push((name.to_string(), container_type.to_string()));
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.stack.pop();
    }

    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        if self.error.is_some() {
            return param;
        }
        let linear = match self.stack.last() {
            Some((field, parent)) if field == "weight" => match (parent.as_str(), D) {
                ("Struct:Linear", 2) => true,
                ("Struct:Conv2d", 4) => false,
                _ => return param,
            },
            _ => return param,
        };
        let path = self.stack[..self.stack.len() - 1]
            .iter()
            .map(|(n, _)| n.as_str())
            .collect::<Vec<_>>()
            .join(".");
        let Some(planned) = self.fusion.by_target.get(&(self.component, path)) else {
            return param;
        };
        let (id, w, mapper) = param.consume();
        let dtype = w.dtype();
        let fused = match self.fusion.fused::<B, D>(planned, w.clone(), linear) {
            Ok(f) => cast(f, dtype),
            Err(e) => {
                self.error = Some(e);
                return Param::from_mapped_value(id, w, mapper);
            }
        };
        self.fused += 1;
        Param::from_mapped_value(id, fused, mapper)
    }
}

#[cfg(test)]
mod tests {
    use super::fits;

    #[test]
    fn update_shapes_that_fit() {
        assert!(fits(&[8, 4], &[8, 4]));
        assert!(fits(&[8, 4, 1, 1], &[8, 4]));
        assert!(fits(&[8, 36], &[8, 4, 3, 3]));
        assert!(fits(&[8, 4, 3, 3], &[8, 4, 3, 3]));
        assert!(!fits(&[320, 768], &[640, 2048]));
        assert!(!fits(&[8, 4, 1, 1], &[8, 4, 3, 3]));
    }
}
