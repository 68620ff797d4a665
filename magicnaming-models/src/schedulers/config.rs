//! `scheduler/scheduler_config.json`: parsing, per-class defaults, and building a scheduler
//! of the file's class or of another kind the way diffusers'
//! `XScheduler.from_config(pipe.scheduler.config, **overrides)` does.
//!
//! The resulting config of class X holds, for each `__init__` argument of X: the override,
//! else the file's value (unless `null` or listed in `_use_default_values`), else X's default.
//! Keys X does not take are ignored, except the "hidden" `sigma_min` / `sigma_max` that
//! DPM-Solver reads through `hasattr(self.config, ...)` (diffusers registers every unused
//! key on the new config).
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::ModelError;

/// diffusers' `beta_schedule`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BetaSchedule {
    /// `linear`: betas evenly spaced from `beta_start` to `beta_end`.
    Linear,
    /// `scaled_linear`: square roots evenly spaced, squared (SD / SDXL).
    ScaledLinear,
    /// `squaredcos_cap_v2`: the cosine schedule (`betas_for_alpha_bar`).
    SquaredcosCapV2,
}

/// diffusers' `prediction_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PredictionType {
    /// `epsilon`: the model predicts the noise (SDXL base).
    Epsilon,
    /// `v_prediction`: the model predicts the velocity.
    VPrediction,
    /// `sample` (Euler also accepts `original_sample`): the model predicts the clean sample.
    #[serde(alias = "original_sample")]
    Sample,
}

/// diffusers' `timestep_spacing` (Table 2 of arXiv:2305.08891).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimestepSpacing {
    /// `linspace`: evenly spaced from the last training timestep down to 0.
    Linspace,
    /// `leading`: multiples of `num_train_timesteps // n`, plus `steps_offset` (SDXL base).
    Leading,
    /// `trailing`: evenly spaced down from the last training timestep.
    Trailing,
}

/// Euler's `interpolation_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InterpolationType {
    /// `linear`: sigmas interpolated at the timesteps.
    Linear,
    /// `log_linear`: log-sigmas evenly spaced over the whole training range.
    LogLinear,
}

/// `final_sigmas_type`: the sigma after the last step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinalSigmasType {
    /// `zero`: denoise fully.
    Zero,
    /// `sigma_min`: stop at the smallest training sigma.
    SigmaMin,
}

/// Euler's `timestep_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimestepType {
    /// `discrete`: training timesteps.
    Discrete,
    /// `continuous`: with v-prediction, timesteps are `0.25 * ln(sigma)`.
    Continuous,
}

/// The contents of a diffusers `scheduler_config.json`: its class and fields.
#[derive(Debug, Clone, PartialEq)]
pub struct SchedulerConfig {
    class_name: Option<String>,
    fields: Map<String, Value>,
    pub(super) source: PathBuf,
}

impl SchedulerConfig {
    /// Reads `scheduler_config.json` (e.g. `<model>/scheduler/scheduler_config.json`).
    /// Python's non-standard JSON tokens, which diffusers writes for non-finite floats (e.g.
    /// `"lambda_min_clipped": -Infinity`), are accepted: `±Infinity` as `±f64::MAX`, `NaN` as
    /// `null` (the class default).
    pub fn from_file(path: &Path) -> crate::Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ModelError::open(path, "a scheduler configuration", e))?;
        let value = serde_json::from_str(&replace_python_floats(&text))
            .map_err(|e| ModelError::config(path, format!("invalid JSON: {e}")))?;
        Self::from_json(&value, path)
    }

    /// Parses a JSON object; `source` names it in errors.
    pub fn from_json(value: &Value, source: impl Into<PathBuf>) -> crate::Result<Self> {
        let source = source.into();
        crate::json::check_config_sizes(value, &source)?;
        let obj = value
            .as_object()
            .ok_or_else(|| ModelError::config(&source, "expected a JSON object"))?;
        let class_name = match obj.get("_class_name") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(other) => {
                return Err(ModelError::config(
                    &source,
                    format!("_class_name {other} is not a string"),
                ));
            }
        };
        let used_defaults: Vec<&str> = match obj.get("_use_default_values") {
            Some(Value::Array(keys)) => keys.iter().filter_map(Value::as_str).collect(),
            _ => vec![],
        };
        let fields = obj
            .iter()
            .filter(|(k, v)| {
                !k.starts_with('_') && !v.is_null() && !used_defaults.contains(&k.as_str())
            })
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        Ok(Self {
            class_name,
            fields,
            source,
        })
    }

    /// SDXL base's scheduler: `scheduler/scheduler_config.json` of
    /// stabilityai/stable-diffusion-xl-base-1.0 (verbatim), for single-file checkpoints.
    pub fn sdxl_base() -> Self {
        let value = json!({
            "_class_name": "EulerDiscreteScheduler",
            "_diffusers_version": "0.19.0.dev0",
            "beta_end": 0.012,
            "beta_schedule": "scaled_linear",
            "beta_start": 0.00085,
            "clip_sample": false,
            "interpolation_type": "linear",
            "num_train_timesteps": 1000,
            "prediction_type": "epsilon",
            "sample_max_value": 1.0,
            "set_alpha_to_one": false,
            "skip_prk_steps": true,
            "steps_offset": 1,
            "timestep_spacing": "leading",
            "trained_betas": null,
            "use_karras_sigmas": false
        });
        Self::from_json(&value, "<SDXL base scheduler preset>").expect("preset is a valid object")
    }

    /// `_class_name` of the file, if it has one.
    pub fn class_name(&self) -> Option<&str> {
        self.class_name.as_deref()
    }

    /// A field of the file (after dropping `null`s, `_`-keys and `_use_default_values`).
    pub fn field(&self, key: &str) -> Option<&Value> {
        self.fields.get(key)
    }

    /// Where the configuration came from.
    pub fn source(&self) -> &Path {
        &self.source
    }

    /// Class defaults, overlaid with the file's keys the class takes (plus `hidden` keys),
    /// then the overrides, deserialised into the class's config.
    pub(super) fn typed<T: serde::de::DeserializeOwned>(
        &self,
        defaults: Value,
        overrides: &[(&str, Value)],
        hidden: &[&str],
    ) -> crate::Result<T> {
        let Value::Object(mut merged) = defaults else {
            unreachable!("scheduler defaults are JSON objects")
        };
        for (key, value) in &self.fields {
            if merged.contains_key(key) || hidden.contains(&key.as_str()) {
                merged.insert(key.clone(), value.clone());
            }
        }
        for (key, value) in overrides {
            merged.insert((*key).to_string(), value.clone());
        }
        serde_json::from_value(Value::Object(merged))
            .map_err(|e| ModelError::config(&self.source, e.to_string()))
    }
}

/// Replaces the bare `Infinity`, `-Infinity` and `NaN` tokens of Python's `json.dumps`
/// (outside strings) by `1.7976931348623157e308`, `-1.7976931348623157e308` and `null`.
fn replace_python_floats(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let (mut in_string, mut escaped) = (false, false);
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        if in_string {
            in_string = escaped || c != '"';
            escaped = !escaped && c == '\\';
        } else if c == '"' {
            in_string = true;
        } else {
            let token = [
                ("-Infinity", "-1.7976931348623157e308"),
                ("Infinity", "1.7976931348623157e308"),
                ("NaN", "null"),
            ]
            .into_iter()
            .find(|(t, _)| rest.starts_with(t));
            if let Some((t, replacement)) = token {
                out.push_str(replacement);
                rest = &rest[t.len()..];
                continue;
            }
        }
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    out
}
