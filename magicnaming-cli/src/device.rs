//! `--device cpu|flex|ndarray|wgpu[:N]|cuda[:N]`: the library's runtime backend choice
//! ([`magicnaming::backend`]), with the CLI's commands as jobs.
use anyhow::{bail, Result};
use burn::tensor::backend::Backend;
pub use magicnaming::backend::{compiled_backends, parse_devices, DeviceSpec};

/// A command that runs on any backend.
pub trait Job: Sized {
    /// Runs on backend `B`, device `device`.
    fn run<B: Backend>(self, device: B::Device) -> Result<()>;

    /// Runs on several devices of backend `B`; most commands take exactly one.
    fn run_on<B: Backend>(self, devices: Vec<B::Device>) -> Result<()> {
        match <[B::Device; 1]>::try_from(devices) {
            Ok([device]) => self.run::<B>(device),
            Err(v) => bail!("this command runs on one device; {} were given", v.len()),
        }
    }
}

/// A command as the library's [`magicnaming::backend::Job`].
struct Command<J>(J);

impl<J: Job> magicnaming::backend::Job for Command<J> {
    type Output = Result<()>;

    fn run<B: Backend>(self, devices: Vec<B::Device>) -> Result<()> {
        self.0.run_on::<B>(devices)
    }
}

/// Runs `job` on the backend the devices name (all of one backend, see [`parse_devices`]).
pub fn dispatch<J: Job>(devices: &[DeviceSpec], job: J) -> Result<()> {
    magicnaming::backend::dispatch(devices, Command(job))?
}
