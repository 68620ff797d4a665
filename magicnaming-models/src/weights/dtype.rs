//! The float type of loaded weights.
//!
//! Weights stored in f16 (diffusers `.fp16` files, most Civitai single files) run in f16
//! on a GPU backend that supports it (CUDA, wgpu with shader f16) and are upcast to f32
//! on the CPU backends (flex, ndarray) and where f16 is missing, as diffusers is used
//! with `torch_dtype=torch.float16` on a GPU and float32 on a CPU: a CPU without f16
//! arithmetic converts every f16 product to f32 and back, slower and less accurate.
//! [`Precision::Auto`] picks that; the other variants force a type (flex runs f16 and
//! bf16 when asked).
use burn::tensor::backend::Backend;
use burn::tensor::{DType, FloatDType};

use crate::{ModelError, Result};

/// Which float type a model's weights are held in.
///
/// ```
/// use magicnaming_models::Precision;
/// assert_eq!(Precision::default(), Precision::Auto);
/// assert_eq!("fp16".parse::<Precision>(), Ok(Precision::F16));
/// assert!("f8".parse::<Precision>().is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Precision {
    /// The stored type on a GPU backend that supports it (f16/bf16 files), f32 on the
    /// CPU backends and otherwise.
    #[default]
    Auto,
    /// Always f32 (upcast f16/bf16 files).
    F32,
    /// f16; an error on a backend without f16.
    F16,
    /// bf16; an error on a backend without bf16.
    Bf16,
}

impl std::str::FromStr for Precision {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "auto" => Ok(Self::Auto),
            "f32" | "fp32" => Ok(Self::F32),
            "f16" | "fp16" => Ok(Self::F16),
            "bf16" => Ok(Self::Bf16),
            other => Err(format!(
                "unknown precision `{other}` (expected auto, f32, f16 or bf16)"
            )),
        }
    }
}

impl Precision {
    /// The float type weights stored as `stored` are loaded in on `device`.
    ///
    /// # Errors
    /// An explicit f16/bf16 on a backend that does not support it.
    pub fn resolve<B: Backend>(
        self,
        stored: safetensors::Dtype,
        device: &B::Device,
    ) -> Result<FloatDType> {
        let supported = |d: FloatDType| B::supports_dtype(device, DType::from(d));
        let forced = |d: FloatDType, name: &str| {
            if supported(d) {
                Ok(d)
            } else {
                Err(ModelError::InvalidInput(format!(
                    "precision {name} is not supported by the {} backend",
                    B::name(device)
                )))
            }
        };
        match self {
            Self::F32 => Ok(FloatDType::F32),
            Self::F16 => forced(FloatDType::F16, "f16"),
            Self::Bf16 => forced(FloatDType::BF16, "bf16"),
            Self::Auto if is_cpu_backend::<B>() => Ok(FloatDType::F32),
            Self::Auto => {
                let want = match stored {
                    safetensors::Dtype::F16 => FloatDType::F16,
                    safetensors::Dtype::BF16 => FloatDType::BF16,
                    _ => FloatDType::F32,
                };
                Ok(if supported(want) {
                    want
                } else {
                    FloatDType::F32
                })
            }
        }
    }
}

/// Whether `B` runs on the host CPU (burn-flex or burn-ndarray, with or without
/// autodiff): recognised by its device type.
pub fn is_cpu_backend<B: Backend>() -> bool {
    let id = core::any::TypeId::of::<B::Device>();
    #[cfg(feature = "flex")]
    if id == core::any::TypeId::of::<burn::backend::flex::FlexDevice>() {
        return true;
    }
    #[cfg(feature = "ndarray")]
    if id == core::any::TypeId::of::<burn::backend::ndarray::NdArrayDevice>() {
        return true;
    }
    let _ = id;
    false
}

/// The most common float type among `dtypes` (f32 when empty): what a checkpoint "is
/// stored in" (f16 for a `.fp16` file even if a few buffers are f32).
pub fn stored_dtype<'a>(
    dtypes: impl IntoIterator<Item = &'a safetensors::Dtype>,
) -> safetensors::Dtype {
    let (mut f32s, mut f16s, mut bf16s) = (0usize, 0usize, 0usize);
    for d in dtypes {
        match d {
            safetensors::Dtype::F16 => f16s += 1,
            safetensors::Dtype::BF16 => bf16s += 1,
            _ => f32s += 1,
        }
    }
    if f16s > f32s.max(bf16s) {
        safetensors::Dtype::F16
    } else if bf16s > f32s.max(f16s) {
        safetensors::Dtype::BF16
    } else {
        safetensors::Dtype::F32
    }
}
