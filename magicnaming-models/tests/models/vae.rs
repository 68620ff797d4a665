//! Parity of the SDXL VAE (`AutoencoderKL`) with diffusers 0.42.1 on a tiny random-weight
//! model (fixtures by tools/reference/make_diffusion_fixtures.py), loaded from a diffusers
//! folder (current and old attention names; the current one is the `vae/` of the complete
//! tiny SDXL folder) and from the full single-file (LDM-key) SDXL checkpoint of
//! tools/reference/make_pipeline_fixtures.py.
use std::collections::BTreeSet;
use std::path::Path;

use crate::diffusion_common::*;
use burn::module::Module;
use burn::tensor::Tensor;
use magicnaming_models::vae::{AutoencoderKL, AutoencoderKLConfig};
use magicnaming_models::weights;

fn check(vae: &AutoencoderKL<B>, what: &str) {
    let r = reference("reference_vae.safetensors");
    let decoded = vae.decode(r.tensor("latents")).unwrap();
    assert_close(&format!("{what} decode"), decoded, r.get("decoded"));
    let dist = vae.encode(r.tensor("image")).unwrap();
    assert_close(
        &format!("{what} encode mean"),
        dist.mean.clone(),
        r.get("mean"),
    );
    assert_close(
        &format!("{what} encode std"),
        dist.std.clone(),
        r.get("std"),
    );
    assert_close(
        &format!("{what} sample"),
        dist.sample(r.tensor("noise")),
        r.get("sampled"),
    );
}

#[test]
fn diffusers_folder_matches_diffusers() {
    let vae =
        AutoencoderKL::<B>::load_diffusers(tiny_sdxl().join("vae"), &Default::default()).unwrap();
    assert_eq!(vae.scaling_factor(), 0.13025);
    assert_eq!(vae.config().downscale_factor(), 4);
    check(&vae, "diffusers");
}

#[test]
fn legacy_attention_names_load() {
    let vae =
        AutoencoderKL::<B>::load_diffusers(fixtures().join("tiny-vae-legacy"), &Default::default())
            .unwrap();
    check(&vae, "legacy diffusers");
}

#[test]
fn single_file_matches_diffusers() {
    let vae = AutoencoderKL::<B>::load_single_file(
        single_file(),
        Some(&tiny_sdxl().join("vae/config.json")),
        &Default::default(),
    )
    .unwrap();
    check(&vae, "single file");
}

#[test]
fn missing_and_unused_keys_are_named() {
    let device = Default::default();
    let dir = tempfile::tempdir().unwrap();
    let folder = component_folder(dir.path(), "vae");
    corrupt(
        &tiny_sdxl().join("vae/diffusion_pytorch_model.safetensors"),
        &folder.join("diffusion_pytorch_model.safetensors"),
        "decoder.mid_block.attentions.0.to_v.bias",
        "decoder.mid_block.attentions.0.extra.weight",
    );
    let err = AutoencoderKL::<B>::load_diffusers(&folder, &device)
        .unwrap_err()
        .to_string();
    println!("{err}");
    assert!(
        err.contains("decoder.mid_block.attentions.0.to_v.bias"),
        "{err}"
    );
    assert!(
        err.contains("`decoder.mid_block.attentions.0.extra.weight`"),
        "{err}"
    );

    let file = dir.path().join("single.safetensors");
    corrupt(
        &single_file(),
        &file,
        "first_stage_model.decoder.up.0.block.0.nin_shortcut.weight",
        "first_stage_model.decoder.up.7.block.0.norm1.weight",
    );
    let err =
        AutoencoderKL::<B>::load_single_file(&file, Some(&folder.join("config.json")), &device)
            .unwrap_err()
            .to_string();
    println!("{err}");
    // decoder.up.0 is diffusers' last up block (reversed levels).
    assert!(
        err.contains("decoder.up_blocks.2.resnets.0.conv_shortcut.weight"),
        "{err}"
    );
    assert!(
        err.contains("`first_stage_model.decoder.up.7.block.0.norm1.weight`"),
        "{err}"
    );

    let err = AutoencoderKL::<B>::load_single_file(
        fixtures().join("tiny-unet-b-single.safetensors"),
        None,
        &device,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("first_stage_model."), "{err}");
}

#[test]
fn scaling_comes_from_the_configuration() {
    let device = Default::default();
    let dir = tempfile::tempdir().unwrap();
    let mut config: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(tiny_sdxl().join("vae/config.json")).unwrap(),
    )
    .unwrap();
    config["scaling_factor"] = serde_json::json!(0.5);
    config["shift_factor"] = serde_json::json!(0.25);
    std::fs::write(dir.path().join("config.json"), config.to_string()).unwrap();
    std::fs::copy(
        tiny_sdxl().join("vae/diffusion_pytorch_model.safetensors"),
        dir.path().join("diffusion_pytorch_model.safetensors"),
    )
    .unwrap();
    let vae = AutoencoderKL::<B>::load_diffusers(dir.path(), &device).unwrap();
    assert_eq!(vae.scaling_factor(), 0.5);
    let z: Tensor<B, 4> = Tensor::full([1, 4, 2, 2], 1.25, &device);
    // (1.25 - 0.25) * 0.5 = 0.5; back: 0.5 / 0.5 + 0.25 = 1.25 (exact in binary)
    let scaled = vae.scale_latents(z.clone());
    assert_eq!(
        scaled.clone().into_data().to_vec::<f32>().unwrap(),
        vec![0.5; 16]
    );
    assert_eq!(
        vae.unscale_latents(scaled)
            .into_data()
            .to_vec::<f32>()
            .unwrap(),
        vec![1.25; 16]
    );

    // latents_mean / latents_std: SDXL pipelines' (z - mean) * scaling / std.
    config["latents_mean"] = serde_json::json!([0.0, 1.0, 2.0, 3.0]);
    config["latents_std"] = serde_json::json!([1.0, 2.0, 4.0, 0.5]);
    let c = AutoencoderKLConfig::from_json_value(&config, Path::new("config.json")).unwrap();
    let vae = c.init::<B>(&device);
    let scaled = vae.scale_latents(Tensor::full([1, 4, 1, 1], 4.0, &device));
    assert_eq!(
        scaled.clone().into_data().to_vec::<f32>().unwrap(),
        vec![2.0, 0.75, 0.25, 1.0]
    );
    assert_eq!(
        vae.unscale_latents(scaled)
            .into_data()
            .to_vec::<f32>()
            .unwrap(),
        vec![4.0; 4]
    );

    config["latents_std"] = serde_json::json!([1.0]);
    let err = AutoencoderKLConfig::from_json_value(&config, Path::new("config.json"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("latents_mean/std"), "{err}");
    config["up_block_types"] = serde_json::json!(["AttnUpDecoderBlock2D"]);
    let err = AutoencoderKLConfig::from_json_value(&config, Path::new("config.json"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("up_block_types"), "{err}");
}

#[test]
fn invalid_inputs_are_errors() {
    let vae =
        AutoencoderKL::<B>::load_diffusers(tiny_sdxl().join("vae"), &Default::default()).unwrap();
    let d = Default::default();
    assert!(vae.decode(Tensor::zeros([1, 3, 4, 4], &d)).is_err());
    assert!(vae.encode(Tensor::zeros([1, 4, 8, 8], &d)).is_err());
    assert!(vae.encode(Tensor::zeros([0, 3, 8, 8], &d)).is_err());
}

#[test]
fn sdxl_base_preset_has_diffusers_parameters_and_ldm_mapping() {
    let config = AutoencoderKLConfig::sdxl_base();
    assert_eq!(config.scaling_factor, 0.13025);
    assert_eq!(config.shift_factor, None);
    assert_eq!(config.downscale_factor(), 8);
    let vae = config.init::<B>(&Default::default());
    let mut visitor = ParamShapes::default();
    vae.visit(&mut visitor);
    // diffusers' state dict keeps the attention projections as Linear [C, C].
    let diffusers = sdxl_keys("vae");
    assert_eq!(
        visitor.shapes, diffusers,
        "module parameters vs diffusers' SDXL VAE state dict"
    );

    let ldm: Vec<(String, Vec<usize>)> = sdxl_keys("vae_ldm")
        .into_iter()
        .map(|(k, s)| (format!("first_stage_model.{k}"), s))
        .collect();
    assert!(
        ldm.iter()
            .any(|(k, s)| k.ends_with("mid.attn_1.q.weight") && s.len() == 4)
    );
    let mapped = magicnaming_models::vae::remap::ldm(&ldm, "first_stage_model.", &config);
    assert_eq!(mapped.len(), ldm.len());
    let targets: BTreeSet<&str> = mapped.iter().map(|m| m.target.as_str()).collect();
    let expected: BTreeSet<&str> = diffusers.keys().map(String::as_str).collect();
    assert_eq!(targets, expected);
    for m in &mapped {
        let stored = &ldm.iter().find(|(k, _)| *k == m.source).unwrap().1;
        let after = match &m.transform {
            weights::Transform::Reshape(s) => s.clone(),
            _ => stored.clone(),
        };
        assert_eq!(after, diffusers[&m.target], "{} -> {}", m.source, m.target);
    }
}

#[test]
fn loads_through_sdxl_source() {
    use magicnaming_models::sdxl::SdxlSource;
    let device = Default::default();
    // A diffusers folder holding vae/ (the model_index.json marks the root).
    let root = tempfile::tempdir().unwrap();
    std::fs::write(root.path().join("model_index.json"), "{}").unwrap();
    std::fs::create_dir(root.path().join("vae")).unwrap();
    for f in ["config.json", "diffusion_pytorch_model.safetensors"] {
        std::fs::copy(
            tiny_sdxl().join("vae").join(f),
            root.path().join("vae").join(f),
        )
        .unwrap();
    }
    let source = SdxlSource::from_path(root.path(), None).unwrap();
    check(
        &AutoencoderKL::load(&source, &device).unwrap(),
        "SdxlSource diffusers",
    );
    // A single file with a configuration folder holding vae/config.json.
    let config = tempfile::tempdir().unwrap();
    std::fs::create_dir(config.path().join("vae")).unwrap();
    std::fs::copy(
        tiny_sdxl().join("vae/config.json"),
        config.path().join("vae/config.json"),
    )
    .unwrap();
    let source = SdxlSource::from_path(single_file(), Some(config.path())).unwrap();
    check(
        &AutoencoderKL::load(&source, &device).unwrap(),
        "SdxlSource single file",
    );
}
