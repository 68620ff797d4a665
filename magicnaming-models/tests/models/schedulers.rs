//! Parity of the schedulers with diffusers 0.42.1 (fixtures by
//! tools/reference/make_scheduler_fixtures.py): schedules, single steps fed diffusers' own
//! inputs, and whole free-running loops with a deterministic fake model, for every case of
//! `tests/fixtures/schedulers/cases.json` at 1, 5 and 30 steps.
use std::path::{Path, PathBuf};

use burn::tensor::{Tensor, TensorData};
use magicnaming_models::ModelError;
use magicnaming_models::schedulers::{DdimScheduler, Scheduler, SchedulerConfig, SchedulerKind};
use serde_json::Value;

use crate::common::{Tensors, read_all_stored_f32};

use crate::common::B;

/// Schedules (relative): the training tables reproduce diffusers' float32 ops; what is left
/// is torch's vectorised `linspace` rounding some betas 1 ulp differently (<= 2.4e-7 relative
/// on the sigma table) and the final float32 rounding (<= 6e-8). Measured worst: 4.9e-7
/// (cosine betas, log-linear sigmas), <= 1.9e-7 elsewhere; timesteps exact or <= 1.2e-7.
const SCHEDULE_TOL: f64 = 1e-6;
/// One step from diffusers' own inputs, per element relative to max(1, |value|): the f64
/// coefficients differ from diffusers' float32 scalar math by ~1e-7 relative and each tensor
/// op rounds to f32. The max(1, |.|) scaling is needed because the latents reach |x| ~ 60
/// (300 with Karras sigmas up to 26, 5.6e4 for the cosine schedule), where one f32 ulp is
/// already 4e-6 (resp. 3e-5, 4e-3). Measured worst: 3.6e-6 (cosine), <= 1.9e-6 elsewhere,
/// so the required 1e-5 keeps a 3-5x margin.
const STEP_TOL: f32 = 1e-5;
/// A whole loop with the fake model computed on our side (errors compound over up to 30
/// steps): the required 1e-4 bound, same scaling. Measured worst: 3.2e-6.
const TRAJECTORY_TOL: f32 = 1e-4;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/schedulers")
}

struct Fixtures {
    cases: Vec<Value>,
    tensors: Tensors,
}

fn load() -> Fixtures {
    let cases: Value =
        serde_json::from_str(&std::fs::read_to_string(fixtures().join("cases.json")).unwrap())
            .unwrap();
    let tensors = read_all_stored_f32(&fixtures().join("trajectories.safetensors"));
    let cases = cases["cases"].as_array().unwrap().clone();
    assert!(cases.len() >= 15, "expected every fixture case");
    Fixtures { cases, tensors }
}

impl Fixtures {
    /// `<case>/<steps>/<field>` row `i` (or the whole tensor for `latents_noise`).
    fn row(&self, key: &str, i: usize) -> Tensor<B, 4> {
        let (vals, shape) = self
            .tensors
            .get(key)
            .unwrap_or_else(|| panic!("no tensor {key}"));
        let (shape, len) = if shape.len() == 5 {
            (&shape[1..], vals.len() / shape[0])
        } else {
            (&shape[..], vals.len())
        };
        let data = TensorData::new(vals[i * len..(i + 1) * len].to_vec(), shape.to_vec());
        Tensor::from_data(data, &Default::default())
    }
}

fn build(case: &Value) -> Box<dyn Scheduler<B>> {
    let name = case["name"].as_str().unwrap();
    let config = SchedulerConfig::from_json(&case["config"], name).unwrap();
    let kind = case["kind"]
        .as_str()
        .map(|k| k.parse::<SchedulerKind>().unwrap());
    let eta = case["eta"].as_f64().unwrap();
    if eta > 0.0 {
        return Box::new(
            DdimScheduler::new(config.ddim().unwrap())
                .unwrap()
                .with_eta(eta)
                .unwrap(),
        );
    }
    config.build(kind).unwrap()
}

fn step_counts(case: &Value) -> Vec<(usize, &Value)> {
    let steps = case["steps"].as_object().unwrap();
    steps.iter().map(|(k, v)| (k.parse().unwrap(), v)).collect()
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

/// Max over elements of |got - want| / max(1, |want|), and the max absolute error.
fn errors(got: Tensor<B, 4>, want: Tensor<B, 4>) -> (f32, f32) {
    assert_eq!(got.dims(), want.dims());
    let got = got.into_data().to_vec::<f32>().unwrap();
    let want = want.into_data().to_vec::<f32>().unwrap();
    got.iter().zip(&want).fold((0f32, 0f32), |(s, a), (g, w)| {
        let d = (g - w).abs();
        (s.max(d / w.abs().max(1.0)), a.max(d))
    })
}

fn scaled_err(got: Tensor<B, 4>, want: Tensor<B, 4>) -> f32 {
    errors(got, want).0
}

fn assert_schedule(what: &str, got: &[f64], want: &[f64], abs_floor: f64) -> f64 {
    assert_eq!(
        got.len(),
        want.len(),
        "{what}: length; got {got:?}, want {want:?}"
    );
    let mut worst = 0f64;
    for (k, (g, w)) in got.iter().zip(want).enumerate() {
        let err = (g - w).abs() / w.abs().max(abs_floor);
        assert!(err <= SCHEDULE_TOL, "{what}[{k}]: {g} vs {w} (rel {err:e})");
        worst = worst.max(err);
    }
    worst
}

#[test]
fn schedules_match_diffusers() {
    let fx = load();
    for case in &fx.cases {
        let name = case["name"].as_str().unwrap();
        for (steps, want) in step_counts(case) {
            let mut s = build(case);
            assert_eq!(s.class_name(), want["class"].as_str().unwrap(), "{name}");
            s.set_timesteps(steps).unwrap();
            let what = format!("{name}/{steps}");
            // Timesteps are integers or float32 values of a few hundred: relative to max(1, |t|).
            let t_err = assert_schedule(
                &format!("{what} timesteps"),
                s.timesteps(),
                &floats(&want["timesteps"]),
                1.0,
            );
            let s_err = match (s.sigmas(), want["sigmas"].is_null()) {
                // Sigmas down to 0.01 matter relatively; the final 0 must be exactly 0.
                (Some(got), false) => assert_schedule(
                    &format!("{what} sigmas"),
                    got,
                    &floats(&want["sigmas"]),
                    1e-30,
                ),
                (None, true) => 0.0,
                (got, _) => panic!("{what}: sigmas {got:?} vs {}", want["sigmas"]),
            };
            let (got, w) = (
                s.init_noise_sigma(),
                want["init_noise_sigma"].as_f64().unwrap(),
            );
            assert!(
                (got - w).abs() <= SCHEDULE_TOL * w,
                "{what} init_noise_sigma {got} vs {w}"
            );
            assert_eq!(s.order() as u64, want["order"].as_u64().unwrap(), "{what}");
            eprintln!("schedule {what}: timesteps rel err {t_err:e}, sigmas rel err {s_err:e}");
        }
    }
}

/// Every step from diffusers' recorded inputs (sample, model output, noise): isolates each
/// update, multistep history included (the previous model outputs are diffusers' too).
#[test]
fn each_step_matches_diffusers() {
    let fx = load();
    for case in &fx.cases {
        let name = case["name"].as_str().unwrap();
        let mut case_worst = (0f32, 0f32);
        for (steps, _) in step_counts(case) {
            let mut s = build(case);
            s.set_timesteps(steps).unwrap();
            let key = |f: &str| format!("{name}/{steps}/{f}");
            let stochastic = fx.tensors.contains_key(&key("noise"));
            assert_eq!(s.needs_noise(), stochastic, "{name}");
            for i in 0..steps {
                let sample = fx.row(&key("sample_in"), i);
                let input = s.scale_model_input(sample.clone(), i).unwrap();
                let err = scaled_err(input, fx.row(&key("model_input"), i));
                assert!(err <= STEP_TOL, "{name}/{steps} model_input {i}: {err:e}");
                let noise = stochastic.then(|| fx.row(&key("noise"), i));
                let out = s
                    .step(fx.row(&key("model_output"), i), i, sample, noise)
                    .unwrap();
                let (err, abs) = errors(out, fx.row(&key("prev_sample"), i));
                assert!(
                    err <= STEP_TOL,
                    "{name}/{steps} step {i}: {err:e} > {STEP_TOL}"
                );
                case_worst = (case_worst.0.max(err), case_worst.1.max(abs));
            }
        }
        eprintln!(
            "single steps {name}: max scaled err {:e}, max abs err {:e}",
            case_worst.0, case_worst.1
        );
    }
}

/// diffusers' test model: `0.5 * tanh(model_input) + 0.1 * t / 1000`.
fn fake_model(input: Tensor<B, 4>, t: f64) -> Tensor<B, 4> {
    input.tanh().mul_scalar(0.5).add_scalar(0.1 * t / 1000.0)
}

/// The SDXL pipeline's loop, free-running from diffusers' initial noise.
#[test]
fn trajectories_match_diffusers() {
    let fx = load();
    for case in &fx.cases {
        let name = case["name"].as_str().unwrap();
        let mut case_worst = (0f32, 0f32);
        for (steps, _) in step_counts(case) {
            let mut s = build(case);
            s.set_timesteps(steps).unwrap();
            let key = |f: &str| format!("{name}/{steps}/{f}");
            let stochastic = fx.tensors.contains_key(&key("noise"));
            let mut latents = fx
                .row(&key("latents_noise"), 0)
                .mul_scalar(s.init_noise_sigma());
            let err = scaled_err(latents.clone(), fx.row(&key("sample_in"), 0));
            assert!(err <= STEP_TOL, "{name}/{steps} initial latents: {err:e}");
            for i in 0..s.timesteps().len() {
                let input = s.scale_model_input(latents.clone(), i).unwrap();
                let eps = fake_model(input, s.timesteps()[i]);
                let noise = stochastic.then(|| fx.row(&key("noise"), i));
                latents = s.step(eps, i, latents, noise).unwrap();
                let (err, abs) = errors(latents.clone(), fx.row(&key("prev_sample"), i));
                assert!(
                    err <= TRAJECTORY_TOL,
                    "{name}/{steps} after step {i}: {err:e} > {TRAJECTORY_TOL}"
                );
                case_worst = (case_worst.0.max(err), case_worst.1.max(abs));
            }
        }
        eprintln!(
            "trajectory {name}: max scaled err {:e}, max abs err {:e}",
            case_worst.0, case_worst.1
        );
    }
}

#[test]
fn sdxl_preset_is_the_fixture_config() {
    let fx = load();
    let euler = fx.cases.iter().find(|c| c["name"] == "euler").unwrap();
    let from_file = SchedulerConfig::from_json(&euler["config"], "x").unwrap();
    let preset = SchedulerConfig::sdxl_base();
    assert_eq!(preset.class_name(), Some("EulerDiscreteScheduler"));
    assert_eq!(
        preset.euler_discrete().unwrap(),
        from_file.euler_discrete().unwrap()
    );
    assert_eq!(preset.ddim().unwrap(), from_file.ddim().unwrap());
    assert_eq!(preset.native_kind(), Some(SchedulerKind::Euler));
    // DDIM from SDXL's Euler config keeps the file's clip_sample = false and
    // set_alpha_to_one = false (keys Euler does not take); a bare config gets DDIM's defaults.
    let ddim = preset.ddim().unwrap();
    assert!(!ddim.clip_sample && !ddim.set_alpha_to_one && ddim.steps_offset == 1);
    let bare = SchedulerConfig::from_json(
        &serde_json::json!({"_class_name": "EulerDiscreteScheduler"}),
        "x",
    )
    .unwrap();
    assert!(bare.ddim().unwrap().clip_sample);
}

#[test]
fn scheduler_names_parse_and_unknown_names_are_errors() {
    for kind in SchedulerKind::ALL {
        assert_eq!(kind.name().parse::<SchedulerKind>().unwrap(), kind);
        assert_eq!(kind.to_string(), kind.name());
    }
    let err = "dpm++".parse::<SchedulerKind>().unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, ModelError::InvalidInput(_)), "{msg}");
    assert!(
        msg.contains("\"dpm++\"") && msg.contains("euler, euler-a, ddim, dpmpp-2m-karras"),
        "{msg}"
    );
}

#[test]
fn zero_steps_and_misuse_are_errors() {
    let config = SchedulerConfig::sdxl_base();
    for kind in SchedulerKind::ALL {
        let mut s = config.build::<B>(Some(kind)).unwrap();
        let x = Tensor::<B, 4>::zeros([1, 4, 2, 2], &Default::default());
        // Stepping before set_timesteps.
        assert!(
            s.step(x.clone(), 0, x.clone(), Some(x.clone())).is_err(),
            "{kind}"
        );
        let err = s.set_timesteps(0).unwrap_err();
        assert!(
            matches!(err, ModelError::InvalidInput(_)) && err.to_string().contains("at least 1"),
            "{err}"
        );
        assert!(
            s.set_timesteps(1001).is_err(),
            "{kind}: more steps than training timesteps"
        );
        s.set_timesteps(3).unwrap();
        assert!(
            s.scale_model_input(x.clone(), 3).is_err(),
            "{kind}: index past the schedule"
        );
        let wrong = Tensor::<B, 4>::zeros([1, 4, 2, 3], &Default::default());
        assert!(
            s.step(wrong, 0, x.clone(), Some(x.clone())).is_err(),
            "{kind}: shape mismatch"
        );
    }
    // DPM-Solver keeps history: steps out of order are refused.
    let mut s = config
        .build::<B>(Some(SchedulerKind::DpmPp2mKarras))
        .unwrap();
    s.set_timesteps(5).unwrap();
    let x = Tensor::<B, 4>::zeros([1, 4, 2, 2], &Default::default());
    assert!(s.step(x.clone(), 1, x.clone(), None).is_err());
    assert!(s.step(x.clone(), 0, x, None).is_ok());
}

#[test]
fn unsupported_configurations_are_errors_naming_the_field() {
    let build = |json: Value, kind: Option<SchedulerKind>| -> String {
        let config = SchedulerConfig::from_json(&json, "cfg.json").unwrap();
        config.build::<B>(kind).unwrap_err().to_string()
    };
    use serde_json::json;
    let msg = build(
        json!({"_class_name": "DPMSolverMultistepScheduler", "algorithm_type": "sde-dpmsolver++"}),
        None,
    );
    assert!(msg.contains("sde-dpmsolver++"), "{msg}");
    let msg = build(
        json!({"_class_name": "EulerDiscreteScheduler", "prediction_type": "x"}),
        None,
    );
    assert!(
        msg.contains("cfg.json") && msg.contains("unknown variant `x`"),
        "{msg}"
    );
    let msg = build(json!({"_class_name": "PNDMScheduler"}), None);
    assert!(msg.contains("PNDMScheduler"), "{msg}");
    let msg = build(json!({"thresholding": true}), Some(SchedulerKind::Ddim));
    assert!(msg.contains("thresholding"), "{msg}");
    let msg = build(
        json!({"prediction_type": "sample"}),
        Some(SchedulerKind::EulerAncestral),
    );
    assert!(msg.contains("sample"), "{msg}");
}

#[test]
fn config_files_with_python_json_tokens_load() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("scheduler_config.json");
    std::fs::write(
        &path,
        r#"{"_class_name": "DPMSolverMultistepScheduler", "lambda_min_clipped": -Infinity,
            "note": "NaN -Infinity stays text", "flow_shift": NaN, "use_karras_sigmas": true,
            "beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012}"#,
    )
    .unwrap();
    let config = SchedulerConfig::from_file(&path).unwrap();
    assert_eq!(config.field("note").unwrap(), "NaN -Infinity stays text");
    assert_eq!(config.native_kind(), Some(SchedulerKind::DpmPp2mKarras));
    let dpm = config.dpm_solver_multistep(&[]).unwrap();
    assert_eq!((dpm.lambda_min_clipped, dpm.flow_shift), (f64::MIN, 1.0));
    // Same schedule as the fixture's DPM++ 2M Karras built from SDXL's config (leading vs
    // linspace spacing does not matter with Karras sigmas).
    let mut s = config.build::<B>(None).unwrap();
    s.set_timesteps(5).unwrap();
    assert_eq!(s.timesteps(), &[999.0, 786.0, 427.0, 59.0, 0.0]);
    let missing = SchedulerConfig::from_file(&dir.path().join("nope.json")).unwrap_err();
    assert!(
        matches!(missing, ModelError::MissingFile { .. }),
        "{missing}"
    );
}

/// A stochastic step without noise is a named error (no step draws from a backend's
/// global generator); with host draws from one seed, runs repeat exactly and another seed
/// changes the result.
#[test]
fn ancestral_steps_need_noise_and_repeat_with_the_same_draws() {
    let device = Default::default();
    let mut s = SchedulerConfig::sdxl_base()
        .build::<B>(Some(SchedulerKind::EulerAncestral))
        .unwrap();
    s.set_timesteps(4).unwrap();
    let x = Tensor::<B, 4>::ones([1, 4, 3, 3], &device);
    let e = s.step(x.clone(), 0, x, None).unwrap_err().to_string();
    assert!(e.contains("EulerAncestral") && e.contains("noise"), "{e}");
    let run = |seed: u64| {
        let mut rng = magicnaming_core::rng::SplitMix64(seed);
        let mut s = SchedulerConfig::sdxl_base()
            .build::<B>(Some(SchedulerKind::EulerAncestral))
            .unwrap();
        s.set_timesteps(4).unwrap();
        let mut x = Tensor::<B, 4>::ones([1, 4, 3, 3], &device).mul_scalar(s.init_noise_sigma());
        for i in 0..4 {
            let input = s.scale_model_input(x.clone(), i).unwrap();
            let eps = input
                .tanh()
                .mul_scalar(0.5)
                .add_scalar(0.1 * s.timesteps()[i] / 1000.0);
            let noise =
                Tensor::from_data(TensorData::new(rng.normal_f32(36), [1, 4, 3, 3]), &device);
            x = s.step(eps, i, x, Some(noise)).unwrap();
        }
        x.into_data().to_vec::<f32>().unwrap()
    };
    let (a, b, c) = (run(7), run(7), run(8));
    assert_eq!(a, b);
    let diff = a
        .iter()
        .zip(&c)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max);
    assert!(
        diff > 1e-3,
        "different seeds gave the same samples (max diff {diff})"
    );
}
