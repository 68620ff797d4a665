//! [`ClipTokenizer`]: loading (a tokenizer folder, or the bundled vocabulary) and
//! fixed-length encoding.
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};
use tokenizers::Tokenizer;
use tokenizers::models::bpe::{Merges, Vocab};

use super::bundled::{BUNDLED_PATH, bundled_vocab_merges};
use super::files::{
    read_json_object, read_merges_txt, read_vocab_json, tokenizer_error,
    vocab_merges_from_tokenizer_json,
};
use super::pipeline::{Pipeline, build_pipeline};
use super::special_tokens::{SpecialTokens, resolve_special_tokens};
use crate::error::{ModelError, Result};

/// CLIP's context length: the number of ids of every encoded text.
pub const CLIP_MAX_LENGTH: usize = 77;

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
        let max_length = model_max_length(&config, &config_path)?;
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
        Self::build(
            vocab,
            merges,
            SpecialTokens::sdxl(pad_token),
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
        let Pipeline {
            tokenizer,
            pad_token,
            pad_id,
            bos_id,
            eos_id,
        } = build_pipeline(vocab, merges, &specials, &source)?;
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

/// `model_max_length` of `tokenizer_config.json`: CLIP's 77 when absent, null, or
/// transformers' "no limit" placeholder.
fn model_max_length(config: &Map<String, Value>, config_path: &Path) -> Result<usize> {
    Ok(match config.get("model_max_length") {
        None | Some(Value::Null) => CLIP_MAX_LENGTH,
        Some(Value::Number(n)) => match n.as_u64() {
            Some(n) if n <= 1_000_000 => n as usize,
            // transformers' VERY_LARGE_INTEGER (int(1e30)) or a float: "no limit" => CLIP's.
            _ => CLIP_MAX_LENGTH,
        },
        Some(other) => {
            return Err(tokenizer_error(
                config_path,
                format!("model_max_length is not a number: {other}"),
            ));
        }
    })
}
