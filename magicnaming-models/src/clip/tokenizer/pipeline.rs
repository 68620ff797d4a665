//! The `tokenizers` pipeline of CLIP: BPE model, text normalisation (NFC, collapsed
//! whitespace, lower case), pre-tokenization, the added special tokens and the
//! BOS/EOS post-processor.
use std::path::Path;

use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::{BPE, Merges, Vocab};
use tokenizers::normalizers::replace::ReplacePattern;
use tokenizers::normalizers::{Lowercase, NFC, Replace, Sequence as NormalizerSequence};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence as PreTokenizerSequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::processors::roberta::RobertaProcessing;
use tokenizers::{AddedToken, SplitDelimiterBehavior, Tokenizer};

use super::files::tokenizer_error;
use super::special_tokens::SpecialTokens;
use crate::error::Result;

/// The pre-tokenization pattern of CLIP (transformers' `CLIPTokenizer`, open_clip's `SimpleTokenizer`).
const CLIP_SPLIT_PATTERN: &str =
    r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+";

/// A built pipeline and the ids of its BOS, EOS and pad tokens.
pub(super) struct Pipeline {
    pub(super) tokenizer: Tokenizer,
    pub(super) pad_token: String,
    pub(super) pad_id: u32,
    pub(super) bos_id: u32,
    pub(super) eos_id: u32,
}

/// Builds the pipeline of `vocab` and `merges` with `specials` added; `source` names the
/// origin in errors.
pub(super) fn build_pipeline(
    vocab: Vocab,
    merges: Merges,
    specials: &SpecialTokens,
    source: &Path,
) -> Result<Pipeline> {
    let err = |e: tokenizers::Error| tokenizer_error(source, e.to_string());
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
            .ok_or_else(|| tokenizer_error(source, format!("{key} {content:?} has no id")))?;
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
    Ok(Pipeline {
        tokenizer,
        pad_token,
        pad_id,
        bos_id,
        eos_id,
    })
}
