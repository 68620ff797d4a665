//! The CLIP text tower: transformers' `CLIPTextModel` / `CLIPTextModelWithProjection`
//! (`CLIPTextEmbeddings`, `CLIPTextTransformer`). SDXL uses two: CLIP ViT-L/14 and
//! OpenCLIP ViT-bigG/14 (with `text_projection`).
use burn::module::Module;
use burn::nn::{Embedding, EmbeddingConfig, LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};

use super::config::ClipTextConfig;
use super::encoder::{ClipEncoder, ClipEncoderConfig};
use crate::nn::norm;
use crate::{ModelError, Result};

/// Token and position embeddings (`CLIPTextEmbeddings`).
#[derive(Module, Debug)]
pub struct ClipTextEmbeddings<B: Backend> {
    /// `[vocab, H]`.
    pub token_embedding: Embedding<B>,
    /// `[max_positions, H]`.
    pub position_embedding: Embedding<B>,
}

/// The text transformer with its optional projection.
#[derive(Module, Debug)]
pub struct ClipTextModel<B: Backend> {
    /// Embeddings.
    pub embeddings: ClipTextEmbeddings<B>,
    /// Transformer layers.
    pub encoder: ClipEncoder<B>,
    /// Final LayerNorm.
    pub final_layer_norm: LayerNorm<B>,
    /// `text_projection` (no bias), present in `CLIPTextModelWithProjection`.
    pub text_projection: Option<Linear<B>>,
    #[module(skip)]
    eos_token_id: usize,
    #[module(skip)]
    max_positions: usize,
}

/// Everything a forward pass yields.
#[derive(Debug, Clone)]
pub struct ClipTextOutput<B: Backend> {
    /// `[B, L, H]` after the final LayerNorm.
    pub last_hidden_state: Tensor<B, 3>,
    /// `[B, H]`: the final state at the end-of-text token (`pooler_output`).
    pub pooled_output: Tensor<B, 2>,
    /// Embedding output then every layer's output, `num_layers + 1` of `[B, L, H]`.
    pub hidden_states: Vec<Tensor<B, 3>>,
    /// `[B, P]`: `text_projection(pooled_output)` when the model has a projection.
    pub text_embeds: Option<Tensor<B, 2>>,
}

impl ClipTextConfig {
    /// Builds the tower; `with_projection` adds `text_projection` (`CLIPTextModelWithProjection`).
    pub fn init<B: Backend>(&self, with_projection: bool, device: &B::Device) -> ClipTextModel<B> {
        ClipTextModel {
            embeddings: ClipTextEmbeddings {
                token_embedding: EmbeddingConfig::new(self.vocab_size, self.hidden_size)
                    .init(device),
                position_embedding: EmbeddingConfig::new(
                    self.max_position_embeddings,
                    self.hidden_size,
                )
                .init(device),
            },
            encoder: ClipEncoderConfig::new(
                self.hidden_size,
                self.intermediate_size,
                self.num_attention_heads,
                self.num_hidden_layers,
                self.hidden_act,
                self.layer_norm_eps,
            )
            .init(device),
            final_layer_norm: LayerNormConfig::new(self.hidden_size)
                .with_epsilon(self.layer_norm_eps)
                .init(device),
            text_projection: with_projection.then(|| {
                LinearConfig::new(self.hidden_size, self.projection_dim)
                    .with_bias(false)
                    .init(device)
            }),
            eos_token_id: self.eos_token_id,
            max_positions: self.max_position_embeddings,
        }
    }
}

impl<B: Backend> ClipTextModel<B> {
    /// Position of the end-of-text token in each row, as transformers picks it: with the
    /// legacy `eos_token_id == 2` the first position of the largest id, else the first
    /// position equal to `eos_token_id` (the last position if there is none).
    pub fn eos_positions(&self, ids: &[Vec<u32>]) -> Vec<usize> {
        ids.iter()
            .map(|row| {
                if self.eos_token_id == 2 {
                    let max = row.iter().copied().max().unwrap_or(0);
                    row.iter().position(|&t| t == max).unwrap_or(0)
                } else {
                    row.iter()
                        .position(|&t| t as usize == self.eos_token_id)
                        .unwrap_or(row.len().saturating_sub(1))
                }
            })
            .collect()
    }

    /// Encodes token ids.
    ///
    /// # Shapes
    /// - `ids`: `B` rows of `L <= max_position_embeddings` ids
    /// - output: see [`ClipTextOutput`]
    ///
    /// # Errors
    /// Rows of different lengths, a row longer than the position table, an id outside
    /// the vocabulary.
    pub fn forward(&self, ids: &[Vec<u32>]) -> Result<ClipTextOutput<B>> {
        let device = self.final_layer_norm.gamma.device();
        let batch = ids.len();
        let len = ids.first().map(Vec::len).unwrap_or(0);
        if batch == 0 || len == 0 {
            return Err(ModelError::InvalidInput("no token ids to encode".into()));
        }
        if ids.iter().any(|r| r.len() != len) || len > self.max_positions {
            return Err(ModelError::InvalidInput(format!(
                "token rows must share one length <= {} (got {:?})",
                self.max_positions,
                ids.iter().map(Vec::len).collect::<Vec<_>>()
            )));
        }
        let vocab = self.embeddings.token_embedding.weight.dims()[0];
        if let Some(bad) = ids.iter().flatten().find(|&&t| t as usize >= vocab) {
            return Err(ModelError::InvalidInput(format!(
                "token id {bad} is outside the vocabulary of {vocab}"
            )));
        }
        let flat: Vec<i64> = ids.iter().flatten().map(|&t| t as i64).collect();
        let tokens = Tensor::<B, 2, Int>::from_data(TensorData::new(flat, [batch, len]), &device);
        let positions = Tensor::<B, 1, Int>::arange(0..len as i64, &device)
            .reshape([1, len])
            .expand([batch, len]);
        let x = self.embeddings.token_embedding.forward(tokens)
            + self.embeddings.position_embedding.forward(positions);
        let hidden_states = self.encoder.forward_all(x, true);
        let last = hidden_states
            .last()
            .expect("at least the embeddings")
            .clone();
        let last_hidden_state = norm::layer_norm(&self.final_layer_norm, last);
        let hidden = last_hidden_state.dims()[2];
        let rows: Vec<Tensor<B, 2>> = self
            .eos_positions(ids)
            .into_iter()
            .enumerate()
            .map(|(b, p)| {
                last_hidden_state
                    .clone()
                    .slice([b..b + 1, p..p + 1, 0..hidden])
                    .reshape([1, hidden])
            })
            .collect();
        let pooled_output = Tensor::cat(rows, 0);
        let text_embeds = self
            .text_projection
            .as_ref()
            .map(|p| p.forward(pooled_output.clone()));
        Ok(ClipTextOutput {
            last_hidden_state,
            pooled_output,
            hidden_states,
            text_embeds,
        })
    }

    /// Width `H`.
    pub fn hidden_size(&self) -> usize {
        self.final_layer_norm.gamma.dims()[0]
    }

    /// Projection width `P`, if the model has a projection.
    pub fn projection_dim(&self) -> Option<usize> {
        self.text_projection.as_ref().map(|p| p.weight.dims()[1])
    }
}
