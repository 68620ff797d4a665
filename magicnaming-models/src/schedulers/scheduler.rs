//! The [`Scheduler`] trait every scheduler implements, the scheduler kinds, and the
//! checks and noise draws they share.
use std::fmt;
use std::str::FromStr;

use burn::tensor::Tensor;
use burn::tensor::backend::Backend;

use crate::ModelError;

/// A denoising scheduler: the timestep/sigma schedule and the sample update.
///
/// Call [`Scheduler::set_timesteps`] first, then for `i` in `0..timesteps().len()`, in order:
/// [`Scheduler::scale_model_input`], the model at `timesteps()[i]`, [`Scheduler::step`].
pub trait Scheduler<B: Backend>: fmt::Debug + Send {
    /// The diffusers class this scheduler reproduces.
    fn class_name(&self) -> &'static str;

    /// Builds the schedule for `num_inference_steps` denoising steps and resets any
    /// multistep state. Errors for 0 steps or more steps than training timesteps.
    fn set_timesteps(&mut self, num_inference_steps: usize) -> crate::Result<()>;

    /// The model timesteps, one per step (empty before [`Scheduler::set_timesteps`]):
    /// integers for DDIM and DPM-Solver, possibly fractional for Euler (the UNet takes them as
    /// floats).
    fn timesteps(&self) -> &[f64];

    /// The noise levels, `timesteps().len() + 1` values ending with the final sigma
    /// (diffusers' `sigmas`; Euler with `interpolation_type: log_linear` has one more, as in
    /// diffusers), or `None` for schedulers without sigmas (DDIM).
    fn sigmas(&self) -> Option<&[f64]>;

    /// Standard deviation of the initial latents: the pipeline scales N(0, 1) noise by it.
    fn init_noise_sigma(&self) -> f64;

    /// diffusers' `order` attribute (model evaluations per step as the pipeline counts
    /// them): 1 for all four schedulers, DPM-Solver multistep included.
    fn order(&self) -> usize {
        1
    }

    /// Whether [`Scheduler::step`] uses noise (Euler ancestral, DDIM with `eta > 0`).
    fn needs_noise(&self) -> bool;

    /// Scales the latents before the model call of step `step_index`.
    ///
    /// # Shapes
    /// `sample`: `[batch, channels, height, width]`; returns the same shape.
    fn scale_model_input(
        &self,
        sample: Tensor<B, 4>,
        step_index: usize,
    ) -> crate::Result<Tensor<B, 4>>;

    /// One denoising step: the latents of step `step_index + 1` from the model output at
    /// `timesteps()[step_index]`. `noise` (N(0, 1), same shape) is used by stochastic steps
    /// only, which need it (see the module docs).
    ///
    /// # Shapes
    /// `model_output`, `sample`, `noise`: `[batch, channels, height, width]`; returns the same.
    fn step(
        &mut self,
        model_output: Tensor<B, 4>,
        step_index: usize,
        sample: Tensor<B, 4>,
        noise: Option<Tensor<B, 4>>,
    ) -> crate::Result<Tensor<B, 4>>;
}

/// The schedulers a user can pick by name.
///
/// ```
/// use magicnaming_models::schedulers::SchedulerKind;
/// let kind: SchedulerKind = "euler-a".parse().unwrap();
/// assert_eq!(kind, SchedulerKind::EulerAncestral);
/// assert_eq!(kind.class_name(), "EulerAncestralDiscreteScheduler");
/// assert!("plms".parse::<SchedulerKind>().is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SchedulerKind {
    /// `euler`: `EulerDiscreteScheduler` (SDXL base's own scheduler).
    Euler,
    /// `euler-a`: `EulerAncestralDiscreteScheduler`.
    EulerAncestral,
    /// `ddim`: `DDIMScheduler` (`eta = 0`, as the SDXL pipeline calls it).
    Ddim,
    /// `dpmpp-2m-karras`: `DPMSolverMultistepScheduler` with `algorithm_type: dpmsolver++`,
    /// `solver_order: 2`, `use_karras_sigmas: true`.
    DpmPp2mKarras,
}

impl SchedulerKind {
    /// Every kind, in the order they are listed to users.
    pub const ALL: [Self; 4] = [
        Self::Euler,
        Self::EulerAncestral,
        Self::Ddim,
        Self::DpmPp2mKarras,
    ];

    /// The user-facing name (`euler`, `euler-a`, `ddim`, `dpmpp-2m-karras`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Euler => "euler",
            Self::EulerAncestral => "euler-a",
            Self::Ddim => "ddim",
            Self::DpmPp2mKarras => "dpmpp-2m-karras",
        }
    }

    /// The diffusers class behind this kind.
    pub const fn class_name(self) -> &'static str {
        match self {
            Self::Euler => "EulerDiscreteScheduler",
            Self::EulerAncestral => "EulerAncestralDiscreteScheduler",
            Self::Ddim => "DDIMScheduler",
            Self::DpmPp2mKarras => "DPMSolverMultistepScheduler",
        }
    }
}

impl fmt::Display for SchedulerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for SchedulerKind {
    type Err = ModelError;

    /// Parses a user-facing name; unknown names give an error listing the valid ones.
    fn from_str(s: &str) -> crate::Result<Self> {
        Self::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = Self::ALL.iter().map(|k| k.name()).collect();
                ModelError::InvalidInput(format!(
                    "unknown scheduler {s:?}; expected one of: {}",
                    names.join(", ")
                ))
            })
    }
}

/// Checks a step index against the schedule.
pub(crate) fn check_index(class: &str, step_index: usize, num_steps: usize) -> crate::Result<()> {
    if num_steps == 0 {
        return Err(ModelError::InvalidInput(format!(
            "{class}: set_timesteps must be called before stepping"
        )));
    }
    if step_index >= num_steps {
        return Err(ModelError::InvalidInput(format!(
            "{class}: step index {step_index} out of range for {num_steps} steps"
        )));
    }
    Ok(())
}

/// Checks that `other` has the shape of `sample`.
pub(crate) fn check_shape<B: Backend>(
    what: &str,
    other: &Tensor<B, 4>,
    sample: &Tensor<B, 4>,
) -> crate::Result<()> {
    if other.dims() != sample.dims() {
        return Err(ModelError::InvalidInput(format!(
            "scheduler step: {what} has shape {:?}, the sample {:?}",
            other.dims(),
            sample.dims()
        )));
    }
    Ok(())
}

/// The caller's noise (shape-checked), which a stochastic step of `scheduler` needs.
pub(crate) fn required_noise<B: Backend>(
    scheduler: &str,
    noise: Option<Tensor<B, 4>>,
    sample: &Tensor<B, 4>,
) -> crate::Result<Tensor<B, 4>> {
    match noise {
        Some(n) => {
            check_shape("noise", &n, sample)?;
            Ok(n)
        }
        None => Err(ModelError::InvalidInput(format!(
            "{scheduler}: a stochastic step needs N(0, 1) noise of shape {:?} (the pipeline draws it from its seeded host generator)",
            sample.dims()
        ))),
    }
}
