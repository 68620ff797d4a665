//! LoRA files fused at load against diffusers' `load_lora_weights` + `fuse_lora`, the
//! LoHa / LoKr formulas in numpy and LyCORIS' own DoRA merge (fixtures by tools/reference/make_lora_fixtures.py):
//! every fused weight, the 5-step generation of the pipeline fixtures from a folder and
//! from a single file, two LoRAs at once, and the bad inputs.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::module::Module;
use burn_store::{BurnToPyTorchAdapter, ModuleSnapshot};
use magicnaming_models::sdxl::lora::{Component, Lora, LoraKind, Naming, ScaledLora};
use magicnaming_models::sdxl::{GenerateOptions, LoadOptions, SdxlPipeline, SdxlSource};
use magicnaming_models::sdxl::{SdxlTextEncoders, lora::names::linear_and_conv_weights};
use magicnaming_models::unet::UNet2DConditionModelConfig;
use magicnaming_models::unet::remap::LdmLayout;
use magicnaming_models::{LoraShapeMismatch, ModelError};

use crate::common::{B, Reference, Tensors, max_abs_diff, write_f32};

/// Fused weights are O(1) sums of an f32 weight and an f32 rank-2..4 product; diffusers'
/// own fused weights equal the float64 formula within 1e-7. 1e-5 is the required bound.
const WEIGHT_TOL: f32 = 1e-5;
/// As the pipeline parity test: final latents reach |x| ~ 46 after 5 steps and f32 vs
/// f64 runs differ by 3e-5; 1e-3 is the required bound.
const LATENT_TOL: f32 = 1e-3;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures")
}

fn lora_path(name: &str) -> PathBuf {
    root().join("lora").join(format!("{name}.safetensors"))
}

fn reference() -> Reference {
    Reference::load(&root().join("lora/reference.safetensors"))
}

fn folder() -> SdxlSource {
    SdxlSource::from_path(root().join("text/tiny-sdxl"), None).unwrap()
}

fn single_file() -> SdxlSource {
    SdxlSource::from_path(
        root().join("pipeline/tiny-sdxl-single.safetensors"),
        Some(&root().join("pipeline/tiny-sdxl-single-config")),
    )
    .unwrap()
}

fn with(loras: &[(&str, f32)]) -> LoadOptions {
    loras.iter().fold(LoadOptions::default(), |o, (name, m)| {
        o.with_lora(ScaledLora::open(lora_path(name), *m).unwrap())
    })
}

/// Every Linear / Conv2d weight, PyTorch layout, as `<unet|te1|te2>.<path>.weight`.
fn weights(pipe: &SdxlPipeline<B>) -> BTreeMap<String, Vec<f32>> {
    let mut out = BTreeMap::new();
    let mut add = |prefix: &str,
                   paths: Vec<(String, Vec<usize>)>,
                   snaps: Vec<burn_store::TensorSnapshot>| {
        let snaps: BTreeMap<String, _> = snaps.into_iter().map(|s| (s.full_path(), s)).collect();
        for (path, _) in paths {
            let key = format!("{path}.weight");
            let data = snaps[&key].to_data().unwrap().convert::<f32>();
            out.insert(format!("{prefix}.{key}"), data.to_vec::<f32>().unwrap());
        }
    };
    let adapter = || Some(Box::new(BurnToPyTorchAdapter) as Box<_>);
    add(
        "unet",
        linear_and_conv_weights(&pipe.unet),
        pipe.unet.collect(None, adapter(), false),
    );
    let (t1, t2) = (&pipe.text.text_encoder, &pipe.text.text_encoder_2);
    add(
        "te1",
        linear_and_conv_weights(t1),
        t1.collect(None, adapter(), false),
    );
    add(
        "te2",
        linear_and_conv_weights(t2),
        t2.collect(None, adapter(), false),
    );
    out
}

/// The fused weights of `pipe` equal the reference's `fused.<case>.*`, and no other weight
/// differs from `base`.
fn check_weights(
    case: &str,
    pipe: &SdxlPipeline<B>,
    base: &BTreeMap<String, Vec<f32>>,
    r: &Reference,
) {
    let got = weights(pipe);
    let prefix = format!("fused.{case}.");
    let mut checked = 0;
    let mut worst = 0f32;
    for (key, values) in &got {
        match r.tensors.get(&format!("{prefix}{key}")) {
            Some((want, _)) => {
                let d = max_abs_diff(values, want);
                assert!(d <= WEIGHT_TOL, "{case}: {key} differs by {d}");
                worst = worst.max(d);
                checked += 1;
            }
            None => assert_eq!(values, &base[key], "{case}: {key} changed, not in the LoRA"),
        }
    }
    assert_eq!(
        checked,
        r.count(&prefix),
        "{case}: every reference weight is a weight of the model"
    );
    eprintln!("{case}: {checked} fused weights, max abs diff {worst:.3e}");
}

fn latents(pipe: &SdxlPipeline<B>, r: &Reference, case: &str) {
    let pr = Reference::load(&root().join("pipeline/reference.safetensors"));
    let mut o = GenerateOptions::<B>::new("a photo of a person");
    (o.width, o.height, o.steps, o.guidance) = (64, 48, 5, 5.0);
    o.init_latents = Some(pr.tensor::<4>("init_latents"));
    let out = pipe.generate(&o).unwrap();
    let (want, shape) = r.get(&format!("final_latents.{case}"));
    assert_eq!(&out.latents.dims().to_vec(), shape);
    let d = max_abs_diff(&out.latents.into_data().to_vec::<f32>().unwrap(), want);
    eprintln!("{case}: final latents max abs diff {d:.3e}");
    assert!(d <= LATENT_TOL, "{case}: final latents differ by {d}");
    assert!(
        out.text
            .iter()
            .any(|(k, v)| k == "loras" && v.contains(".safetensors:"))
    );
}

#[test]
fn fused_weights_and_generations_match_diffusers() {
    let r = reference();
    let device = Default::default();
    let base = weights(&SdxlPipeline::<B>::load(&folder(), &device).unwrap());
    for (case, loras) in [
        ("kohya-sgm", vec![("kohya-sgm", 0.7)]),
        ("kohya-diffusers", vec![("kohya-diffusers", 0.7)]),
        ("peft", vec![("peft", 0.7)]),
        ("two", vec![("kohya-sgm", 0.7), ("peft", 0.4)]),
    ] {
        let pipe = SdxlPipeline::<B>::load_with(&folder(), &device, &with(&loras)).unwrap();
        check_weights(case, &pipe, &base, &r);
        latents(&pipe, &r, case);
    }
}

#[test]
fn single_file_with_lora_matches_diffusers() {
    let r = reference();
    let pipe = SdxlPipeline::<B>::load_with(
        &single_file(),
        &Default::default(),
        &with(&[("kohya-sgm", 0.7)]),
    )
    .unwrap();
    latents(&pipe, &r, "kohya-sgm-single");
}

#[test]
fn loha_lokr_and_dora_match_their_formulas() {
    let r = reference();
    let device = Default::default();
    let base = weights(&SdxlPipeline::<B>::load(&folder(), &device).unwrap());
    for case in ["loha", "lokr", "dora"] {
        let pipe = SdxlPipeline::<B>::load_with(&folder(), &device, &with(&[(case, 0.7)])).unwrap();
        check_weights(case, &pipe, &base, &r);
    }
}

#[test]
fn text_encoders_alone_take_their_part_of_a_lora() {
    let r = reference();
    let text = SdxlTextEncoders::<B>::load_with(
        &folder(),
        &Default::default(),
        &with(&[("kohya-sgm", 0.7)]),
    )
    .unwrap();
    let snaps = text
        .text_encoder_2
        .collect(None, Some(Box::new(BurnToPyTorchAdapter)), false);
    let key = "encoder.layers.0.self_attn.k_proj.weight";
    let got = snaps
        .iter()
        .find(|s| s.full_path() == key)
        .unwrap()
        .to_data()
        .unwrap()
        .to_vec::<f32>()
        .unwrap();
    let (want, _) = r.get(&format!("fused.kohya-sgm.te2.{key}"));
    assert!(max_abs_diff(&got, want) <= WEIGHT_TOL);
}

#[test]
fn inspection() {
    let l = Lora::open(lora_path("kohya-sgm")).unwrap();
    assert_eq!(l.namings(), vec![Naming::Kohya]);
    assert_eq!(l.kinds(), vec![LoraKind::Lora]);
    let t = l.targets();
    assert_eq!(
        (
            t[&Component::Unet],
            t[&Component::TextEncoder1],
            t[&Component::TextEncoder2]
        ),
        (10, 2, 2)
    );
    assert_eq!(l.alphas().get("1.5"), Some(&14));
    assert_eq!(
        l.ranks().keys().copied().collect::<Vec<_>>(),
        vec![Some(2), Some(3), Some(4)]
    );
    let conv = l.modules().iter().filter(|m| m.is_conv(l.file())).count();
    assert_eq!(conv, 1, "one LoCon convolution");
    let p = Lora::open(lora_path("peft")).unwrap();
    assert_eq!(p.namings(), vec![Naming::Diffusers]);
    // lora_alpha 6 / r 4 (UNet) and 3 / 2 (text encoders), from the adapter metadata
    assert!(p.modules().iter().all(|m| m.scale() == 1.5));
    assert_eq!(
        Lora::open(lora_path("loha")).unwrap().kinds(),
        vec![LoraKind::LoHa]
    );
    assert_eq!(
        Lora::open(lora_path("lokr")).unwrap().kinds(),
        vec![LoraKind::LoKr]
    );
}

#[test]
fn every_unet_module_has_an_sgm_name_that_maps_back() {
    for config in [
        UNet2DConditionModelConfig::from_file(&root().join("text/tiny-sdxl/unet/config.json"))
            .unwrap(),
        UNet2DConditionModelConfig::sdxl_base(),
    ] {
        // Parameters are lazy: nothing is allocated.
        let unet = config.init::<B>(&Default::default());
        let layout = LdmLayout::new(&config);
        let weights = linear_and_conv_weights(&unet);
        assert!(weights.len() > 50);
        for (path, _) in weights {
            let p = format!("{path}.weight");
            let ldm = layout
                .to_ldm(&p)
                .unwrap_or_else(|| panic!("no SGM name for {p}"));
            assert_eq!(
                layout.to_diffusers(&ldm).as_deref(),
                Some(p.as_str()),
                "{ldm}"
            );
        }
        assert!(unet.num_params() > 0);
    }
}

fn load_err(options: LoadOptions) -> ModelError {
    SdxlPipeline::<B>::load_with(&folder(), &Default::default(), &options).unwrap_err()
}

#[test]
fn a_lora_for_sd15_names_the_module_and_both_shapes() {
    match load_err(with(&[("bad-sd15", 1.0)])) {
        ModelError::LoraShape(m) => {
            let LoraShapeMismatch {
                path,
                key,
                module,
                lora_shape,
                model_shape,
                ..
            } = *m;
            assert!(path.ends_with("bad-sd15.safetensors"));
            assert_eq!(
                key,
                "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn2_to_k"
            );
            assert_eq!(
                module,
                "down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k"
            );
            assert_eq!((lora_shape, model_shape), (vec![320, 768], vec![32, 40]));
        }
        other => panic!("expected a shape error, got {other}"),
    }
}

#[test]
fn bad_files_are_named_errors() {
    for (name, words) in [
        (
            "bad-no-lora",
            vec!["no LoRA keys", "model.diffusion_model.conv_in.weight"],
        ),
        (
            "bad-rank",
            vec![
                "ranks disagree",
                "self_attn_q_proj.lora_up.weight",
                "rank 4",
                "rank 3",
            ],
        ),
        ("bad-nan", vec!["self_attn_q_proj.lora_up.weight", "NaN"]),
    ] {
        let e = Lora::open(lora_path(name)).unwrap_err();
        let msg = e.to_string();
        assert!(matches!(e, ModelError::Weights { .. }), "{msg}");
        assert!(msg.contains(&format!("{name}.safetensors")), "{msg}");
        for w in words {
            assert!(msg.contains(w), "{name}: `{w}` not in: {msg}");
        }
    }
    let e = ScaledLora::open(lora_path("kohya-sgm"), f32::NAN).unwrap_err();
    assert!(e.to_string().contains("not a finite number"), "{e}");
}

#[test]
fn unmatched_keys_are_listed_or_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("extra.safetensors");
    let stem = "lora_unet_input_blocks_99_1_proj_in";
    let mut tensors = Tensors::new();
    tensors.insert(
        format!("{stem}.lora_down.weight"),
        (vec![0.0; 2 * 16], vec![2, 16]),
    );
    tensors.insert(
        format!("{stem}.lora_up.weight"),
        (vec![0.0; 16 * 2], vec![16, 2]),
    );
    write_f32(&path, &tensors);
    let options = with(&[("kohya-sgm", 1.0)]).with_lora(ScaledLora::open(&path, 1.0).unwrap());
    match load_err(options.clone()) {
        ModelError::LoraUnmatched { keys } => {
            assert_eq!(keys, vec![format!("extra.safetensors: {stem}")]);
        }
        other => panic!("expected unmatched keys, got {other}"),
    }
    let pipe = SdxlPipeline::<B>::load_with(
        &folder(),
        &Default::default(),
        &options.ignoring_unmatched(),
    );
    assert!(pipe.is_ok());
}
