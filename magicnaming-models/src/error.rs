//! Errors of the model code. Each variant names the file, key, shape or value at fault.
use std::path::{Path, PathBuf};

/// Errors raised while loading or running models.
///
/// ```
/// use magicnaming_models::name_encoder::NameEncoder;
/// use magicnaming_models::ModelError;
/// type B = burn::backend::NdArray<f32>;
/// match NameEncoder::<B>::load("no/such/encoder", &Default::default()) {
///     Err(ModelError::MissingFile { path, .. }) => assert!(path.ends_with("encoder")),
///     other => panic!("expected a missing-file error, got {other:?}"),
/// }
/// ```
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// A file or folder could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A required file is absent.
    #[error("{path}: missing ({what})")]
    MissingFile {
        /// Where it was looked for.
        path: PathBuf,
        /// What it should have been.
        what: String,
    },
    /// A JSON configuration that cannot be parsed or is inconsistent.
    #[error("{path}: bad configuration: {message}")]
    Config {
        /// The configuration file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A weights file that cannot be parsed, or tensors that do not fit the model:
    /// missing keys, unused keys, shape or dtype mismatches.
    #[error("{path}: {message}")]
    Weights {
        /// The weights file.
        path: PathBuf,
        /// What is wrong, naming the keys.
        message: String,
    },
    /// A tokenizer that cannot be built or used.
    #[error("{path}: tokenizer: {message}")]
    Tokenizer {
        /// The tokenizer folder or file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// An image that cannot be decoded or used.
    #[error("{path}: image: {message}")]
    Image {
        /// The image file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A dataset manifest line that cannot be used (bad JSON or CSV, a missing field, an
    /// empty name or image path).
    #[error("{path}:{line}: {message}")]
    Manifest {
        /// The manifest file.
        path: PathBuf,
        /// 1-based line number of the entry.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// A pickle (inside a PyTorch `.pt`/`.pth` file) that uses an opcode or a global
    /// outside the tensor-rebuild subset, or that is malformed. Nothing in it is executed.
    #[error("{path}: pickle byte {offset}: {message}")]
    Pickle {
        /// The file.
        path: PathBuf,
        /// Byte offset of the opcode in the pickle stream.
        offset: usize,
        /// What is refused or wrong.
        message: String,
    },
    /// No face was found in an image.
    #[error("{path}: no face found{detail}")]
    NoFace {
        /// The image.
        path: PathBuf,
        /// More about the search (thresholds, minimum size).
        detail: String,
    },
    /// A LoRA update whose shape does not fit the module it names (a LoRA made for another
    /// model: SD 1.5, SD 2, another SDXL size).
    #[error("{0}")]
    LoraShape(Box<LoraShapeMismatch>),
    /// LoRA keys that match no module of the model (`--lora-ignore-unmatched` makes them a
    /// warning).
    #[error("LoRA keys that match no module of the model: {}", .keys.join(", "))]
    LoraUnmatched {
        /// `file: key` for each.
        keys: Vec<String>,
    },
    /// An argument out of range (empty text, wrong shape...).
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// A name-space operation failed.
    #[error(transparent)]
    Name(#[from] magicnaming_core::NameError),
}

/// The details of [`ModelError::LoraShape`]: the file, the key, the module and both shapes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{path}: `{key}` updates {component} module `{module}` with a {lora_shape:?} weight, \
     the model's is {model_shape:?} (a LoRA for another model?)"
)]
pub struct LoraShapeMismatch {
    /// The LoRA file.
    pub path: PathBuf,
    /// The module key in the file.
    pub key: String,
    /// `unet`, `te1` or `te2`.
    pub component: String,
    /// The module's path in the model.
    pub module: String,
    /// The update's shape (PyTorch layout).
    pub lora_shape: Vec<usize>,
    /// The model's weight shape (PyTorch layout).
    pub model_shape: Vec<usize>,
}

/// Result type of this crate.
pub type Result<T> = std::result::Result<T, ModelError>;

impl ModelError {
    /// An [`ModelError::Io`] for `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }

    /// The error of opening or reading `path`: [`ModelError::MissingFile`] (saying it
    /// should be `what`) when it does not exist, [`ModelError::Io`] otherwise.
    pub fn open(path: &Path, what: &str, source: std::io::Error) -> Self {
        if source.kind() == std::io::ErrorKind::NotFound {
            Self::MissingFile {
                path: path.to_path_buf(),
                what: what.into(),
            }
        } else {
            Self::io(path, source)
        }
    }

    /// A [`ModelError::Config`] for `path`.
    pub fn config(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Self::Config {
            path: path.into(),
            message: message.into(),
        }
    }

    /// A [`ModelError::Weights`] for `path`.
    pub fn weights(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Self::Weights {
            path: path.into(),
            message: message.into(),
        }
    }
}
