//! ArcFace's IResNet, insightface's `recognition/arcface_torch/backbones/iresnet.py`
//! (`IBasicBlock`, `IResNet`; `iresnet18/34/50/100/200`), in inference mode: 112 x 112
//! RGB in, `num_features` (512) out. The stem and stage widths are parameters (64 and
//! 64/128/256/512 upstream) so that small models of the same structure can be tested.
//!
//! | stored key (arcface_torch `.pth`, optional `module.` prefix) | module path |
//! |---|---|
//! | `conv1.weight`, `bn1.*`, `bn2.*`, `fc.*`, `features.*` | same (norm `weight`/`bias` as `gamma`/`beta`) |
//! | `prelu.weight`, `layerN.K.prelu.weight` | `...prelu.alpha` |
//! | `layerN.K.{bn1,conv1,bn2,conv2,bn3}.*` | same |
//! | `layerN.K.downsample.0.weight` / `downsample.1.*` | `layerN.K.downsample.conv.weight` / `downsample.bn.*` |
//! | `*.num_batches_tracked` | ignored (a training counter) |
use burn::config::Config;
use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{
    BatchNorm, BatchNormConfig, Linear, LinearConfig, PRelu, PReluConfig, PaddingConfig2d,
};
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;

use crate::ModelError;
use crate::nn::channel::{batch_norm_eval, batch_norm_prelu};
use crate::nn::conv::conv2d;
use crate::weights::{Mapped, SafetensorsFile};

/// Architecture of an IResNet.
#[derive(Config, Debug, PartialEq)]
pub struct IResNetConfig {
    /// Blocks per stage (`[2, 2, 2, 2]` for iresnet18, `[3, 4, 14, 3]` for iresnet50,
    /// `[3, 13, 30, 3]` for iresnet100).
    pub layers: [usize; 4],
    /// Channels of the stem (64).
    #[config(default = 64)]
    pub stem: usize,
    /// Channels of the four stages (64, 128, 256, 512).
    #[config(default = "[64, 128, 256, 512]")]
    pub widths: [usize; 4],
    /// Embedding size (512).
    #[config(default = 512)]
    pub num_features: usize,
}

impl IResNetConfig {
    /// insightface `iresnet18`.
    pub fn iresnet18() -> Self {
        Self::new([2, 2, 2, 2])
    }
    /// insightface `iresnet34`.
    pub fn iresnet34() -> Self {
        Self::new([3, 4, 6, 3])
    }
    /// insightface `iresnet50` (buffalo_l's `w600k_r50`).
    pub fn iresnet50() -> Self {
        Self::new([3, 4, 14, 3])
    }
    /// insightface `iresnet100` (antelopev2's `glintr100`).
    pub fn iresnet100() -> Self {
        Self::new([3, 13, 30, 3])
    }

    /// Builds the network with fresh weights.
    pub fn init<B: Backend>(&self, device: &B::Device) -> IResNet<B> {
        let mut inplanes = self.stem;
        let mut stages = Vec::with_capacity(4);
        for (&planes, &blocks) in self.widths.iter().zip(&self.layers) {
            let mut stage = Vec::with_capacity(blocks);
            for k in 0..blocks {
                let (inp, stride) = if k == 0 { (inplanes, 2) } else { (planes, 1) };
                stage.push(IBasicBlock {
                    bn1: bn(inp, device),
                    conv1: conv(inp, planes, 3, 1, device),
                    bn2: bn(planes, device),
                    prelu: PReluConfig::new().with_num_parameters(planes).init(device),
                    conv2: conv(planes, planes, 3, stride, device),
                    bn3: bn(planes, device),
                    downsample: (k == 0).then(|| Downsample {
                        conv: conv(inp, planes, 1, stride, device),
                        bn: bn(planes, device),
                    }),
                });
            }
            inplanes = planes;
            stages.push(stage);
        }
        let [layer1, layer2, layer3, layer4]: [Vec<IBasicBlock<B>>; 4] = stages
            .try_into()
            .unwrap_or_else(|_| unreachable!("four stages"));
        IResNet {
            conv1: conv(3, self.stem, 3, 1, device),
            bn1: bn(self.stem, device),
            prelu: PReluConfig::new()
                .with_num_parameters(self.stem)
                .init(device),
            layer1,
            layer2,
            layer3,
            layer4,
            bn2: bn(self.widths[3], device),
            fc: LinearConfig::new(self.widths[3] * 49, self.num_features).init(device),
            features: bn(self.num_features, device),
        }
    }
}

fn bn<B: Backend>(c: usize, device: &B::Device) -> BatchNorm<B> {
    BatchNormConfig::new(c).with_epsilon(1e-5).init(device)
}

fn conv<B: Backend>(i: usize, o: usize, k: usize, stride: usize, device: &B::Device) -> Conv2d<B> {
    let p = k / 2;
    Conv2dConfig::new([i, o], [k, k])
        .with_stride([stride, stride])
        .with_padding(PaddingConfig2d::Explicit(p, p, p, p))
        .with_bias(false)
        .init(device)
}

/// `conv1x1 + BatchNorm2d` on the shortcut of a stage's first block.
#[derive(Module, Debug)]
pub struct Downsample<B: Backend> {
    conv: Conv2d<B>,
    bn: BatchNorm<B>,
}

/// `IBasicBlock`: `bn1, conv1, bn2, prelu, conv2 (stride), bn3` plus the shortcut.
#[derive(Module, Debug)]
pub struct IBasicBlock<B: Backend> {
    bn1: BatchNorm<B>,
    conv1: Conv2d<B>,
    bn2: BatchNorm<B>,
    prelu: PRelu<B>,
    conv2: Conv2d<B>,
    bn3: BatchNorm<B>,
    downsample: Option<Downsample<B>>,
}

impl<B: Backend> IBasicBlock<B> {
    /// # Shapes
    /// - `x`: `[N, C_in, H, W]` -> `[N, C, H / stride, W / stride]`
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let out = conv2d(&self.conv1, batch_norm_eval(&self.bn1, x.clone()));
        let out = batch_norm_prelu(&self.bn2, &self.prelu, out);
        let out = batch_norm_eval(&self.bn3, conv2d(&self.conv2, out));
        let identity = match &self.downsample {
            Some(d) => batch_norm_eval(&d.bn, conv2d(&d.conv, x)),
            None => x,
        };
        out + identity
    }
}

/// The IResNet backbone (`IResNet`), dropout omitted (identity at inference).
#[derive(Module, Debug)]
pub struct IResNet<B: Backend> {
    conv1: Conv2d<B>,
    bn1: BatchNorm<B>,
    prelu: PRelu<B>,
    layer1: Vec<IBasicBlock<B>>,
    layer2: Vec<IBasicBlock<B>>,
    layer3: Vec<IBasicBlock<B>>,
    layer4: Vec<IBasicBlock<B>>,
    bn2: BatchNorm<B>,
    fc: Linear<B>,
    features: BatchNorm<B>,
}

impl<B: Backend> IResNet<B> {
    /// The embedding, not normalised (as `IResNet.forward`).
    ///
    /// # Shapes
    /// - `x`: `[N, 3, 112, 112]`, RGB normalised `(x / 255 - 0.5) / 0.5`
    /// - output: `[N, num_features]`
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 2> {
        let mut x = batch_norm_prelu(&self.bn1, &self.prelu, conv2d(&self.conv1, x));
        for block in self
            .layer1
            .iter()
            .chain(&self.layer2)
            .chain(&self.layer3)
            .chain(&self.layer4)
        {
            x = block.forward(x);
        }
        let x: Tensor<B, 2> = batch_norm_eval(&self.bn2, x).flatten(1, 3);
        batch_norm_eval(&self.features, self.fc.forward(x))
    }
}

/// The prefix of an arcface_torch state dict's keys (`module.` when saved from a
/// DistributedDataParallel wrapper).
fn prefix(file: &SafetensorsFile) -> Option<&'static str> {
    ["", "module."].into_iter().find(|p| {
        file.entry(&format!("{p}conv1.weight")).is_some()
            && file.entry(&format!("{p}fc.weight")).is_some()
    })
}

/// The keys an IResNet file must have, for error messages.
pub const EXPECTED_KEYS: &str = "`conv1.weight`, `bn1.*`, `prelu.weight`, `layer1.0.conv1.weight` ... `layer4.*`, \
                                 `bn2.*`, `fc.weight`, `features.*` (arcface_torch iresnet, optionally under `module.`)";

/// Recognises an arcface_torch IResNet state dict and reads its architecture from the
/// tensor shapes.
///
/// # Errors
/// [`ModelError::Weights`] listing the expected keys when the file is not one.
pub fn detect_config(file: &SafetensorsFile) -> crate::Result<(IResNetConfig, &'static str)> {
    let unknown = |why: &str| {
        ModelError::weights(
            file.path(),
            format!("not an ArcFace IResNet state dict ({why}); expected {EXPECTED_KEYS}"),
        )
    };
    let p = prefix(file).ok_or_else(|| unknown("no `conv1.weight` and `fc.weight`"))?;
    let shape = |k: &str| file.entry(&format!("{p}{k}")).map(|e| e.shape.clone());
    let stem = shape("conv1.weight")
        .filter(|s| s.len() == 4)
        .ok_or_else(|| unknown("bad `conv1.weight`"))?[0];
    let mut layers = [0usize; 4];
    let mut widths = [0usize; 4];
    for s in 0..4 {
        while shape(&format!("layer{}.{}.conv1.weight", s + 1, layers[s])).is_some() {
            layers[s] += 1;
        }
        widths[s] = shape(&format!("layer{}.0.conv1.weight", s + 1))
            .filter(|v| v.len() == 4)
            .ok_or_else(|| unknown(&format!("no `layer{}.0.conv1.weight`", s + 1)))?[0];
    }
    let fc = shape("fc.weight")
        .filter(|s| s.len() == 2)
        .ok_or_else(|| unknown("bad `fc.weight`"))?;
    if fc[1] != widths[3] * 49 {
        return Err(unknown(&format!(
            "`fc.weight` is {fc:?}, not [F, {} * 7 * 7] for 112 x 112 inputs",
            widths[3]
        )));
    }
    let config = IResNetConfig::new(layers)
        .with_stem(stem)
        .with_widths(widths)
        .with_num_features(fc[0]);
    Ok((config, p))
}

/// The remap table of an arcface_torch state dict whose keys start with `prefix`.
pub fn remap(file: &SafetensorsFile, prefix: &str) -> Vec<Mapped> {
    file.keys()
        .filter(|k| !k.ends_with("num_batches_tracked"))
        .map(|k| {
            let rest = k.strip_prefix(prefix).unwrap_or(k);
            let target = rest
                .replace(".downsample.0.", ".downsample.conv.")
                .replace(".downsample.1.", ".downsample.bn.");
            let target = match target.strip_suffix("prelu.weight") {
                Some(stem) => format!("{stem}prelu.alpha"),
                None => target,
            };
            Mapped::new(target, k)
        })
        .collect()
}
