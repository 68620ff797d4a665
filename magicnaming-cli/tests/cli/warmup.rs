//! `warmup` on the CPU with the tiny SDXL fixture (its VAE downsamples by 4): every stage
//! runs and is reported, and the kernel cache is left alone (the CPU backend compiles no
//! kernels).
use super::common::{bin, fixtures};

fn warmup(kernel_cache: &std::path::Path, extra: &[&str]) -> std::process::Output {
    let model = fixtures().join("text/tiny-sdxl");
    bin()
        .args(["--device", "cpu", "warmup", "--model"])
        .arg(&model)
        .arg("--kernel-cache")
        .arg(kernel_cache)
        .args(extra)
        .output()
        .unwrap()
}

#[test]
fn warmup_runs_every_stage_and_reports_times() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("kernels");
    let out = warmup(
        &cache,
        &[
            "--resolution",
            "64",
            "--dtype",
            "f32",
            "--batch",
            "2",
            "--steps",
            "2",
        ],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("warmup 64x64 (latents 16x16), batch 2, 2 step(s), f32"),
        "{stdout}"
    );
    for stage in [
        "load",
        "text encoders",
        "UNet step 1/2",
        "UNet step 2/2",
        "VAE decode",
        "total",
    ] {
        let line = stdout
            .lines()
            .find(|l| l.trim_start().starts_with(stage))
            .unwrap_or_else(|| panic!("no `{stage}` line in\n{stdout}"));
        let secs: f64 = line
            .trim_end()
            .trim_end_matches(" s")
            .rsplit(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap_or_else(|e| panic!("{line}: {e}"));
        assert!(secs >= 0.0, "{line}");
    }
    assert!(stdout.contains("kernel cache: none"), "{stdout}");
    assert!(!cache.exists(), "the CPU backend must not create the cache");
}

#[test]
fn warmup_refuses_bad_shapes_and_types() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("kernels");
    for (extra, want) in [
        (&["--resolution", "60"][..], "multiple of 8"),
        (&["--resolution", "64", "--batch", "0"][..], "--batch"),
        // burn-ndarray has no f16 (the default --dtype).
        (&["--device", "ndarray", "--resolution", "64"][..], "f16"),
    ] {
        let out = warmup(&cache, extra);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{extra:?} succeeded");
        assert!(stderr.contains(want), "{extra:?}: {stderr}");
    }
}

/// A model whose own scheduler is stochastic (Euler ancestral): its steps get noise from
/// the host generator, as in `generate`, and warmup runs through.
#[test]
fn warmup_runs_a_stochastic_scheduler() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("model");
    std::fs::create_dir(&model).unwrap();
    let src = fixtures().join("text/tiny-sdxl");
    for entry in std::fs::read_dir(&src).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_owned();
        if name != "scheduler" {
            std::os::unix::fs::symlink(&path, model.join(name)).unwrap();
        }
    }
    let config = std::fs::read_to_string(src.join("scheduler/scheduler_config.json")).unwrap();
    std::fs::create_dir(model.join("scheduler")).unwrap();
    std::fs::write(
        model.join("scheduler/scheduler_config.json"),
        config.replace("EulerDiscreteScheduler", "EulerAncestralDiscreteScheduler"),
    )
    .unwrap();
    let out = bin()
        .args(["--device", "cpu", "warmup", "--model"])
        .arg(&model)
        .args(["--resolution", "64", "--dtype", "f32", "--steps", "2"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("UNet step 2/2"));
}
