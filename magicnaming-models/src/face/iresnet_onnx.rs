//! insightface's ONNX recognizers (`buffalo_l/w600k_r50.onnx`, `antelopev2/glintr100.onnx`,
//! and arcface_torch's `torch2onnx.py` exports): an IResNet whose batch norms that follow a
//! convolution are folded into it, so the weights are identified by graph order and turned
//! back into an arcface_torch state dict:
//!
//! | nodes, in graph order | state dict |
//! |---|---|
//! | optional `Sub`/`Mul`/`Div` on the input (must be `- 127.5`, `/ 127.5`: the same normalisation) | none |
//! | `Conv` (W, b), `PRelu` (slope) | `conv1.weight` = W, `bn1` = identity + b, `prelu.weight` |
//! | per block: `BatchNormalization`, `Conv`, `PRelu`, `Conv`, optional `Conv` (the shortcut: a new stage), `Add` | `layerS.K.bn1`, `conv1` (+ `bn2` = identity + b), `prelu`, `conv2` (+ `bn3`), `downsample.0` (+ `downsample.1`) |
//! | `BatchNormalization`, `Flatten`, `Gemm`, optional `BatchNormalization` | `bn2`, `fc`, `features` (identity when folded away) |
//!
//! "identity + b" is a batch norm with weight 1, bias b, mean 0 and variance `1 - eps`.
use std::path::Path;

use crate::weights::TorchTensor;
use crate::weights::onnx::{NodeProto, OnnxGraph};
use crate::weights::pickle::TorchDtype;
use crate::{ModelError, Result};

const EPS: f32 = 1e-5;

fn tensor(values: Vec<f32>, shape: Vec<usize>) -> TorchTensor {
    TorchTensor {
        dtype: TorchDtype::F32,
        shape,
        data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
    }
}

struct Builder<'a> {
    graph: &'a OnnxGraph,
    path: &'a Path,
    out: Vec<(String, TorchTensor)>,
}

impl Builder<'_> {
    fn err(&self, m: String) -> ModelError {
        ModelError::weights(
            self.path,
            format!("not an insightface IResNet ONNX graph: {m}"),
        )
    }

    fn input(&self, node: &NodeProto, i: usize) -> Result<(Vec<f32>, Vec<usize>)> {
        let name = node
            .input
            .get(i)
            .ok_or_else(|| self.err(format!("{} `{}` lacks input {i}", node.op_type, node.name)))?;
        self.graph.tensors.get(name).cloned().ok_or_else(|| {
            self.err(format!(
                "input `{name}` of {} `{}` is not a float constant",
                node.op_type, node.name
            ))
        })
    }

    fn put(&mut self, key: String, (values, shape): (Vec<f32>, Vec<usize>)) {
        self.out.push((key, tensor(values, shape)));
    }

    fn bn_identity(&mut self, prefix: &str, bias: Vec<f32>) {
        let c = bias.len();
        self.put(format!("{prefix}.weight"), (vec![1.0; c], vec![c]));
        self.put(format!("{prefix}.bias"), (bias, vec![c]));
        self.put(format!("{prefix}.running_mean"), (vec![0.0; c], vec![c]));
        self.put(
            format!("{prefix}.running_var"),
            (vec![1.0 - EPS; c], vec![c]),
        );
    }

    fn bn(&mut self, prefix: &str, node: &NodeProto) -> Result<()> {
        let eps = node.float_attr("epsilon").unwrap_or(EPS);
        self.put(format!("{prefix}.weight"), self.input(node, 1)?);
        self.put(format!("{prefix}.bias"), self.input(node, 2)?);
        self.put(format!("{prefix}.running_mean"), self.input(node, 3)?);
        let (var, shape) = self.input(node, 4)?;
        // Our batch norms use eps 1e-5: move any other epsilon into the variance.
        let var = var.into_iter().map(|v| v + eps - EPS).collect();
        self.put(format!("{prefix}.running_var"), (var, shape));
        Ok(())
    }

    fn conv(&mut self, key: &str, bn: &str, node: &NodeProto) -> Result<()> {
        let w = self.input(node, 1)?;
        let out_channels = w.1.first().copied().unwrap_or(0);
        let bias = if node.input.len() > 2 {
            self.input(node, 2)?.0
        } else {
            vec![0.0; out_channels]
        };
        self.put(key.to_string(), w);
        self.bn_identity(bn, bias);
        Ok(())
    }

    fn prelu(&mut self, key: &str, node: &NodeProto) -> Result<()> {
        let (v, _) = self.input(node, 1)?;
        let n = v.len();
        self.put(key.to_string(), (v, vec![n]));
        Ok(())
    }
}

/// The operator nodes, read in order.
struct Cursor<'a> {
    ops: Vec<&'a NodeProto>,
    at: usize,
    path: &'a Path,
}

impl<'a> Cursor<'a> {
    fn peek(&self) -> Option<&'a NodeProto> {
        self.ops.get(self.at).copied()
    }

    fn next(&mut self, want: &str) -> Result<&'a NodeProto> {
        match self.peek() {
            Some(n) if n.op_type == want => {
                self.at += 1;
                Ok(n)
            }
            other => Err(ModelError::weights(
                self.path,
                format!(
                    "not an insightface IResNet ONNX graph: expected {want} at operator {}, found {}",
                    self.at,
                    other.map_or("the end".to_string(), |n| format!(
                        "{} `{}`",
                        n.op_type, n.name
                    ))
                ),
            )),
        }
    }
}

/// The arcface_torch state dict of an insightface IResNet ONNX graph.
///
/// # Errors
/// [`ModelError::Weights`] naming the first node that does not fit the pattern above.
pub fn state_dict(graph: &OnnxGraph, path: &Path) -> Result<Vec<(String, TorchTensor)>> {
    let mut b = Builder {
        graph,
        path,
        out: Vec::new(),
    };
    let ops: Vec<&NodeProto> = graph
        .nodes
        .iter()
        .filter(|n| !matches!(n.op_type.as_str(), "Flatten" | "Reshape"))
        .collect();
    let mut at = 0;
    // Input normalisation inside the graph: must equal (x - 127.5) / 127.5.
    while let Some(n) = ops
        .get(at)
        .filter(|n| matches!(n.op_type.as_str(), "Sub" | "Mul" | "Div"))
    {
        let c = n
            .input
            .iter()
            .find_map(|i| graph.tensors.get(i))
            .filter(|(v, _)| v.len() == 1)
            .map(|(v, _)| v[0])
            .ok_or_else(|| {
                b.err(format!(
                    "{} `{}` without a scalar constant",
                    n.op_type, n.name
                ))
            })?;
        let ok = match n.op_type.as_str() {
            "Sub" => (c - 127.5).abs() < 1e-3,
            "Mul" => (c - 1.0 / 127.5).abs() < 1e-6,
            _ => (c - 127.5).abs() < 1e-3,
        };
        if !ok {
            return Err(b.err(format!(
                "input normalisation {} {c} differs from (x - 127.5) / 127.5",
                n.op_type
            )));
        }
        at += 1;
    }
    let mut cur = Cursor { ops, at, path };
    let stem = cur.next("Conv")?;
    let stem_prelu = cur.next("PRelu")?;
    let mut blocks = Vec::new();
    loop {
        let n0 = cur.next("BatchNormalization")?;
        if cur.peek().is_some_and(|n| n.op_type != "Conv") {
            // bn2 of the network: the blocks are over.
            blocks.push((n0, None));
            break;
        }
        let c1 = cur.next("Conv")?;
        let pr = cur.next("PRelu")?;
        let c2 = cur.next("Conv")?;
        let ds = if cur.peek().is_some_and(|n| n.op_type == "Conv") {
            Some(cur.next("Conv")?)
        } else {
            None
        };
        cur.next("Add")?;
        blocks.push((n0, Some((c1, pr, c2, ds))));
    }
    let gemm = cur.next("Gemm")?;
    let features = cur.next("BatchNormalization").ok();

    b.conv("conv1.weight", "bn1", stem)?;
    b.prelu("prelu.weight", stem_prelu)?;
    let (mut stage, mut k) = (0usize, 0usize);
    let mut bn2 = None;
    for (bn, rest) in blocks {
        let Some((c1, pr, c2, ds)) = rest else {
            bn2 = Some(bn);
            break;
        };
        if ds.is_some() {
            stage += 1;
            k = 0;
        } else if stage == 0 {
            return Err(b.err("the first block has no shortcut convolution".into()));
        }
        let p = format!("layer{stage}.{k}");
        b.bn(&format!("{p}.bn1"), bn)?;
        b.conv(&format!("{p}.conv1.weight"), &format!("{p}.bn2"), c1)?;
        b.prelu(&format!("{p}.prelu.weight"), pr)?;
        b.conv(&format!("{p}.conv2.weight"), &format!("{p}.bn3"), c2)?;
        if let Some(ds) = ds {
            b.conv(
                &format!("{p}.downsample.0.weight"),
                &format!("{p}.downsample.1"),
                ds,
            )?;
        }
        k += 1;
    }
    if stage != 4 {
        return Err(b.err(format!("{stage} stages found, 4 expected")));
    }
    b.bn("bn2", bn2.expect("the loop ends on bn2"))?;
    if gemm.float_attr("alpha").unwrap_or(1.0) != 1.0
        || gemm.float_attr("beta").unwrap_or(1.0) != 1.0
    {
        return Err(b.err("Gemm with alpha or beta other than 1".into()));
    }
    let (w, shape) = b.input(gemm, 1)?;
    let (w, shape) = if gemm.int_attr("transB").unwrap_or(0) == 1 || shape.len() != 2 {
        (w, shape)
    } else {
        let (r, c) = (shape[0], shape[1]);
        let mut t = vec![0f32; r * c];
        for i in 0..r {
            for j in 0..c {
                t[j * r + i] = w[i * c + j];
            }
        }
        (t, vec![c, r])
    };
    let features_n = shape[0];
    b.put("fc.weight".into(), (w, shape));
    let bias = if gemm.input.len() > 2 {
        b.input(gemm, 2)?
    } else {
        (vec![0.0; features_n], vec![features_n])
    };
    b.put("fc.bias".into(), bias);
    match features {
        Some(f) => b.bn("features", f)?,
        None => {
            b.bn_identity("features", vec![0.0; features_n]);
        }
    }
    Ok(b.out)
}
