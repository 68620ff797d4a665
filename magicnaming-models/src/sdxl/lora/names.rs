//! Model-first matching: every Linear and Conv2d weight of the loaded models, spelled
//! each way LoRA files name it, so a file's module names are looked up, never parsed.
//!
//! | component | naming | spelling of module `P` (diffusers / transformers path) |
//! |---|---|---|
//! | UNet | kohya | `P` with `.` -> `_`; and its SGM name ([`LdmLayout::to_ldm`]) with `.` -> `_` |
//! | UNet | diffusers | `P` |
//! | text encoders | kohya | `text_model_` + `P` with `.` -> `_` |
//! | text encoders | diffusers | `P`, `text_model.P` (transformers before and after 5.6) |
use std::collections::HashMap;

use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;

use super::file::{Component, Naming};
use crate::Result;
use crate::clip::config::ClipTextConfig;
use crate::unet::remap::LdmLayout;
use crate::unet::{UNet2DConditionModel, UNet2DConditionModelConfig};
use crate::weights::SdxlSource;

/// A weight a LoRA can update.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The model it is in.
    pub component: Component,
    /// Module path (`down_blocks.1.attentions.0.proj_in`); the weight is `<path>.weight`.
    pub path: String,
    /// The weight's shape in PyTorch layout (`[out, in]`, `[out, in, kh, kw]`).
    pub shape: Vec<usize>,
}

/// Collects the `weight` of every `Linear` and `Conv2d`, with shapes read without
/// initialising lazy parameters.
struct Inventory {
    stack: Vec<(String, String)>,
    out: Vec<(String, Vec<usize>)>,
}

impl<B: Backend> ModuleVisitor<B> for Inventory {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.stack
            .push((name.to_string(), container_type.to_string()));
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.stack.pop();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let Some((field, parent)) = self.stack.last() else {
            return;
        };
        if field != "weight" {
            return;
        }
        let shape: Vec<usize> = param.lazy_shape().dims::<D>().to_vec();
        let shape = match (parent.as_str(), D) {
            // burn keeps Linear weights as [in, out].
            ("Struct:Linear", 2) => vec![shape[1], shape[0]],
            ("Struct:Conv2d", 4) => shape,
            _ => return,
        };
        let path = self.stack[..self.stack.len() - 1]
            .iter()
            .map(|(n, _)| n.as_str())
            .collect::<Vec<_>>()
            .join(".");
        self.out.push((path, shape));
    }
}

/// `(module path, PyTorch-layout shape)` of every Linear and Conv2d weight of `module`.
pub fn linear_and_conv_weights<B: Backend, M: Module<B>>(module: &M) -> Vec<(String, Vec<usize>)> {
    let mut v = Inventory {
        stack: Vec::new(),
        out: Vec::new(),
    };
    module.visit(&mut v);
    v.out
}

/// Every spelling of every target of the models given, for looking up a file's names.
#[derive(Debug, Default)]
pub struct ModelNames {
    targets: Vec<Target>,
    by_name: HashMap<(Component, Naming, String), usize>,
}

impl ModelNames {
    /// The targets of the UNet and both text encoders of `source`, from their
    /// configurations alone (SDXL base's where a single file comes without them): the
    /// models are built with lazy parameters, no weight is read or allocated.
    ///
    /// # Errors
    /// A configuration that cannot be read.
    pub fn from_configs<B: Backend>(source: &SdxlSource, device: &B::Device) -> Result<Self> {
        let unet = match source.component_file("unet", "config.json") {
            Some(p) => UNet2DConditionModelConfig::from_file(&p)?,
            None => UNet2DConditionModelConfig::sdxl_base(),
        };
        let text = |component: &str, builtin: fn() -> ClipTextConfig| match source
            .component_file(component, "config.json")
        {
            Some(p) => ClipTextConfig::from_file(&p),
            None => Ok(builtin()),
        };
        let te1 = text("text_encoder", ClipTextConfig::sdxl_text_encoder)?;
        let te2 = text("text_encoder_2", ClipTextConfig::sdxl_text_encoder_2)?;
        let mut names = Self::default();
        names.add_unet(&unet.init::<B>(device));
        names.add_text_encoder(Component::TextEncoder1, &te1.init::<B>(false, device));
        names.add_text_encoder(Component::TextEncoder2, &te2.init::<B>(true, device));
        Ok(names)
    }

    /// The targets of a UNet (no weights are read).
    pub fn add_unet<B: Backend>(&mut self, unet: &UNet2DConditionModel<B>) {
        let layout = LdmLayout::new(unet.config());
        for (path, shape) in linear_and_conv_weights(unet) {
            let mut spellings = vec![
                (Naming::Kohya, path.replace('.', "_")),
                (Naming::Diffusers, path.clone()),
            ];
            if let Some(ldm) = layout.to_ldm(&format!("{path}.weight")) {
                let ldm = ldm
                    .strip_suffix(".weight")
                    .unwrap_or(&ldm)
                    .replace('.', "_");
                spellings.push((Naming::Kohya, ldm));
            }
            self.add(Component::Unet, path, shape, spellings);
        }
    }

    /// The targets of a text encoder (`component` 1 or 2).
    pub fn add_text_encoder<B: Backend, M: Module<B>>(&mut self, component: Component, model: &M) {
        for (path, shape) in linear_and_conv_weights(model) {
            let spellings = vec![
                (
                    Naming::Kohya,
                    format!("text_model_{}", path.replace('.', "_")),
                ),
                (Naming::Diffusers, path.clone()),
                (Naming::Diffusers, format!("text_model.{path}")),
            ];
            self.add(component, path, shape, spellings);
        }
    }

    fn add(
        &mut self,
        component: Component,
        path: String,
        shape: Vec<usize>,
        spellings: Vec<(Naming, String)>,
    ) {
        let index = self.targets.len();
        for (naming, name) in spellings {
            if let Some(&other) = self.by_name.get(&(component, naming, name.clone())) {
                // Two modules spelled alike would make a file's name ambiguous.
                log::warn!(
                    "LoRA names: `{name}` spells both `{}` and `{path}`; the first is kept",
                    self.targets[other].path
                );
                continue;
            }
            self.by_name.insert((component, naming, name), index);
        }
        self.targets.push(Target {
            component,
            path,
            shape,
        });
    }

    /// The target a file's module name designates.
    pub fn find(&self, component: Component, naming: Naming, name: &str) -> Option<&Target> {
        self.by_name
            .get(&(component, naming, name.to_string()))
            .map(|&i| &self.targets[i])
    }

    /// Whether any target of `component` is known.
    pub fn has(&self, component: Component) -> bool {
        self.targets.iter().any(|t| t.component == component)
    }

    /// Every target.
    pub fn targets(&self) -> &[Target] {
        &self.targets
    }
}
