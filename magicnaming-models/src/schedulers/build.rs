//! Building a scheduler from a `scheduler_config.json`: the file's own class, or another
//! kind the way diffusers' `XScheduler.from_config(pipe.scheduler.config, **overrides)` does.
use burn::tensor::backend::Backend;
use serde_json::{Value, json};

use super::config::SchedulerConfig;
use super::ddim::{self, DdimScheduler};
use super::dpmpp_2m::{self, DpmSolverMultistepScheduler};
use super::euler::{self, EulerDiscreteScheduler};
use super::euler_ancestral::{self, EulerAncestralDiscreteScheduler};
use super::scheduler::{Scheduler, SchedulerKind};
use crate::ModelError;

impl SchedulerConfig {
    /// The kind matching the file's class, if it is one of [`SchedulerKind`]'s (a
    /// `DPMSolverMultistepScheduler` file maps to [`SchedulerKind::DpmPp2mKarras`] only when
    /// it already is DPM++ 2M Karras).
    pub fn native_kind(&self) -> Option<SchedulerKind> {
        let class = self.class_name()?;
        let kind = SchedulerKind::ALL
            .into_iter()
            .find(|k| k.class_name() == class)?;
        if kind == SchedulerKind::DpmPp2mKarras {
            let cfg = self.dpm_solver_multistep(&[]).ok()?;
            let is_2m_karras = cfg.use_karras_sigmas
                && cfg.solver_order == 2
                && cfg.algorithm_type == "dpmsolver++";
            return is_2m_karras.then_some(kind);
        }
        Some(kind)
    }

    /// Builds a scheduler: `kind` switches class like diffusers' `from_config` (with
    /// `use_karras_sigmas=True, algorithm_type="dpmsolver++", solver_order=2` for
    /// [`SchedulerKind::DpmPp2mKarras`]); `None` builds the file's own class as configured.
    /// DDIM is built with `eta = 0`, as the SDXL pipeline steps it.
    pub fn build<B: Backend>(
        &self,
        kind: Option<SchedulerKind>,
    ) -> crate::Result<Box<dyn Scheduler<B>>> {
        let kind = match kind {
            Some(kind) => kind,
            None => {
                let class = self.class_name().unwrap_or("<none>");
                let kind = SchedulerKind::ALL
                    .into_iter()
                    .find(|k| k.class_name() == class);
                match kind {
                    Some(SchedulerKind::DpmPp2mKarras) => {
                        return Ok(Box::new(DpmSolverMultistepScheduler::new(
                            self.dpm_solver_multistep(&[])?,
                        )?));
                    }
                    Some(kind) => kind,
                    None => {
                        return Err(ModelError::config(
                            &self.source,
                            format!(
                                "unsupported scheduler class {class}; choose a scheduler by name instead"
                            ),
                        ));
                    }
                }
            }
        };
        Ok(match kind {
            SchedulerKind::Euler => Box::new(EulerDiscreteScheduler::new(self.euler_discrete()?)?),
            SchedulerKind::EulerAncestral => Box::new(EulerAncestralDiscreteScheduler::new(
                self.euler_ancestral_discrete()?,
            )?),
            SchedulerKind::Ddim => Box::new(DdimScheduler::new(self.ddim()?)?),
            SchedulerKind::DpmPp2mKarras => Box::new(DpmSolverMultistepScheduler::new(
                self.dpm_solver_multistep(&[
                    ("use_karras_sigmas", json!(true)),
                    ("algorithm_type", json!("dpmsolver++")),
                    ("solver_order", json!(2)),
                ])?,
            )?),
        })
    }

    /// `EulerDiscreteScheduler.from_config(self)`.
    pub fn euler_discrete(&self) -> crate::Result<euler::EulerDiscreteConfig> {
        self.typed(euler::defaults(), &[], &[])
    }

    /// `EulerAncestralDiscreteScheduler.from_config(self)`.
    pub fn euler_ancestral_discrete(
        &self,
    ) -> crate::Result<euler_ancestral::EulerAncestralDiscreteConfig> {
        self.typed(euler_ancestral::defaults(), &[], &[])
    }

    /// `DDIMScheduler.from_config(self)`.
    pub fn ddim(&self) -> crate::Result<ddim::DdimConfig> {
        self.typed(ddim::defaults(), &[], &[])
    }

    /// `DPMSolverMultistepScheduler.from_config(self, **overrides)`.
    pub fn dpm_solver_multistep(
        &self,
        overrides: &[(&str, Value)],
    ) -> crate::Result<dpmpp_2m::DpmSolverMultistepConfig> {
        self.typed(dpmpp_2m::defaults(), overrides, &["sigma_min", "sigma_max"])
    }
}
