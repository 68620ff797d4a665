//! A fuzz harness on stable Rust: seeded mutations of the valid fixture files (bit flips,
//! byte overwrites, truncation, spliced and repeated slices, numbers made huge) fed to
//! every loader and decoder the crate owns or calls. Each input must give `Ok` or a named
//! error: no panic, and no allocation beyond a bound (the test binary's allocator refuses
//! a fuzzing thread more than [`ALLOC_BOUND`] live bytes, which aborts the run).
//!
//! CI runs [`CI_INPUTS`] inputs per loader; `MAGICNAMING_FUZZ_INPUTS=100000` runs more, and
//! `MAGICNAMING_FUZZ_SEED` another seed:
//! `MAGICNAMING_FUZZ_INPUTS=20000 cargo test --release -p magicnaming-models --test models fuzz:: -- --nocapture`.
use std::collections::BTreeSet;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

use super::common::B;
use magicnaming_models::clip::config::{ClipTextConfig, ClipVisionConfig};
use magicnaming_models::clip::image_processor::ClipImageProcessorConfig;
use magicnaming_models::clip::tokenizer::ClipTokenizer;
use magicnaming_models::face::iresnet::detect_config;
use magicnaming_models::image_file::{ImageLimits, decode_image_bytes, set_image_limits};
use magicnaming_models::name_encoder::NameEncoderConfig;
use magicnaming_models::schedulers::SchedulerConfig;
use magicnaming_models::train::read_manifest;
use magicnaming_models::unet::UNet2DConditionModelConfig;
use magicnaming_models::vae::AutoencoderKLConfig;
use magicnaming_models::weights::SafetensorsFile;
use magicnaming_models::weights::onnx::read_onnx_bytes;
use magicnaming_models::weights::torch_file::{read_torch_bytes, to_safetensors_bytes};
use magicnaming_models::{ModelError, Result};

/// Inputs per loader in CI (about 5 s for all of them on 2 cores).
pub const CI_INPUTS: usize = 3000;

/// Live bytes a fuzzing thread may hold: the fixtures are under 1 MB, and the image
/// limits below allow 128 MB decoded; anything past this is an input-driven allocation.
pub const ALLOC_BOUND: usize = 512 << 20;

fn inputs() -> usize {
    std::env::var("MAGICNAMING_FUZZ_INPUTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(CI_INPUTS)
}

fn seed() -> u64 {
    std::env::var("MAGICNAMING_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x6d61_6769_636e)
}

/// SplitMix64.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

const HUGE: [&[u8]; 6] = [
    b"4294967296",
    b"1000000000",
    b"18446744073709551615",
    b"-1",
    b"99999999999999999999999",
    b"0",
];

/// One to four mutations of `seed`.
fn mutate(seed: &[u8], rng: &mut Rng) -> Vec<u8> {
    let mut b = seed.to_vec();
    for _ in 0..1 + rng.below(4) {
        let n = b.len();
        match rng.below(7) {
            0 if n > 0 => {
                let i = rng.below(n);
                b[i] ^= 1 << rng.below(8);
            }
            1 if n > 0 => {
                let i = rng.below(n);
                b[i] = [0x00, 0xFF, 0x7F, 0x80, b'9', b'"', b'{'][rng.below(7)];
            }
            2 => b.truncate(rng.below(n + 1)),
            3 if n > 0 => {
                // Repeat a slice in place.
                let (i, len) = (rng.below(n), 1 + rng.below(64));
                let end = (i + len).min(n);
                let piece = b[i..end].to_vec();
                b.splice(i..i, piece);
            }
            4 if n > 0 => {
                // A run of digits (a size, an offset, a count) made huge.
                let start = rng.below(n);
                if let Some(p) = b[start..].iter().position(u8::is_ascii_digit) {
                    let i = start + p;
                    let end = i + b[i..].iter().take_while(|c| c.is_ascii_digit()).count();
                    b.splice(i..end, HUGE[rng.below(HUGE.len())].iter().copied());
                }
            }
            5 if n > 8 => {
                // A little-endian u32/u64 field made huge.
                let i = rng.below(n - 8);
                b[i..i + 4].copy_from_slice(&u32::MAX.to_le_bytes()[..4]);
            }
            _ if n > 0 => {
                let i = rng.below(n);
                b.insert(i, rng.next() as u8);
            }
            _ => b.push(rng.next() as u8),
        }
    }
    b
}

/// What one loader did with its inputs.
#[derive(Debug, Default)]
struct Tally {
    ok: usize,
    errors: usize,
    distinct: BTreeSet<String>,
    panics: Vec<String>,
}

/// The message with numbers and quoted names replaced, so that errors of one kind count once.
fn kind(message: &str) -> String {
    let mut out = String::new();
    let mut last_digit = false;
    for c in message.chars() {
        if c.is_ascii_digit() {
            if !last_digit {
                out.push('#');
            }
            last_digit = true;
        } else {
            out.push(c);
            last_digit = false;
        }
    }
    out.chars().take(120).collect()
}

/// Feeds [`inputs`] mutations of the seeds to `load`, on this thread under the allocation
/// bound.
fn fuzz(name: &str, seeds: &[Vec<u8>], load: &dyn Fn(&[u8]) -> Result<()>) -> Tally {
    fuzz_n(name, seeds, inputs(), load)
}

/// [`fuzz`] with `n` inputs.
fn fuzz_n(name: &str, seeds: &[Vec<u8>], n: usize, load: &dyn Fn(&[u8]) -> Result<()>) -> Tally {
    let mut rng = Rng(seed() ^ name.bytes().fold(0u64, |h, c| h.rotate_left(5) ^ c as u64));
    let mut tally = Tally::default();
    for s in seeds {
        // The seeds themselves load.
        load(s).unwrap_or_else(|e| panic!("{name}: a seed does not load: {e}"));
    }
    for i in 0..n {
        let input = mutate(&seeds[i % seeds.len()], &mut rng);
        let result = super::bounded(ALLOC_BOUND, || {
            catch_unwind(AssertUnwindSafe(|| load(&input)))
        });
        match result {
            Ok(Ok(())) => tally.ok += 1,
            Ok(Err(e)) => {
                tally.errors += 1;
                tally.distinct.insert(kind(&e.to_string()));
            }
            Err(p) => {
                let msg = p
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                let file = std::env::temp_dir().join(format!("magicnaming-fuzz-{name}-{i}.bin"));
                let _ = std::fs::write(&file, &input);
                tally
                    .panics
                    .push(format!("input {i} ({}): {msg}", file.display()));
            }
        }
    }
    eprintln!(
        "fuzz {name}: {n} inputs, {} ok, {} errors ({} distinct), {} panics",
        tally.ok,
        tally.errors,
        tally.distinct.len(),
        tally.panics.len()
    );
    tally
}

fn check(name: &str, tally: Tally) {
    assert!(
        tally.panics.is_empty(),
        "{name} panicked:\n{}",
        tally.panics.join("\n")
    );
    assert!(
        tally.errors > 0,
        "{name}: no mutation was refused (the mutator is broken)"
    );
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn read(rel: &str) -> Vec<u8> {
    std::fs::read(root().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn json(bytes: &[u8], path: &Path) -> Result<serde_json::Value> {
    serde_json::from_slice(bytes).map_err(|e| ModelError::config(path, e.to_string()))
}

#[test]
fn safetensors_files() {
    let seeds = vec![
        read("tests/fixtures/vision/tower-l/model.safetensors"),
        read("assets/tiny-encoder/head.safetensors"),
    ];
    let t = fuzz("safetensors", &seeds, &|b| {
        let f = SafetensorsFile::from_bytes("fuzz.safetensors", b.to_vec())?;
        let keys: Vec<String> = f.keys().map(str::to_string).collect();
        for k in keys {
            f.read_f32(&k)?;
        }
        Ok(())
    });
    check("safetensors", t);
    let t = fuzz("name embedding", &[name_seed()], &|b| {
        magicnaming_models::core::NameEmbedding::<B>::from_safetensors_bytes(
            b,
            Path::new("fuzz.safetensors"),
            &Default::default(),
        )?;
        Ok(())
    });
    check("name embedding", t);
}

/// A valid name file, written by the name type itself.
fn name_seed() -> Vec<u8> {
    use burn::tensor::Tensor;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("n.safetensors");
    let t = Tensor::<B, 2>::ones([8, 40], &Default::default());
    magicnaming_models::core::NameEmbedding::new(t, "fuzz seed")
        .unwrap()
        .save(&path)
        .unwrap();
    std::fs::read(path).unwrap()
}

#[test]
fn image_files() {
    // Tighter than the defaults, so that any image the limits let through fits the bound.
    set_image_limits(ImageLimits {
        max_pixels: 16_000_000,
        max_decoded_bytes: 128 << 20,
        ..ImageLimits::DEFAULT
    });
    let dir = root().join("tests/fixtures/vision/images");
    let seeds: Vec<Vec<u8>> = [
        "alpha.png",
        "exif6.jpg",
        "gray16.png",
        "palette.gif",
        "rgb.bmp",
        "rgb.webp",
    ]
    .iter()
    .map(|f| std::fs::read(dir.join(f)).unwrap())
    .collect();
    let t = fuzz("images", &seeds, &|b| {
        decode_image_bytes(b, Path::new("fuzz.img")).map(|_| ())
    });
    set_image_limits(ImageLimits::DEFAULT);
    check("images", t);
}

#[test]
fn torch_pickles_and_onnx() {
    let seeds = vec![
        read("tests/fixtures/face/pnet.pt"),
        read("tests/fixtures/face/iresnet_tiny.pth"),
    ];
    let path = Path::new("fuzz.pt");
    let t = fuzz("torch.save", &seeds, &|b| {
        let tensors = read_torch_bytes(b, path)?;
        let st = SafetensorsFile::from_bytes(path, to_safetensors_bytes(&tensors, path)?)?;
        // The recognizer's layout detection on whatever came out.
        let _ = detect_config(&st);
        Ok(())
    });
    check("torch.save", t);
    let t = fuzz(
        "onnx",
        &[read("tests/fixtures/face/iresnet_tiny.onnx")],
        &|b| {
            let graph = read_onnx_bytes(b, Path::new("fuzz.onnx"))?;
            magicnaming_models::face::iresnet_onnx::state_dict(&graph, Path::new("fuzz.onnx"))?;
            Ok(())
        },
    );
    check("onnx", t);
}

#[test]
fn configuration_files() {
    let p = Path::new("fuzz/config.json");
    let sdxl = "tests/fixtures/text/tiny-sdxl";
    type Load<'a> = Box<dyn Fn(&serde_json::Value) -> Result<()> + 'a>;
    let cases: Vec<(&str, Vec<u8>, Load)> = vec![
        (
            "unet config",
            read(&format!("{sdxl}/unet/config.json")),
            Box::new(|v| UNet2DConditionModelConfig::from_json_value(v, p).map(|_| ())),
        ),
        (
            "vae config",
            read(&format!("{sdxl}/vae/config.json")),
            Box::new(|v| AutoencoderKLConfig::from_json_value(v, p).map(|_| ())),
        ),
        (
            "clip text config",
            read(&format!("{sdxl}/text_encoder_2/config.json")),
            Box::new(|v| ClipTextConfig::from_json_value(v, p).map(|_| ())),
        ),
        (
            "clip vision config",
            read("tests/fixtures/vision/tower-l/config.json"),
            Box::new(|v| ClipVisionConfig::from_json_value(v, p).map(|_| ())),
        ),
        (
            "image processor config",
            read("tests/fixtures/vision/tower-l/preprocessor_config.json"),
            Box::new(|v| ClipImageProcessorConfig::from_json_value(v, p).map(|_| ())),
        ),
        (
            "scheduler config",
            read(&format!("{sdxl}/scheduler/scheduler_config.json")),
            Box::new(|v| SchedulerConfig::from_json(v, p).map(|_| ())),
        ),
        (
            "encoder config",
            read("assets/tiny-encoder/config.json"),
            Box::new(|v| NameEncoderConfig::from_json_value(v, p).map(|_| ())),
        ),
    ];
    for (name, seed, load) in cases {
        let t = fuzz(name, &[seed], &|b| load(&json(b, p)?));
        check(name, t);
    }
}

#[test]
fn tokenizer_and_manifest_files() {
    let dir = tempfile::tempdir().unwrap();
    let tok = root().join("tests/fixtures/text/tiny-sdxl/tokenizer");
    // The large vocabulary files are linked; the small ones are mutated.
    for f in ["merges.txt", "vocab.json", "tokenizer.json"] {
        std::os::unix::fs::symlink(tok.join(f), dir.path().join(f)).unwrap();
    }
    let special = std::fs::read(tok.join("special_tokens_map.json")).unwrap();
    std::fs::write(dir.path().join("special_tokens_map.json"), &special).unwrap();
    let config = std::fs::read(tok.join("tokenizer_config.json")).unwrap();
    let target = dir.path().join("tokenizer_config.json");
    // Each input re-reads the 3.6 MB tokenizer.json: a tenth of the inputs.
    let t = fuzz_n("tokenizer config", &[config], inputs().div_ceil(10), &|b| {
        std::fs::write(&target, b).unwrap();
        ClipTokenizer::from_folder(dir.path()).map(|_| ())
    });
    check("tokenizer config", t);

    let manifest = dir.path().join("m.jsonl");
    let jsonl = b"{\"image\": \"a.png\", \"name\": \"Ada Lovelace\"}\n{\"image\": \"b.jpg\", \"name\": \"Alan Turing\"}\n".to_vec();
    let t = fuzz("manifest", &[jsonl], &|b| {
        std::fs::write(&manifest, b).unwrap();
        read_manifest(&manifest).map(|_| ())
    });
    check("manifest", t);
}

/// A configuration that sizes a network past any machine is refused by name before any
/// tensor is made.
#[test]
fn configurations_of_impossible_sizes_are_refused_by_key() {
    let p = Path::new("huge/config.json");
    let unet = read("tests/fixtures/text/tiny-sdxl/unet/config.json");
    let mut v = json(&unet, p).unwrap();
    v["block_out_channels"][0] = serde_json::json!(1_000_000_000u64);
    let e = UNet2DConditionModelConfig::from_json_value(&v, p)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("huge/config.json")
            && e.contains("block_out_channels[0]")
            && e.contains("1000000000"),
        "{e}"
    );
    let text = read("tests/fixtures/text/tiny-sdxl/text_encoder/config.json");
    let mut v = json(&text, p).unwrap();
    v["max_position_embeddings"] = serde_json::json!(10_000_000_000u64);
    let e = ClipTextConfig::from_json_value(&v, p)
        .unwrap_err()
        .to_string();
    assert!(e.contains("max_position_embeddings"), "{e}");
    let mut v = json(
        &read("tests/fixtures/vision/tower-l/preprocessor_config.json"),
        p,
    )
    .unwrap();
    v["crop_size"] = serde_json::json!({"height": 4_000_000_000u64, "width": 224});
    let e = ClipImageProcessorConfig::from_json_value(&v, p)
        .unwrap_err()
        .to_string();
    assert!(e.contains("crop_size.height"), "{e}");
}
