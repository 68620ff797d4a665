//! The values the restricted pickle reader ([`super::pickle`]) builds: plain Python
//! values, torch storages and tensor views, and the few globals it knows.
use std::cell::RefCell;
use std::rc::Rc;

/// Element type of a torch storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TorchDtype {
    /// `torch.float32`.
    F32,
    /// `torch.float64`.
    F64,
    /// `torch.float16`.
    F16,
    /// `torch.bfloat16`.
    BF16,
    /// `torch.int64`.
    I64,
    /// `torch.int32`.
    I32,
    /// `torch.int16`.
    I16,
    /// `torch.int8`.
    I8,
    /// `torch.uint8`.
    U8,
    /// `torch.bool`.
    Bool,
}

impl TorchDtype {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            Self::F64 | Self::I64 => 8,
            Self::F32 | Self::I32 => 4,
            Self::F16 | Self::BF16 | Self::I16 => 2,
            Self::I8 | Self::U8 | Self::Bool => 1,
        }
    }

    /// The same type in safetensors.
    pub fn safetensors(self) -> safetensors::Dtype {
        use safetensors::Dtype as D;
        match self {
            Self::F32 => D::F32,
            Self::F64 => D::F64,
            Self::F16 => D::F16,
            Self::BF16 => D::BF16,
            Self::I64 => D::I64,
            Self::I32 => D::I32,
            Self::I16 => D::I16,
            Self::I8 => D::I8,
            Self::U8 => D::U8,
            Self::Bool => D::BOOL,
        }
    }

    pub(super) fn from_storage_class(name: &str) -> Option<Self> {
        Some(match name {
            "FloatStorage" => Self::F32,
            "DoubleStorage" => Self::F64,
            "HalfStorage" => Self::F16,
            "BFloat16Storage" => Self::BF16,
            "LongStorage" => Self::I64,
            "IntStorage" => Self::I32,
            "ShortStorage" => Self::I16,
            "CharStorage" => Self::I8,
            "ByteStorage" => Self::U8,
            "BoolStorage" => Self::Bool,
            _ => return None,
        })
    }
}

/// A storage named by a persistent id: `('storage', torch.XStorage, key, location,
/// numel[, view_metadata])`.
#[derive(Debug, Clone, PartialEq)]
pub struct StorageRef {
    /// Element type.
    pub dtype: TorchDtype,
    /// Key of the storage (the file name under `data/` in a zip, the entry in the
    /// legacy format's key list).
    pub key: String,
    /// Number of elements the pickle declares.
    pub numel: usize,
}

/// A tensor as `_rebuild_tensor_v2` describes it: a view of a storage.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorRef {
    /// The storage.
    pub storage: Rc<StorageRef>,
    /// Offset into the storage, in elements.
    pub offset: usize,
    /// Shape.
    pub size: Vec<usize>,
    /// Strides, in elements.
    pub stride: Vec<usize>,
}

/// The known globals.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Global {
    OrderedDict,
    RebuildTensorV2,
    RebuildParameter,
    Storage(TorchDtype),
}

/// A value built by the reader.
#[derive(Debug, Clone)]
pub enum Value {
    /// `None`.
    None,
    /// A bool.
    Bool(bool),
    /// An int (`LONG1` values up to 16 bytes, as the legacy format's magic number).
    Int(i128),
    /// A float.
    Float(f64),
    /// A string (`str`, or a protocol 2 `bytes`/py2 `str` read as Latin-1).
    Str(Rc<str>),
    /// A tuple.
    Tuple(Rc<[Value]>),
    /// A list (shared, as pickle's memo requires).
    List(Rc<RefCell<Vec<Value>>>),
    /// A dict or OrderedDict, in insertion order.
    Dict(Rc<RefCell<Vec<(Value, Value)>>>),
    /// A storage from a persistent id.
    Storage(Rc<StorageRef>),
    /// A tensor.
    Tensor(Rc<TensorRef>),
    /// One of the known globals, before it is called.
    #[doc(hidden)]
    Callable(GlobalRef),
}

/// An opaque handle on a known global.
#[derive(Debug, Clone, Copy)]
pub struct GlobalRef(pub(super) Global);

impl Value {
    pub(super) fn kind(&self) -> &'static str {
        match self {
            Self::None => "None",
            Self::Bool(_) => "bool",
            Self::Int(_) => "int",
            Self::Float(_) => "float",
            Self::Str(_) => "str",
            Self::Tuple(_) => "tuple",
            Self::List(_) => "list",
            Self::Dict(_) => "dict",
            Self::Storage(_) => "storage",
            Self::Tensor(_) => "tensor",
            Self::Callable(_) => "global",
        }
    }

    /// The int, if this is one.
    pub fn as_int(&self) -> Option<i128> {
        match self {
            Self::Int(i) => Some(*i),
            Self::Bool(b) => Some(*b as i128),
            _ => None,
        }
    }

    /// The string, if this is one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Self::Str(s) => Some(s),
            _ => None,
        }
    }
}

pub(super) const ALLOWED: &str = "collections.OrderedDict, torch._utils._rebuild_tensor_v2, \
                       torch._utils._rebuild_parameter, torch.<Type>Storage";

pub(super) fn global(module: &str, name: &str) -> Option<Global> {
    match (module, name) {
        ("collections", "OrderedDict") => Some(Global::OrderedDict),
        ("torch._utils", "_rebuild_tensor_v2") => Some(Global::RebuildTensorV2),
        ("torch._utils", "_rebuild_parameter") => Some(Global::RebuildParameter),
        ("torch", n) => TorchDtype::from_storage_class(n).map(Global::Storage),
        _ => None,
    }
}
