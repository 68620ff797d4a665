//! Backends: the one the enabled cargo features select ([`DefaultBackend`]), and the
//! runtime choice of a device by name (`cpu`, `wgpu[:N]`, `cuda[:N]`) that the CLI and
//! the examples share.
//!
//! Library code is generic over `B: Backend`; only programs name a backend. A program
//! that lets its user pick the device at run time writes its work as a [`Job`] and hands
//! it to [`dispatch`], which monomorphises it for the backend the device names.
use core::fmt;
use core::str::FromStr;

use burn::tensor::backend::Backend;

/// The backend the enabled cargo features select: `cuda`, else `wgpu`, else the CPU
/// backend ([`CpuBackend`]).
#[cfg(feature = "cuda")]
pub type DefaultBackend = burn::backend::Cuda;
/// The backend the enabled cargo features select: `cuda`, else `wgpu`, else the CPU
/// backend ([`CpuBackend`]).
#[cfg(all(feature = "wgpu", not(feature = "cuda")))]
pub type DefaultBackend = burn::backend::Wgpu;
/// The backend the enabled cargo features select: `cuda`, else `wgpu`, else the CPU
/// backend ([`CpuBackend`]).
///
/// ```
/// use magicnaming::prelude::*;
/// let device = Default::default();
/// let x = magicnaming::burn::tensor::Tensor::<DefaultBackend, 1>::from_floats([1.0, 2.0], &device);
/// assert_eq!(x.sum().into_scalar(), 3.0);
/// ```
#[cfg(all(
    any(feature = "flex", feature = "ndarray"),
    not(any(feature = "cuda", feature = "wgpu"))
))]
pub type DefaultBackend = CpuBackend;

/// The CPU backend the device `cpu` names: burn-flex (feature `flex`, a default feature;
/// 1.3-3.7x faster than burn-ndarray on SDXL, the CLIP towers and IResNet-50 in
/// docs/BENCHMARKS.md), else burn-ndarray (feature `ndarray`). Both can be named
/// explicitly at run time (`flex`, `ndarray`).
#[cfg(feature = "flex")]
pub type CpuBackend = burn::backend::Flex;
/// The CPU backend the device `cpu` names: burn-flex (feature `flex`, a default feature;
/// 1.3-3.7x faster than burn-ndarray on SDXL, the CLIP towers and IResNet-50 in
/// docs/BENCHMARKS.md), else burn-ndarray (feature `ndarray`). Both can be named
/// explicitly at run time (`flex`, `ndarray`).
#[cfg(all(feature = "ndarray", not(feature = "flex")))]
pub type CpuBackend = burn::backend::NdArray<f32>;

/// Errors of choosing a device.
///
/// ```
/// use magicnaming::backend::{parse_devices, BackendError};
/// assert!(matches!(parse_devices("cpu,cuda"), Err(BackendError::Devices(_))));
/// assert!(matches!("npu".parse::<magicnaming::backend::DeviceSpec>(), Err(BackendError::Parse(_))));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BackendError {
    /// A device string that is not `cpu`, `wgpu[:N]` or `cuda[:N]`.
    #[error("{0}")]
    Parse(String),
    /// A device of a backend this build does not include.
    #[error(
        "backend `{backend}` is not compiled in (compiled in: {compiled}); rebuild with `--features {backend}`"
    )]
    NotCompiled {
        /// The cargo feature that would include it.
        backend: &'static str,
        /// The backends this build has.
        compiled: String,
    },
    /// An empty device list, or one mixing backends.
    #[error("{0}")]
    Devices(String),
}

/// A device named at run time: `cpu` (the default CPU backend, [`CpuBackend`]), `flex`,
/// `ndarray`, `wgpu[:N]`, `cuda[:N]`.
///
/// ```
/// use magicnaming::backend::DeviceSpec;
/// let spec: DeviceSpec = "cuda:1".parse().unwrap();
/// assert_eq!(spec, DeviceSpec::Cuda(1));
/// assert_eq!(spec.to_string(), "cuda:1");
/// assert_eq!("wgpu".parse::<DeviceSpec>().unwrap(), DeviceSpec::Wgpu(None));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceSpec {
    /// The default CPU backend ([`CpuBackend`]: `flex` when compiled in, else `ndarray`).
    Cpu,
    /// burn-flex on the CPU, by name.
    Flex,
    /// burn-ndarray on the CPU, by name.
    Ndarray,
    /// The wgpu backend; `None` is the default adapter, `Some(i)` the `i`-th discrete GPU.
    Wgpu(Option<usize>),
    /// The CUDA backend, device index.
    Cuda(usize),
}

impl DeviceSpec {
    /// The cargo feature of this device's backend.
    pub fn feature(self) -> &'static str {
        match self {
            Self::Cpu if cfg!(feature = "ndarray") && !cfg!(feature = "flex") => "ndarray",
            Self::Cpu | Self::Flex => "flex",
            Self::Ndarray => "ndarray",
            Self::Wgpu(_) => "wgpu",
            Self::Cuda(_) => "cuda",
        }
    }
}

impl Default for DeviceSpec {
    /// The default device of [`DefaultBackend`] (`cpu` in a build without backends).
    fn default() -> Self {
        if cfg!(feature = "cuda") {
            Self::Cuda(0)
        } else if cfg!(feature = "wgpu") {
            Self::Wgpu(None)
        } else {
            Self::Cpu
        }
    }
}

impl FromStr for DeviceSpec {
    type Err = BackendError;

    /// `cpu`, `flex`, `ndarray`, `wgpu`, `wgpu:N`, `cuda` (= `cuda:0`) or `cuda:N`.
    fn from_str(s: &str) -> Result<Self, BackendError> {
        let (kind, index) = match s.split_once(':') {
            Some((k, i)) => {
                let n = i.parse::<usize>().map_err(|_| {
                    BackendError::Parse(format!("device index `{i}` in `{s}` is not a number"))
                })?;
                (k, Some(n))
            }
            None => (s, None),
        };
        match (kind, index) {
            ("cpu", None) => Ok(Self::Cpu),
            ("flex", None) => Ok(Self::Flex),
            ("ndarray", None) => Ok(Self::Ndarray),
            ("cpu" | "flex" | "ndarray", Some(_)) => {
                Err(BackendError::Parse(format!("`{kind}` takes no index")))
            }
            ("wgpu", i) => Ok(Self::Wgpu(i)),
            ("cuda", i) => Ok(Self::Cuda(i.unwrap_or(0))),
            _ => Err(BackendError::Parse(format!(
                "unknown device `{s}`: expected cpu, flex, ndarray, wgpu[:N] or cuda[:N]"
            ))),
        }
    }
}

impl fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Cpu => write!(f, "cpu"),
            Self::Flex => write!(f, "flex"),
            Self::Ndarray => write!(f, "ndarray"),
            Self::Wgpu(None) => write!(f, "wgpu"),
            Self::Wgpu(Some(i)) => write!(f, "wgpu:{i}"),
            Self::Cuda(i) => write!(f, "cuda:{i}"),
        }
    }
}

/// Backends compiled into this build, as device strings spell them.
pub fn compiled_backends() -> Vec<&'static str> {
    let mut v = Vec::new();
    if cfg!(any(feature = "flex", feature = "ndarray")) {
        v.push("cpu");
    }
    if cfg!(feature = "flex") {
        v.push("flex");
    }
    if cfg!(feature = "ndarray") {
        v.push("ndarray");
    }
    if cfg!(feature = "wgpu") {
        v.push("wgpu");
    }
    if cfg!(feature = "cuda") {
        v.push("cuda");
    }
    v
}

/// Parses one device, or a comma-separated list of devices of one backend
/// (`cuda:0,cuda:1`) for work spread over several.
///
/// # Errors
/// A device string that does not parse; devices of different backends.
pub fn parse_devices(s: &str) -> Result<Vec<DeviceSpec>, BackendError> {
    let devices = s
        .split(',')
        .map(|d| d.trim().parse::<DeviceSpec>())
        .collect::<Result<Vec<_>, _>>()?;
    let same = devices
        .windows(2)
        .all(|w| core::mem::discriminant(&w[0]) == core::mem::discriminant(&w[1]));
    if !same {
        return Err(BackendError::Devices(format!(
            "`{s}`: all devices must use the same backend"
        )));
    }
    Ok(devices)
}

/// Work that runs on any backend, on one or more of its devices.
///
/// ```
/// use magicnaming::backend::{dispatch, DeviceSpec, Job};
/// use magicnaming::burn::tensor::backend::Backend;
///
/// struct Name;
/// impl Job for Name {
///     type Output = String;
///     fn run<B: Backend>(self, devices: Vec<B::Device>) -> String {
///         format!("{} on {} device(s)", B::name(&devices[0]), devices.len())
///     }
/// }
///
/// let devices = [DeviceSpec::default()];
/// let said = dispatch(&devices, Name).unwrap();
/// assert!(said.ends_with("on 1 device(s)"));
/// ```
pub trait Job {
    /// What the work returns.
    type Output;
    /// Runs on backend `B`, on `devices` (at least one).
    fn run<B: Backend>(self, devices: Vec<B::Device>) -> Self::Output;
}

/// Runs `job` on the backend that `devices` name (all of one backend).
///
/// # Errors
/// No device; devices of several backends; a backend not compiled into this build.
// Each arm returns from a cfg-selected block, so which `return` is the tail depends on
// the feature set.
#[allow(clippy::needless_return, unreachable_code)]
pub fn dispatch<J: Job>(devices: &[DeviceSpec], job: J) -> Result<J::Output, BackendError> {
    let Some(first) = devices.first() else {
        return Err(BackendError::Devices("no device given".into()));
    };
    if devices
        .iter()
        .any(|d| core::mem::discriminant(d) != core::mem::discriminant(first))
    {
        return Err(BackendError::Devices(
            "all devices must use the same backend".into(),
        ));
    }
    log::debug!("devices: {devices:?}");
    let not_compiled = |d: &DeviceSpec| BackendError::NotCompiled {
        backend: d.feature(),
        compiled: compiled_backends().join(", "),
    };
    match first {
        DeviceSpec::Cpu => {
            #[cfg(any(feature = "flex", feature = "ndarray"))]
            return Ok(job.run::<CpuBackend>(devices.iter().map(|_| Default::default()).collect()));
            #[cfg(not(any(feature = "flex", feature = "ndarray")))]
            return {
                let _ = job;
                Err(not_compiled(first))
            };
        }
        DeviceSpec::Flex => {
            #[cfg(feature = "flex")]
            return Ok(job
                .run::<burn::backend::Flex>(devices.iter().map(|_| Default::default()).collect()));
            #[cfg(not(feature = "flex"))]
            return {
                let _ = job;
                Err(not_compiled(first))
            };
        }
        DeviceSpec::Ndarray => {
            #[cfg(feature = "ndarray")]
            return Ok(job.run::<burn::backend::NdArray<f32>>(
                devices.iter().map(|_| Default::default()).collect(),
            ));
            #[cfg(not(feature = "ndarray"))]
            return {
                let _ = job;
                Err(not_compiled(first))
            };
        }
        DeviceSpec::Wgpu(_) => {
            #[cfg(feature = "wgpu")]
            {
                use burn::backend::wgpu::WgpuDevice;
                let list = devices
                    .iter()
                    .map(|d| match d {
                        DeviceSpec::Wgpu(Some(i)) => WgpuDevice::DiscreteGpu(*i),
                        _ => WgpuDevice::DefaultDevice,
                    })
                    .collect();
                return Ok(job.run::<burn::backend::Wgpu>(list));
            }
            #[cfg(not(feature = "wgpu"))]
            {
                let _ = job;
                Err(not_compiled(first))
            }
        }
        DeviceSpec::Cuda(_) => {
            #[cfg(feature = "cuda")]
            {
                let list = devices
                    .iter()
                    .map(|d| match d {
                        DeviceSpec::Cuda(i) => burn::backend::cuda::CudaDevice::new(*i),
                        _ => burn::backend::cuda::CudaDevice::new(0),
                    })
                    .collect();
                return Ok(job.run::<burn::backend::Cuda>(list));
            }
            #[cfg(not(feature = "cuda"))]
            {
                let _ = job;
                Err(not_compiled(first))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_strings_round_trip() {
        for s in [
            "cpu", "flex", "ndarray", "wgpu", "wgpu:1", "cuda:0", "cuda:3",
        ] {
            assert_eq!(s.parse::<DeviceSpec>().unwrap().to_string(), s);
        }
        assert_eq!("cuda".parse::<DeviceSpec>().unwrap(), DeviceSpec::Cuda(0));
    }

    #[test]
    fn bad_device_strings_are_named_errors() {
        for (s, what) in [
            ("cpu:1", "takes no index"),
            ("flex:0", "`flex` takes no index"),
            ("cuda:x", "`x`"),
            ("tpu", "unknown device `tpu`"),
        ] {
            let e = s.parse::<DeviceSpec>().unwrap_err().to_string();
            assert!(e.contains(what), "{s}: {e}");
        }
        let e = parse_devices("cpu,cuda:0").unwrap_err().to_string();
        assert!(e.contains("same backend"), "{e}");
        assert_eq!(
            parse_devices("cuda:0, cuda:1").unwrap(),
            vec![DeviceSpec::Cuda(0), DeviceSpec::Cuda(1)]
        );
    }

    struct Count;
    impl Job for Count {
        type Output = usize;
        fn run<B: Backend>(self, devices: Vec<B::Device>) -> usize {
            devices.len()
        }
    }

    #[test]
    fn dispatch_runs_on_the_named_backend_or_names_the_missing_one() {
        if cfg!(any(feature = "flex", feature = "ndarray")) {
            assert_eq!(dispatch(&[DeviceSpec::Cpu, DeviceSpec::Cpu], Count), Ok(2));
        }
        if !cfg!(feature = "ndarray") {
            let e = dispatch(&[DeviceSpec::Ndarray], Count).unwrap_err();
            assert!(e.to_string().contains("--features ndarray"), "{e}");
        }
        assert!(dispatch(&[], Count).is_err());
        if !cfg!(feature = "cuda") {
            let e = dispatch(&[DeviceSpec::Cuda(0)], Count).unwrap_err();
            assert!(e.to_string().contains("--features cuda"), "{e}");
        }
    }
}
