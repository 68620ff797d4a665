//! Timing: warm-ups then timed runs (each synchronised with the device, within an
//! optional time budget), their statistics, and materialising a model before it is timed.
use std::time::Instant;

use anyhow::{anyhow, Result};
use burn::module::Module;
use burn::tensor::backend::Backend;
use burn::tensor::FloatDType;
use magicnaming_models::nn::precision;

/// Median, extremes and mean of timed runs, in milliseconds.
#[derive(Debug, Clone, PartialEq)]
pub struct Stats {
    /// Middle sample (mean of the two middle ones for an even count).
    pub median: f64,
    /// Fastest run.
    pub min: f64,
    /// Slowest run.
    pub max: f64,
    /// Arithmetic mean.
    pub mean: f64,
}

impl Stats {
    /// Statistics of `samples`; `None` when empty or when a sample is not finite.
    pub fn of(samples: &[f64]) -> Option<Self> {
        if samples.is_empty() || samples.iter().any(|s| !s.is_finite()) {
            return None;
        }
        let mut s = samples.to_vec();
        s.sort_by(f64::total_cmp);
        let n = s.len();
        let median = if n % 2 == 1 {
            s[n / 2]
        } else {
            (s[n / 2 - 1] + s[n / 2]) / 2.0
        };
        Some(Self {
            median,
            min: s[0],
            max: s[n - 1],
            mean: s.iter().sum::<f64>() / n as f64,
        })
    }
}

/// The first warm-up's time and the timed samples, in milliseconds.
pub(super) type Runs = (Option<f64>, Vec<f64>);

/// Runs `f` `warmup` times, then `iters` times timed; each run's outputs are kept until
/// the device is synchronised. With a `budget` (seconds), the timed runs stop once the
/// component has taken that long, after at least one. Returns the first warm-up's time and
/// the timed samples.
pub(super) fn time_runs<B: Backend, T>(
    device: &B::Device,
    (warmup, iters, budget): (usize, usize, Option<f64>),
    mut f: impl FnMut() -> Result<T>,
) -> Result<Runs> {
    let sync = || B::sync(device).map_err(|e| anyhow!("synchronising the device: {e:?}"));
    let mut run = || -> Result<f64> {
        sync()?;
        let start = Instant::now();
        let out = f()?;
        sync()?;
        let ms = start.elapsed().as_secs_f64() * 1e3;
        drop(out);
        Ok(ms)
    };
    let began = Instant::now();
    let mut first = None;
    for i in 0..warmup {
        let ms = run()?;
        if i == 0 {
            first = Some(ms);
        }
    }
    let mut samples = Vec::with_capacity(iters);
    while samples.len() < iters {
        if budget.is_some_and(|b| !samples.is_empty() && began.elapsed().as_secs_f64() > b) {
            log::warn!(
                "--budget-s reached: {} of {iters} timed runs",
                samples.len()
            );
            break;
        }
        samples.push(run()?);
    }
    Ok((first, samples))
}

/// Initialises every float parameter now, in the float type the run uses (burn
/// initialises parameters lazily, on first use, which would put the random
/// initialisation into the first run; loaded weights keep the file's float type), waits
/// for the device; returns the module and its parameter count.
pub(super) fn materialise<B: Backend, M: Module<B>>(
    module: M,
    dtype: FloatDType,
    device: &B::Device,
) -> Result<(M, usize)> {
    let module = precision::cast_module(module, dtype);
    B::sync(device).map_err(|e| anyhow!("synchronising the device: {e:?}"))?;
    let n = module.num_params();
    Ok((module, n))
}

/// Logs that `what` is being built (from `from`) and starts its clock.
pub(super) fn build_log(what: &str, from: &str) -> Instant {
    log::info!("building {what} ({from})");
    Instant::now()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_odd_even_and_order() {
        let s = Stats::of(&[5.0, 1.0, 3.0]).unwrap();
        assert_eq!((s.median, s.min, s.max, s.mean), (3.0, 1.0, 5.0, 3.0));
        // Even count: mean of the two middle samples, whatever the input order.
        let s = Stats::of(&[4.0, 10.0, 1.0, 2.0]).unwrap();
        assert_eq!((s.median, s.min, s.max, s.mean), (3.0, 1.0, 10.0, 4.25));
        let s = Stats::of(&[7.5]).unwrap();
        assert_eq!((s.median, s.min, s.max), (7.5, 7.5, 7.5));
    }

    #[test]
    fn stats_reject_empty_and_non_finite() {
        assert_eq!(Stats::of(&[]), None);
        assert_eq!(Stats::of(&[1.0, f64::NAN]), None);
        assert_eq!(Stats::of(&[f64::INFINITY]), None);
    }
}
