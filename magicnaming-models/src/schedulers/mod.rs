//! SDXL noise schedulers, ported from diffusers 0.42.1: `EulerDiscreteScheduler`
//! ([`euler`]), `EulerAncestralDiscreteScheduler` ([`euler_ancestral`]), `DDIMScheduler`
//! ([`ddim`]) and `DPMSolverMultistepScheduler` as "DPM++ 2M (Karras)" ([`dpmpp_2m`]);
//! for training, `DDPMScheduler`'s `add_noise` and `get_velocity` ([`ddpm`]).
//!
//! # The loop
//!
//! A pipeline generic over `B: Backend` drives any [`Scheduler`] like
//! `StableDiffusionXLPipeline` drives diffusers' schedulers (which it pins with
//! `set_begin_index(0)`, so that step `i` uses schedule entry `i`):
//!
//! ```ignore
//! scheduler.set_timesteps(num_inference_steps)?;
//! let mut latents = noise.mul_scalar(scheduler.init_noise_sigma());
//! for i in 0..scheduler.timesteps().len() {
//!     let input = scheduler.scale_model_input(latents.clone(), i)?;
//!     let eps = unet.forward(input, scheduler.timesteps()[i], ..);
//!     latents = scheduler.step(eps, i, latents, None)?;
//! }
//! ```
//!
//! # Randomness
//!
//! Stochastic steps (Euler ancestral; DDIM with `eta > 0`; [`Scheduler::needs_noise`] says
//! which) take their N(0, 1) noise from the `noise` argument of [`Scheduler::step`] when it is
//! `Some`: the pipeline passes draws of its seeded host generator, the tests the exact draws
//! diffusers made. With `None` such a step is an error: no step draws from a backend's
//! global generator, which other threads may share. Deterministic steps ignore `noise`.
//!
//! # Precision
//!
//! Schedules are host `f64`. diffusers materialises its training tables (betas, alphas,
//! `alphas_cumprod`, the sigma table) as float32 tensors and rounds the final `sigmas` and
//! `timesteps` to float32; those roundings are reproduced (see [`common`]), which keeps the
//! schedules within a few float32 ulps of diffusers (pure f64 tables differ by up to 1.3e-5
//! relative at small sigmas). The per-step scalar coefficients are computed in f64 and the
//! sample updates are tensor ops in the tensors' dtype, in diffusers' order.
mod build;
mod common;
mod config;
pub mod ddim;
pub mod ddpm;
pub mod dpmpp_2m;
pub mod euler;
pub mod euler_ancestral;
mod scheduler;

pub use config::{
    BetaSchedule, FinalSigmasType, InterpolationType, PredictionType, SchedulerConfig,
    TimestepSpacing, TimestepType,
};
pub use ddim::{DdimConfig, DdimScheduler};
pub use ddpm::NoiseSchedule;
pub use dpmpp_2m::{DpmSolverMultistepConfig, DpmSolverMultistepScheduler, SolverType};
pub use euler::{EulerDiscreteConfig, EulerDiscreteScheduler};
pub use euler_ancestral::{EulerAncestralDiscreteConfig, EulerAncestralDiscreteScheduler};
pub use scheduler::{Scheduler, SchedulerKind};
