//! The name head of `docs/METHOD.md`, (b): fully connected layers from concatenated CLIP image
//! embeddings (`[B, 768 + 1280]` for SDXL's towers) to a name `[B, K, D]`.
use alloc::format;
use alloc::vec::Vec;
use burn::config::Config;
use burn::module::{Module, Param};
use burn::nn::loss::{MseLoss, Reduction};
use burn::nn::{Linear, LinearConfig};
use burn::tensor::activation;
use burn::tensor::{Tensor, TensorData, backend::Backend};

use crate::NameError;

type HeadResult<T> = core::result::Result<T, NameError>;

/// Non-linearity between the head's layers (the paper does not name one).
#[derive(Config, Debug, Copy, PartialEq, Eq)]
pub enum HeadActivation {
    /// Exact (erf) GELU.
    Gelu,
    /// ReLU.
    Relu,
    /// SiLU / swish.
    Silu,
}

/// Configuration of [`NameHead`]. The paper's "FC x 3" is two hidden widths.
#[derive(Config, Debug)]
pub struct NameHeadConfig {
    /// Width of the input: the concatenated image embeddings (2048 for CLIP-L + CLIP-G).
    pub input_dim: usize,
    /// Widths of the hidden layers; `hidden_dims.len() + 1` linear layers in all.
    #[config(default = "alloc::vec![2048, 2048]")]
    pub hidden_dims: Vec<usize>,
    /// Activation after every layer but the last.
    #[config(default = "HeadActivation::Gelu")]
    pub activation: HeadActivation,
    /// `K`, token vectors per name (8 in MagicNaming).
    #[config(default = 8)]
    pub num_tokens: usize,
    /// `D`, dimension of each token vector (2048 for SDXL).
    #[config(default = 2048)]
    pub token_dim: usize,
}

/// Fully connected head `[B, input_dim] -> [B, K, D]`.
#[derive(Module, Debug)]
pub struct NameHead<B: Backend> {
    /// The linear layers, input first.
    pub layers: Vec<Linear<B>>,
    #[module(skip)]
    activation: HeadActivation,
    num_tokens: usize,
    token_dim: usize,
}

impl NameHeadConfig {
    /// Checks that every width is positive.
    pub fn validate(&self) -> HeadResult<()> {
        let widths = [self.input_dim, self.num_tokens, self.token_dim];
        if widths.contains(&0) || self.hidden_dims.contains(&0) {
            return Err(NameError::InvalidConfig(format!(
                "name head widths must be > 0 (input_dim {}, hidden_dims {:?}, num_tokens {}, token_dim {})",
                self.input_dim, self.hidden_dims, self.num_tokens, self.token_dim
            )));
        }
        Ok(())
    }

    /// Builds the head with freshly initialised weights, drawn from the backend's
    /// generator.
    ///
    /// # Errors
    /// [`NameError::InvalidConfig`] when a width is zero.
    pub fn init<B: Backend>(&self, device: &B::Device) -> HeadResult<NameHead<B>> {
        self.validate()?;
        let layers = self
            .widths()
            .windows(2)
            .map(|w| LinearConfig::new(w[0], w[1]).init(device))
            .collect();
        Ok(self.with_layers(layers))
    }

    /// Builds the head with weights drawn from a host generator seeded with `seed`
    /// ([`crate::rng::SplitMix64`]): the same weights on every backend, whatever else
    /// draws from the backend's generator meanwhile. The distribution is burn's default
    /// for `Linear` (Kaiming uniform with gain 1/sqrt(3): weight and bias uniform on
    /// `[-1/sqrt(fan_in), 1/sqrt(fan_in))`, as PyTorch's `nn.Linear`).
    ///
    /// # Errors
    /// [`NameError::InvalidConfig`] when a width is zero.
    pub fn init_seeded<B: Backend>(
        &self,
        seed: u64,
        device: &B::Device,
    ) -> HeadResult<NameHead<B>> {
        self.validate()?;
        let mut rng = crate::rng::SplitMix64(seed);
        let layers = self
            .widths()
            .windows(2)
            .map(|w| {
                let (fan_in, out) = (w[0], w[1]);
                let bound = 1.0 / libm::sqrt(fan_in as f64);
                let mut linear = LinearConfig::new(fan_in, out).init(device);
                let weight = rng.uniform_f32(fan_in * out, bound);
                let bias = rng.uniform_f32(out, bound);
                linear.weight = Param::from_tensor(Tensor::from_data(
                    TensorData::new(weight, [fan_in, out]),
                    device,
                ));
                linear.bias = Some(Param::from_tensor(Tensor::from_data(
                    TensorData::new(bias, [out]),
                    device,
                )));
                linear
            })
            .collect();
        Ok(self.with_layers(layers))
    }

    fn widths(&self) -> Vec<usize> {
        let mut widths = Vec::with_capacity(self.hidden_dims.len() + 2);
        widths.push(self.input_dim);
        widths.extend_from_slice(&self.hidden_dims);
        widths.push(self.num_tokens * self.token_dim);
        widths
    }

    fn with_layers<B: Backend>(&self, layers: Vec<Linear<B>>) -> NameHead<B> {
        NameHead {
            layers,
            activation: self.activation,
            num_tokens: self.num_tokens,
            token_dim: self.token_dim,
        }
    }
}

/// Exact (erf) GELU written out, `0.5 x (1 + erf(x / sqrt 2))`, so that its gradient is
/// exact too: burn 0.21's fused `gelu` differentiates the tanh approximation, which moved
/// AdamW updates by ~1e-4 against PyTorch's exact GELU.
fn exact_gelu<B: Backend>(x: Tensor<B, 2>) -> Tensor<B, 2> {
    (x.clone().div_scalar(core::f64::consts::SQRT_2).erf() + 1.0) * x * 0.5
}

impl<B: Backend> NameHead<B> {
    /// Predicts names from image embeddings.
    ///
    /// # Shapes
    /// - `image_embeds`: `[B, input_dim]`
    /// - output: `[B, K, D]`
    pub fn forward(&self, image_embeds: Tensor<B, 2>) -> Tensor<B, 3> {
        let last = self.layers.len() - 1;
        let mut x = image_embeds;
        for (i, layer) in self.layers.iter().enumerate() {
            x = layer.forward(x);
            if i < last {
                x = match self.activation {
                    HeadActivation::Gelu => exact_gelu(x),
                    HeadActivation::Relu => activation::relu(x),
                    HeadActivation::Silu => activation::silu(x),
                };
            }
        }
        let [batch, _] = x.dims();
        x.reshape([batch, self.num_tokens, self.token_dim])
    }

    /// Mean squared error between predicted and ground-truth names (mean over all
    /// elements), the training loss of `docs/METHOD.md`, (b).
    ///
    /// # Shapes
    /// - `pred`, `target`: `[B, K, D]`
    /// - output: `[1]`
    pub fn loss(&self, pred: Tensor<B, 3>, target: Tensor<B, 3>) -> Tensor<B, 1> {
        MseLoss::new().forward(pred, target, Reduction::Mean)
    }

    /// Expected input width.
    pub fn input_dim(&self) -> usize {
        self.layers[0].weight.dims()[0]
    }

    /// `K`.
    pub fn num_tokens(&self) -> usize {
        self.num_tokens
    }

    /// `D`.
    pub fn token_dim(&self) -> usize {
        self.token_dim
    }
}
