//! The standard CLIP vocabulary bundled in the crate (open_clip's `bpe_simple_vocab_16e6`),
//! rebuilt exactly as open_clip's `SimpleTokenizer` builds it.
use std::io::Read;
use std::path::Path;
use std::sync::OnceLock;

use tokenizers::models::bpe::{Merges, Vocab};

use super::files::tokenizer_error;
use super::special_tokens::{CLIP_BOS_TOKEN, CLIP_EOS_TOKEN};
use crate::error::Result;

/// open_clip's merges file, gzipped (MIT, OpenAI CLIP).
const BUNDLED_BPE_GZ: &[u8] = include_bytes!("../../../assets/bpe_simple_vocab_16e6.txt.gz");

/// The path shown in errors about the bundled vocabulary.
pub(super) const BUNDLED_PATH: &str = "<bundled CLIP vocabulary bpe_simple_vocab_16e6.txt.gz>";

/// Number of merges CLIP uses from the bundled file (open_clip: `lines[1 : 49152-256-2+1]`).
const BUNDLED_MERGES: usize = 49152 - 256 - 2;

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
pub(super) fn bundled_vocab_merges() -> Result<(Vocab, Merges)> {
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
                ));
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
