//! MTCNN's three networks, facenet-pytorch 2.6.0's `models/mtcnn.py` (`PNet`, `RNet`,
//! `ONet`), and their weights: the built-in copies of facenet-pytorch's `data/*.pt`
//! (converted to safetensors, same keys), a folder holding `{pnet,rnet,onet}.pt` or
//! `.safetensors`, or one `.safetensors` with the keys under `pnet.`, `rnet.`, `onet.`.
//!
//! | stored key | module path |
//! |---|---|
//! | `convN.weight` / `.bias`, `denseN.weight` / `.bias` (and `conv4_1`, `dense5_2`, ...) | same |
//! | `preluN.weight` `[C]` | `preluN.alpha` |
use std::path::{Path, PathBuf};
use std::rc::Rc;

use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::pool::{MaxPool2d, MaxPool2dConfig};
use burn::nn::{Linear, LinearConfig, PRelu, PReluConfig};
use burn::tensor::Tensor;
use burn::tensor::activation::softmax;
use burn::tensor::backend::Backend;

use crate::nn::channel;
use crate::nn::conv::conv2d;
use crate::weights::{Mapped, SafetensorsFile, load_module, torch_as_safetensors};
use crate::{ModelError, Result};

static PNET: &[u8] = include_bytes!("../../assets/mtcnn/pnet.safetensors");
static RNET: &[u8] = include_bytes!("../../assets/mtcnn/rnet.safetensors");
static ONET: &[u8] = include_bytes!("../../assets/mtcnn/onet.safetensors");

fn conv<B: Backend>(i: usize, o: usize, k: usize, device: &B::Device) -> Conv2d<B> {
    Conv2dConfig::new([i, o], [k, k]).init(device)
}

fn prelu<B: Backend>(c: usize, device: &B::Device) -> PRelu<B> {
    PReluConfig::new().with_num_parameters(c).init(device)
}

fn pool(k: usize, s: usize) -> MaxPool2d {
    MaxPool2dConfig::new([k, k])
        .with_strides([s, s])
        .with_ceil_mode(true)
        .init()
}

/// The proposal network (`PNet`): fully convolutional, 12 x 12 receptive field.
#[derive(Module, Debug)]
pub struct PNet<B: Backend> {
    conv1: Conv2d<B>,
    prelu1: PRelu<B>,
    pool1: MaxPool2d,
    conv2: Conv2d<B>,
    prelu2: PRelu<B>,
    conv3: Conv2d<B>,
    prelu3: PRelu<B>,
    conv4_1: Conv2d<B>,
    conv4_2: Conv2d<B>,
}

impl<B: Backend> PNet<B> {
    /// A P-Net with fresh weights.
    pub fn init(device: &B::Device) -> Self {
        Self {
            conv1: conv(3, 10, 3, device),
            prelu1: prelu(10, device),
            pool1: pool(2, 2),
            conv2: conv(10, 16, 3, device),
            prelu2: prelu(16, device),
            conv3: conv(16, 32, 3, device),
            prelu3: prelu(32, device),
            conv4_1: conv(32, 2, 1, device),
            conv4_2: conv(32, 4, 1, device),
        }
    }

    /// Returns `(box regression, face probabilities)`.
    ///
    /// # Shapes
    /// - `x`: `[N, 3, H, W]`, normalised `(x - 127.5) / 128`, `H, W >= 12`
    /// - output: `[N, 4, H', W']` and `[N, 2, H', W']` (softmax over dim 1; index 1 is
    ///   "face"), `H' = ceil((H - 2) / 2) - 4`
    pub fn forward(&self, x: Tensor<B, 4>) -> (Tensor<B, 4>, Tensor<B, 4>) {
        let x = channel::prelu(&self.prelu1, conv2d(&self.conv1, x));
        let x = self.pool1.forward(x);
        let x = channel::prelu(&self.prelu2, conv2d(&self.conv2, x));
        let x = channel::prelu(&self.prelu3, conv2d(&self.conv3, x));
        let a = softmax(conv2d(&self.conv4_1, x.clone()), 1);
        let b = conv2d(&self.conv4_2, x);
        (b, a)
    }
}

/// The refinement network (`RNet`) on 24 x 24 crops.
#[derive(Module, Debug)]
pub struct RNet<B: Backend> {
    conv1: Conv2d<B>,
    prelu1: PRelu<B>,
    pool1: MaxPool2d,
    conv2: Conv2d<B>,
    prelu2: PRelu<B>,
    pool2: MaxPool2d,
    conv3: Conv2d<B>,
    prelu3: PRelu<B>,
    dense4: Linear<B>,
    prelu4: PRelu<B>,
    dense5_1: Linear<B>,
    dense5_2: Linear<B>,
}

/// `x.permute(0, 3, 2, 1).reshape(N, -1)`: facenet-pytorch flattens in (W, H, C) order.
fn flatten_whc<B: Backend>(x: Tensor<B, 4>) -> Tensor<B, 2> {
    let [n, c, h, w] = x.dims();
    x.permute([0, 3, 2, 1]).reshape([n, w * h * c])
}

impl<B: Backend> RNet<B> {
    /// An R-Net with fresh weights.
    pub fn init(device: &B::Device) -> Self {
        Self {
            conv1: conv(3, 28, 3, device),
            prelu1: prelu(28, device),
            pool1: pool(3, 2),
            conv2: conv(28, 48, 3, device),
            prelu2: prelu(48, device),
            pool2: pool(3, 2),
            conv3: conv(48, 64, 2, device),
            prelu3: prelu(64, device),
            dense4: LinearConfig::new(576, 128).init(device),
            prelu4: prelu(128, device),
            dense5_1: LinearConfig::new(128, 2).init(device),
            dense5_2: LinearConfig::new(128, 4).init(device),
        }
    }

    /// Returns `(box regression, face probabilities)`.
    ///
    /// # Shapes
    /// - `x`: `[N, 3, 24, 24]`, normalised `(x - 127.5) / 128`
    /// - output: `[N, 4]` and `[N, 2]` (softmax; index 1 is "face")
    pub fn forward(&self, x: Tensor<B, 4>) -> (Tensor<B, 2>, Tensor<B, 2>) {
        let x = self
            .pool1
            .forward(channel::prelu(&self.prelu1, conv2d(&self.conv1, x)));
        let x = self
            .pool2
            .forward(channel::prelu(&self.prelu2, conv2d(&self.conv2, x)));
        let x = channel::prelu(&self.prelu3, conv2d(&self.conv3, x));
        let x = channel::prelu(&self.prelu4, self.dense4.forward(flatten_whc(x)));
        let a = softmax(self.dense5_1.forward(x.clone()), 1);
        (self.dense5_2.forward(x), a)
    }
}

/// The output network (`ONet`) on 48 x 48 crops, with the five landmarks.
#[derive(Module, Debug)]
pub struct ONet<B: Backend> {
    conv1: Conv2d<B>,
    prelu1: PRelu<B>,
    pool1: MaxPool2d,
    conv2: Conv2d<B>,
    prelu2: PRelu<B>,
    pool2: MaxPool2d,
    conv3: Conv2d<B>,
    prelu3: PRelu<B>,
    pool3: MaxPool2d,
    conv4: Conv2d<B>,
    prelu4: PRelu<B>,
    dense5: Linear<B>,
    prelu5: PRelu<B>,
    dense6_1: Linear<B>,
    dense6_2: Linear<B>,
    dense6_3: Linear<B>,
}

impl<B: Backend> ONet<B> {
    /// An O-Net with fresh weights.
    pub fn init(device: &B::Device) -> Self {
        Self {
            conv1: conv(3, 32, 3, device),
            prelu1: prelu(32, device),
            pool1: pool(3, 2),
            conv2: conv(32, 64, 3, device),
            prelu2: prelu(64, device),
            pool2: pool(3, 2),
            conv3: conv(64, 64, 3, device),
            prelu3: prelu(64, device),
            pool3: pool(2, 2),
            conv4: conv(64, 128, 2, device),
            prelu4: prelu(128, device),
            dense5: LinearConfig::new(1152, 256).init(device),
            prelu5: prelu(256, device),
            dense6_1: LinearConfig::new(256, 2).init(device),
            dense6_2: LinearConfig::new(256, 4).init(device),
            dense6_3: LinearConfig::new(256, 10).init(device),
        }
    }

    /// Returns `(box regression, landmarks, face probabilities)`.
    ///
    /// # Shapes
    /// - `x`: `[N, 3, 48, 48]`, normalised `(x - 127.5) / 128`
    /// - output: `[N, 4]`, `[N, 10]` (five x then five y, relative to the box) and
    ///   `[N, 2]` (softmax; index 1 is "face")
    pub fn forward(&self, x: Tensor<B, 4>) -> (Tensor<B, 2>, Tensor<B, 2>, Tensor<B, 2>) {
        let x = self
            .pool1
            .forward(channel::prelu(&self.prelu1, conv2d(&self.conv1, x)));
        let x = self
            .pool2
            .forward(channel::prelu(&self.prelu2, conv2d(&self.conv2, x)));
        let x = self
            .pool3
            .forward(channel::prelu(&self.prelu3, conv2d(&self.conv3, x)));
        let x = channel::prelu(&self.prelu4, conv2d(&self.conv4, x));
        let x = channel::prelu(&self.prelu5, self.dense5.forward(flatten_whc(x)));
        let a = softmax(self.dense6_1.forward(x.clone()), 1);
        (
            self.dense6_2.forward(x.clone()),
            self.dense6_3.forward(x),
            a,
        )
    }
}

/// The three networks.
#[derive(Module, Debug)]
pub struct MtcnnNets<B: Backend> {
    /// Proposal network.
    pub pnet: PNet<B>,
    /// Refinement network.
    pub rnet: RNet<B>,
    /// Output network.
    pub onet: ONet<B>,
}

/// The remap table of one network: every key of `file` under `prefix`, `preluN.weight`
/// renamed to `preluN.alpha`.
fn remap(file: &SafetensorsFile, prefix: &str) -> Vec<Mapped> {
    file.keys()
        .filter_map(|k| k.strip_prefix(prefix).map(|rest| (k, rest)))
        .map(|(k, rest)| {
            let target = match rest.strip_suffix(".weight") {
                Some(stem) if stem.starts_with("prelu") => format!("{stem}.alpha"),
                _ => rest.to_string(),
            };
            Mapped::new(target, k)
        })
        .collect()
}

/// Where each network's weights come from.
struct Sources {
    pnet: (Rc<SafetensorsFile>, &'static str),
    rnet: (Rc<SafetensorsFile>, &'static str),
    onet: (Rc<SafetensorsFile>, &'static str),
}

/// `net` with the weights of `file` under `prefix`, checked by the load report.
fn load_net<B: Backend, M: Module<B>>(
    mut net: M,
    (file, prefix): &(Rc<SafetensorsFile>, &'static str),
    what: &str,
) -> Result<M> {
    load_module(&mut net, file, remap(file, prefix), what)?;
    Ok(net)
}

/// One network's file in a folder: `<name>.safetensors`, else `<name>.pt`.
fn folder_file(dir: &Path, name: &str) -> Result<Rc<SafetensorsFile>> {
    let st = dir.join(format!("{name}.safetensors"));
    let pt = dir.join(format!("{name}.pt"));
    if st.is_file() {
        SafetensorsFile::open(&st)
    } else if pt.is_file() {
        torch_as_safetensors(&pt)
    } else {
        Err(ModelError::MissingFile {
            path: st,
            what: format!("MTCNN's {name} weights (`{name}.safetensors` or `{name}.pt`)"),
        })
    }
}

fn sources(path: Option<&Path>) -> Result<Sources> {
    match path {
        None => Ok(Sources {
            pnet: (
                SafetensorsFile::from_static("<built-in>/pnet.safetensors", PNET)?,
                "",
            ),
            rnet: (
                SafetensorsFile::from_static("<built-in>/rnet.safetensors", RNET)?,
                "",
            ),
            onet: (
                SafetensorsFile::from_static("<built-in>/onet.safetensors", ONET)?,
                "",
            ),
        }),
        Some(dir) if dir.is_dir() => Ok(Sources {
            pnet: (folder_file(dir, "pnet")?, ""),
            rnet: (folder_file(dir, "rnet")?, ""),
            onet: (folder_file(dir, "onet")?, ""),
        }),
        Some(file) if file.is_file() => {
            let f = SafetensorsFile::open(file)?;
            if f.keys()
                .any(|k| !["pnet.", "rnet.", "onet."].iter().any(|p| k.starts_with(p)))
            {
                return Err(ModelError::weights(
                    file,
                    "an MTCNN file must hold only keys under `pnet.`, `rnet.` and `onet.` \
                     (or pass a folder with pnet/rnet/onet .pt or .safetensors files)",
                ));
            }
            Ok(Sources {
                pnet: (Rc::clone(&f), "pnet."),
                rnet: (Rc::clone(&f), "rnet."),
                onet: (f, "onet."),
            })
        }
        Some(other) => Err(ModelError::MissingFile {
            path: PathBuf::from(other),
            what: "MTCNN weights (a folder or a .safetensors file)".into(),
        }),
    }
}

impl<B: Backend> MtcnnNets<B> {
    /// Loads the networks: the built-in facenet-pytorch weights when `path` is `None`,
    /// else a folder with `{pnet,rnet,onet}.safetensors` or `.pt` (facenet-pytorch's own
    /// legacy files), or one `.safetensors` with the keys under `pnet.`, `rnet.`, `onet.`.
    ///
    /// # Errors
    /// Missing files, unreadable weights, and any missing, unused or mis-shaped tensor
    /// (named by the load report).
    pub fn load(path: Option<&Path>, device: &B::Device) -> Result<Self> {
        let s = sources(path)?;
        Ok(Self {
            pnet: load_net(PNet::init(device), &s.pnet, "MTCNN P-Net")?,
            rnet: load_net(RNet::init(device), &s.rnet, "MTCNN R-Net")?,
            onet: load_net(ONet::init(device), &s.onet, "MTCNN O-Net")?,
        })
    }
}
