//! CLIP byte-level BPE tokenization for SDXL's two text encoders.
//!
//! The `tokenizers` pipeline is built the way transformers 5's `CLIPTokenizer`
//! (`models/clip/tokenization_clip.py`) builds it:
//!
//! - model: BPE (unk `<|endoftext|>`, `end_of_word_suffix` `</w>`, `continuing_subword_prefix` "",
//!   no fused unknowns, no dropout);
//! - normalizer: `Sequence[NFC, Replace(\s+ -> " "), Lowercase]`;
//! - pre-tokenizer: `Sequence[Split(CLIP regex, Removed, invert), ByteLevel(add_prefix_space=false)]`;
//! - post-processor: `RobertaProcessing` (BOS text EOS), decoder: `ByteLevel`.
//!
//! There is no explicit strip of leading/trailing whitespace: as in transformers 5, whitespace is
//! collapsed by the normalizer and dropped by the pre-tokenizer's split, so `"  a  "` and `"a"`
//! give the same ids. (open_clip strips explicitly; the result is the same.)
//!
//! Special tokens are registered as transformers' `from_pretrained` registers them (the flags of
//! the *last* named special token with a given content win), which matters for SDXL's second
//! tokenizer: its pad token `"!"` becomes a special added token, so a `!` in a prompt is encoded as
//! id 0 (`!`) rather than 256 (`!</w>`), unlike open_clip.
//!
//! Sequences are `[BOS, tokens..., EOS, PAD...]`, `max_length` long (77 for CLIP); a text that
//! is too long keeps its first `max_length - 2` tokens (transformers' `truncation=True`).

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use serde_json::{Map, Value};
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::{Merges, Vocab, BPE};
use tokenizers::normalizers::replace::ReplacePattern;
use tokenizers::normalizers::{Lowercase, Replace, Sequence as NormalizerSequence, NFC};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence as PreTokenizerSequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::processors::roberta::RobertaProcessing;
use tokenizers::{AddedToken, SplitDelimiterBehavior, Tokenizer};

use crate::error::{ModelError, Result};

/// CLIP's context length: the number of ids of every encoded text.
pub const CLIP_MAX_LENGTH: usize = 77;

/// CLIP's beginning-of-text token.
pub const CLIP_BOS_TOKEN: &str = "<|startoftext|>";

/// CLIP's end-of-text token (also its unknown token, and SDXL tokenizer 1's pad token).
pub const CLIP_EOS_TOKEN: &str = "<|endoftext|>";

/// The pre-tokenization pattern of CLIP (transformers' `CLIPTokenizer`, open_clip's `SimpleTokenizer`).
const CLIP_SPLIT_PATTERN: &str =
    r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+";

/// open_clip's merges file, gzipped (MIT, OpenAI CLIP).
const BUNDLED_BPE_GZ: &[u8] = include_bytes!("../../assets/bpe_simple_vocab_16e6.txt.gz");

/// The path shown in errors about the bundled vocabulary.
const BUNDLED_PATH: &str = "<bundled CLIP vocabulary bpe_simple_vocab_16e6.txt.gz>";

/// Number of merges CLIP uses from the bundled file (open_clip: `lines[1 : 49152-256-2+1]`).
const BUNDLED_MERGES: usize = 49152 - 256 - 2;

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

/// A CLIP BPE tokenizer producing fixed-length id sequences, identical to transformers'
/// `CLIPTokenizer(text, padding="max_length", max_length=77, truncation=True)`.
#[derive(Clone)]
pub struct ClipTokenizer {
    tokenizer: Tokenizer,
    source: PathBuf,
    pad_token: String,
    pad_id: u32,
    bos_id: u32,
    eos_id: u32,
    max_length: usize,
}

impl std::fmt::Debug for ClipTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClipTokenizer")
            .field("source", &self.source)
            .field("vocab_size", &self.vocab_size())
            .field("pad_token", &self.pad_token)
            .field("pad_id", &self.pad_id)
            .field("bos_id", &self.bos_id)
            .field("eos_id", &self.eos_id)
            .field("max_length", &self.max_length)
            .finish()
    }
}

impl ClipTokenizer {
    /// From a diffusers `tokenizer/` or `tokenizer_2/` folder.
    ///
    /// The vocabulary comes from `tokenizer.json` when present (transformers 5 may write only
    /// that, and transformers prefers it), else from `vocab.json` + `merges.txt`. The special
    /// tokens (pad/bos/eos/unk) and `model_max_length` come from `tokenizer_config.json`,
    /// `special_tokens_map.json` and the `added_tokens` of `tokenizer.json`, resolved as
    /// transformers' `from_pretrained` does; a missing `model_max_length` (or transformers'
    /// "very large" placeholder) means 77.
    pub fn from_folder(dir: &Path) -> Result<Self> {
        if !dir.is_dir() {
            return Err(ModelError::MissingFile {
                path: dir.to_path_buf(),
                what: "tokenizer folder (vocab.json + merges.txt, or tokenizer.json)".into(),
            });
        }
        let config_path = dir.join("tokenizer_config.json");
        let map_path = dir.join("special_tokens_map.json");
        let json_path = dir.join("tokenizer.json");
        let vocab_path = dir.join("vocab.json");
        let merges_path = dir.join("merges.txt");

        let config = read_json_object(&config_path, false)?.unwrap_or_default();
        let special_map = read_json_object(&map_path, false)?;
        let tokenizer_json = read_json_object(&json_path, false)?;

        let (vocab, merges) = if let Some(json) = &tokenizer_json {
            log::debug!("reading the CLIP vocabulary from {}", json_path.display());
            vocab_merges_from_tokenizer_json(json, &json_path)?
        } else if vocab_path.is_file() {
            if !merges_path.is_file() {
                return Err(ModelError::MissingFile {
                    path: merges_path,
                    what: "BPE merges of the CLIP tokenizer".into(),
                });
            }
            log::debug!(
                "reading the CLIP vocabulary from {} and {}",
                vocab_path.display(),
                merges_path.display()
            );
            (
                read_vocab_json(&vocab_path)?,
                read_merges_txt(&merges_path)?,
            )
        } else {
            return Err(ModelError::MissingFile {
                path: vocab_path,
                what: "CLIP vocabulary (vocab.json + merges.txt, or tokenizer.json)".into(),
            });
        };

        let specials = resolve_special_tokens(
            &config,
            special_map.as_ref(),
            tokenizer_json.as_ref(),
            &config_path,
        )?;
        let max_length = match config.get("model_max_length") {
            None | Some(Value::Null) => CLIP_MAX_LENGTH,
            Some(Value::Number(n)) => match n.as_u64() {
                Some(n) if n <= 1_000_000 => n as usize,
                // transformers' VERY_LARGE_INTEGER (int(1e30)) or a float: "no limit" => CLIP's.
                _ => CLIP_MAX_LENGTH,
            },
            Some(other) => {
                return Err(tokenizer_error(
                    &config_path,
                    format!("model_max_length is not a number: {other}"),
                ))
            }
        };
        Self::build(vocab, merges, specials, max_length, dir.to_path_buf())
    }

    /// The standard CLIP vocabulary bundled in the crate (open_clip's `bpe_simple_vocab_16e6`,
    /// 49408 tokens), for single-file checkpoints that ship no tokenizer, padding with `pad_token`:
    /// SDXL's tokenizer 1 pads with `"<|endoftext|>"`, tokenizer 2 with `"!"`.
    ///
    /// The special tokens are flagged as in SDXL's published tokenizer configurations
    /// (bos/eos/unk normalized, the pad token given as a plain string), so the result matches
    /// `CLIPTokenizer.from_pretrained` on those folders.
    pub fn bundled(pad_token: &str) -> Result<Self> {
        let (vocab, merges) = bundled_vocab_merges()?;
        let named = |content: &str| {
            AddedToken::from(content, true)
                .normalized(true)
                .single_word(false)
                .lstrip(false)
                .rstrip(false)
        };
        let specials = SpecialTokens {
            named: vec![
                ("bos_token", named(CLIP_BOS_TOKEN)),
                ("eos_token", named(CLIP_EOS_TOKEN)),
                ("unk_token", named(CLIP_EOS_TOKEN)),
                ("pad_token", string_token(pad_token)),
            ],
            extra: Vec::new(),
        };
        Self::build(
            vocab,
            merges,
            specials,
            CLIP_MAX_LENGTH,
            PathBuf::from(BUNDLED_PATH),
        )
    }

    fn build(
        vocab: Vocab,
        merges: Merges,
        specials: SpecialTokens,
        max_length: usize,
        source: PathBuf,
    ) -> Result<Self> {
        if max_length < 2 {
            return Err(tokenizer_error(
                &source,
                format!("model_max_length {max_length} leaves no room for BOS and EOS"),
            ));
        }
        let err = |e: tokenizers::Error| tokenizer_error(&source, e.to_string());
        let unk = specials.get("unk_token").content.clone();
        let bpe = BPE::builder()
            .vocab_and_merges(vocab, merges)
            .unk_token(unk)
            .continuing_subword_prefix(String::new())
            .end_of_word_suffix("</w>".into())
            .fuse_unk(false)
            .build()
            .map_err(err)?;
        let mut tokenizer = Tokenizer::new(bpe);

        let normalizer = NormalizerSequence::new(vec![
            NFC.into(),
            Replace::new(ReplacePattern::Regex(r"\s+".into()), " ")
                .map_err(err)?
                .into(),
            Lowercase.into(),
        ]);
        let pre_tokenizer = PreTokenizerSequence::new(vec![
            Split::new(
                SplitPattern::Regex(CLIP_SPLIT_PATTERN.into()),
                SplitDelimiterBehavior::Removed,
                true,
            )
            .map_err(err)?
            .into(),
            // Python's ByteLevel(add_prefix_space=False): trim_offsets and use_regex default to true.
            ByteLevel::new(false, true, true).into(),
        ]);
        tokenizer.with_normalizer(Some(normalizer));
        tokenizer.with_pre_tokenizer(Some(pre_tokenizer));
        tokenizer.with_decoder(Some(ByteLevelDecoder::default()));

        // transformers adds `added_tokens_decoder` (by id), then every named special token in
        // order; with tokenizers 0.23 (Python) re-adding a content with other flags replaces
        // it, while tokenizers 0.22 keeps the first special one: add each content once, with
        // its last flags.
        let mut extra = specials.extra.clone();
        extra.sort_by_key(|(id, _)| *id);
        let mut added: Vec<AddedToken> = Vec::new();
        let all = extra.into_iter().map(|(_, t)| t);
        for token in all.chain(specials.named.iter().map(|(_, t)| t.clone())) {
            match added.iter_mut().find(|t| t.content == token.content) {
                Some(previous) => *previous = token,
                None => added.push(token),
            }
        }
        tokenizer.add_tokens(&added);

        let id_of = |key: &str| -> Result<(String, u32)> {
            let content = specials.get(key).content.clone();
            let id = tokenizer
                .token_to_id(&content)
                .ok_or_else(|| tokenizer_error(&source, format!("{key} {content:?} has no id")))?;
            Ok((content, id))
        };
        let (bos, bos_id) = id_of("bos_token")?;
        let (eos, eos_id) = id_of("eos_token")?;
        let (pad_token, pad_id) = id_of("pad_token")?;
        tokenizer.with_post_processor(Some(
            RobertaProcessing::new((eos, eos_id), (bos, bos_id))
                .trim_offsets(false)
                .add_prefix_space(false),
        ));
        log::debug!(
            "CLIP tokenizer from {}: {} tokens, bos {bos_id}, eos {eos_id}, pad {pad_token:?} = {pad_id}, max_length {max_length}",
            source.display(),
            tokenizer.get_vocab_size(true),
        );
        Ok(Self {
            tokenizer,
            source,
            pad_token,
            pad_id,
            bos_id,
            eos_id,
            max_length,
        })
    }

    /// Ids of `text` with BOS and EOS, neither truncated nor padded: `[BOS, tokens..., EOS]`.
    pub fn encode_unpadded(&self, text: &str) -> Result<Vec<u32>> {
        let encoding = self
            .tokenizer
            .encode(text, true)
            .map_err(|e| tokenizer_error(&self.source, format!("cannot encode {text:?}: {e}")))?;
        Ok(encoding.get_ids().to_vec())
    }

    /// Ids padded/truncated to [`max_length`](Self::max_length) (77):
    /// `[BOS, tokens..., EOS, PAD...]`. When the text is too long, it is truncated to
    /// `max_length - 2` tokens + EOS (as transformers with `truncation=True`) and a warning
    /// says how many tokens were dropped.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let mut ids = self.encode_unpadded(text)?;
        if ids.len() > self.max_length {
            let dropped = ids.len() - self.max_length;
            log::warn!(
                "prompt too long for CLIP ({} tokens, at most {}): the last {dropped} token(s) were dropped from {:?}",
                ids.len() - 2,
                self.max_length - 2,
                text
            );
            ids.truncate(self.max_length - 1);
            ids.push(self.eos_id);
        }
        ids.resize(self.max_length, self.pad_id);
        Ok(ids)
    }

    /// [`encode`](Self::encode) for several texts.
    pub fn encode_batch(&self, texts: &[&str]) -> Result<Vec<Vec<u32>>> {
        texts.iter().map(|text| self.encode(text)).collect()
    }

    /// Id of the pad token (49407 for SDXL tokenizer 1, 0 for tokenizer 2).
    pub fn pad_id(&self) -> u32 {
        self.pad_id
    }

    /// The pad token (`"<|endoftext|>"` or `"!"` for SDXL).
    pub fn pad_token(&self) -> &str {
        &self.pad_token
    }

    /// Id of `<|startoftext|>` (49406).
    pub fn bos_id(&self) -> u32 {
        self.bos_id
    }

    /// Id of `<|endoftext|>` (49407).
    pub fn eos_id(&self) -> u32 {
        self.eos_id
    }

    /// Length of every encoded sequence (77).
    pub fn max_length(&self) -> usize {
        self.max_length
    }

    /// Number of tokens, added tokens included (49408 for CLIP).
    pub fn vocab_size(&self) -> usize {
        self.tokenizer.get_vocab_size(true)
    }

    /// Id of a token string (e.g. `"cat</w>"`), if known.
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.tokenizer.token_to_id(token)
    }

    /// Token string of an id, if known.
    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.tokenizer.id_to_token(id)
    }

    /// The underlying `tokenizers` pipeline.
    pub fn inner(&self) -> &Tokenizer {
        &self.tokenizer
    }
}

/// Named special tokens (in [`SPECIAL_KEYS`] order) and other added tokens (by id).
struct SpecialTokens {
    named: Vec<(&'static str, AddedToken)>,
    extra: Vec<(u64, AddedToken)>,
}

impl SpecialTokens {
    /// The token named `key`; bos/eos/unk/pad always exist.
    fn get(&self, key: &str) -> &AddedToken {
        self.named
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, t)| t)
            .expect("bos/eos/unk/pad are always resolved")
    }
}

fn tokenizer_error(path: &Path, message: impl Into<String>) -> ModelError {
    ModelError::Tokenizer {
        path: path.to_path_buf(),
        message: message.into(),
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
fn resolve_special_tokens(
    config: &Map<String, Value>,
    special_map: Option<&Map<String, Value>>,
    tokenizer_json: Option<&Map<String, Value>>,
    config_path: &Path,
) -> Result<SpecialTokens> {
    // Values of tokenizer_config.json (dicts with "__type": "AddedToken" => AddedToken(**dict)).
    let mut values: HashMap<&'static str, AddedToken> = HashMap::new();
    for key in SPECIAL_KEYS {
        if let Some(v) = config.get(key) {
            if let Some(t) = token_from_config_value(v, None, key, config_path)? {
                values.insert(key, t);
            }
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
                            ))
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

/// Reads a JSON object; `Ok(None)` when the file is absent (unless `required`).
fn read_json_object(path: &Path, required: bool) -> Result<Option<Map<String, Value>>> {
    if !path.is_file() {
        if required {
            return Err(ModelError::MissingFile {
                path: path.to_path_buf(),
                what: "JSON file".into(),
            });
        }
        return Ok(None);
    }
    let text = std::fs::read_to_string(path).map_err(|e| ModelError::io(path, e))?;
    match serde_json::from_str::<Value>(&text) {
        Ok(Value::Object(map)) => Ok(Some(map)),
        Ok(_) => Err(tokenizer_error(path, "not a JSON object")),
        Err(e) => Err(tokenizer_error(path, format!("invalid JSON: {e}"))),
    }
}

/// `vocab.json`: `{token: id}` (as `tokenizers`' `BPE::read_file`).
fn read_vocab_json(path: &Path) -> Result<Vocab> {
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
fn read_merges_txt(path: &Path) -> Result<Merges> {
    let text = std::fs::read_to_string(path).map_err(|e| ModelError::io(path, e))?;
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
                ))
            }
        }
    }
    Ok(merges)
}

/// Vocabulary and merges of a `tokenizer.json` BPE model.
fn vocab_merges_from_tokenizer_json(
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
            ))
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

/// GPT-2/CLIP's reversible byte -> unicode map, in open_clip's `bytes_to_unicode()` order.
fn bytes_to_unicode() -> Vec<(u8, char)> {
    let mut printable: Vec<u32> = ('!' as u32..='~' as u32)
        .chain('¡' as u32..='¬' as u32)
        .chain('®' as u32..='ÿ' as u32)
        .collect();
    let mut chars: Vec<u32> = printable.clone();
    let mut n = 0;
    for b in 0..256u32 {
        if !printable.contains(&b) {
            printable.push(b);
            chars.push(256 + n);
            n += 1;
        }
    }
    printable
        .into_iter()
        .zip(chars)
        .map(|(b, c)| (b as u8, char::from_u32(c).expect("valid code point")))
        .collect()
}

/// The bundled merges file, gunzipped once.
fn bundled_text() -> Result<&'static str> {
    static TEXT: OnceLock<std::result::Result<String, String>> = OnceLock::new();
    TEXT.get_or_init(|| {
        let mut text = String::new();
        flate2::read::GzDecoder::new(BUNDLED_BPE_GZ)
            .read_to_string(&mut text)
            .map(|_| text)
            .map_err(|e| format!("cannot gunzip: {e}"))
    })
    .as_deref()
    .map_err(|e| tokenizer_error(Path::new(BUNDLED_PATH), e.clone()))
}

/// Vocabulary and merges exactly as open_clip's `SimpleTokenizer` builds them: bytes, bytes +
/// `</w>`, the first 48894 merges joined, `<|startoftext|>`, `<|endoftext|>` (49408 tokens).
fn bundled_vocab_merges() -> Result<(Vocab, Merges)> {
    let path = Path::new(BUNDLED_PATH);
    let text = bundled_text()?;
    let lines: Vec<&str> = text.split('\n').collect();
    if lines.len() < BUNDLED_MERGES + 1 {
        return Err(tokenizer_error(
            path,
            format!(
                "{} lines, expected at least {}",
                lines.len(),
                BUNDLED_MERGES + 1
            ),
        ));
    }
    let mut merges = Vec::with_capacity(BUNDLED_MERGES);
    for (n, line) in lines[1..=BUNDLED_MERGES].iter().enumerate() {
        match line.split_whitespace().collect::<Vec<_>>()[..] {
            [a, b] => merges.push((a.to_string(), b.to_string())),
            _ => {
                return Err(tokenizer_error(
                    path,
                    format!("line {}: not a merge: {line:?}", n + 2),
                ))
            }
        }
    }
    let byte_chars: Vec<String> = bytes_to_unicode()
        .into_iter()
        .map(|(_, c)| c.to_string())
        .collect();
    let tokens = byte_chars
        .iter()
        .cloned()
        .chain(byte_chars.iter().map(|c| format!("{c}</w>")))
        .chain(merges.iter().map(|(a, b)| format!("{a}{b}")))
        .chain([CLIP_BOS_TOKEN.to_string(), CLIP_EOS_TOKEN.to_string()]);
    let mut vocab = Vocab::default();
    for (id, token) in tokens.enumerate() {
        vocab.insert(token, id as u32);
    }
    Ok((vocab, merges))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_map_is_a_bijection() {
        let map = bytes_to_unicode();
        assert_eq!(map.len(), 256);
        assert_eq!(map[0], (b'!', '!'));
        let mut bytes: Vec<u8> = map.iter().map(|(b, _)| *b).collect();
        bytes.sort_unstable();
        bytes.dedup();
        assert_eq!(bytes.len(), 256);
        assert!(map.iter().any(|&(b, c)| b == b' ' && c == 'Ġ'));
    }

    #[test]
    fn bundled_vocabulary_has_clip_size() {
        let (vocab, merges) = bundled_vocab_merges().unwrap();
        assert_eq!(merges.len(), BUNDLED_MERGES);
        assert_eq!(vocab.len(), 49408);
        assert_eq!(vocab["!"], 0);
        assert_eq!(vocab["!</w>"], 256);
        assert_eq!(vocab[CLIP_BOS_TOKEN], 49406);
        assert_eq!(vocab[CLIP_EOS_TOKEN], 49407);
    }
}
