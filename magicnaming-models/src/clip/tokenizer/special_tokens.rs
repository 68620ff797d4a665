//! CLIP's special tokens and their resolution from a tokenizer folder's
//! `tokenizer_config.json`, `special_tokens_map.json` and `tokenizer.json`, as transformers
//! 5's `from_pretrained` + `CLIPTokenizer.__init__` resolve them.
use std::collections::HashMap;
use std::path::Path;

use serde_json::{Map, Value};
use tokenizers::AddedToken;

use super::files::tokenizer_error;
use crate::error::Result;

/// CLIP's beginning-of-text token.
pub const CLIP_BOS_TOKEN: &str = "<|startoftext|>";

/// CLIP's end-of-text token (also its unknown token, and SDXL tokenizer 1's pad token).
pub const CLIP_EOS_TOKEN: &str = "<|endoftext|>";

/// Named special-token keys, in transformers' `SPECIAL_TOKENS_ATTRIBUTES` order.
const SPECIAL_KEYS: [&str; 7] = [
    "bos_token",
    "eos_token",
    "unk_token",
    "sep_token",
    "pad_token",
    "cls_token",
    "mask_token",
];

/// Named special tokens (in [`SPECIAL_KEYS`] order) and other added tokens (by id).
pub(super) struct SpecialTokens {
    pub(super) named: Vec<(&'static str, AddedToken)>,
    pub(super) extra: Vec<(u64, AddedToken)>,
}

impl SpecialTokens {
    /// The token named `key`; bos/eos/unk/pad always exist.
    pub(super) fn get(&self, key: &str) -> &AddedToken {
        self.named
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, t)| t)
            .expect("bos/eos/unk/pad are always resolved")
    }

    /// The special tokens of SDXL's published tokenizer configurations (bos/eos/unk
    /// normalized, the pad token given as a plain string), padding with `pad_token`.
    pub(super) fn sdxl(pad_token: &str) -> Self {
        let named = |content: &str| {
            AddedToken::from(content, true)
                .normalized(true)
                .single_word(false)
                .lstrip(false)
                .rstrip(false)
        };
        Self {
            named: vec![
                ("bos_token", named(CLIP_BOS_TOKEN)),
                ("eos_token", named(CLIP_EOS_TOKEN)),
                ("unk_token", named(CLIP_EOS_TOKEN)),
                ("pad_token", string_token(pad_token)),
            ],
            extra: Vec::new(),
        }
    }
}

/// A special token given as a plain string: transformers makes it
/// `AddedToken(s, special=True, normalized=False)`.
fn string_token(content: &str) -> AddedToken {
    AddedToken::from(content, true)
        .normalized(false)
        .single_word(false)
        .lstrip(false)
        .rstrip(false)
}

/// An `AddedToken` from a serialized one (`{"content": ..., "normalized": ..., ...}`), as
/// Python's `AddedToken(**dict)`: `special` is `forced_special` or the dict's (default false),
/// `normalized` defaults to `!special`.
fn token_from_object(obj: &Map<String, Value>, forced_special: Option<bool>) -> Option<AddedToken> {
    let content = obj.get("content")?.as_str()?;
    let flag = |key: &str| obj.get(key).and_then(Value::as_bool);
    let special = forced_special.unwrap_or_else(|| flag("special").unwrap_or(false));
    Some(
        AddedToken::from(content, special)
            .normalized(flag("normalized").unwrap_or(!special))
            .single_word(flag("single_word").unwrap_or(false))
            .lstrip(flag("lstrip").unwrap_or(false))
            .rstrip(flag("rstrip").unwrap_or(false)),
    )
}

/// A special-token value of `tokenizer_config.json` (a string or a serialized `AddedToken`).
fn token_from_config_value(
    value: &Value,
    forced_special: Option<bool>,
    key: &str,
    path: &Path,
) -> Result<Option<AddedToken>> {
    match value {
        Value::Null => Ok(None),
        Value::String(s) => Ok(Some(string_token(s))),
        Value::Object(obj) => token_from_object(obj, forced_special)
            .map(Some)
            .ok_or_else(|| tokenizer_error(path, format!("{key} has no \"content\": {value}"))),
        other => Err(tokenizer_error(
            path,
            format!("{key} is neither a string nor a token: {other}"),
        )),
    }
}

/// Resolves the special tokens as transformers 5's `from_pretrained` + `CLIPTokenizer.__init__`.
pub(super) fn resolve_special_tokens(
    config: &Map<String, Value>,
    special_map: Option<&Map<String, Value>>,
    tokenizer_json: Option<&Map<String, Value>>,
    config_path: &Path,
) -> Result<SpecialTokens> {
    // Values of tokenizer_config.json (dicts with "__type": "AddedToken" => AddedToken(**dict)).
    let mut values: HashMap<&'static str, AddedToken> = HashMap::new();
    for key in SPECIAL_KEYS {
        if let Some(v) = config.get(key)
            && let Some(t) = token_from_config_value(v, None, key, config_path)?
        {
            values.insert(key, t);
        }
    }

    // Added tokens by id: the config's `added_tokens_decoder`, else (legacy) special_tokens_map.json
    // overrides the named values and tokenizer.json's `added_tokens` are used.
    let mut extra: Vec<(u64, AddedToken)> = Vec::new();
    if let Some(decoder) = config.get("added_tokens_decoder") {
        let decoder = decoder
            .as_object()
            .ok_or_else(|| tokenizer_error(config_path, "added_tokens_decoder is not an object"))?;
        for (id, token) in decoder {
            let id: u64 = id.parse().map_err(|_| {
                tokenizer_error(
                    config_path,
                    format!("added_tokens_decoder id {id:?} is not a number"),
                )
            })?;
            let token = token
                .as_object()
                .and_then(|obj| token_from_object(obj, None))
                .ok_or_else(|| {
                    tokenizer_error(
                        config_path,
                        format!("added_tokens_decoder[{id}] is not a token: {token}"),
                    )
                })?;
            extra.push((id, token));
        }
    } else {
        if let Some(map) = special_map {
            let map_path = config_path.with_file_name("special_tokens_map.json");
            for key in SPECIAL_KEYS {
                if let Some(v) = map.get(key) {
                    // special_tokens_map.json dicts become AddedToken(**dict, special=True).
                    if let Some(t) = token_from_config_value(v, Some(true), key, &map_path)? {
                        values.insert(key, t);
                    }
                }
            }
        }
        if let Some(json) = tokenizer_json {
            let json_path = config_path.with_file_name("tokenizer.json");
            if let Some(added) = json.get("added_tokens").and_then(Value::as_array) {
                for token in added {
                    let obj = token.as_object();
                    let id = obj.and_then(|o| o.get("id")).and_then(Value::as_u64);
                    let parsed = obj.and_then(|o| token_from_object(o, None));
                    match (id, parsed) {
                        (Some(id), Some(t)) => extra.push((id, t)),
                        _ => {
                            return Err(tokenizer_error(
                                &json_path,
                                format!("bad entry in added_tokens: {token}"),
                            ));
                        }
                    }
                }
            }
        }
    }

    // Named values whose content is an added token take that token's flags.
    if !extra.is_empty() {
        for token in values.values_mut() {
            if let Some((_, t)) = extra.iter().rev().find(|(_, t)| t.content == token.content) {
                *token = t.clone();
            }
        }
    }

    // CLIPTokenizer's defaults, as plain strings.
    let mut named = Vec::new();
    for key in SPECIAL_KEYS {
        let default = match key {
            "bos_token" => Some(CLIP_BOS_TOKEN),
            "eos_token" | "unk_token" | "pad_token" => Some(CLIP_EOS_TOKEN),
            _ => None,
        };
        let token = match (values.remove(key), default) {
            (Some(t), _) => t,
            (None, Some(d)) => string_token(d),
            (None, None) => continue,
        };
        // Named tokens are special (transformers sets `special=True` on them).
        named.push((key, token.special(true)));
    }
    Ok(SpecialTokens { named, extra })
}
