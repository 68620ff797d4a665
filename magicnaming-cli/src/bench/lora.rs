//! The LoRA fusion: a rank-32 LoRA (kohya names, f32, random values) on every Linear of
//! the UNet, written to a temporary file, then opened, checked, matched and fused into the
//! UNet, which is what a `--lora` adds to loading a model. The process's peak memory is
//! reset before the timed runs (Linux `clear_refs`), so the reported peak is the fusion's.
use std::path::Path;

use anyhow::{Context, Result};
use burn::tensor::backend::Backend;
use magicnaming_models::sdxl::lora::names::linear_and_conv_weights;
use magicnaming_models::sdxl::lora::{Component, LoraFusion, ModelNames, ScaledLora};
use safetensors::tensor::TensorView;
use safetensors::Dtype;

use super::args::BenchArgs;
use super::models::Models;
use super::report::Recorder;
use super::timing::{build_log, materialise, time_runs};

/// The LoRA's rank and alpha.
const RANK: usize = 32;
const ALPHA: f32 = 16.0;

/// `VmHWM` / `VmRSS` of this process in bytes (Linux).
pub(super) fn status_bytes(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Writes a rank-[`RANK`] kohya LoRA for every `(path, [out, in])` Linear; returns the
/// number of modules.
fn write_lora(path: &Path, linears: &[(String, Vec<usize>)], seed: u64) -> Result<usize> {
    // xorshift: reproducible values in [-0.05, 0.05).
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut values = |n: usize| -> Vec<u8> {
        (0..n)
            .flat_map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let v = (state >> 40) as f32 / (1u64 << 24) as f32 - 0.5;
                (v * 0.1).to_le_bytes()
            })
            .collect()
    };
    let mut buffers: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    for (p, shape) in linears {
        let name = format!("lora_unet_{}", p.replace('.', "_"));
        let (out, inp) = (shape[0], shape[1]);
        buffers.push((
            format!("{name}.lora_down.weight"),
            vec![RANK, inp],
            values(RANK * inp),
        ));
        buffers.push((
            format!("{name}.lora_up.weight"),
            vec![out, RANK],
            values(out * RANK),
        ));
        let alpha = ALPHA.to_le_bytes().to_vec();
        buffers.push((format!("{name}.alpha"), vec![], alpha));
    }
    let views = buffers
        .iter()
        .map(|(k, s, b)| Ok((k.clone(), TensorView::new(Dtype::F32, s.clone(), b)?)))
        .collect::<Result<Vec<_>>>()?;
    safetensors::serialize_to_file(views, None, path)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(linears.len())
}

impl BenchArgs {
    /// Builds the UNet, writes the LoRA, times open + check + match + fuse.
    pub(super) fn bench_lora<B: Backend>(
        &self,
        models: &Models,
        device: &B::Device,
        rec: &mut Recorder,
    ) -> Result<()> {
        let from = models.describe();
        let t0 = build_log("the UNet", &from);
        let unet = models.unet::<B>(device).context("building the UNet")?;
        let (unet, n) = materialise(unet, self.float(), device)?;
        let built = (t0.elapsed().as_secs_f64(), n);
        let linears: Vec<_> = linear_and_conv_weights(&unet)
            .into_iter()
            .filter(|(_, s)| s.len() == 2)
            .collect();
        let path = std::env::temp_dir().join(format!(
            "magicnaming-bench-lora-{}.safetensors",
            std::process::id()
        ));
        let modules = write_lora(&path, &linears, self.seed)?;
        let size = std::fs::metadata(&path)?.len();
        log::info!(
            "LoRA: rank {RANK} on {modules} UNet linears, {:.1} MB",
            size as f64 / 1e6
        );
        let rss_before = status_bytes("VmRSS:");
        // Linux: "5" resets VmHWM to the current resident size.
        let reset = std::fs::write("/proc/self/clear_refs", "5").is_ok();
        let mut model = Some(unet);
        let r = time_runs::<B, _>(device, self.plan(), || {
            let loras = [ScaledLora::open(&path, 1.0)?];
            let mut names = ModelNames::default();
            names.add_unet(model.as_ref().expect("kept between runs"));
            let fusion = LoraFusion::plan(&loras, &names, false)?;
            model = Some(fusion.fuse(model.take().expect("kept between runs"), Component::Unet)?);
            Ok(())
        });
        let _ = std::fs::remove_file(&path);
        let r = r?;
        let peak = status_bytes("VmHWM:").filter(|_| reset);
        let gb = |b: Option<u64>| b.map_or("?".into(), |b| format!("{:.2} GB", b as f64 / 1e9));
        let what = format!(
            "rank-{RANK} LoRA ({:.0} MB f32) on {modules} UNet linears: open + check + match + fuse; \
             RSS before {}, peak during {}",
            size as f64 / 1e6,
            gb(rss_before),
            gb(peak)
        );
        log::info!("{what}");
        rec.push("lora", what, built, r)
    }
}
