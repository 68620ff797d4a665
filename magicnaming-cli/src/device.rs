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

/// Parses `--device`: one device, or a comma-separated list of the same backend
/// (`cuda:0,cuda:1`) for commands that spread work over several.
pub fn parse_devices(s: &str) -> std::result::Result<Vec<DeviceArg>, String> {
    let devices = s
        .split(',')
        .map(|d| d.trim().parse::<DeviceArg>())
        .collect::<std::result::Result<Vec<_>, _>>()?;
    let same = devices
        .windows(2)
        .all(|w| std::mem::discriminant(&w[0]) == std::mem::discriminant(&w[1]));
    if !same {
        return Err(format!("`{s}`: all devices must use the same backend"));
    }
    Ok(devices)
}

fn not_compiled(name: &str) -> Result<()> {
    bail!(
        "backend `{name}` is not compiled into this binary (compiled in: {}); rebuild with `--features {name}`",
        compiled_backends().join(", ")
    )
}

/// Runs `job` on the backend the devices name (all of one backend, see [`parse_devices`]).
// Each arm returns from a cfg-selected block, so which `return` is the tail depends on
// the feature set.
#[allow(clippy::needless_return)]
pub fn dispatch<J: Job>(devices: &[DeviceArg], job: J) -> Result<()> {
    log::debug!("devices: {devices:?}");
    let Some(first) = devices.first() else {
        bail!("no device given");
    };
    match first {
        DeviceArg::Cpu => {
            #[cfg(feature = "ndarray")]
            return job.run_on::<burn::backend::NdArray<f32>>(
                devices.iter().map(|_| Default::default()).collect(),
            );
            #[cfg(not(feature = "ndarray"))]
            return {
                let _ = job;
                not_compiled("ndarray")
            };
        }
        DeviceArg::Wgpu(_) => {
            #[cfg(feature = "wgpu")]
            {
                use burn::backend::wgpu::WgpuDevice;
                let list = devices
                    .iter()
                    .map(|d| match d {
                        DeviceArg::Wgpu(Some(i)) => WgpuDevice::DiscreteGpu(*i),
                        _ => WgpuDevice::DefaultDevice,
                    })
                    .collect();
                return job.run_on::<burn::backend::Wgpu>(list);
            }
            #[cfg(not(feature = "wgpu"))]
            {
                let _ = job;
                not_compiled("wgpu")
            }
        }
        DeviceArg::Cuda(_) => {
            #[cfg(feature = "cuda")]
            {
                let list = devices
                    .iter()
                    .map(|d| match d {
                        DeviceArg::Cuda(i) => burn::backend::cuda::CudaDevice::new(*i),
                        _ => burn::backend::cuda::CudaDevice::new(0),
                    })
                    .collect();
                return job.run_on::<burn::backend::Cuda>(list);
            }
            #[cfg(not(feature = "cuda"))]
            {
                let _ = job;
                not_compiled("cuda")
            }
        }
    }
}
