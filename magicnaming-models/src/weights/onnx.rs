//! ONNX model files, read with prost from the subset of the ONNX schema (`onnx.proto3`,
//! same field numbers) that networks of convolutions need: the graph's nodes in order
//! (op type, inputs, outputs, attributes) and its float initializers. `Identity` nodes
//! (aliases the exporter adds for shared constants) are resolved, and `Constant` nodes
//! become initializers. External data and non-float initializers are refused.
use std::collections::HashMap;
use std::path::Path;

use prost::Message;

use crate::{ModelError, Result};

/// `TensorProto` (fields used here).
#[derive(Clone, PartialEq, Message)]
pub struct TensorProto {
    /// Shape.
    #[prost(int64, repeated, tag = "1")]
    pub dims: Vec<i64>,
    /// Element type (1: float).
    #[prost(int32, tag = "2")]
    pub data_type: i32,
    /// Values when not in `raw_data`.
    #[prost(float, repeated, tag = "4")]
    pub float_data: Vec<f32>,
    /// Name.
    #[prost(string, tag = "8")]
    pub name: String,
    /// Little-endian values.
    #[prost(bytes = "vec", tag = "9")]
    pub raw_data: Vec<u8>,
    /// 1 when the values are in an external file.
    #[prost(int32, tag = "14")]
    pub data_location: i32,
}

/// `AttributeProto` (fields used here).
#[derive(Clone, PartialEq, Message)]
pub struct AttributeProto {
    /// Name.
    #[prost(string, tag = "1")]
    pub name: String,
    /// A float value.
    #[prost(float, tag = "2")]
    pub f: f32,
    /// An int value.
    #[prost(int64, tag = "3")]
    pub i: i64,
    /// A tensor value (`Constant`).
    #[prost(message, optional, tag = "5")]
    pub t: Option<TensorProto>,
    /// Int list values.
    #[prost(int64, repeated, tag = "8")]
    pub ints: Vec<i64>,
}

/// `NodeProto`.
#[derive(Clone, PartialEq, Message)]
pub struct NodeProto {
    /// Input value names.
    #[prost(string, repeated, tag = "1")]
    pub input: Vec<String>,
    /// Output value names.
    #[prost(string, repeated, tag = "2")]
    pub output: Vec<String>,
    /// Node name.
    #[prost(string, tag = "3")]
    pub name: String,
    /// Operator (`Conv`, `PRelu`, ...).
    #[prost(string, tag = "4")]
    pub op_type: String,
    /// Attributes.
    #[prost(message, repeated, tag = "5")]
    pub attribute: Vec<AttributeProto>,
}

/// `GraphProto` (fields used here).
#[derive(Clone, PartialEq, Message)]
pub struct GraphProto {
    /// Nodes, in topological order.
    #[prost(message, repeated, tag = "1")]
    pub node: Vec<NodeProto>,
    /// Constant tensors.
    #[prost(message, repeated, tag = "5")]
    pub initializer: Vec<TensorProto>,
}

/// `ModelProto` (fields used here).
#[derive(Clone, PartialEq, Message)]
pub struct ModelProto {
    /// ONNX IR version.
    #[prost(int64, tag = "1")]
    pub ir_version: i64,
    /// The graph.
    #[prost(message, optional, tag = "7")]
    pub graph: Option<GraphProto>,
}

impl NodeProto {
    /// The int attribute `name`.
    pub fn int_attr(&self, name: &str) -> Option<i64> {
        self.attribute.iter().find(|a| a.name == name).map(|a| a.i)
    }

    /// The float attribute `name`.
    pub fn float_attr(&self, name: &str) -> Option<f32> {
        self.attribute.iter().find(|a| a.name == name).map(|a| a.f)
    }
}

/// An ONNX graph: its operator nodes (without `Identity`/`Constant`) and float tensors.
#[derive(Debug)]
pub struct OnnxGraph {
    /// Operator nodes in graph order, inputs renamed through `Identity` aliases.
    pub nodes: Vec<NodeProto>,
    /// Float initializers and constants: name -> (values, shape).
    pub tensors: HashMap<String, (Vec<f32>, Vec<usize>)>,
}

fn float_values(t: &TensorProto, path: &Path) -> Result<(Vec<f32>, Vec<usize>)> {
    if t.data_location == 1 {
        return Err(ModelError::weights(
            path,
            format!(
                "tensor `{}` is stored in an external file, which is not supported",
                t.name
            ),
        ));
    }
    let shape: Vec<usize> = t
        .dims
        .iter()
        .map(|&d| usize::try_from(d))
        .collect::<std::result::Result<_, _>>()
        .map_err(|_| {
            ModelError::weights(path, format!("tensor `{}` has a negative dim", t.name))
        })?;
    let n = shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| ModelError::weights(path, format!("tensor `{}`: dims overflow", t.name)))?;
    let values: Vec<f32> = if !t.raw_data.is_empty() {
        t.raw_data
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()
    } else {
        t.float_data.clone()
    };
    if values.len() != n {
        return Err(ModelError::weights(
            path,
            format!(
                "tensor `{}` declares dims {shape:?} ({n} values) but holds {}",
                t.name,
                values.len()
            ),
        ));
    }
    Ok((values, shape))
}

/// Reads an ONNX model file.
///
/// # Errors
/// [`ModelError::MissingFile`]/[`ModelError::Io`] when unreadable, [`ModelError::Weights`]
/// for a file that is not an ONNX model, has no graph, or a float tensor whose data
/// disagrees with its dims.
pub fn read_onnx(path: &Path) -> Result<OnnxGraph> {
    let bytes = std::fs::read(path).map_err(|e| ModelError::open(path, "an ONNX model", e))?;
    read_onnx_bytes(&bytes, path)
}

/// [`read_onnx`] of a file's bytes; `path` names it in errors.
///
/// # Errors
/// As [`read_onnx`].
pub fn read_onnx_bytes(bytes: &[u8], path: &Path) -> Result<OnnxGraph> {
    let model = ModelProto::decode(bytes)
        .map_err(|e| ModelError::weights(path, format!("not an ONNX model: {e}")))?;
    let graph = model
        .graph
        .ok_or_else(|| ModelError::weights(path, "ONNX model without a graph"))?;
    let mut tensors = HashMap::new();
    for t in &graph.initializer {
        if t.data_type == 1 {
            tensors.insert(t.name.clone(), float_values(t, path)?);
        }
    }
    let mut alias: HashMap<String, String> = HashMap::new();
    let resolve = |alias: &HashMap<String, String>, name: &str| -> String {
        let mut name = name.to_string();
        // Each alias points to an earlier value, so chains end.
        while let Some(next) = alias.get(&name) {
            name = next.clone();
        }
        name
    };
    let mut nodes = Vec::new();
    for mut node in graph.node {
        for i in &mut node.input {
            *i = resolve(&alias, i);
        }
        match node.op_type.as_str() {
            "Identity" if node.input.len() == 1 && node.output.len() == 1 => {
                alias.insert(node.output[0].clone(), node.input[0].clone());
            }
            "Constant" => {
                if let (Some(t), Some(out)) = (
                    node.attribute.iter().find_map(|a| a.t.as_ref()),
                    node.output.first(),
                ) && t.data_type == 1
                {
                    tensors.insert(out.clone(), float_values(t, path)?);
                }
            }
            _ => nodes.push(node),
        }
    }
    log::debug!(
        "{}: {} operator nodes, {} float tensors",
        path.display(),
        nodes.len(),
        tensors.len()
    );
    Ok(OnnxGraph { nodes, tensors })
}
