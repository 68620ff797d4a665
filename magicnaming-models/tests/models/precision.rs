//! Mixed precision: f16 weights on a backend that has f16 (burn-flex, a CPU backend, stands
//! in for CUDA/wgpu here), upcast on one that has not (ndarray), and an f16 pipeline
//! against diffusers' f32 final latents on the tiny model.
use std::path::{Path, PathBuf};

use burn::backend::Flex;
use burn::tensor::{DType, Tensor, TensorData};
use magicnaming_models::Precision;
use magicnaming_models::sdxl::{GenerateOptions, SdxlPipeline, SdxlSource, SdxlTextEncoders};

use crate::common::{Reference, max_abs_diff};

type F = Flex;
/// A CPU backend without f16.
type N = burn::backend::NdArray<f32>;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures")
}

fn tiny() -> SdxlSource {
    SdxlSource::from_path(root().join("text/tiny-sdxl"), None).unwrap()
}

/// The tiny folder's text_encoder_2 is stored as `model.fp16.safetensors`, text_encoder
/// as f32: Auto loads f32 on the CPU backends (f16 there is slower and less accurate),
/// and flex holds f16 when asked.
#[test]
fn auto_loads_f32_on_cpu_backends_and_flex_runs_f16_when_asked() {
    let cpu = SdxlTextEncoders::<N>::load(&tiny(), &Default::default()).unwrap();
    let flex32 = SdxlTextEncoders::<F>::load(&tiny(), &Default::default()).unwrap();
    assert_eq!(
        cpu.text_encoder_2.final_layer_norm.gamma.val().dtype(),
        DType::F32
    );
    assert_eq!(
        flex32.text_encoder_2.final_layer_norm.gamma.val().dtype(),
        DType::F32
    );
    let flex =
        SdxlTextEncoders::<F>::load_as(&tiny(), &Default::default(), Precision::F16).unwrap();
    for gamma in [
        &flex.text_encoder.final_layer_norm.gamma,
        &flex.text_encoder_2.final_layer_norm.gamma,
    ] {
        assert_eq!(gamma.val().dtype(), DType::F16);
    }
    // f16 encoders still hand over f32 embeddings, equal to the f32 ones within f16
    // rounding.
    let a = cpu.encode_prompt(&["a photo of a person"]).unwrap();
    let b = flex.encode_prompt(&["a photo of a person"]).unwrap();
    assert_eq!(b.prompt_embeds.dtype(), DType::F32);
    assert_eq!(b.pooled_prompt_embeds.dtype(), DType::F32);
    let d = max_abs_diff(
        &a.prompt_embeds.into_data().to_vec::<f32>().unwrap(),
        &b.prompt_embeds.into_data().to_vec::<f32>().unwrap(),
    );
    eprintln!("f16 encoders vs f32: prompt embeds max abs diff {d:.3e}");
    // Values are O(1) after the final layer norm; f16 weights and activations carry
    // ~1e-3 relative error through 2 layers: 2e-2 leaves room without hiding a bug
    // (a wrong layer is off by O(1)).
    assert!(d < 2e-2, "prompt embeds differ by {d}");
}

#[test]
fn explicit_f16_is_refused_by_a_backend_without_f16() {
    let e = SdxlPipeline::<N>::load_as(&tiny(), &Default::default(), Precision::F16)
        .unwrap_err()
        .to_string();
    assert!(e.contains("f16") && e.contains("ndarray"), "{e}");
}

#[test]
fn precision_parses_and_rejects_unknown_names() {
    assert_eq!("auto".parse::<Precision>().unwrap(), Precision::Auto);
    assert_eq!("fp16".parse::<Precision>().unwrap(), Precision::F16);
    let e = "f8".parse::<Precision>().unwrap_err();
    assert!(e.contains("f8"), "{e}");
}

/// The whole pipeline with f16 text encoders and UNet (the VAE upcast by force_upcast)
/// from diffusers' f32 initial latents, against diffusers' f32 final latents.
#[test]
fn f16_pipeline_stays_near_diffusers_f32() {
    let r = Reference::load(&root().join("pipeline/reference.safetensors"));
    let device = Default::default();
    let pipe = SdxlPipeline::<F>::load_as(&tiny(), &device, Precision::F16).unwrap();
    assert_eq!(pipe.unet.dtype(), DType::F16);
    assert_eq!(
        pipe.vae.dtype(),
        DType::F32,
        "force_upcast keeps the VAE in f32"
    );
    let (v, s) = r.get("init_latents");
    let mut o = GenerateOptions::<F>::new("a photo of a person");
    (o.width, o.height, o.steps, o.guidance) = (64, 48, 5, 5.0);
    o.init_latents = Some(Tensor::from_data(
        TensorData::new(v.clone(), s.clone()),
        &device,
    ));
    let out = pipe.generate(&o).unwrap();
    assert_eq!(out.latents.dtype(), DType::F32, "latents stay f32");
    let got = out.latents.into_data().to_vec::<f32>().unwrap();
    let (want, _) = r.get("final_latents.euler");
    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
    let d = max_abs_diff(&got, want);
    eprintln!(
        "f16 pipeline vs diffusers f32: final latents max abs diff {d:.3e} (max |x| {scale:.1})"
    );
    assert!(got.iter().all(|v| v.is_finite()));
    // f16 has an 11-bit significand (relative rounding 4.9e-4) and every layer rounds
    // its activations; measured 3.1e-2 at max |x| 16.3 (0.19%). 1% of the largest value
    // leaves room for another summation order; a dtype bug (a layer left in the wrong
    // type, a missing cast) is off by O(1) or NaN. (The tiny model's activations are too
    // small to overflow an f16 norm: norm.rs covers that.)
    assert!(
        d <= 0.01 * scale,
        "final latents differ by {d} (max |x| {scale})"
    );
}

/// An f32 checkpoint loaded in f16 with a value f16 cannot hold is refused by name.
#[test]
fn values_beyond_f16_range_are_refused_by_name() {
    use magicnaming_models::unet::UNet2DConditionModel;
    use magicnaming_models::weights::SafetensorsFile;
    let dir = tempfile::tempdir().unwrap();
    let unet = dir.path().join("unet");
    std::fs::create_dir(&unet).unwrap();
    let src = root().join("text/tiny-sdxl");
    std::fs::copy(
        src.join("model_index.json"),
        dir.path().join("model_index.json"),
    )
    .unwrap();
    std::fs::copy(src.join("unet/config.json"), unet.join("config.json")).unwrap();
    let file = SafetensorsFile::open(src.join("unet/diffusion_pytorch_model.safetensors")).unwrap();
    let tensors: Vec<(String, Vec<u8>, Vec<usize>)> = file
        .keys()
        .map(|k| {
            let (mut v, s) = file.read_f32(k).unwrap();
            if k == "conv_in.weight" {
                v[0] = 1e6;
            }
            (
                k.to_string(),
                v.iter().flat_map(|x| x.to_le_bytes()).collect(),
                s,
            )
        })
        .collect();
    let views: Vec<(&str, safetensors::tensor::TensorView)> = tensors
        .iter()
        .map(|(k, b, s)| {
            let view = safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b);
            (k.as_str(), view.unwrap())
        })
        .collect();
    let bytes = safetensors::serialize(views, None).unwrap();
    std::fs::write(unet.join("diffusion_pytorch_model.safetensors"), bytes).unwrap();
    let source = SdxlSource::from_path(dir.path(), None).unwrap();
    let e = UNet2DConditionModel::<F>::load_as(&source, &Default::default(), Precision::F16)
        .unwrap_err()
        .to_string();
    assert!(e.contains("conv_in.weight") && e.contains("f16"), "{e}");
    // f32 holds it.
    UNet2DConditionModel::<F>::load_as(&source, &Default::default(), Precision::F32).unwrap();
}
