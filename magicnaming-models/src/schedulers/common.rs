//! Schedule math shared by the schedulers, written to reproduce diffusers' numerics.
//!
//! diffusers builds its training tables with float32 torch ops (`torch.linspace(...,
//! dtype=float32)`, `1.0 - betas`, `torch.cumprod`, `((1 - ac) / ac) ** 0.5`); those are
//! emulated with `f32` arithmetic here (IEEE f32 ops round identically; `torch.cumprod`
//! accumulates float32 inputs in double and rounds each prefix to float32, as done here). The
//! numpy parts of `set_timesteps` (`np.linspace`, `np.arange`, `np.interp`, `np.round`, the
//! Karras ramp, `_sigma_to_t`) run in f64 with numpy's formulas. The one known difference:
//! torch's vectorised `linspace` kernel rounds some elements 1 ulp differently from its scalar
//! formula (used here), which moves sigmas by at most ~2.4e-7 relative.
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;

use super::config::{BetaSchedule, PredictionType};
use crate::ModelError;

/// What determines the training noise table (fields of every scheduler's config).
pub(crate) struct BetaParams<'a> {
    pub num_train_timesteps: usize,
    pub beta_start: f64,
    pub beta_end: f64,
    pub beta_schedule: BetaSchedule,
    pub trained_betas: Option<&'a [f64]>,
    pub rescale_betas_zero_snr: bool,
}

/// `torch.linspace(start, end, n, dtype=torch.float32)` (scalar CPU kernel).
pub(crate) fn torch_linspace_f32(start: f64, end: f64, n: usize) -> Vec<f32> {
    let (start, end) = (start as f32, end as f32);
    if n == 1 {
        return vec![start];
    }
    let step = (end - start) / (n - 1) as f32;
    let half = n / 2;
    (0..n)
        .map(|i| {
            if i < half {
                start + step * i as f32
            } else {
                end - step * (n - i - 1) as f32
            }
        })
        .collect()
}

/// `np.linspace(start, stop, n)` in float64.
pub(crate) fn np_linspace(start: f64, stop: f64, n: usize) -> Vec<f64> {
    match n {
        0 => vec![],
        1 => vec![start],
        _ => {
            let step = (stop - start) / (n - 1) as f64;
            let mut y: Vec<f64> = (0..n).map(|i| i as f64 * step + start).collect();
            y[n - 1] = stop;
            y
        }
    }
}

/// `np.arange(start, 0, -step)` for a float `step > 0`: numpy's length
/// `ceil((stop - start) / delta)` and fill `start + i * ((start + delta) - start)`.
pub(crate) fn np_arange_down(start: f64, step: f64) -> Vec<f64> {
    let delta = -step;
    let len = ((0.0 - start) / delta).ceil();
    if len.is_nan() || len <= 0.0 {
        return vec![];
    }
    let len = len as usize;
    let second = start + delta;
    let d = second - start;
    (0..len)
        .map(|i| match i {
            0 => start,
            1 => second,
            _ => start + i as f64 * d,
        })
        .collect()
}

/// Betas, alphas and `alphas_cumprod` as diffusers' `__init__` computes them (float32);
/// `zero_snr_clamp` applies the `alphas_cumprod[-1] = 2**-24` of Euler, Euler ancestral and
/// DPM-Solver when the betas are rescaled (DDIM does not).
pub(crate) fn alphas_cumprod(p: &BetaParams, zero_snr_clamp: bool) -> crate::Result<Vec<f32>> {
    let n = p.num_train_timesteps;
    let mut betas: Vec<f32> = match (p.trained_betas, p.beta_schedule) {
        (Some(b), _) => {
            if b.len() != n {
                return Err(ModelError::InvalidInput(format!(
                    "trained_betas has {} values, num_train_timesteps is {n}",
                    b.len()
                )));
            }
            b.iter().map(|&x| x as f32).collect()
        }
        (None, BetaSchedule::Linear) => torch_linspace_f32(p.beta_start, p.beta_end, n),
        (None, BetaSchedule::ScaledLinear) => {
            torch_linspace_f32(p.beta_start.sqrt(), p.beta_end.sqrt(), n)
                .into_iter()
                .map(|b| b * b)
                .collect()
        }
        (None, BetaSchedule::SquaredcosCapV2) => betas_for_alpha_bar_cosine(n),
    };
    if p.rescale_betas_zero_snr {
        betas = rescale_zero_terminal_snr(&betas);
    }
    let mut ac = cumprod(betas.iter().map(|&b| 1.0f32 - b));
    if p.rescale_betas_zero_snr
        && zero_snr_clamp
        && let Some(last) = ac.last_mut()
    {
        *last = 2f32.powi(-24);
    }
    Ok(ac)
}

/// `torch.cumprod` of a float32 tensor: f64 accumulator, each prefix rounded to float32.
fn cumprod(alphas: impl Iterator<Item = f32>) -> Vec<f32> {
    let mut acc = 1f64;
    alphas
        .map(|a| {
            acc *= a as f64;
            acc as f32
        })
        .collect()
}

/// diffusers' `betas_for_alpha_bar(n)` (cosine, max_beta 0.999), Python floats then float32.
fn betas_for_alpha_bar_cosine(n: usize) -> Vec<f32> {
    let alpha_bar = |t: f64| {
        ((t + 0.008) / 1.008 * std::f64::consts::PI / 2.0)
            .cos()
            .powi(2)
    };
    (0..n)
        .map(|i| {
            let (t1, t2) = (i as f64 / n as f64, (i + 1) as f64 / n as f64);
            (1.0 - alpha_bar(t2) / alpha_bar(t1)).min(0.999) as f32
        })
        .collect()
}

/// diffusers' `rescale_zero_terminal_snr` in float32.
fn rescale_zero_terminal_snr(betas: &[f32]) -> Vec<f32> {
    let ac = cumprod(betas.iter().map(|&b| 1.0f32 - b));
    let mut sqrt: Vec<f32> = ac.iter().map(|a| a.sqrt()).collect();
    let (s0, st) = (sqrt[0], sqrt[sqrt.len() - 1]);
    let scale = s0 / (s0 - st);
    for s in &mut sqrt {
        *s = (*s - st) * scale;
    }
    let bar: Vec<f32> = sqrt.iter().map(|s| s * s).collect();
    let mut alphas = vec![bar[0]];
    alphas.extend(bar.windows(2).map(|w| w[1] / w[0]));
    alphas.into_iter().map(|a| 1.0f32 - a).collect()
}

/// The training sigma table `((1 - ac) / ac) ** 0.5` (float32, index = training timestep).
pub(crate) fn train_sigmas(ac: &[f32]) -> Vec<f32> {
    ac.iter().map(|&a| ((1.0f32 - a) / a).sqrt()).collect()
}

/// `np.interp(x, np.arange(len(fp)), fp)` with float32 `fp`, in float64.
pub(crate) fn np_interp_index(x: f64, fp: &[f32]) -> f64 {
    let last = fp.len() - 1;
    if x.is_nan() {
        return x;
    }
    if x > last as f64 {
        return fp[last] as f64;
    }
    if x < 0.0 {
        return fp[0] as f64;
    }
    let j = x.floor() as usize;
    if j >= last || x == j as f64 {
        return fp[j] as f64;
    }
    let slope = fp[j + 1] as f64 - fp[j] as f64;
    slope * (x - j as f64) + fp[j] as f64
}

/// `_convert_to_karras`: rho = 7 ramp from `sigma_max` to `sigma_min` over `n` values.
pub(crate) fn karras_sigmas(sigma_min: f64, sigma_max: f64, n: usize) -> Vec<f64> {
    let rho = 7.0;
    let min_inv = sigma_min.powf(1.0 / rho);
    let max_inv = sigma_max.powf(1.0 / rho);
    np_linspace(0.0, 1.0, n)
        .into_iter()
        .map(|r| (max_inv + r * (min_inv - max_inv)).powf(rho))
        .collect()
}

/// `np.log` of the float32 sigma table (float32, as numpy keeps the dtype).
pub(crate) fn log_sigmas(train_sigmas: &[f32]) -> Vec<f32> {
    train_sigmas.iter().map(|s| s.ln()).collect()
}

/// `_sigma_to_t`: the fractional training timestep of `sigma` by interpolating `log_sigmas`.
pub(crate) fn sigma_to_t(sigma: f64, log_sigmas: &[f32]) -> f64 {
    let log_sigma = sigma.max(1e-10).ln();
    // Last index whose log-sigma is <= log_sigma (0 if none), as argmax(cumsum(dists >= 0)).
    let mut low = 0;
    for (k, &ls) in log_sigmas.iter().enumerate() {
        if log_sigma - ls as f64 >= 0.0 {
            low = k;
        }
    }
    let low = low.min(log_sigmas.len() - 2);
    let (lo, hi) = (log_sigmas[low] as f64, log_sigmas[low + 1] as f64);
    let w = ((lo - log_sigma) / (lo - hi)).clamp(0.0, 1.0);
    (1.0 - w) * low as f64 + w * (low + 1) as f64
}

/// Rounds a value to float32 and back, as diffusers' `.astype(np.float32)` does.
pub(crate) fn f32_round(x: f64) -> f64 {
    x as f32 as f64
}

/// Common validation of `num_inference_steps`.
pub(crate) fn check_steps(class: &str, n: usize, num_train_timesteps: usize) -> crate::Result<()> {
    if n == 0 {
        return Err(ModelError::InvalidInput(format!(
            "{class}: the number of inference steps must be at least 1"
        )));
    }
    if n > num_train_timesteps {
        return Err(ModelError::InvalidInput(format!(
            "{class}: {n} inference steps exceed the {num_train_timesteps} training timesteps"
        )));
    }
    Ok(())
}

/// The Euler schedulers' `scale_model_input`: `sample / sqrt(sigma^2 + 1)`.
pub(crate) fn scale_by_sigma<B: Backend>(sample: Tensor<B, 4>, sigma: f64) -> Tensor<B, 4> {
    sample.div_scalar((sigma * sigma + 1.0).sqrt())
}

/// The Euler schedulers' `pred_original_sample` at noise level `sigma`: `x - sigma * eps`
/// for epsilon, `-sigma / sqrt(sigma^2 + 1) * v + x / (sigma^2 + 1)` for v-prediction,
/// the model output itself for `sample`.
pub(crate) fn sigma_pred_original<B: Backend>(
    prediction: PredictionType,
    model_output: Tensor<B, 4>,
    sample: Tensor<B, 4>,
    sigma: f64,
) -> Tensor<B, 4> {
    match prediction {
        PredictionType::Epsilon => sample - model_output.mul_scalar(sigma),
        PredictionType::VPrediction => {
            model_output.mul_scalar(-sigma / (sigma * sigma + 1.0).sqrt())
                + sample.div_scalar(sigma * sigma + 1.0)
        }
        PredictionType::Sample => model_output,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numpy_helpers_match_numpy() {
        // np.linspace(0, 999, 4) == [0, 333, 666, 999]; np.linspace(3, 7, 1) == [3].
        assert_eq!(np_linspace(0.0, 999.0, 4), vec![0.0, 333.0, 666.0, 999.0]);
        assert_eq!(np_linspace(3.0, 7.0, 1), vec![3.0]);
        // np.arange(1000, 0, -1000 / 3) == [1000, 666.67, 333.33] (length 3, not 4).
        let a = np_arange_down(1000.0, 1000.0 / 3.0);
        assert_eq!(a.len(), 3);
        assert!((a[2] - 333.333_333_333_333_3).abs() < 1e-9);
        // np.interp at, between and beyond the grid.
        let fp = [1.0f32, 3.0, 7.0];
        assert_eq!(np_interp_index(1.0, &fp), 3.0);
        assert_eq!(np_interp_index(1.5, &fp), 5.0);
        assert_eq!(np_interp_index(9.0, &fp), 7.0);
        assert_eq!(np_interp_index(-1.0, &fp), 1.0);
        // _sigma_to_t inverts the table at its nodes and clamps outside it.
        let ls = log_sigmas(&[0.5, 1.0, 2.0, 4.0]);
        assert!((sigma_to_t(2.0, &ls) - 2.0).abs() < 1e-6);
        assert!((sigma_to_t(2f64.powf(1.5), &ls) - 2.5).abs() < 1e-6);
        assert_eq!(sigma_to_t(100.0, &ls), 3.0);
        assert_eq!(sigma_to_t(0.01, &ls), 0.0);
    }
}
