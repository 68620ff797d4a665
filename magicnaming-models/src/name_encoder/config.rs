//! The `config.json` of a name encoder folder (see the parent module).
use std::path::{Path, PathBuf};

use magicnaming_core::{DEFAULT_NAME_TOKENS, HeadActivation, NameHeadConfig, SDXL_TOKEN_DIM};
use serde_json::{Map, Value, json};

use super::input_crop::InputCrop;
use crate::json::read_json;
use crate::{ModelError, Result};

/// Where a tower of an encoder is, as written in `config.json`.
#[derive(Debug, Clone, PartialEq)]
pub struct TowerRef {
    /// The path as written (relative to the encoder folder, or absolute).
    pub path: PathBuf,
    /// An embedded tower configuration (transformers or open_clip JSON).
    pub config: Option<Value>,
    /// An embedded `preprocessor_config.json`.
    pub preprocessor: Option<Value>,
}

impl TowerRef {
    /// A tower given by its path only.
    pub fn path(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            config: None,
            preprocessor: None,
        }
    }

    fn from_json(v: &Value, key: &str, file: &Path) -> Result<Self> {
        let bad = |m: String| ModelError::config(file, m);
        match v {
            Value::String(s) => Ok(Self::path(s)),
            Value::Object(o) => {
                let path = o.get("path").and_then(Value::as_str).ok_or_else(|| {
                    bad(format!(
                        "`{key}.path` (the tower's folder or file) is missing"
                    ))
                })?;
                if let Some(extra) = o
                    .keys()
                    .find(|k| !["path", "config", "preprocessor"].contains(&k.as_str()))
                {
                    return Err(bad(format!(
                        "`{key}.{extra}`: unknown key (path, config, preprocessor)"
                    )));
                }
                Ok(Self {
                    path: path.into(),
                    config: o.get("config").cloned(),
                    preprocessor: o.get("preprocessor").cloned(),
                })
            }
            other => Err(bad(format!(
                "`{key}` = {other}: expected a path or {{\"path\": ...}}"
            ))),
        }
    }

    fn to_json(&self) -> Value {
        let path = Value::String(self.path.to_string_lossy().into_owned());
        if self.config.is_none() && self.preprocessor.is_none() {
            return path;
        }
        let mut o = Map::new();
        o.insert("path".into(), path);
        if let Some(c) = &self.config {
            o.insert("config".into(), c.clone());
        }
        if let Some(p) = &self.preprocessor {
            o.insert("preprocessor".into(), p.clone());
        }
        Value::Object(o)
    }
}

/// An encoder's `config.json`.
#[derive(Debug, Clone)]
pub struct NameEncoderConfig {
    /// CLIP_L (ViT-L/14).
    pub tower_l: TowerRef,
    /// CLIP_G (OpenCLIP ViT-bigG/14).
    pub tower_g: TowerRef,
    /// The head; `input_dim = sum(image_embed_dims)`.
    pub head: NameHeadConfig,
    /// `[P_L, P_G]`, widths of the two towers' image embeddings.
    pub image_embed_dims: [usize; 2],
    /// The view of each photo the towers see (absent from the file: the whole photo).
    pub input_crop: InputCrop,
}

fn activation_name(a: HeadActivation) -> &'static str {
    match a {
        HeadActivation::Gelu => "gelu",
        HeadActivation::Relu => "relu",
        HeadActivation::Silu => "silu",
    }
}

impl NameEncoderConfig {
    /// Parses a parsed `config.json`; `path` names it in errors.
    ///
    /// # Errors
    /// Missing towers, fields of the wrong type, head sizes that disagree with the
    /// top-level `num_tokens` / `token_dim` / `image_embed_dims`.
    pub fn from_json_value(root: &Value, path: &Path) -> Result<Self> {
        crate::json::check_config_sizes(root, path)?;
        let bad = |m: String| ModelError::config(path, m);
        let obj = root
            .as_object()
            .ok_or_else(|| bad("expected a JSON object".into()))?;
        let tower = |key: &str| -> Result<TowerRef> {
            let v = obj
                .get(key)
                .ok_or_else(|| bad(format!("`{key}` (a CLIP image tower) is missing")))?;
            TowerRef::from_json(v, key, path)
        };
        let size = |v: Option<&Value>, key: &str, default: usize| -> Result<usize> {
            match v {
                None | Some(Value::Null) => Ok(default),
                Some(x) => x
                    .as_u64()
                    .filter(|&n| n > 0)
                    .map(|n| n as usize)
                    .ok_or_else(|| bad(format!("`{key}` = {x}: expected a positive integer"))),
            }
        };
        let dims = match obj.get("image_embed_dims") {
            None | Some(Value::Null) => [768, 1280],
            Some(Value::Array(a)) if a.len() == 2 => [
                size(a.first(), "image_embed_dims[0]", 0)?,
                size(a.get(1), "image_embed_dims[1]", 0)?,
            ],
            Some(v) => {
                return Err(bad(format!(
                    "`image_embed_dims` = {v}: expected [P_L, P_G]"
                )));
            }
        };
        let num_tokens = size(obj.get("num_tokens"), "num_tokens", DEFAULT_NAME_TOKENS)?;
        let token_dim = size(obj.get("token_dim"), "token_dim", SDXL_TOKEN_DIM)?;
        let empty = Map::new();
        let h = match obj.get("head") {
            None | Some(Value::Null) => &empty,
            Some(Value::Object(o)) => o,
            Some(v) => {
                return Err(bad(format!(
                    "`head` = {v}: expected an object of NameHeadConfig fields"
                )));
            }
        };
        if let Some(extra) = h.keys().find(|k| {
            ![
                "input_dim",
                "hidden_dims",
                "activation",
                "num_tokens",
                "token_dim",
            ]
            .contains(&k.as_str())
        }) {
            return Err(bad(format!("`head.{extra}`: unknown key")));
        }
        let mut head = NameHeadConfig::new(dims[0] + dims[1]);
        for (key, top) in [
            ("input_dim", dims[0] + dims[1]),
            ("num_tokens", num_tokens),
            ("token_dim", token_dim),
        ] {
            let v = size(h.get(key), &format!("head.{key}"), top)?;
            if v != top {
                return Err(bad(format!(
                    "`head.{key}` = {v} disagrees with the top level ({top})"
                )));
            }
        }
        head.num_tokens = num_tokens;
        head.token_dim = token_dim;
        if let Some(v) = h.get("hidden_dims").filter(|v| !v.is_null()) {
            head.hidden_dims = v
                .as_array()
                .and_then(|a| {
                    a.iter()
                        .map(|x| x.as_u64().filter(|&n| n > 0).map(|n| n as usize))
                        .collect()
                })
                .ok_or_else(|| {
                    bad(format!(
                        "`head.hidden_dims` = {v}: expected positive integers"
                    ))
                })?;
        }
        if let Some(v) = h.get("activation").filter(|v| !v.is_null()) {
            head.activation = match v.as_str().map(str::to_ascii_lowercase).as_deref() {
                Some("gelu") => HeadActivation::Gelu,
                Some("relu") => HeadActivation::Relu,
                Some("silu") | Some("swish") => HeadActivation::Silu,
                _ => {
                    return Err(bad(format!(
                        "`head.activation` = {v}: expected gelu, relu or silu"
                    )));
                }
            };
        }
        Ok(Self {
            tower_l: tower("tower_l")?,
            tower_g: tower("tower_g")?,
            head,
            image_embed_dims: dims,
            input_crop: InputCrop::from_json(obj.get("input_crop"), path)?,
        })
    }

    /// Reads `config.json`.
    pub fn from_file(path: &Path) -> Result<Self> {
        Self::from_json_value(&read_json(path)?, path)
    }

    /// The JSON written to `config.json`.
    pub fn to_json(&self) -> Value {
        json!({
            "tower_l": self.tower_l.to_json(),
            "tower_g": self.tower_g.to_json(),
            "head": {
                "hidden_dims": self.head.hidden_dims,
                "activation": activation_name(self.head.activation),
            },
            "num_tokens": self.head.num_tokens,
            "token_dim": self.head.token_dim,
            "image_embed_dims": self.image_embed_dims,
            "input_crop": self.input_crop.to_json(),
        })
    }
}
