//! Where an SDXL model's files are: a diffusers folder (`model_index.json`, `unet/`,
//! `vae/`, `text_encoder/`, `text_encoder_2/`, `tokenizer/`, `tokenizer_2/`,
//! `scheduler/`) or a single-file checkpoint as shared on Civitai (`conditioner.*`,
//! `model.diffusion_model.*`, `first_stage_model.*`), optionally with a diffusers folder
//! of configurations for non-standard sizes (`--config`).
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::json::read_json;
use crate::{ModelError, Result};

/// An SDXL model on disk.
///
/// ```no_run
/// use magicnaming_models::weights::SdxlSource;
/// // A diffusers folder, or a single-file checkpoint with SDXL base's configurations:
/// let folder = SdxlSource::from_path("stable-diffusion-xl-base-1.0", None)?;
/// let file = SdxlSource::from_path("sd_xl_base_1.0.safetensors", None)?;
/// # Ok::<(), magicnaming_models::ModelError>(())
/// ```
#[derive(Debug, Clone)]
pub enum SdxlSource {
    /// A diffusers folder.
    Diffusers {
        /// The folder holding `model_index.json`.
        root: PathBuf,
        /// Optional folder whose configurations replace the model's.
        config: Option<PathBuf>,
    },
    /// A single `.safetensors` checkpoint.
    SingleFile {
        /// The checkpoint.
        file: PathBuf,
        /// Optional diffusers-style folder of configurations; built-in SDXL base
        /// configurations otherwise.
        config: Option<PathBuf>,
    },
}

impl SdxlSource {
    /// Recognises `model` (a folder or a file) and an optional configuration folder.
    ///
    /// # Errors
    /// A path that does not exist, a file that is not `.safetensors`, a folder without
    /// `model_index.json`, a configuration path that is not a folder.
    pub fn from_path(model: impl AsRef<Path>, config: Option<&Path>) -> Result<Self> {
        let model = model.as_ref();
        if let Some(c) = config
            && !c.is_dir()
        {
            return Err(ModelError::MissingFile {
                path: c.to_path_buf(),
                what: "a configuration folder (diffusers layout)".into(),
            });
        }
        let config = config.map(Path::to_path_buf);
        if model.is_dir() {
            let index = model.join("model_index.json");
            if !index.is_file() {
                return Err(ModelError::MissingFile {
                    path: index,
                    what: "model_index.json of a diffusers SDXL folder".into(),
                });
            }
            Ok(Self::Diffusers {
                root: model.to_path_buf(),
                config,
            })
        } else if model.is_file() {
            let ext = model
                .extension()
                .and_then(|e| e.to_str())
                .unwrap_or_default();
            if ext != "safetensors" {
                return Err(ModelError::weights(
                    model,
                    "single-file checkpoints are read as .safetensors (pickled .ckpt files are not loaded)",
                ));
            }
            Ok(Self::SingleFile {
                file: model.to_path_buf(),
                config,
            })
        } else {
            Err(ModelError::MissingFile {
                path: model.to_path_buf(),
                what: "an SDXL model (diffusers folder or .safetensors file)".into(),
            })
        }
    }

    /// The folder configurations are read from, if any.
    pub fn config_dir(&self) -> Option<&Path> {
        match self {
            Self::Diffusers { root, config } => Some(config.as_deref().unwrap_or(root)),
            Self::SingleFile { config, .. } => config.as_deref(),
        }
    }

    /// The path the user named.
    pub fn display_path(&self) -> &Path {
        match self {
            Self::Diffusers { root, .. } => root,
            Self::SingleFile { file, .. } => file,
        }
    }

    /// `model_index.json`, when there is a configuration folder that has one.
    pub fn model_index(&self) -> Result<Option<Value>> {
        match self.config_dir().map(|d| d.join("model_index.json")) {
            Some(p) if p.is_file() => read_json(&p).map(Some),
            _ => Ok(None),
        }
    }

    /// `force_zeros_for_empty_prompt` of `model_index.json`; SDXL base's `true` when
    /// there is no index.
    pub fn force_zeros_for_empty_prompt(&self) -> Result<bool> {
        Ok(self
            .model_index()?
            .and_then(|v| {
                v.get("force_zeros_for_empty_prompt")
                    .and_then(Value::as_bool)
            })
            .unwrap_or(true))
    }

    /// `<config dir>/<component>/<file>` when it exists.
    pub fn component_file(&self, component: &str, file: &str) -> Option<PathBuf> {
        self.config_dir()
            .map(|d| d.join(component).join(file))
            .filter(|p| p.is_file())
    }

    /// `<config dir>/<component>/` when it exists.
    pub fn component_dir(&self, component: &str) -> Option<PathBuf> {
        self.config_dir()
            .map(|d| d.join(component))
            .filter(|p| p.is_dir())
    }

    /// The weights of a diffusers component: the first of `names` present in
    /// `<root>/<component>/` (full precision before `.fp16` variants).
    pub fn diffusers_weights(root: &Path, component: &str, names: &[&str]) -> Result<PathBuf> {
        let dir = root.join(component);
        names
            .iter()
            .map(|n| dir.join(n))
            .find(|p| p.is_file())
            .ok_or_else(|| ModelError::MissingFile {
                path: dir.clone(),
                what: format!("weights of `{component}` (one of {})", names.join(", ")),
            })
    }
}

/// Weight files of a diffusers `unet/` or `vae/` folder, in order of preference: full
/// precision before `.fp16`, one file before shards (`save_pretrained` shards fp32 SDXL
/// UNets).
pub const DIFFUSERS_WEIGHT_FILES: &[&str] = &[
    "diffusion_pytorch_model.safetensors",
    "diffusion_pytorch_model.safetensors.index.json",
    "diffusion_pytorch_model.fp16.safetensors",
    "diffusion_pytorch_model.fp16.safetensors.index.json",
];

/// The weights file (or shard index) of a diffusers component folder.
pub fn diffusers_weights_file(dir: &Path) -> Result<PathBuf> {
    DIFFUSERS_WEIGHT_FILES
        .iter()
        .map(|n| dir.join(n))
        .find(|p| p.is_file())
        .ok_or_else(|| ModelError::MissingFile {
            path: dir.to_path_buf(),
            what: format!(
                "diffusers weights (one of {})",
                DIFFUSERS_WEIGHT_FILES.join(", ")
            ),
        })
}
