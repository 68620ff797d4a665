//! Parity of the SDXL text stack with transformers / open_clip / diffusers on tiny
//! random-weight models (fixtures by tools/reference/make_text_fixtures.py):
//! config A is a diffusers folder (fp32 encoder 1, fp16-only encoder 2), config B a
//! single-file checkpoint (HF-layout encoder 1, open_clip-layout encoder 2) with a
//! `--config` folder of other sizes.
use std::path::{Path, PathBuf};

use burn::tensor::Tensor;
use magicnaming_models::sdxl::{SdxlSource, SdxlTextEncoders};

use crate::common::{B, Reference};

/// f32 CPU against PyTorch f32: the reference values are O(1) and pass through a few
/// layers of matmuls and LayerNorms; 1e-4 is the required bound and leaves ~100x margin
/// over the observed f32 reordering error (~1e-6).
const TOL: f32 = 1e-4;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/text")
}

fn assert_close<const D: usize>(what: &str, got: Tensor<B, D>, want: &(Vec<f32>, Vec<usize>)) {
    assert_eq!(got.dims().to_vec(), want.1, "{what}: shape");
    let got = got.into_data().to_vec::<f32>().unwrap();
    let max = got
        .iter()
        .zip(&want.0)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(max <= TOL, "{what}: max abs diff {max} > {TOL}");
}

fn load(model: &Path, config: Option<&Path>) -> SdxlTextEncoders<B> {
    let source = SdxlSource::from_path(model, config).unwrap();
    SdxlTextEncoders::load(&source, &Default::default()).unwrap()
}

/// Feeds the reference's own ids to both towers and compares every layer and output.
fn check_towers(enc: &SdxlTextEncoders<B>, reference: &Reference) {
    let prompts = reference.count("prompt_embeds.");
    assert!(prompts >= 9, "reference has {prompts} prompts");
    for i in 0..prompts {
        let out_1 = enc
            .text_encoder
            .forward(&[reference.json::<Vec<u32>>(&format!("ids.te1.{i}"))])
            .unwrap();
        let out_2 = enc
            .text_encoder_2
            .forward(&[reference.json::<Vec<u32>>(&format!("ids.te2.{i}"))])
            .unwrap();
        let stack = |s: &[Tensor<B, 3>]| Tensor::cat(s.to_vec(), 0);
        assert_close(
            &format!("te1 hidden states {i}"),
            stack(&out_1.hidden_states),
            reference.get(&format!("te1_hidden_states.{i}")),
        );
        assert_close(
            &format!("te2 hidden states {i}"),
            stack(&out_2.hidden_states),
            reference.get(&format!("te2_hidden_states.{i}")),
        );
        assert_close(
            &format!("te1 last hidden {i}"),
            out_1.last_hidden_state.clone(),
            reference.get(&format!("te1_last_hidden_state.{i}")),
        );
        assert_close(
            &format!("te1 pooled {i}"),
            out_1.pooled_output.clone(),
            reference.get(&format!("te1_pooled.{i}")),
        );
        assert_close(
            &format!("pooled {i}"),
            out_2.text_embeds.clone().unwrap(),
            reference.get(&format!("pooled_prompt_embeds.{i}")),
        );
        let n1 = out_1.hidden_states.len();
        let n2 = out_2.hidden_states.len();
        let embeds = Tensor::cat(
            vec![
                out_1.hidden_states[n1 - 2].clone(),
                out_2.hidden_states[n2 - 2].clone(),
            ],
            2,
        );
        assert_close(
            &format!("prompt_embeds {i}"),
            embeds,
            reference.get(&format!("prompt_embeds.{i}")),
        );
    }
}

#[test]
fn diffusers_folder_matches_diffusers_encode_prompt() {
    let enc = load(&fixtures().join("tiny-sdxl"), None);
    let reference = Reference::load(&fixtures().join("reference_a.safetensors"));
    assert_eq!((enc.token_dim(), enc.pooled_dim()), (40, 20));
    check_towers(&enc, &reference);
    // End to end from text: tokenizers + towers + concatenation, as diffusers' encode_prompt.
    let prompts: Vec<String> = serde_json::from_str(&reference.meta["prompts"]).unwrap();
    for (i, p) in prompts.iter().enumerate() {
        let e = enc.encode_prompt(&[p]).unwrap();
        assert_close(
            &format!("encode_prompt {i}"),
            e.prompt_embeds,
            reference.get(&format!("prompt_embeds.{i}")),
        );
        assert_close(
            &format!("encode_prompt pooled {i}"),
            e.pooled_prompt_embeds,
            reference.get(&format!("pooled_prompt_embeds.{i}")),
        );
    }
    // Batched encoding equals one-by-one.
    let refs: Vec<&str> = prompts.iter().map(String::as_str).take(3).collect();
    let batch = enc.encode_prompt(&refs).unwrap().prompt_embeds;
    for i in 0..3 {
        let row = batch.clone().slice([i..i + 1, 0..77, 0..40]);
        assert_close(
            &format!("batched {i}"),
            row,
            reference.get(&format!("prompt_embeds.{i}")),
        );
    }
}

#[test]
fn names_are_text_coded_from_positions_1_to_8() {
    let enc = load(&fixtures().join("tiny-sdxl"), None);
    let reference = Reference::load(&fixtures().join("reference_a.safetensors"));
    let names: Vec<String> = serde_json::from_str(&reference.meta["names"]).unwrap();
    assert_eq!(names.len(), 3);
    for (j, n) in names.iter().enumerate() {
        let name = enc.text_code_name_default(n).unwrap();
        assert_eq!(name.source(), n);
        assert_close(
            &format!("name {n}"),
            name.into_tokens(),
            reference.get(&format!("name.{j}")),
        );
    }
    for bad in ["", "  \t "] {
        let e = enc.text_code_name_default(bad).unwrap_err().to_string();
        assert!(e.contains("empty"), "{e}");
    }
    assert!(enc.text_code_name("Jet Li", 0).is_err());
    assert!(enc.text_code_name("Jet Li", 77).is_err());
}

#[test]
fn negative_prompt_follows_force_zeros_for_empty_prompt() {
    let enc = load(&fixtures().join("tiny-sdxl"), None);
    let reference = Reference::load(&fixtures().join("reference_a.safetensors"));
    assert!(enc.force_zeros_for_empty_prompt);
    let neg = enc.encode_negative_prompt(None, 2).unwrap();
    assert_eq!(neg.prompt_embeds.dims(), [2, 77, 40]);
    let zeros = reference.get("negative_empty_prompt_embeds");
    assert!(zeros.0.iter().all(|v| *v == 0.0), "diffusers gives zeros");
    assert_close(
        "negative zeros",
        neg.prompt_embeds.slice([0..1, 0..77, 0..40]),
        zeros,
    );
    assert_close(
        "negative pooled zeros",
        neg.pooled_prompt_embeds.slice([0..1, 0..20]),
        reference.get("negative_empty_pooled"),
    );
    // An explicit "" is encoded like any prompt (as diffusers does).
    let explicit = enc.encode_negative_prompt(Some(&[""]), 1).unwrap();
    assert_close(
        "explicit empty negative",
        explicit.prompt_embeds,
        reference.get("prompt_embeds.1"),
    );
    assert!(enc.encode_negative_prompt(Some(&["a"]), 2).is_err());
}

#[test]
fn single_file_with_config_folder_matches_open_clip() {
    let enc = load(
        &fixtures().join("tiny-sdxl-b.safetensors"),
        Some(&fixtures().join("tiny-sdxl-b-config")),
    );
    let reference = Reference::load(&fixtures().join("reference_b.safetensors"));
    assert_eq!((enc.token_dim(), enc.pooled_dim()), (48, 12));
    check_towers(&enc, &reference);
}

#[test]
fn single_file_without_config_expects_sdxl_base_sizes() {
    let source = SdxlSource::from_path(fixtures().join("tiny-sdxl-b.safetensors"), None).unwrap();
    let e = SdxlTextEncoders::<B>::load(&source, &Default::default())
        .unwrap_err()
        .to_string();
    // Built-in configs are SDXL base's (768 wide): the tiny file's tensors mismatch, and
    // the error names the file and a key.
    assert!(e.contains("tiny-sdxl-b.safetensors"), "{e}");
    assert!(e.contains("token_embedding"), "{e}");
}

#[test]
fn bad_paths_are_named() {
    let e = SdxlSource::from_path(fixtures().join("nope"), None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("nope"), "{e}");
    let e = SdxlSource::from_path(fixtures().join("tiny-sdxl/text_encoder"), None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("model_index.json"), "{e}");
    let e = SdxlSource::from_path(fixtures().join("prompts.json"), None)
        .unwrap_err()
        .to_string();
    assert!(e.contains(".safetensors"), "{e}");
}

/// Copies the diffusers fixture and rewrites one text encoder's weights with `edit`.
fn broken_copy(
    edit: impl Fn(&mut Vec<(String, safetensors::Dtype, Vec<usize>, Vec<u8>)>),
) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("m");
    copy_dir(&fixtures().join("tiny-sdxl"), &root);
    let file = root.join("text_encoder/model.safetensors");
    let bytes = std::fs::read(&file).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut tensors: Vec<_> = st
        .tensors()
        .into_iter()
        .map(|(k, v)| (k, v.dtype(), v.shape().to_vec(), v.data().to_vec()))
        .collect();
    edit(&mut tensors);
    let views: Vec<_> = tensors
        .iter()
        .map(|(k, d, s, b)| {
            (
                k.clone(),
                safetensors::tensor::TensorView::new(*d, s.clone(), b).unwrap(),
            )
        })
        .collect();
    std::fs::write(&file, safetensors::serialize(views, None).unwrap()).unwrap();
    (dir, root)
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}

fn load_err(root: &Path) -> String {
    let source = SdxlSource::from_path(root, None).unwrap();
    SdxlTextEncoders::<B>::load(&source, &Default::default())
        .unwrap_err()
        .to_string()
}

#[test]
fn missing_unused_and_misshapen_tensors_are_named() {
    let key = "encoder.layers.1.mlp.fc2.weight";
    let (_d, root) = broken_copy(|t| t.retain(|(k, ..)| !k.ends_with(key)));
    let e = load_err(&root);
    assert!(
        e.contains("missing") && e.contains(key) && e.contains("text_encoder/model.safetensors"),
        "{e}"
    );

    let (_d, root) = broken_copy(|t| {
        let extra = t[0].clone();
        t.push((
            "encoder.layers.9.extra.weight".into(),
            extra.1,
            extra.2,
            extra.3,
        ));
    });
    let e = load_err(&root);
    assert!(
        e.contains("unused") && e.contains("encoder.layers.9.extra.weight"),
        "{e}"
    );

    let (_d, root) = broken_copy(|t| {
        let entry = t
            .iter_mut()
            .find(|(k, ..)| k.ends_with("final_layer_norm.bias"))
            .unwrap();
        entry.2 = vec![entry.2[0] / 2];
        entry.3.truncate(entry.3.len() / 2);
    });
    let e = load_err(&root);
    assert!(
        e.contains("final_layer_norm") && e.to_lowercase().contains("shape"),
        "{e}"
    );

    let (_d, root) = broken_copy(|_| {});
    std::fs::remove_file(root.join("text_encoder_2/model.fp16.safetensors")).unwrap();
    let e = load_err(&root);
    assert!(
        e.contains("text_encoder_2") && e.contains("model.fp16.safetensors"),
        "{e}"
    );
}

#[test]
fn full_single_file_matches_the_folder() {
    // The complete tiny SDXL as one Stability-layout checkpoint (open_clip encoder 2) with a
    // configuration folder, tokenised with the bundled vocabulary: the same embeddings as
    // diffusers on the folder (tools/reference/make_pipeline_fixtures.py).
    let pipeline = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/pipeline");
    let enc = load(
        &pipeline.join("tiny-sdxl-single.safetensors"),
        Some(&pipeline.join("tiny-sdxl-single-config")),
    );
    assert_eq!((enc.token_dim(), enc.pooled_dim()), (40, 20));
    let reference = Reference::load(&fixtures().join("../pipeline/reference.safetensors"));
    let e = enc.encode_prompt(&["a photo of a person"]).unwrap();
    assert_close(
        "single-file prompt_embeds",
        e.prompt_embeds,
        reference.get("prompt_embeds"),
    );
    assert_close(
        "single-file pooled",
        e.pooled_prompt_embeds,
        reference.get("pooled_prompt_embeds"),
    );
    let neg = enc.encode_negative_prompt(Some(&["blurry"]), 1).unwrap();
    assert_close(
        "single-file negative",
        neg.prompt_embeds,
        reference.get("negative_prompt_embeds.euler-neg"),
    );
    assert_close(
        "single-file negative pooled",
        neg.pooled_prompt_embeds,
        reference.get("negative_pooled_prompt_embeds.euler-neg"),
    );
}
