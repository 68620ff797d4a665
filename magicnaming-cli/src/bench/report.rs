//! `bench`'s report: the JSON document (settings, host, one row per timed component),
//! rewritten after each row, and the table printed at the end.
use std::path::PathBuf;

use anyhow::{Context, Result};
use burn::tensor::backend::Backend;
use serde_json::{json, Value};

use super::args::BenchArgs;
use super::models::Models;
use super::timing::{Runs, Stats};

/// One timed component.
struct Row {
    name: String,
    what: String,
    build_s: f64,
    params: usize,
    first_ms: Option<f64>,
    samples: Vec<f64>,
}

impl Row {
    fn to_json(&self) -> Value {
        let stats = Stats::of(&self.samples);
        let ms = |f: fn(&Stats) -> f64| stats.as_ref().map(f);
        json!({
            "name": self.name, "what": self.what, "build_s": self.build_s, "params": self.params,
            "first_ms": self.first_ms, "iters": self.samples.len(),
            "median_ms": ms(|s| s.median), "min_ms": ms(|s| s.min),
            "max_ms": ms(|s| s.max), "mean_ms": ms(|s| s.mean), "samples_ms": self.samples,
        })
    }
}

/// Collects the rows and writes the JSON report after each one, so that a run stopped
/// part-way (a time limit on a shared machine) still leaves the components it finished.
pub(super) struct Recorder {
    header: Value,
    json: Option<PathBuf>,
    rows: Vec<Row>,
}

impl Recorder {
    /// A recorder of a run of `args` on `device`, writing to `args.json` when given.
    pub(super) fn new<B: Backend>(args: &BenchArgs, models: &Models, device: &B::Device) -> Self {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let faces = args.has(super::args::Component::Faces);
        let header = json!({
            "schema": "magicnaming-bench/1",
            "tool": "magicnaming",
            "implementation": format!("magicnaming {} (burn 0.21, {})", env!("CARGO_PKG_VERSION"), B::name(device)),
            "device": format!("{device:?}"),
            "device_name": device_name::<B>(device),
            "dtype": format!("{:?}", args.dtype).to_lowercase(),
            "date": utc_iso8601(now),
            "command": command_line(),
            "settings": {
                "model": models.describe(), "resolution": args.resolution, "steps": args.steps,
                "guidance": args.guidance, "tower_batch": args.tower_batch,
                "warmup": args.warmup, "iters": args.iters,
                "image_iters": args.image_iters.unwrap_or(args.iters),
                "image_warmup": args.warmup.min(1), "prompt": args.prompt, "seed": args.seed,
                "budget_s": args.budget_s,
                "kernels": !args.no_kernels && magicnaming_models::nn::kernels::COMPILED,
                "face_image": faces.then(|| args.face_image.as_ref().map(|p| p.display().to_string())),
                "face_batch": faces.then_some(args.face_batch),
            },
            "components": [],
            "host_load": { "start": loadavg(), "end": null },
            "memory": {
                "host_peak_rss_bytes": null,
                "device_peak_bytes": null,
                "note": "burn 0.21 does not expose cubecl's device memory usage through its Backend trait; on GPUs tools/bench/run_gpu.sh samples nvidia-smi instead",
            },
        });
        Self {
            header,
            json: args.json.clone(),
            rows: Vec::new(),
        }
    }

    /// The report so far: the header, the rows, the load and memory now.
    pub(super) fn report(&self) -> Value {
        let mut r = self.header.clone();
        r["components"] = self.rows.iter().map(Row::to_json).collect();
        r["host_load"]["end"] = json!(loadavg());
        r["memory"]["host_peak_rss_bytes"] = json!(peak_rss_bytes());
        r
    }

    /// `name`, or `name#N` when N - 1 rows already carry it (two towers of one name, a
    /// configuration and its weights, get distinct rows).
    pub(super) fn distinct_name(&self, name: String) -> String {
        let same = self
            .rows
            .iter()
            .filter(|r| r.name.split('#').next() == Some(&name))
            .count();
        if same > 0 {
            format!("{name}#{}", same + 1)
        } else {
            name
        }
    }

    /// Adds a row: `built` is (build seconds, parameters), `r` the timings; rewrites the
    /// JSON report.
    pub(super) fn push(
        &mut self,
        name: &str,
        what: String,
        built: (f64, usize),
        r: Runs,
    ) -> Result<()> {
        let ((build_s, params), (first_ms, samples)) = (built, r);
        let row = Row {
            name: name.into(),
            what,
            build_s,
            params,
            first_ms,
            samples,
        };
        log::info!("{}: {:?}", row.name, Stats::of(&row.samples));
        self.rows.push(row);
        if let Some(p) = &self.json {
            let text = serde_json::to_string_pretty(&self.report())? + "\n";
            magicnaming_core::write_atomic(p, text.as_bytes())
                .with_context(|| format!("writing {}", p.display()))?;
        }
        Ok(())
    }
}

/// Peak resident memory of this process (`VmHWM`), Linux only.
fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// The 1, 5 and 15-minute load averages (`/proc/loadavg`), Linux only: CPU timings on a
/// shared machine need them to be read.
fn loadavg() -> Option<[f64; 3]> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    let mut it = text.split_whitespace().map(|v| v.parse::<f64>().ok());
    Some([it.next()??, it.next()??, it.next()??])
}

/// `YYYY-MM-DDTHH:MM:SSZ` of a Unix time (proleptic Gregorian, UTC).
fn utc_iso8601(unix_s: u64) -> String {
    let (days, secs) = ((unix_s / 86_400) as i64, unix_s % 86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    let (h, mi, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    format!("{y:04}-{m:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z")
}

/// The backend and device, and the host's CPU.
fn device_name<B: Backend>(device: &B::Device) -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo").ok().and_then(|s| {
        s.lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split(':').nth(1))
            .map(|m| m.trim().to_string())
    });
    let threads = std::thread::available_parallelism().map_or(0, |n| n.get());
    let host = format!(
        "{} ({threads} threads)",
        cpu.unwrap_or_else(|| "unknown CPU".into())
    );
    format!("{} {device:?}; host {host}", B::name(device))
}

/// This process's command line, quoted for a POSIX shell.
fn command_line() -> String {
    std::env::args()
        .map(|a| {
            if a.is_empty() || a.contains(|c: char| c.is_whitespace() || "'\"$`\\".contains(c)) {
                format!("'{}'", a.replace('\'', r"'\''"))
            } else {
                a
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Prints the report as a table.
pub(super) fn print_table(report: &Value) {
    let s = &report["settings"];
    println!(
        "magicnaming bench on {} ({}), {}; {}",
        report["device"].as_str().unwrap_or_default(),
        report["device_name"].as_str().unwrap_or_default(),
        report["dtype"].as_str().unwrap_or_default(),
        s["model"].as_str().unwrap_or_default()
    );
    println!(
        "warm-up {} (image {}), timed runs {} (image {})",
        s["warmup"], s["image_warmup"], s["iters"], s["image_iters"]
    );
    println!(
        "{:<22} {:>12} {:>12} {:>12} {:>12} {:>9}  what",
        "component", "median ms", "min ms", "max ms", "first ms", "build s"
    );
    let num = |v: &Value| v.as_f64().map_or("-".into(), |x| format!("{x:.1}"));
    for c in report["components"].as_array().into_iter().flatten() {
        println!(
            "{:<22} {:>12} {:>12} {:>12} {:>12} {:>9.1}  {}",
            c["name"].as_str().unwrap_or_default(),
            num(&c["median_ms"]),
            num(&c["min_ms"]),
            num(&c["max_ms"]),
            num(&c["first_ms"]),
            c["build_s"].as_f64().unwrap_or(0.0),
            c["what"].as_str().unwrap_or_default()
        );
    }
    if let Some(b) = report["memory"]["host_peak_rss_bytes"].as_u64() {
        println!(
            "peak host memory (VmHWM): {:.2} GiB",
            b as f64 / (1u64 << 30) as f64
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        // Expected values from GNU `date -u -d @N +%Y-%m-%dT%H:%M:%SZ`.
        assert_eq!(utc_iso8601(0), "1970-01-01T00:00:00Z");
        // 2000-02-29 (a leap day of a century divisible by 400), 12:34:56.
        assert_eq!(utc_iso8601(951_827_696), "2000-02-29T12:34:56Z");
        assert_eq!(utc_iso8601(1_795_000_000), "2026-11-18T11:06:40Z");
    }
}
