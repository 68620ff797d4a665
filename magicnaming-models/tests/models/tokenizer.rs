//! CLIP tokenizer against transformers 5 (`CLIPTokenizer`) and open_clip ids.
//!
//! Fixtures: `tests/fixtures/text/tokens.json` (made by `tools/reference/make_text_fixtures.py`)
//! and the `tiny-sdxl/tokenizer{,_2}/` folders written by transformers' `save_pretrained`.
use std::path::{Path, PathBuf};
use std::sync::{Mutex, Once};

use magicnaming_models::ModelError;
use magicnaming_models::clip::tokenizer::{CLIP_MAX_LENGTH, ClipTokenizer};
use serde_json::Value;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/text");

fn fixtures() -> PathBuf {
    PathBuf::from(FIXTURES)
}

/// One text of tokens.json with its reference ids.
struct Case {
    text: String,
    tok1: Vec<u32>,
    tok2: Vec<u32>,
    open_clip: Vec<u32>,
    untruncated_length: Option<usize>,
}

fn ids(value: &Value) -> Vec<u32> {
    value
        .as_array()
        .expect("id list")
        .iter()
        .map(|v| v.as_u64().expect("id") as u32)
        .collect()
}

/// Every prompt and name of tokens.json.
fn cases() -> Vec<Case> {
    let path = fixtures().join("tokens.json");
    let text = std::fs::read_to_string(&path).expect("tokens.json");
    let json: Value = serde_json::from_str(&text).expect("tokens.json is JSON");
    assert_eq!(json["max_length"].as_u64(), Some(CLIP_MAX_LENGTH as u64));
    let mut cases = Vec::new();
    for key in ["prompts", "names"] {
        for entry in json[key].as_array().into_iter().flatten() {
            cases.push(Case {
                text: entry["text"].as_str().expect("text").to_string(),
                tok1: ids(&entry["tok1"]),
                tok2: ids(&entry["tok2"]),
                open_clip: ids(&entry["open_clip"]),
                untruncated_length: entry["untruncated_length"].as_u64().map(|n| n as usize),
            });
        }
    }
    assert!(cases.len() >= 9, "too few fixture texts: {}", cases.len());
    cases
}

fn tokenizer_dir(name: &str) -> PathBuf {
    fixtures().join("tiny-sdxl").join(name)
}

/// Ids up to and including the first EOS.
fn up_to_eos(ids: &[u32], eos: u32) -> &[u32] {
    let end = ids.iter().position(|&id| id == eos).expect("EOS");
    &ids[..=end]
}

/// Asserts `tokenizer` gives `expected(case)` for every case.
fn check_all(tokenizer: &ClipTokenizer, label: &str, expected: impl Fn(&Case) -> &[u32]) {
    let cases = cases();
    let mut failures = Vec::new();
    for case in &cases {
        let got = tokenizer.encode(&case.text).expect("encode");
        assert_eq!(got.len(), CLIP_MAX_LENGTH);
        if got != expected(case) {
            failures.push(format!(
                "{:?}\n  got      {:?}\n  expected {:?}",
                case.text,
                got,
                expected(case)
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{label}: {} of {} texts differ:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    let texts: Vec<&str> = cases.iter().map(|c| c.text.as_str()).collect();
    let batch = tokenizer.encode_batch(&texts).expect("encode_batch");
    for (case, got) in cases.iter().zip(&batch) {
        assert_eq!(
            got.as_slice(),
            expected(case),
            "{label} batch: {:?}",
            case.text
        );
    }
}

#[test]
fn folder_tokenizer_matches_transformers() {
    let tok = ClipTokenizer::from_folder(&tokenizer_dir("tokenizer")).unwrap();
    assert_eq!(
        (tok.bos_id(), tok.eos_id(), tok.pad_id()),
        (49406, 49407, 49407)
    );
    assert_eq!(tok.max_length(), 77);
    assert_eq!(tok.vocab_size(), 49408);
    check_all(&tok, "tokenizer/", |c| &c.tok1);
}

#[test]
fn folder_tokenizer_2_matches_transformers() {
    let tok = ClipTokenizer::from_folder(&tokenizer_dir("tokenizer_2")).unwrap();
    assert_eq!(
        (tok.bos_id(), tok.eos_id(), tok.pad_id()),
        (49406, 49407, 0)
    );
    assert_eq!(tok.pad_token(), "!");
    assert_eq!(tok.max_length(), 77);
    assert_eq!(tok.vocab_size(), 49408);
    check_all(&tok, "tokenizer_2/", |c| &c.tok2);
}

#[test]
fn bundled_vocabulary_matches_transformers() {
    let tok1 = ClipTokenizer::bundled("<|endoftext|>").unwrap();
    assert_eq!(
        (
            tok1.bos_id(),
            tok1.eos_id(),
            tok1.pad_id(),
            tok1.vocab_size()
        ),
        (49406, 49407, 49407, 49408)
    );
    check_all(&tok1, "bundled(<|endoftext|>)", |c| &c.tok1);
    let tok2 = ClipTokenizer::bundled("!").unwrap();
    assert_eq!(
        (
            tok2.bos_id(),
            tok2.eos_id(),
            tok2.pad_id(),
            tok2.vocab_size()
        ),
        (49406, 49407, 0, 49408)
    );
    check_all(&tok2, "bundled(!)", |c| &c.tok2);
}

/// Against open_clip, wherever transformers and open_clip agree up to EOS (they disagree on
/// `!` for tokenizer 2, whose pad token `!` is a special token in transformers).
#[test]
fn matches_open_clip_where_transformers_agrees() {
    let folder1 = ClipTokenizer::from_folder(&tokenizer_dir("tokenizer")).unwrap();
    let folder2 = ClipTokenizer::from_folder(&tokenizer_dir("tokenizer_2")).unwrap();
    let bundled1 = ClipTokenizer::bundled("<|endoftext|>").unwrap();
    let bundled2 = ClipTokenizer::bundled("!").unwrap();
    let eos = 49407;
    let mut compared = 0;
    for case in cases() {
        let open_clip = up_to_eos(&case.open_clip, eos);
        for (reference, toks) in [
            (&case.tok1, [&folder1, &bundled1]),
            (&case.tok2, [&folder2, &bundled2]),
        ] {
            if up_to_eos(reference, eos) != open_clip {
                continue;
            }
            for tok in toks {
                let got = tok.encode(&case.text).unwrap();
                assert_eq!(up_to_eos(&got, eos), open_clip, "{:?}", case.text);
                compared += 1;
            }
        }
    }
    assert!(
        compared >= 4 * 7,
        "only {compared} comparisons with open_clip"
    );
}

/// vocab.json + merges.txt alone and tokenizer.json alone give the same ids as the full folder.
#[test]
fn vocab_files_and_tokenizer_json_alone_agree() {
    for (name, pad) in [("tokenizer", 49407), ("tokenizer_2", 0)] {
        let src = tokenizer_dir(name);
        let only_vocab = tempfile::tempdir().unwrap();
        let only_json = tempfile::tempdir().unwrap();
        for file in [
            "vocab.json",
            "merges.txt",
            "tokenizer_config.json",
            "special_tokens_map.json",
        ] {
            std::fs::copy(src.join(file), only_vocab.path().join(file)).unwrap();
        }
        for file in ["tokenizer.json", "tokenizer_config.json"] {
            std::fs::copy(src.join(file), only_json.path().join(file)).unwrap();
        }
        let a = ClipTokenizer::from_folder(only_vocab.path()).unwrap();
        let b = ClipTokenizer::from_folder(only_json.path()).unwrap();
        assert_eq!((a.pad_id(), b.pad_id()), (pad, pad), "{name}");
        for case in cases() {
            let expected = if name == "tokenizer" {
                &case.tok1
            } else {
                &case.tok2
            };
            assert_eq!(
                &a.encode(&case.text).unwrap(),
                expected,
                "{name} vocab.json: {:?}",
                case.text
            );
            assert_eq!(
                &b.encode(&case.text).unwrap(),
                expected,
                "{name} tokenizer.json: {:?}",
                case.text
            );
        }
    }
}

/// Whitespace runs, leading and trailing whitespace are dropped as transformers drops them.
#[test]
fn whitespace_is_collapsed_and_stripped() {
    let tok = ClipTokenizer::bundled("!").unwrap();
    let plain = tok.encode("a red fox").unwrap();
    for text in [
        "  a red fox  ",
        "a\tred\n\nfox",
        "\u{a0}a  red\u{3000}fox\r\n",
    ] {
        assert_eq!(tok.encode(text).unwrap(), plain, "{text:?}");
    }
}

/// Texts beyond tokens.json, with (unpadded) ids from transformers 5.24 `CLIPTokenizer.from_pretrained`
/// on: the fixture `tokenizer/`, the fixture `tokenizer_2/`, and folders configured like SDXL's
/// published ones (bos/eos/unk as normalized `AddedToken` dicts, the pad token a plain string),
/// which `bundled` reproduces: there `<|endoftext|>` is a normalized added token for tokenizer 2,
/// so `<|ENDOFTEXT|>` matches it, and an unnormalized one for tokenizer 1 (its pad token).
#[rustfmt::skip]
const EDGE_CASES: &[(&str, [&[u32]; 4])] = &[
    ("Hi!!", [&[49406, 1883, 748, 49407], &[49406, 1883, 0, 0, 49407], &[49406, 1883, 748, 49407], &[49406, 1883, 0, 0, 49407]]),
    ("<|ENDOFTEXT|> x", [&[49406, 27, 347, 40786, 4160, 91, 285, 343, 49407], &[49406, 27, 347, 40786, 4160, 91, 285, 343, 49407], &[49406, 27, 347, 40786, 4160, 91, 285, 343, 49407], &[49406, 49407, 343, 49407]]),
    ("it\u{2019}s \u{201c}quoted\u{201d}", [&[49406, 585, 728, 503, 338, 728, 506, 27706, 728, 507, 49407], &[49406, 585, 728, 503, 338, 728, 506, 27706, 728, 507, 49407], &[49406, 585, 728, 503, 338, 728, 506, 27706, 728, 507, 49407], &[49406, 585, 728, 503, 338, 728, 506, 27706, 728, 507, 49407]]),
    ("a\u{1c}b\u{1d}c\u{1e}d\u{1f}f", [&[49406, 320, 472, 321, 473, 322, 474, 323, 475, 325, 49407], &[49406, 320, 472, 321, 473, 322, 474, 323, 475, 325, 49407], &[49406, 320, 472, 321, 473, 322, 474, 323, 475, 325, 49407], &[49406, 320, 472, 321, 473, 322, 474, 323, 475, 325, 49407]]),
    ("a\u{2028}b\u{85}c", [&[49406, 320, 321, 322, 49407], &[49406, 320, 321, 322, 49407], &[49406, 320, 321, 322, 49407], &[49406, 320, 321, 322, 49407]]),
    ("\u{130}stanbul", [&[49406, 328, 16384, 11231, 49407], &[49406, 328, 16384, 11231, 49407], &[49406, 328, 16384, 11231, 49407], &[49406, 328, 16384, 11231, 49407]]),
    ("e\u{301}", [&[49406, 4166, 49407], &[49406, 4166, 49407], &[49406, 4166, 49407], &[49406, 4166, 49407]]),
    ("\u{fb01} ligature \u{ff21}", [&[49406, 171, 105, 479, 19915, 4490, 171, 121, 479, 49407], &[49406, 171, 105, 479, 19915, 4490, 171, 121, 479, 49407], &[49406, 171, 105, 479, 19915, 4490, 171, 121, 479, 49407], &[49406, 171, 105, 479, 19915, 4490, 171, 121, 479, 49407]]),
    ("\u{1f468}\u{200d}\u{1f469}\u{200d}\u{1f467}\u{200d}\u{1f466} family", [&[49406, 25023, 26304, 48938, 4244, 964, 355, 1315, 49407], &[49406, 25023, 26304, 48938, 4244, 964, 355, 1315, 49407], &[49406, 25023, 26304, 48938, 4244, 964, 355, 1315, 49407], &[49406, 25023, 26304, 48938, 4244, 964, 355, 1315, 49407]]),
];

#[test]
fn edge_cases_match_transformers() {
    let tokenizers = [
        ClipTokenizer::from_folder(&tokenizer_dir("tokenizer")).unwrap(),
        ClipTokenizer::from_folder(&tokenizer_dir("tokenizer_2")).unwrap(),
        ClipTokenizer::bundled("<|endoftext|>").unwrap(),
        ClipTokenizer::bundled("!").unwrap(),
    ];
    for (text, expected) in EDGE_CASES {
        for (k, (tok, expected)) in tokenizers.iter().zip(expected).enumerate() {
            assert_eq!(
                tok.encode_unpadded(text).unwrap(),
                *expected,
                "tokenizer {k}: {text:?}"
            );
            let got = tok.encode(text).unwrap();
            assert_eq!(&got[..expected.len()], *expected, "tokenizer {k}: {text:?}");
            assert!(got[expected.len()..].iter().all(|&id| id == tok.pad_id()));
        }
    }
}

/// Records warnings so that the truncation message can be checked.
struct Recorder(Mutex<Vec<String>>);

impl log::Log for Recorder {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        metadata.level() <= log::Level::Warn
    }
    fn log(&self, record: &log::Record) {
        if self.enabled(record.metadata()) {
            self.0.lock().unwrap().push(record.args().to_string());
        }
    }
    fn flush(&self) {}
}

static RECORDER: Recorder = Recorder(Mutex::new(Vec::new()));

fn warnings() -> &'static Mutex<Vec<String>> {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        log::set_logger(&RECORDER).expect("logger");
        log::set_max_level(log::LevelFilter::Warn);
    });
    &RECORDER.0
}

#[test]
fn long_prompt_is_truncated_with_a_warning() {
    let warnings = warnings();
    let tok = ClipTokenizer::bundled("<|endoftext|>").unwrap();
    let case = cases()
        .into_iter()
        .find(|c| c.untruncated_length.is_some_and(|n| n > CLIP_MAX_LENGTH))
        .expect("a prompt longer than 77 tokens in tokens.json");
    let full = tok.encode_unpadded(&case.text).unwrap();
    assert_eq!(Some(full.len()), case.untruncated_length);
    let dropped = full.len() - CLIP_MAX_LENGTH;

    let ids = tok.encode(&case.text).unwrap();
    assert_eq!(ids, case.tok1);
    assert_eq!(&ids[..76], &full[..76]);
    assert_eq!(ids[76], tok.eos_id());

    let messages = warnings.lock().unwrap();
    assert!(
        messages
            .iter()
            .any(|m| m.contains(&format!("last {dropped} token(s) were dropped"))),
        "no truncation warning naming {dropped} dropped tokens in {messages:?}"
    );
}

fn message(err: ModelError) -> String {
    err.to_string()
}

#[test]
fn missing_folder_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no_such_tokenizer");
    let err = message(ClipTokenizer::from_folder(&missing).unwrap_err());
    assert!(err.contains(&missing.display().to_string()), "{err}");
    assert!(err.contains("missing"), "{err}");
}

#[test]
fn folder_without_vocabulary_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("tokenizer_config.json"),
        r#"{"model_max_length": 77}"#,
    )
    .unwrap();
    let err = message(ClipTokenizer::from_folder(dir.path()).unwrap_err());
    assert!(err.contains(&dir.path().display().to_string()), "{err}");
    assert!(err.contains("vocab.json"), "{err}");

    // vocab.json without merges.txt
    std::fs::write(dir.path().join("vocab.json"), r#"{"a": 0}"#).unwrap();
    let err = message(ClipTokenizer::from_folder(dir.path()).unwrap_err());
    assert!(
        err.contains(&dir.path().join("merges.txt").display().to_string()),
        "{err}"
    );
}

#[test]
fn corrupt_vocab_json_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        tokenizer_dir("tokenizer").join("merges.txt"),
        dir.path().join("merges.txt"),
    )
    .unwrap();
    let vocab = dir.path().join("vocab.json");
    std::fs::write(&vocab, r#"{"a": 0, "b": "#).unwrap();
    let err = message(ClipTokenizer::from_folder(dir.path()).unwrap_err());
    assert!(err.contains(&vocab.display().to_string()), "{err}");
    assert!(
        err.contains("tokenizer") && err.contains("invalid JSON"),
        "{err}"
    );
}

#[test]
fn corrupt_tokenizer_json_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let path: &Path = &dir.path().join("tokenizer.json");
    std::fs::write(path, r#"{"model": {"type": "WordPiece", "vocab": {}}}"#).unwrap();
    let err = message(ClipTokenizer::from_folder(dir.path()).unwrap_err());
    assert!(err.contains(&path.display().to_string()), "{err}");
    assert!(err.contains("BPE"), "{err}");
}
