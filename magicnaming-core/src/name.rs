//! The name embedding: `K` token vectors of dimension `D`.
use alloc::format;
use alloc::string::String;
use burn::tensor::{Tensor, backend::Backend};

use crate::{NameError, Result};

/// A point of the name space: `K` token vectors of dimension `D` (8 x 2048 for SDXL).
///
/// Built from a tensor (checked to be finite), predicted by an image encoder, text-coded
/// from a real name, or loaded from a `.safetensors` file (with `std`).
///
/// # Shapes
/// - tokens: `[K, D]`
///
/// ```
/// use burn::backend::NdArray;
/// use burn::tensor::Tensor;
/// use magicnaming_core::{interpolate, NameEmbedding};
/// let device = Default::default();
/// let a = NameEmbedding::new(Tensor::<NdArray, 2>::zeros([8, 4], &device), "a").unwrap();
/// let b = NameEmbedding::new(Tensor::<NdArray, 2>::ones([8, 4], &device), "b").unwrap();
/// let mid = interpolate(&a, &b, 0.5).unwrap();
/// assert_eq!((mid.num_tokens(), mid.dim()), (8, 4));
/// assert_eq!(mid.source(), "interpolate(a, b, t=0.5)");
/// ```
#[derive(Debug, Clone)]
pub struct NameEmbedding<B: Backend> {
    tokens: Tensor<B, 2>,
    source: String,
}

impl<B: Backend> NameEmbedding<B> {
    /// Wraps `tokens` `[K, D]` as a name. `source` says where it came from (an image path,
    /// a celebrity's name, "interpolate(a, b, 0.5)"...) and is stored in the file metadata.
    ///
    /// # Errors
    /// [`NameError::NonFinite`] when any value is NaN or infinite; [`NameError::Empty`]
    /// when `K` or `D` is zero.
    pub fn new(tokens: Tensor<B, 2>, source: impl Into<String>) -> Result<Self> {
        let [k, d] = tokens.dims();
        if k == 0 || d == 0 {
            return Err(NameError::Empty {
                what: "a name embedding (K and D must be > 0)",
            });
        }
        let source = source.into();
        ensure_finite(&tokens, || format!("name embedding ({source})"))?;
        Ok(Self { tokens, source })
    }

    /// The `[K, D]` token vectors.
    pub fn tokens(&self) -> &Tensor<B, 2> {
        &self.tokens
    }

    /// Consumes the name, returning its `[K, D]` tensor.
    pub fn into_tokens(self) -> Tensor<B, 2> {
        self.tokens
    }

    /// `K`, the number of token vectors.
    pub fn num_tokens(&self) -> usize {
        self.tokens.dims()[0]
    }

    /// `D`, the dimension of each token vector.
    pub fn dim(&self) -> usize {
        self.tokens.dims()[1]
    }

    /// Where this name came from.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Replaces the provenance text.
    pub fn with_source(mut self, source: impl Into<String>) -> Self {
        self.source = source.into();
        self
    }
}

/// Fails with [`NameError::NonFinite`] (naming `what`) when `x` holds NaN or infinity.
pub(crate) fn ensure_finite<B: Backend, const D: usize>(
    x: &Tensor<B, D>,
    what: impl FnOnce() -> String,
) -> Result<()> {
    let finite = x
        .clone()
        .is_finite()
        .all()
        .into_data()
        .iter::<bool>()
        .all(|v| v);
    if finite {
        Ok(())
    } else {
        Err(NameError::NonFinite { what: what() })
    }
}
