//! SDXL prompt encoding (diffusers' `StableDiffusionXLPipeline.encode_prompt`) and the
//! text-coding of names (`docs/METHOD.md`, (a)).

use burn::tensor::backend::Backend;
use burn::tensor::{DType, Tensor};
use magicnaming_core::{DEFAULT_NAME_TOKENS, NameEmbedding};

use super::load_options::LoadOptions;
use super::lora::{Component, LoraFusion, ModelNames};
use crate::clip::config::ClipTextConfig;
use crate::clip::remap_text;
use crate::clip::text::ClipTextModel;
use crate::clip::tokenizer::ClipTokenizer;
use crate::nn::precision::cast;
use crate::weights::{Precision, SafetensorsFile, SdxlSource, load_module_auto};
use crate::{ModelError, Result};

/// Single-file key prefix of text encoder 1 (transformers layout).
pub const SINGLE_FILE_TE1_PREFIX: &str = "conditioner.embedders.0.transformer.";
/// Single-file key prefix of text encoder 2 (open_clip layout).
pub const SINGLE_FILE_TE2_PREFIX: &str = "conditioner.embedders.1.model.";
/// Weight files of a diffusers text encoder, in order of preference (shard indexes too).
const TEXT_ENCODER_FILES: &[&str] = &[
    "model.safetensors",
    "model.safetensors.index.json",
    "model.fp16.safetensors",
    "model.fp16.safetensors.index.json",
];

/// Prompt embeddings as the SDXL UNet takes them.
#[derive(Debug, Clone)]
pub struct PromptEmbeds<B: Backend> {
    /// `[B, 77, D]`: penultimate hidden states of both encoders, concatenated.
    pub prompt_embeds: Tensor<B, 3>,
    /// `[B, P]`: encoder 2's projected pooled output.
    pub pooled_prompt_embeds: Tensor<B, 2>,
}

/// SDXL's two tokenizers and text encoders.
#[derive(Debug)]
pub struct SdxlTextEncoders<B: Backend> {
    /// Tokenizer of encoder 1 (pads with `<|endoftext|>`).
    pub tokenizer: ClipTokenizer,
    /// Tokenizer of encoder 2 (pads with `!`).
    pub tokenizer_2: ClipTokenizer,
    /// CLIP ViT-L/14 text tower.
    pub text_encoder: ClipTextModel<B>,
    /// OpenCLIP ViT-bigG/14 text tower with projection.
    pub text_encoder_2: ClipTextModel<B>,
    /// Unconditional embeddings are zeros when no negative prompt is given.
    pub force_zeros_for_empty_prompt: bool,
}

fn text_config(
    source: &SdxlSource,
    component: &str,
    builtin: fn() -> ClipTextConfig,
) -> Result<ClipTextConfig> {
    match source.component_file(component, "config.json") {
        Some(p) => ClipTextConfig::from_file(&p),
        None => match source {
            SdxlSource::Diffusers { root, .. } => Err(ModelError::MissingFile {
                path: root.join(component).join("config.json"),
                what: format!("configuration of `{component}`"),
            }),
            SdxlSource::SingleFile { .. } => {
                log::info!("{component}: no configuration given, using SDXL base's");
                Ok(builtin())
            }
        },
    }
}

fn tokenizer(source: &SdxlSource, component: &str, default_pad: &str) -> Result<ClipTokenizer> {
    match source.component_dir(component) {
        Some(dir) => ClipTokenizer::from_folder(&dir),
        None => match source {
            SdxlSource::Diffusers { root, .. } => Err(ModelError::MissingFile {
                path: root.join(component),
                what: "tokenizer folder".into(),
            }),
            SdxlSource::SingleFile { .. } => ClipTokenizer::bundled(default_pad),
        },
    }
}

impl<B: Backend> SdxlTextEncoders<B> {
    /// Loads both tokenizers and text encoders from a diffusers folder or a single file,
    /// in [`Precision::Auto`] (f16 files stay f16 on a backend with f16).
    pub fn load(source: &SdxlSource, device: &B::Device) -> Result<Self> {
        Self::load_as(source, device, Precision::Auto)
    }

    /// [`Self::load`] with the weights' float type chosen by `precision`. The outputs of
    /// [`Self::encode_prompt`] are f32 whatever the weights' type.
    pub fn load_as(source: &SdxlSource, device: &B::Device, precision: Precision) -> Result<Self> {
        let config_1 = text_config(source, "text_encoder", ClipTextConfig::sdxl_text_encoder)?;
        let config_2 = text_config(
            source,
            "text_encoder_2",
            ClipTextConfig::sdxl_text_encoder_2,
        )?;
        let mut text_encoder = config_1.init::<B>(false, device);
        let mut text_encoder_2 = config_2.init::<B>(true, device);
        match source {
            SdxlSource::Diffusers { root, .. } => {
                let f1 = SafetensorsFile::open(SdxlSource::diffusers_weights(
                    root,
                    "text_encoder",
                    TEXT_ENCODER_FILES,
                )?)?;
                load_module_auto(
                    &mut text_encoder,
                    &f1,
                    remap_text::hf_text(&f1, ""),
                    "text_encoder",
                    precision,
                    device,
                )?;
                let f2 = SafetensorsFile::open(SdxlSource::diffusers_weights(
                    root,
                    "text_encoder_2",
                    TEXT_ENCODER_FILES,
                )?)?;
                load_module_auto(
                    &mut text_encoder_2,
                    &f2,
                    remap_text::hf_text(&f2, ""),
                    "text_encoder_2",
                    precision,
                    device,
                )?;
            }
            SdxlSource::SingleFile { file, .. } => {
                let f = SafetensorsFile::open(file)?;
                for (prefix, what) in [
                    (SINGLE_FILE_TE1_PREFIX, "text encoder 1"),
                    (SINGLE_FILE_TE2_PREFIX, "text encoder 2"),
                ] {
                    if f.keys().all(|k| !k.starts_with(prefix)) {
                        return Err(ModelError::weights(
                            file,
                            format!("no `{prefix}*` tensors: not an SDXL checkpoint with {what}"),
                        ));
                    }
                }
                load_module_auto(
                    &mut text_encoder,
                    &f,
                    remap_text::hf_text(&f, SINGLE_FILE_TE1_PREFIX),
                    "text encoder 1",
                    precision,
                    device,
                )?;
                load_module_auto(
                    &mut text_encoder_2,
                    &f,
                    remap_text::open_clip_text(&f, SINGLE_FILE_TE2_PREFIX),
                    "text encoder 2",
                    precision,
                    device,
                )?;
            }
        }
        Ok(Self {
            tokenizer: tokenizer(source, "tokenizer", "<|endoftext|>")?,
            tokenizer_2: tokenizer(source, "tokenizer_2", "!")?,
            text_encoder,
            text_encoder_2,
            force_zeros_for_empty_prompt: source.force_zeros_for_empty_prompt()?,
        })
    }

    /// [`Self::load_as`] in `options.precision`, with the text-encoder modules of
    /// `options.loras` fused (their UNet modules are left out).
    ///
    /// # Errors
    /// As [`Self::load_as`]; LoRAs that do not fit (see [`LoraFusion::plan`]).
    pub fn load_with(
        source: &SdxlSource,
        device: &B::Device,
        options: &LoadOptions,
    ) -> Result<Self> {
        let text = Self::load_as(source, device, options.precision)?;
        if options.loras.is_empty() {
            return Ok(text);
        }
        let mut names = ModelNames::default();
        text.add_names(&mut names);
        let fusion = LoraFusion::plan(&options.loras, &names, options.ignore_unmatched)?;
        text.fuse(&fusion)
    }

    /// Adds both encoders' Linear weights to `names` (for planning a LoRA fusion).
    pub fn add_names(&self, names: &mut ModelNames) {
        names.add_text_encoder(Component::TextEncoder1, &self.text_encoder);
        names.add_text_encoder(Component::TextEncoder2, &self.text_encoder_2);
    }

    /// Fuses the text-encoder updates of `fusion` into both encoders.
    ///
    /// # Errors
    /// A LoRA tensor that cannot be read.
    pub fn fuse(self, fusion: &LoraFusion) -> Result<Self> {
        Ok(Self {
            text_encoder: fusion.fuse(self.text_encoder, Component::TextEncoder1)?,
            text_encoder_2: fusion.fuse(self.text_encoder_2, Component::TextEncoder2)?,
            ..self
        })
    }

    /// `D`: width of the prompt embeddings (2048 for SDXL).
    pub fn token_dim(&self) -> usize {
        self.text_encoder.hidden_size() + self.text_encoder_2.hidden_size()
    }

    /// `P`: width of the pooled embedding (1280 for SDXL).
    pub fn pooled_dim(&self) -> usize {
        self.text_encoder_2
            .projection_dim()
            .unwrap_or_else(|| self.text_encoder_2.hidden_size())
    }

    /// Encodes prompts as SDXL does: each encoder's penultimate hidden states,
    /// concatenated on the last dimension; the pooled embedding from encoder 2.
    ///
    /// # Shapes
    /// - output: `prompt_embeds` `[B, 77, D]`, `pooled_prompt_embeds` `[B, P]`, both f32
    pub fn encode_prompt(&self, prompts: &[&str]) -> Result<PromptEmbeds<B>> {
        let ids_1 = self.tokenizer.encode_batch(prompts)?;
        let ids_2 = self.tokenizer_2.encode_batch(prompts)?;
        let out_1 = self.text_encoder.forward(&ids_1)?;
        let out_2 = self.text_encoder_2.forward(&ids_2)?;
        // f16 encoders hand their outputs over in f32 (the two may differ in type; names
        // are spliced in f32; the UNet casts to its own type).
        let penultimate =
            |states: &[Tensor<B, 3>]| cast(states[states.len() - 2].clone(), DType::F32);
        let prompt_embeds = Tensor::cat(
            vec![
                penultimate(&out_1.hidden_states),
                penultimate(&out_2.hidden_states),
            ],
            2,
        );
        let pooled_prompt_embeds = out_2.text_embeds.unwrap_or(out_2.pooled_output);
        Ok(PromptEmbeds {
            prompt_embeds,
            pooled_prompt_embeds: cast(pooled_prompt_embeds, DType::F32),
        })
    }

    /// The unconditional embeddings for classifier-free guidance, as diffusers makes
    /// them: zeros when no negative prompt is given and the model says
    /// `force_zeros_for_empty_prompt`, otherwise the encoded negative prompt (`""` when
    /// none is given).
    pub fn encode_negative_prompt(
        &self,
        negative: Option<&[&str]>,
        batch: usize,
    ) -> Result<PromptEmbeds<B>> {
        match negative {
            None if self.force_zeros_for_empty_prompt => {
                let device = self.text_encoder.final_layer_norm.gamma.device();
                let seq = self.tokenizer.max_length();
                Ok(PromptEmbeds {
                    prompt_embeds: Tensor::zeros(
                        [batch, seq, self.token_dim()],
                        (&device, DType::F32),
                    ),
                    pooled_prompt_embeds: Tensor::zeros(
                        [batch, self.pooled_dim()],
                        (&device, DType::F32),
                    ),
                })
            }
            None => self.encode_prompt(&vec![""; batch]),
            Some(texts) => {
                if texts.len() != batch {
                    return Err(ModelError::InvalidInput(format!(
                        "{} negative prompts for a batch of {batch}",
                        texts.len()
                    )));
                }
                self.encode_prompt(texts)
            }
        }
    }

    /// Text-codes a name (`docs/METHOD.md`, (a)): encodes `name` as a prompt and keeps the
    /// `num_tokens` vectors after the start token (positions `1..=num_tokens`).
    ///
    /// # Shapes
    /// - output: `[num_tokens, D]`
    ///
    /// # Errors
    /// An empty (or whitespace-only) name; `num_tokens` of 0 or not below 77.
    pub fn text_code_name(&self, name: &str, num_tokens: usize) -> Result<NameEmbedding<B>> {
        let clean = name.split_whitespace().collect::<Vec<_>>().join(" ");
        if clean.is_empty() {
            return Err(ModelError::InvalidInput("the name text is empty".into()));
        }
        let seq = self.tokenizer.max_length();
        if num_tokens == 0 || num_tokens >= seq {
            return Err(ModelError::InvalidInput(format!(
                "name token count must be in 1..{seq}, got {num_tokens}"
            )));
        }
        let embeds = self.encode_prompt(&[name])?.prompt_embeds;
        let d = embeds.dims()[2];
        let tokens = embeds
            .slice([0..1, 1..1 + num_tokens, 0..d])
            .reshape([num_tokens, d]);
        Ok(NameEmbedding::new(tokens, name)?)
    }

    /// [`Self::text_code_name`] for a batch of names in one [`Self::encode_prompt`] pass;
    /// row `i` equals `text_code_name(names[i], num_tokens)` (each prompt is padded to 77
    /// tokens and attends causally, so rows do not interact).
    ///
    /// # Shapes
    /// - output: `[names.len(), num_tokens, D]`
    ///
    /// # Errors
    /// No names; an empty (or whitespace-only) name, named by position; `num_tokens` of 0
    /// or not below 77.
    pub fn text_code_names(&self, names: &[&str], num_tokens: usize) -> Result<Tensor<B, 3>> {
        if names.is_empty() {
            return Err(ModelError::InvalidInput("no names to text-code".into()));
        }
        if let Some(i) = names.iter().position(|n| n.trim().is_empty()) {
            return Err(ModelError::InvalidInput(format!(
                "name {i} of the batch is empty"
            )));
        }
        let seq = self.tokenizer.max_length();
        if num_tokens == 0 || num_tokens >= seq {
            return Err(ModelError::InvalidInput(format!(
                "name token count must be in 1..{seq}, got {num_tokens}"
            )));
        }
        let embeds = self.encode_prompt(names)?.prompt_embeds;
        let [n, _, d] = embeds.dims();
        Ok(embeds.slice([0..n, 1..1 + num_tokens, 0..d]))
    }

    /// [`Self::text_code_name`] with MagicNaming's 8 tokens.
    pub fn text_code_name_default(&self, name: &str) -> Result<NameEmbedding<B>> {
        self.text_code_name(name, DEFAULT_NAME_TOKENS)
    }
}
