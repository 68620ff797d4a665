//! Training the name head: parity of the optimizer step with PyTorch, learning a
//! synthetic mapping, and the dataset format.
use std::path::Path;

use burn::backend::Autodiff;
use burn::module::AutodiffModule;
use burn::optim::AdamWConfig;
use magicnaming_core::{HeadActivation, NameHeadConfig};
use magicnaming_models::name_encoder::load_head;
use magicnaming_models::name_encoder::save_head;
use magicnaming_models::train::dataset::{DatasetIndex, write_safetensors};
use magicnaming_models::train::synthetic::synthetic_dataset;
use magicnaming_models::train::train_step;
use magicnaming_models::train::{Dataset, Identity, Split, TrainConfig, evaluate, train};

use crate::common::{metadata, read_all_stored_f32 as tensors};

use crate::common::B;
type A = Autodiff<B>;

fn config(path: &Path) -> serde_json::Value {
    serde_json::from_str(&metadata(path)["config"]).unwrap()
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// An in-memory dataset where image r belongs to identity `identity[r]`.
fn dataset(
    embeds: Vec<f32>,
    names: Vec<f32>,
    identity: Vec<usize>,
    splits: Vec<Split>,
    k: usize,
    d: usize,
    e: usize,
) -> Dataset {
    let identities = splits
        .iter()
        .enumerate()
        .map(|(i, s)| Identity {
            name: format!("person {i}"),
            split: *s,
            images: identity.iter().filter(|&&x| x == i).count(),
        })
        .collect();
    Dataset {
        dir: "memory".into(),
        index: DatasetIndex {
            format: "magicnaming-dataset".into(),
            version: 1,
            num_tokens: k,
            token_dim: d,
            embed_dims: vec![e],
            identities,
            shards: vec![],
            skipped: vec![],
            input_crop: Default::default(),
            source: Default::default(),
        },
        names,
        embeds,
        identity,
    }
}

#[test]
fn two_adamw_steps_with_clipping_match_pytorch() {
    adamw_steps_match_pytorch(1);
}

/// Data parallelism over 4 (CPU) devices, with uneven shards (1, 2, 1, 2 of the 6
/// rows), must give PyTorch's full-batch steps too.
#[test]
fn data_parallel_steps_match_the_full_batch() {
    adamw_steps_match_pytorch(4);
}

fn adamw_steps_match_pytorch(devices: usize) {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/train/adamw_steps.safetensors");
    let (t, c) = (tensors(&fixture), config(&fixture));
    let u = |k: &str| c[k].as_u64().unwrap() as usize;
    let (e, h1, h2, k, d, b) = (u("E"), u("H1"), u("H2"), u("K"), u("D"), u("B"));
    let config = NameHeadConfig::new(e)
        .with_hidden_dims(vec![h1, h2])
        .with_activation(HeadActivation::Gelu)
        .with_num_tokens(k)
        .with_token_dim(d);
    // Initial weights as PyTorch wrote them, through the encoder's head file format.
    let dir = tempfile::tempdir().unwrap();
    let init = dir.path().join("init.safetensors");
    let init_tensors = t
        .iter()
        .filter_map(|(key, (v, s))| {
            key.strip_prefix("init.")
                .map(|name| (name, safetensors::Dtype::F32, s.clone(), f32_bytes(v)))
        })
        .collect();
    write_safetensors(&init, init_tensors, None).unwrap();
    let device = Default::default();
    let mut head = load_head::<A>(&init, &config, &device).unwrap();
    let ds = dataset(
        t["x"].0.clone(),
        t["y"].0.clone(),
        (0..b).collect(),
        vec![Split::Train; b],
        k,
        d,
        e,
    );
    let mut optim = AdamWConfig::new()
        .with_weight_decay(c["weight_decay"].as_f64().unwrap() as f32)
        .with_epsilon(c["eps"].as_f64().unwrap() as f32)
        .init::<A, magicnaming_core::NameHead<A>>();
    let rows: Vec<usize> = (0..b).collect();
    for step in 0..2 {
        let (next, loss) = train_step(
            head,
            &mut optim,
            &ds,
            &rows,
            c["lr"].as_f64().unwrap(),
            c["clip"].as_f64(),
            &vec![device; devices],
        );
        head = next;
        // The loss is computed before the update: same weights, same f32 arithmetic.
        assert!(
            (loss - t[&format!("loss.{step}")].0[0] as f64).abs() < 1e-6,
            "loss {step}: {loss}"
        );
        let saved = dir.path().join(format!("s{step}.safetensors"));
        save_head(&head.valid(), &saved).unwrap();
        let ours = tensors(&saved);
        for (key, (want, shape)) in t
            .iter()
            .filter_map(|(k, v)| k.strip_prefix(&format!("step{step}.")).map(|n| (n, v)))
        {
            let (got, got_shape) = &ours[key];
            assert_eq!(got_shape, shape, "{key}");
            let max = got
                .iter()
                .zip(want)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            // The bound: one AdamW step in f32, same formula as torch.
            assert!(max <= 1e-5, "step {step} {key}: max abs diff {max}");
        }
    }
}

fn synthetic(dir: &Path, identities: usize, images: usize, val: usize) -> Dataset {
    synthetic_dataset(dir, identities, images, val, 7).unwrap()
}

fn run_defaults(
    identities: usize,
    images: usize,
    val: usize,
) -> (
    Dataset,
    f64,
    Vec<magicnaming_models::train::MetricsLine>,
    tempfile::TempDir,
) {
    let dir = tempfile::tempdir().unwrap();
    let ds = synthetic(&dir.path().join("data"), identities, images, val);
    let device = Default::default();
    let config = TrainConfig {
        hidden_dims: vec![64, 64],
        eval_every: 20,
        checkpoint_every: 100,
        ..TrainConfig::default()
    };
    // The untrained head, with the same seeded initialisation as the run.
    let untrained = magicnaming_models::train::head_config(&config, &ds)
        .init_seeded::<A>(config.seed, &device)
        .unwrap();
    let before = evaluate(&untrained.valid(), &ds, &device).val_loss.unwrap();
    let summary = train::<A>(&ds, &dir.path().join("enc"), &config, false, &[device]).unwrap();
    (ds, before, summary.metrics, dir)
}

#[test]
fn defaults_learn_a_synthetic_mapping() {
    // 80 people x 4 images, 10 held out: enough identities to generalise.
    let (_, before, metrics, dir) = run_defaults(80, 4, 10);
    let last = metrics.last().unwrap();
    let after = last.val_loss.unwrap();
    assert!(
        after * 10.0 <= before,
        "validation loss must fall 10x: {before} -> {after}"
    );
    // Chance is 1/10 among the 10 held-out people.
    assert!(last.val_top1.unwrap() >= 0.9, "top-1 {:?}", last.val_top1);
    assert!(
        last.val_cosine.unwrap() > 0.9,
        "cosine {:?}",
        last.val_cosine
    );
    // The output folder is a complete encoder head and metrics file.
    let out = dir.path().join("enc");
    assert!(out.join("config.json").is_file() && out.join("head.safetensors").is_file());
    let lines = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    assert_eq!(lines.lines().count(), metrics.len());
    let first: serde_json::Value = serde_json::from_str(lines.lines().next().unwrap()).unwrap();
    for key in [
        "step",
        "lr",
        "train_loss",
        "val_loss",
        "val_cosine",
        "val_top1",
    ] {
        assert!(first.get(key).is_some(), "metrics line lacks {key}");
    }
}

#[test]
fn defaults_fit_a_few_dozen_images() {
    // 12 people x 4 images for training, 4 held out: the defaults must still fit and
    // retrieve, even though so few identities cannot pin the mapping down exactly.
    let (_, before, metrics, _dir) = run_defaults(16, 4, 4);
    let (first, last) = (metrics.first().unwrap(), metrics.last().unwrap());
    assert!(
        last.train_loss * 10.0 <= first.train_loss,
        "train loss {} -> {}",
        first.train_loss,
        last.train_loss
    );
    assert!(
        last.val_loss.unwrap() < before,
        "val loss {before} -> {:?}",
        last.val_loss
    );
    // Chance is 1/4.
    assert!(last.val_top1.unwrap() >= 0.75, "top-1 {:?}", last.val_top1);
}

#[test]
fn dataset_errors_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let e = Dataset::load(dir.path()).unwrap_err().to_string();
    assert!(e.contains("dataset.json"), "{e}");
    let ds_dir = dir.path().join("d");
    synthetic(&ds_dir, 4, 2, 1);
    // A shard of the wrong width.
    let shard = ds_dir.join("images-00000.safetensors");
    write_safetensors(
        &shard,
        vec![(
            "image_embeds",
            safetensors::Dtype::F32,
            vec![2, 3],
            f32_bytes(&[0.0; 6]),
        )],
        None,
    )
    .unwrap();
    let e = Dataset::load(&ds_dir).unwrap_err().to_string();
    assert!(
        e.contains("images-00000.safetensors") && e.contains("image_embeds"),
        "{e}"
    );
}
