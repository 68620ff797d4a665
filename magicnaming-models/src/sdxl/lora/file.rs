//! A LoRA file as shared on Civitai or saved by diffusers: its keys grouped by module,
//! each module's kind (LoRA / LoCon, LoHa, LoKr), rank and alpha, checked on opening
//! (matching partners, agreeing ranks, finite values) before any model is touched.
//!
//! | naming | module key | parts |
//! |---|---|---|
//! | kohya / A1111 | `lora_unet_<name>`, `lora_te1_<name>`, `lora_te2_<name>` (`.` -> `_`) | `.lora_down.weight`, `.lora_up.weight`, `.alpha`, `.dora_scale` |
//! | diffusers / PEFT | `unet.<path>`, `text_encoder.<path>`, `text_encoder_2.<path>` | `.lora_A.weight` / `.lora_B.weight` (older: `.lora.down.weight` / `.lora.up.weight`), `.alpha` |
//! | LyCORIS LoHa | kohya names | `.hada_w1_a`, `.hada_w1_b`, `.hada_w2_a`, `.hada_w2_b`, optional `.hada_t1`, `.hada_t2` |
//! | LyCORIS LoKr | kohya names | `.lokr_w1` or `.lokr_w1_a` + `.lokr_w1_b`, `.lokr_w2` or `.lokr_w2_a` + `.lokr_w2_b`, optional `.lokr_t2` |
//!
//! PEFT files keep no per-module alpha; diffusers writes the adapter's `LoraConfig` into
//! the safetensors metadata (`lora_adapter_metadata`), whose `lora_alpha` (and
//! `alpha_pattern`) are read here.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use super::parts::{LoraKind, PARTS, Part, check_parts};
use crate::weights::SafetensorsFile;
use crate::{ModelError, Result};

/// The model a module key belongs to, from the key's component prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Component {
    /// The UNet.
    Unet,
    /// Text encoder 1 (CLIP ViT-L).
    TextEncoder1,
    /// Text encoder 2 (OpenCLIP bigG).
    TextEncoder2,
}

impl Component {
    /// Short name (`unet`, `te1`, `te2`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Unet => "unet",
            Self::TextEncoder1 => "te1",
            Self::TextEncoder2 => "te2",
        }
    }
}

/// How a file spells module names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Naming {
    /// kohya / A1111: `lora_unet_input_blocks_4_1_..._to_q` (dots as underscores).
    Kohya,
    /// diffusers / PEFT: `unet.down_blocks.1.attentions.0....to_q`.
    Diffusers,
}

/// Component prefixes of module keys: the format's own markers, not model names.
const COMPONENTS: &[(&str, Component, Naming)] = &[
    ("lora_unet_", Component::Unet, Naming::Kohya),
    ("lora_te1_", Component::TextEncoder1, Naming::Kohya),
    ("lora_te2_", Component::TextEncoder2, Naming::Kohya),
    ("unet.", Component::Unet, Naming::Diffusers),
    ("text_encoder.", Component::TextEncoder1, Naming::Diffusers),
    (
        "text_encoder_2.",
        Component::TextEncoder2,
        Naming::Diffusers,
    ),
];

/// One module's update as stored.
#[derive(Debug, Clone)]
pub struct LoraModule {
    /// The module key (the tensors' keys without their part suffix).
    pub key: String,
    /// The model it is meant for.
    pub component: Component,
    /// How its name is spelled.
    pub naming: Naming,
    /// The module name after the component prefix.
    pub name: String,
    /// Its kind.
    pub kind: LoraKind,
    /// The rank alpha is divided by; `None` when the update has no low-rank factor (a
    /// LoKr of two whole matrices), then alpha is ignored.
    pub rank: Option<usize>,
    /// Stored alpha; `None`: scale 1.
    pub alpha: Option<f32>,
    /// The tensors: part -> full key.
    pub parts: BTreeMap<Part, String>,
}

impl LoraModule {
    /// `alpha / rank`, 1 without an alpha or a rank.
    pub fn scale(&self) -> f32 {
        match (self.alpha, self.rank) {
            (Some(a), Some(r)) if r > 0 => a / r as f32,
            _ => 1.0,
        }
    }

    /// Whether the update is a convolution (LoCon, conv LoHa/LoKr): a 4-D factor.
    pub fn is_conv(&self, file: &SafetensorsFile) -> bool {
        self.parts
            .values()
            .any(|k| file.entry(k).is_some_and(|e| e.shape.len() == 4))
    }
}

/// A LoRA file, opened and checked.
///
/// ```no_run
/// use magicnaming_models::sdxl::lora::Lora;
/// let lora = Lora::open("pixel-art-xl.safetensors")?;
/// println!("{} modules, ranks {:?}", lora.modules().len(), lora.ranks());
/// # Ok::<(), magicnaming_models::ModelError>(())
/// ```
#[derive(Debug, Clone)]
pub struct Lora {
    file: Rc<SafetensorsFile>,
    modules: Vec<LoraModule>,
    other_keys: Vec<String>,
}

fn err(path: &Path, message: String) -> ModelError {
    ModelError::weights(path, message)
}

impl Lora {
    /// Opens a `.safetensors` LoRA file and checks it: every tensor finite, each module
    /// with the partners its kind needs and agreeing ranks, alphas scalar.
    ///
    /// # Errors
    /// [`ModelError::Weights`] naming the file and the key: no LoRA keys at all, NaN or
    /// infinite values, up/down (or LoHa/LoKr factor) ranks that disagree, a missing
    /// partner, a non-scalar alpha; an unreadable file.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let file = SafetensorsFile::open(path)?;
        Self::from_file(file)
    }

    /// [`Self::open`] for a file already read.
    ///
    /// # Errors
    /// As [`Self::open`].
    pub fn from_file(file: Rc<SafetensorsFile>) -> Result<Self> {
        let path = file.path().to_path_buf();
        let alphas = peft_alphas(&file)?;
        let mut grouped: BTreeMap<String, BTreeMap<Part, String>> = BTreeMap::new();
        let mut other_keys = Vec::new();
        for key in file.keys() {
            match PARTS
                .iter()
                .find_map(|(suffix, part)| key.strip_suffix(suffix).map(|m| (m, *part)))
            {
                Some((module, part)) => {
                    grouped
                        .entry(module.to_string())
                        .or_default()
                        .insert(part, key.to_string());
                }
                None => other_keys.push(key.to_string()),
            }
        }
        if grouped.is_empty() {
            let some: Vec<_> = file.keys().take(5).collect();
            return Err(err(
                &path,
                format!(
                    "no LoRA keys (none ends in .lora_down.weight, .lora_A.weight, .hada_w1_a, \
                     .lokr_w1, ...); first keys: {}",
                    if some.is_empty() {
                        "none, the file is empty".to_string()
                    } else {
                        some.join(", ")
                    }
                ),
            ));
        }
        for key in file.keys() {
            let (values, _) = file.read_f32(key)?;
            if let Some(v) = values.iter().find(|v| !v.is_finite()) {
                return Err(err(&path, format!("tensor `{key}` holds {v}")));
            }
        }
        let mut modules = Vec::with_capacity(grouped.len());
        for (key, parts) in grouped {
            let Some((prefix, component, naming)) =
                COMPONENTS.iter().find(|(p, ..)| key.starts_with(p))
            else {
                // A module of no SDXL component (`lora_te_` of SD 1.x, ...): its tensors
                // match nothing.
                other_keys.extend(parts.into_values());
                continue;
            };
            let name = key[prefix.len()..].to_string();
            let alpha = match parts.get(&Part::Alpha) {
                Some(k) => {
                    let (v, shape) = file.read_f32(k)?;
                    if v.len() != 1 {
                        return Err(err(
                            &path,
                            format!("alpha `{k}` has shape {shape:?}, a scalar was expected"),
                        ));
                    }
                    Some(v[0])
                }
                None if *naming == Naming::Diffusers => alphas.alpha_for(*component, &name),
                None => None,
            };
            let (kind, rank) = check_parts(&file, &key, &parts)?;
            modules.push(LoraModule {
                key,
                component: *component,
                naming: *naming,
                name,
                kind,
                rank,
                alpha,
                parts,
            });
        }
        if modules.is_empty() {
            return Err(err(
                &path,
                format!(
                    "no LoRA keys for SDXL's UNet or text encoders (lora_unet_, lora_te1_, \
                     lora_te2_, unet., text_encoder., text_encoder_2.); keys: {}",
                    other_keys
                        .iter()
                        .take(5)
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        }
        log::debug!(
            "{}: {} LoRA modules, {} other keys",
            path.display(),
            modules.len(),
            other_keys.len()
        );
        Ok(Self {
            file,
            modules,
            other_keys,
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        self.file.path()
    }

    /// The file.
    pub fn file(&self) -> &Rc<SafetensorsFile> {
        &self.file
    }

    /// Its modules, sorted by key.
    pub fn modules(&self) -> &[LoraModule] {
        &self.modules
    }

    /// Keys that belong to no module of an SDXL component or are not a LoRA part
    /// (`lora_te_*` of SD 1.x, bias patches, ...): they match nothing.
    pub fn other_keys(&self) -> &[String] {
        &self.other_keys
    }

    /// The namings used (kohya, diffusers, or both).
    pub fn namings(&self) -> Vec<Naming> {
        let mut n: Vec<Naming> = self.modules.iter().map(|m| m.naming).collect();
        n.sort();
        n.dedup();
        n
    }

    /// The kinds of update used.
    pub fn kinds(&self) -> Vec<LoraKind> {
        let mut k: Vec<LoraKind> = self.modules.iter().map(|m| m.kind).collect();
        k.sort();
        k.dedup();
        k
    }

    /// How many modules have each rank (`None`: no low-rank factor).
    pub fn ranks(&self) -> BTreeMap<Option<usize>, usize> {
        let mut out = BTreeMap::new();
        for m in &self.modules {
            *out.entry(m.rank).or_default() += 1;
        }
        out
    }

    /// How many modules have each alpha (as text; `none` without one).
    pub fn alphas(&self) -> BTreeMap<String, usize> {
        let mut out = BTreeMap::new();
        for m in &self.modules {
            let a = m.alpha.map_or("none".to_string(), |a| a.to_string());
            *out.entry(a).or_default() += 1;
        }
        out
    }

    /// How many modules target each component.
    pub fn targets(&self) -> BTreeMap<Component, usize> {
        let mut out = BTreeMap::new();
        for m in &self.modules {
            *out.entry(m.component).or_default() += 1;
        }
        out
    }

    /// A short file name for messages and PNG text (`name.safetensors`).
    pub fn file_name(&self) -> String {
        file_name(self.path())
    }
}

/// The last component of `path`, as text.
pub fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string())
}

/// PEFT alphas from diffusers' `lora_adapter_metadata` header entry (the adapter's
/// `LoraConfig` per component, keys `unet.lora_alpha`, `unet.alpha_pattern`, ...). PEFT
/// scales by `lora_alpha / r` with `r` the stored rank (`rank_pattern` only sets it).
#[derive(Debug, Default)]
struct PeftAlphas {
    /// Per component: `lora_alpha` and `alpha_pattern`.
    configs: BTreeMap<Component, (Option<f32>, BTreeMap<String, f32>)>,
}

impl PeftAlphas {
    fn alpha_for(&self, component: Component, name: &str) -> Option<f32> {
        let (alpha, pattern) = self.configs.get(&component)?;
        pattern
            .iter()
            .find(|(k, _)| name == k.as_str() || name.ends_with(&format!(".{k}")))
            .map(|(_, v)| *v)
            .or(*alpha)
    }
}

fn peft_alphas(file: &SafetensorsFile) -> Result<PeftAlphas> {
    let Some(text) = file.metadata().get("lora_adapter_metadata") else {
        return Ok(PeftAlphas::default());
    };
    let bad = |m: String| {
        err(
            file.path(),
            format!("metadata `lora_adapter_metadata`: {m}"),
        )
    };
    let json: serde_json::Value =
        serde_json::from_str(text).map_err(|e| bad(format!("not JSON: {e}")))?;
    let obj = json
        .as_object()
        .ok_or_else(|| bad("not a JSON object".into()))?;
    let mut out = PeftAlphas::default();
    for (prefix, component) in [
        ("unet", Component::Unet),
        ("text_encoder", Component::TextEncoder1),
        ("text_encoder_2", Component::TextEncoder2),
    ] {
        let get = |k: &str| obj.get(&format!("{prefix}.{k}"));
        if get("use_rslora").and_then(serde_json::Value::as_bool) == Some(true) {
            return Err(bad(format!(
                "`{prefix}.use_rslora` is true: rank-stabilised scaling is not read"
            )));
        }
        let alpha = get("lora_alpha")
            .and_then(serde_json::Value::as_f64)
            .map(|v| v as f32);
        let pattern: BTreeMap<String, f32> = get("alpha_pattern")
            .and_then(serde_json::Value::as_object)
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| v.as_f64().map(|v| (k.clone(), v as f32)))
                    .collect()
            })
            .unwrap_or_default();
        if alpha.is_some() || !pattern.is_empty() {
            out.configs.insert(component, (alpha, pattern));
        }
    }
    Ok(out)
}

/// Where a LoRA came from and how strongly it is applied: the file and its multiplier.
#[derive(Debug, Clone)]
pub struct ScaledLora {
    /// The LoRA.
    pub lora: Lora,
    /// Its multiplier (1.0: as trained).
    pub multiplier: f32,
}

impl ScaledLora {
    /// `lora` at `multiplier`.
    pub fn new(lora: Lora, multiplier: f32) -> Self {
        Self { lora, multiplier }
    }

    /// Opens `path` (see [`Lora::open`]) at `multiplier`.
    ///
    /// # Errors
    /// As [`Lora::open`]; a non-finite multiplier.
    pub fn open(path: impl Into<PathBuf>, multiplier: f32) -> Result<Self> {
        let path = path.into();
        if !multiplier.is_finite() {
            return Err(ModelError::InvalidInput(format!(
                "{}: LoRA scale {multiplier} is not a finite number",
                path.display()
            )));
        }
        Ok(Self::new(Lora::open(&path)?, multiplier))
    }
}
