//! `--device cpu|wgpu[:N]|cuda[:N]`: picks a compiled-in burn backend and runs a job on it.
use anyhow::{bail, Result};
use burn::tensor::backend::Backend;

/// A device named on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceArg {
    /// The ndarray CPU backend.
    Cpu,
    /// The wgpu backend; `None` is the default adapter.
    Wgpu(Option<usize>),
    /// The CUDA backend, device index.
    Cuda(usize),
}

/// Backends compiled into this binary, as `--device` spells them.
pub fn compiled_backends() -> Vec<&'static str> {
    let mut v = Vec::new();
    if cfg!(feature = "ndarray") {
        v.push("cpu");
    }
    if cfg!(feature = "wgpu") {
        v.push("wgpu");
    }
    if cfg!(feature = "cuda") {
        v.push("cuda");
    }
    v
}

impl std::str::FromStr for DeviceArg {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let (kind, index) = match s.split_once(':') {
            Some((k, i)) => {
                let n = i
                    .parse::<usize>()
                    .map_err(|_| format!("device index `{i}` in `{s}` is not a number"))?;
                (k, Some(n))
            }
            None => (s, None),
        };
        match (kind, index) {
            ("cpu", None) => Ok(Self::Cpu),
            ("cpu", Some(_)) => Err("`cpu` takes no index".into()),
            ("wgpu", i) => Ok(Self::Wgpu(i)),
            ("cuda", i) => Ok(Self::Cuda(i.unwrap_or(0))),
            _ => Err(format!(
                "unknown device `{s}`: expected cpu, wgpu[:N] or cuda[:N]"
            )),
        }
    }
}

impl Default for DeviceArg {
    fn default() -> Self {
        if cfg!(feature = "ndarray") {
            Self::Cpu
        } else if cfg!(feature = "cuda") {
            Self::Cuda(0)
        } else {
            Self::Wgpu(None)
        }
    }
}

/// Work that runs on any backend.
pub trait Job {
    /// Runs on backend `B`, device `device`.
    fn run<B: Backend>(self, device: B::Device) -> Result<()>;
}

fn not_compiled(name: &str) -> Result<()> {
    bail!(
        "backend `{name}` is not compiled into this binary (compiled in: {}); rebuild with `--features {name}`",
        compiled_backends().join(", ")
    )
}

/// Runs `job` on the backend `device` names.
pub fn dispatch<J: Job>(device: &DeviceArg, job: J) -> Result<()> {
    log::debug!("device: {device:?}");
    match device {
        DeviceArg::Cpu => {
            #[cfg(feature = "ndarray")]
            return job.run::<burn::backend::NdArray<f32>>(Default::default());
            #[cfg(not(feature = "ndarray"))]
            return {
                let _ = job;
                not_compiled("ndarray")
            };
        }
        DeviceArg::Wgpu(index) => {
            #[cfg(feature = "wgpu")]
            {
                use burn::backend::wgpu::WgpuDevice;
                let d = match index {
                    None => WgpuDevice::DefaultDevice,
                    Some(i) => WgpuDevice::DiscreteGpu(*i),
                };
                return job.run::<burn::backend::Wgpu>(d);
            }
            #[cfg(not(feature = "wgpu"))]
            {
                let _ = (job, index);
                not_compiled("wgpu")
            }
        }
        DeviceArg::Cuda(index) => {
            #[cfg(feature = "cuda")]
            {
                return job
                    .run::<burn::backend::Cuda>(burn::backend::cuda::CudaDevice::new(*index));
            }
            #[cfg(not(feature = "cuda"))]
            {
                let _ = (job, index);
                not_compiled("cuda")
            }
        }
    }
}
