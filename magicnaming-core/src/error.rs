//! Errors of the name-space operations. Works without `std` (thiserror 2 is no_std).
use alloc::string::String;
use alloc::vec::Vec;

/// Everything that can go wrong with names, named precisely enough to fix the input.
///
/// ```
/// use burn::backend::NdArray;
/// use burn::tensor::Tensor;
/// use magicnaming_core::{NameEmbedding, NameError};
/// let nan = Tensor::<NdArray, 2>::from_floats([[f32::NAN]], &Default::default());
/// assert!(matches!(NameEmbedding::new(nan, "x"), Err(NameError::NonFinite { .. })));
/// ```
#[derive(Debug, thiserror::Error)]
pub enum NameError {
    /// The name's token dimension differs from the prompt embeddings'.
    #[error(
        "name token dimension {name_dim} does not match the prompt embeddings' dimension {prompt_dim}"
    )]
    DimMismatch {
        /// `D` of the name.
        name_dim: usize,
        /// `D` of the prompt embeddings.
        prompt_dim: usize,
    },
    /// A name with `K` tokens cannot be spliced into a sequence of length `L <= K`
    /// (the start token must stay).
    #[error(
        "a name of {tokens} tokens does not fit a prompt sequence of length {seq_len} (needs tokens < length)"
    )]
    TooManyTokens {
        /// `K` of the name.
        tokens: usize,
        /// `L` of the prompt embeddings.
        seq_len: usize,
    },
    /// Per-sample names whose batch differs from the prompts' batch.
    #[error("batch of names ({names}) does not match the batch of prompt embeddings ({prompts})")]
    BatchMismatch {
        /// Batch of the names.
        names: usize,
        /// Batch of the prompt embeddings.
        prompts: usize,
    },
    /// Two names (or a name and something else) of different shapes.
    #[error("shape mismatch in {what}: {left:?} vs {right:?}")]
    ShapeMismatch {
        /// Which operation.
        what: &'static str,
        /// Shape of the first operand.
        left: Vec<usize>,
        /// Shape of the other operand.
        right: Vec<usize>,
    },
    /// A tensor holds NaN or infinite values.
    #[error("{what} contains NaN or infinite values")]
    NonFinite {
        /// Which input.
        what: String,
    },
    /// An interpolation parameter or mixing weight that is NaN or infinite.
    #[error("{what} must be a finite number, got {value}")]
    NonFiniteParameter {
        /// Which parameter.
        what: &'static str,
        /// The value given.
        value: f64,
    },
    /// A negative mixing weight.
    #[error("mixing weight #{index} is negative ({weight}); weights must be >= 0")]
    NegativeWeight {
        /// Position of the weight in the list.
        index: usize,
        /// The weight given.
        weight: f64,
    },
    /// All mixing weights are zero: there is nothing to normalise.
    #[error("all {count} mixing weights are zero")]
    AllZeroWeights {
        /// How many weights were given.
        count: usize,
    },
    /// An operation that needs at least one name got none.
    #[error("{what} needs at least one name")]
    Empty {
        /// Which operation.
        what: &'static str,
    },
    /// Spherical interpolation of two opposite token vectors has no unique path.
    #[error(
        "slerp: token {token} of the two names points in opposite directions (cosine {cosine:.6}); the great circle between them is not unique"
    )]
    Antiparallel {
        /// Index of the token vector.
        token: usize,
        /// Cosine between the two vectors.
        cosine: f64,
    },
    /// A configuration value that cannot work.
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
    /// Reading or writing a name file failed.
    #[cfg(feature = "std")]
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A name file that is not what a name file must be.
    #[cfg(feature = "std")]
    #[error("{path}: {message}")]
    BadFile {
        /// The file.
        path: std::path::PathBuf,
        /// What is wrong, naming the tensor, dtype or shape.
        message: String,
    },
}
