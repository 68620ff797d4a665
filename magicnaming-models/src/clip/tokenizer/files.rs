//! Reading a tokenizer folder's files: `vocab.json`, `merges.txt`, `tokenizer.json` and the
//! JSON configurations, with the errors they raise.
use std::path::Path;

use serde_json::{Map, Value};
use tokenizers::models::bpe::{Merges, Vocab};

use crate::error::{ModelError, Result};

/// A tokenizer error about `path`.
pub(super) fn tokenizer_error(path: &Path, message: impl Into<String>) -> ModelError {
    ModelError::Tokenizer {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

/// Reads a JSON object; `Ok(None)` when the file is absent (unless `required`).
pub(super) fn read_json_object(path: &Path, required: bool) -> Result<Option<Map<String, Value>>> {
    if !path.is_file() {
        if required {
            return Err(ModelError::MissingFile {
                path: path.to_path_buf(),
                what: "JSON file".into(),
            });
        }
        return Ok(None);
    }
    let text = crate::json::read_text_file(path, "a tokenizer JSON")?;
    match serde_json::from_str::<Value>(&text) {
        Ok(Value::Object(map)) => Ok(Some(map)),
        Ok(_) => Err(tokenizer_error(path, "not a JSON object")),
        Err(e) => Err(tokenizer_error(path, format!("invalid JSON: {e}"))),
    }
}

/// `vocab.json`: `{token: id}` (as `tokenizers`' `BPE::read_file`).
pub(super) fn read_vocab_json(path: &Path) -> Result<Vocab> {
    let map = read_json_object(path, true)?.expect("required");
    vocab_from_object(&map, path)
}

fn vocab_from_object(map: &Map<String, Value>, path: &Path) -> Result<Vocab> {
    let mut vocab = Vocab::default();
    for (token, id) in map {
        let id = id
            .as_u64()
            .and_then(|id| u32::try_from(id).ok())
            .ok_or_else(|| tokenizer_error(path, format!("token {token:?} has a bad id {id}")))?;
        vocab.insert(token.clone(), id);
    }
    if vocab.is_empty() {
        return Err(tokenizer_error(path, "empty vocabulary"));
    }
    Ok(vocab)
}

/// `merges.txt`: one `a b` pair a line, `#version` lines skipped (as `tokenizers`' `BPE::read_file`).
pub(super) fn read_merges_txt(path: &Path) -> Result<Merges> {
    let text = crate::json::read_text_file(path, "a tokenizer merges")?;
    let mut merges = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.starts_with("#version") {
            continue;
        }
        match line.split(' ').collect::<Vec<_>>()[..] {
            [a, b] => merges.push((a.to_string(), b.to_string())),
            _ => {
                return Err(tokenizer_error(
                    path,
                    format!("line {}: not a merge \"a b\": {line:?}", n + 1),
                ));
            }
        }
    }
    Ok(merges)
}

/// Vocabulary and merges of a `tokenizer.json` BPE model.
pub(super) fn vocab_merges_from_tokenizer_json(
    json: &Map<String, Value>,
    path: &Path,
) -> Result<(Vocab, Merges)> {
    let model = json
        .get("model")
        .and_then(Value::as_object)
        .ok_or_else(|| tokenizer_error(path, "no \"model\" object"))?;
    match model.get("type").and_then(Value::as_str) {
        Some("BPE") | None => {}
        Some(other) => {
            return Err(tokenizer_error(
                path,
                format!("model type {other:?}, CLIP needs \"BPE\""),
            ));
        }
    }
    let vocab = model
        .get("vocab")
        .and_then(Value::as_object)
        .ok_or_else(|| tokenizer_error(path, "no model.vocab object"))?;
    let vocab = vocab_from_object(vocab, path)?;
    let list = model
        .get("merges")
        .and_then(Value::as_array)
        .ok_or_else(|| tokenizer_error(path, "no model.merges list"))?;
    let mut merges = Vec::with_capacity(list.len());
    for (n, merge) in list.iter().enumerate() {
        let pair = match merge {
            Value::String(s) => match s.split(' ').collect::<Vec<_>>()[..] {
                [a, b] => Some((a.to_string(), b.to_string())),
                _ => None,
            },
            Value::Array(a) => match &a[..] {
                [Value::String(a), Value::String(b)] => Some((a.clone(), b.clone())),
                _ => None,
            },
            _ => None,
        };
        merges.push(pair.ok_or_else(|| {
            tokenizer_error(path, format!("model.merges[{n}] is not a pair: {merge}"))
        })?);
    }
    Ok((vocab, merges))
}
