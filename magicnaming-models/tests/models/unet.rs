//! Parity of the SDXL UNet with diffusers 0.42.1 on tiny random-weight models (fixtures by
//! tools/reference/make_diffusion_fixtures.py): UNet A (SDXL structure, linear projections,
//! fp32 diffusers folder, the `unet/` of the complete tiny SDXL folder) and UNet B (3 levels,
//! conv projections, other heads and time options, fp16-only diffusers folder), each also as
//! a single-file (LDM-key) checkpoint (A's is the full SDXL file of
//! tools/reference/make_pipeline_fixtures.py).
use std::collections::BTreeSet;
use std::path::Path;

use crate::diffusion_common::*;
use burn::module::Module;
use burn::tensor::Tensor;
use magicnaming_models::sdxl::SdxlSource;
use magicnaming_models::unet::{Timestep, UNet2DConditionModel, UNet2DConditionModelConfig};
use magicnaming_models::weights;

fn check_outputs(unet: &UNet2DConditionModel<B>, file: &str, what: &str) {
    let r = reference(file);
    for i in 0..2 {
        let t = r.get(&format!("timestep.{i}"));
        // Reference 0 was made with a Python float timestep, 1 with a [B] tensor.
        let timestep: Timestep<B> = if i == 0 {
            Timestep::Scalar(t.0[0] as f64)
        } else {
            Timestep::PerSample(r.tensor(&format!("timestep.{i}")))
        };
        let out = unet
            .forward(
                r.tensor("sample"),
                timestep,
                r.tensor("encoder_hidden_states"),
                r.tensor("text_embeds"),
                r.tensor("time_ids"),
            )
            .unwrap();
        assert_close(
            &format!("{what} output {i}"),
            out,
            r.get(&format!("out.{i}")),
        );
    }
}

#[test]
fn embeddings_match_diffusers_timesteps() {
    let unet =
        UNet2DConditionModel::<B>::load_diffusers(tiny_sdxl().join("unet"), &Default::default())
            .unwrap();
    let r = reference("reference_unet_a.safetensors");
    let batch = r.get("sample").1[0];
    let t0: Tensor<B, 1> = Tensor::full([batch], r.get("timestep.0").0[0], &Default::default());
    // sin/cos of float32 arguments up to 999: PyTorch's and Rust's libm agree to a few ulps.
    assert_close("t_emb 0", unet.time_proj.forward(t0), r.get("t_emb.0"));
    assert_close(
        "t_emb 1",
        unet.time_proj.forward(r.tensor("timestep.1")),
        r.get("t_emb.1"),
    );
    let ids: Tensor<B, 2> = r.tensor("time_ids");
    let [b, n] = ids.dims();
    let emb = unet
        .add_time_proj
        .forward(ids.reshape([b * n]))
        .reshape([b, n * 8]);
    assert_close("add_time_proj(time_ids)", emb, r.get("add_time_emb"));
}

#[test]
fn diffusers_folder_a_matches_diffusers() {
    let unet =
        UNet2DConditionModel::<B>::load_diffusers(tiny_sdxl().join("unet"), &Default::default())
            .unwrap();
    let c = unet.config();
    assert_eq!(c.num_attention_heads, vec![2, 4]);
    assert_eq!(c.transformer_layers_per_block, vec![1, 2]);
    assert_eq!(
        unet.down_blocks[1].attentions[1].transformer_blocks.len(),
        2
    );
    check_outputs(&unet, "reference_unet_a.safetensors", "A (diffusers fp32)");
}

#[test]
fn fp16_diffusers_folder_b_matches_diffusers() {
    let unet = UNet2DConditionModel::<B>::load_diffusers(
        fixtures().join("tiny-unet-b"),
        &Default::default(),
    )
    .unwrap();
    let c = unet.config();
    assert!(!c.use_linear_projection && !c.flip_sin_to_cos && c.upcast_attention);
    assert_eq!((c.levels(), c.freq_shift), (3, 1.0));
    check_outputs(&unet, "reference_unet_b.safetensors", "B (diffusers fp16)");
}

#[test]
fn single_files_match_diffusers() {
    let device = Default::default();
    let unet = UNet2DConditionModel::<B>::load_single_file(
        single_file(),
        Some(&tiny_sdxl().join("unet/config.json")),
        &device,
    )
    .unwrap();
    check_outputs(&unet, "reference_unet_a.safetensors", "A (single file)");
    let unet = UNet2DConditionModel::<B>::load_single_file(
        fixtures().join("tiny-unet-b-single.safetensors"),
        Some(&fixtures().join("tiny-unet-b/config.json")),
        &device,
    )
    .unwrap();
    check_outputs(&unet, "reference_unet_b.safetensors", "B (single file)");
}

#[test]
fn loads_through_sdxl_source() {
    // A single file with a configuration folder holding unet/config.json.
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("unet")).unwrap();
    std::fs::copy(
        tiny_sdxl().join("unet/config.json"),
        dir.path().join("unet/config.json"),
    )
    .unwrap();
    let source = SdxlSource::from_path(single_file(), Some(dir.path())).unwrap();
    let unet = UNet2DConditionModel::<B>::load(&source, &Default::default()).unwrap();
    check_outputs(
        &unet,
        "reference_unet_a.safetensors",
        "A (SdxlSource single file)",
    );
    // Without a configuration the SDXL base configuration is used: the tiny file does not fit.
    let source = SdxlSource::from_path(single_file(), None).unwrap();
    let err = UNet2DConditionModel::<B>::load(&source, &Default::default())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("conv_in.weight")
            && err.contains("model.diffusion_model.input_blocks.0.0.weight"),
        "{err}"
    );
}

#[test]
fn missing_and_unused_keys_are_named() {
    let device = Default::default();
    let dir = tempfile::tempdir().unwrap();
    // diffusers folder
    let folder = component_folder(dir.path(), "unet");
    let missing = "up_blocks.0.attentions.1.transformer_blocks.0.attn2.to_k.weight";
    corrupt(
        &tiny_sdxl().join("unet/diffusion_pytorch_model.safetensors"),
        &folder.join("diffusion_pytorch_model.safetensors"),
        missing,
        "up_blocks.0.attentions.1.extra.weight",
    );
    let err = UNet2DConditionModel::<B>::load_diffusers(&folder, &device)
        .unwrap_err()
        .to_string();
    assert!(err.contains(missing), "{err}");
    assert!(
        err.contains("`up_blocks.0.attentions.1.extra.weight`"),
        "{err}"
    );
    println!("{err}");

    // single file
    let file = dir.path().join("single.safetensors");
    corrupt(
        &single_file(),
        &file,
        "model.diffusion_model.output_blocks.2.2.conv.weight",
        "model.diffusion_model.output_blocks.9.0.in_layers.0.weight",
    );
    let err = UNet2DConditionModel::<B>::load_single_file(
        &file,
        Some(&folder.join("config.json")),
        &device,
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("up_blocks.0.upsamplers.0.conv.weight"),
        "{err}"
    );
    assert!(
        err.contains("`model.diffusion_model.output_blocks.9.0.in_layers.0.weight`"),
        "{err}"
    );

    // a file without a UNet
    let err = UNet2DConditionModel::<B>::load_single_file(
        tiny_sdxl().join("unet/diffusion_pytorch_model.safetensors"),
        None,
        &device,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("model.diffusion_model."), "{err}");
}

#[test]
fn unsupported_configurations_are_rejected_by_name() {
    let base: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(tiny_sdxl().join("unet/config.json")).unwrap(),
    )
    .unwrap();
    let cases = [
        ("class_embed_type", serde_json::json!("timestep")),
        ("addition_embed_type", serde_json::json!(null)),
        ("resnet_time_scale_shift", serde_json::json!("scale_shift")),
        ("num_attention_heads", serde_json::json!([2, 4])),
        ("attention_head_dim", serde_json::json!([2, 4, 8])),
        (
            "down_block_types",
            serde_json::json!(["DownBlock2D", "AttnDownBlock2D"]),
        ),
        (
            "transformer_layers_per_block",
            serde_json::json!([[1], [2, 2]]),
        ),
        ("norm_num_groups", serde_json::json!(5)),
    ];
    for (key, value) in cases {
        let mut c = base.clone();
        c[key] = value;
        let err = UNet2DConditionModelConfig::from_json_value(&c, Path::new("config.json"))
            .unwrap_err()
            .to_string();
        println!("{key}: {err}");
        let named = key.split('_').next().unwrap();
        assert!(
            err.contains(key) || err.contains(named) || err.contains("block type"),
            "{key}: {err}"
        );
    }
}

#[test]
fn invalid_inputs_are_errors() {
    let unet =
        UNet2DConditionModel::<B>::load_diffusers(tiny_sdxl().join("unet"), &Default::default())
            .unwrap();
    let d = Default::default();
    let call = |s: [usize; 4], e: [usize; 3], t: [usize; 2], ids: [usize; 2]| {
        unet.forward(
            Tensor::zeros(s, &d),
            10.0,
            Tensor::zeros(e, &d),
            Tensor::zeros(t, &d),
            Tensor::zeros(ids, &d),
        )
    };
    assert!(call([1, 4, 4, 4], [1, 77, 40], [1, 20], [1, 6]).is_ok());
    assert!(call([1, 3, 4, 4], [1, 77, 40], [1, 20], [1, 6]).is_err()); // channels
    assert!(call([1, 4, 4, 4], [2, 77, 40], [1, 20], [1, 6]).is_err()); // batch
    assert!(call([1, 4, 4, 4], [1, 77, 48], [1, 20], [1, 6]).is_err()); // cross-attention width
    assert!(call([1, 4, 4, 4], [1, 77, 40], [1, 20], [1, 5]).is_err()); // time_ids count
    let t: Tensor<B, 1> = Tensor::zeros([3], &d);
    let r = unet.forward(
        Tensor::zeros([2, 4, 4, 4], &d),
        t,
        Tensor::zeros([2, 77, 40], &d),
        Tensor::zeros([2, 20], &d),
        Tensor::zeros([2, 6], &d),
    );
    assert!(r.is_err()); // 3 timesteps for a batch of 2
}

#[test]
fn sdxl_base_preset_has_diffusers_parameters_and_ldm_mapping() {
    let config = UNet2DConditionModelConfig::sdxl_base();
    assert_eq!(config.num_attention_heads, vec![5, 10, 20]);
    assert_eq!(config.transformer_layers_per_block, vec![1, 2, 10]);
    assert_eq!(config.cross_attention_dim, vec![2048; 3]);
    assert_eq!(config.projection_class_embeddings_input_dim, 2816);
    // Lazily initialised: nothing of the 2.6 B parameters is allocated.
    let unet = config.init::<B>(&Default::default());
    let mut visitor = ParamShapes::default();
    unet.visit(&mut visitor);
    let diffusers = sdxl_keys("unet");
    assert_eq!(
        visitor.shapes, diffusers,
        "module parameters vs diffusers' SDXL state dict"
    );
    let params: usize = visitor
        .shapes
        .values()
        .map(|s| s.iter().product::<usize>())
        .sum();
    let text = std::fs::read_to_string(fixtures().join("sdxl_keys.json")).unwrap();
    let expected_params =
        serde_json::from_str::<serde_json::Value>(&text).unwrap()["unet_parameters"]
            .as_u64()
            .unwrap();
    assert_eq!(params as u64, expected_params);

    // diffusers remap: identity.
    let entries: Vec<(String, Vec<usize>)> = diffusers
        .iter()
        .map(|(k, s)| (k.clone(), s.clone()))
        .collect();
    let mapped = magicnaming_models::unet::remap::diffusers(&entries);
    assert!(mapped.iter().all(|m| m.target == m.source));

    // LDM remap of the real SDXL key set: a bijection onto the diffusers keys.
    let ldm: Vec<(String, Vec<usize>)> = sdxl_keys("unet_ldm")
        .into_iter()
        .map(|(k, s)| (format!("model.diffusion_model.{k}"), s))
        .collect();
    let mapped = magicnaming_models::unet::remap::ldm(&ldm, "model.diffusion_model.", &config);
    assert_eq!(mapped.len(), ldm.len());
    let targets: BTreeSet<&str> = mapped.iter().map(|m| m.target.as_str()).collect();
    let expected: BTreeSet<&str> = diffusers.keys().map(String::as_str).collect();
    assert_eq!(targets, expected);
    for m in &mapped {
        let src = &ldm.iter().find(|(k, _)| *k == m.source).unwrap().1;
        assert_eq!(src, &diffusers[&m.target], "{} -> {}", m.source, m.target);
    }
}

/// Splits `src` into two shards plus a transformers/diffusers-style index in `dir`;
/// returns the index's path.
fn shard(src: &Path, dir: &Path, stem: &str) -> std::path::PathBuf {
    let all = read_all(src);
    let half = all.len() / 2;
    let mut map = serde_json::Map::new();
    for (i, part) in [
        all.iter().take(half).collect::<Vec<_>>(),
        all.iter().skip(half).collect::<Vec<_>>(),
    ]
    .iter()
    .enumerate()
    {
        let name = format!("{stem}-0000{}-of-00002.safetensors", i + 1);
        let tensors = part
            .iter()
            .map(|(k, v)| ((*k).clone(), (*v).clone()))
            .collect();
        write_f32(&dir.join(&name), &tensors);
        for (k, _) in part {
            map.insert((*k).clone(), serde_json::Value::String(name.clone()));
        }
    }
    let index = dir.join(format!("{stem}.safetensors.index.json"));
    let json = serde_json::json!({"metadata": {"total_size": 0}, "weight_map": map});
    std::fs::write(&index, serde_json::to_string_pretty(&json).unwrap()).unwrap();
    index
}

#[test]
fn sharded_diffusers_folder_matches_diffusers() {
    let dir = tempfile::tempdir().unwrap();
    let folder = component_folder(dir.path(), "unet");
    shard(
        &tiny_sdxl().join("unet/diffusion_pytorch_model.safetensors"),
        &folder,
        "diffusion_pytorch_model",
    );
    let unet = UNet2DConditionModel::<B>::load_diffusers(&folder, &Default::default()).unwrap();
    check_outputs(
        &unet,
        "reference_unet_a.safetensors",
        "A (diffusers fp32, 2 shards)",
    );
}

#[test]
fn broken_shard_indexes_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let index = shard(
        &tiny_sdxl().join("unet/diffusion_pytorch_model.safetensors"),
        dir.path(),
        "diffusion_pytorch_model",
    );
    let text = std::fs::read_to_string(&index).unwrap();
    let open_err = |json: &str| {
        std::fs::write(&index, json).unwrap();
        weights::SafetensorsFile::open(&index)
            .unwrap_err()
            .to_string()
    };
    // A tensor the index puts in the wrong shard.
    let first = read_all(&tiny_sdxl().join("unet/diffusion_pytorch_model.safetensors"))
        .into_keys()
        .next()
        .unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["weight_map"][&first] = "diffusion_pytorch_model-00002-of-00002.safetensors".into();
    let e = open_err(&v.to_string());
    assert!(e.contains(&first) && e.contains("00002-of-00002"), "{e}");
    // A missing shard file.
    let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["weight_map"][&first] = "gone.safetensors".into();
    let e = open_err(&v.to_string());
    assert!(e.contains("gone.safetensors"), "{e}");
    // A shard outside the index's folder.
    let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["weight_map"][&first] = "../elsewhere.safetensors".into();
    let e = open_err(&v.to_string());
    assert!(e.contains("not a file name beside the index"), "{e}");
    // Not an index.
    let e = open_err("{\"metadata\": {}}");
    assert!(e.contains("weight_map"), "{e}");
}
