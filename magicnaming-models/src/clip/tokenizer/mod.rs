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
//!
//! The files: `clip_tokenizer` (the tokenizer and its encoding), `pipeline` (the `tokenizers`
//! normalizer / pre-tokenizer / post-processor and the added tokens), `special_tokens` (resolving
//! the special-token maps), `files` (reading `vocab.json`, `merges.txt`, `tokenizer.json`) and
//! `bundled` (the vocabulary shipped in the crate).
mod bundled;
mod clip_tokenizer;
mod files;
mod pipeline;
mod special_tokens;

pub use self::clip_tokenizer::{CLIP_MAX_LENGTH, ClipTokenizer};
pub use self::special_tokens::{CLIP_BOS_TOKEN, CLIP_EOS_TOKEN};
