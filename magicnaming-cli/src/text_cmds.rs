//! `encode-prompt` and `name from-text`.
use std::path::PathBuf;

use anyhow::{Context, Result};
use burn::tensor::backend::Backend;
use clap::Args;
use magicnaming_core::{prepend, NameEmbedding};
use magicnaming_models::sdxl::SdxlTextEncoders;

use crate::args::ModelArgs;
use crate::device::Job;
use crate::lora_cmds::LoraArgs;
use crate::outputs::check_output_file;
use crate::tensors::save_raw;

/// Arguments of `encode-prompt`.
#[derive(Args, Debug)]
pub struct EncodePromptArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// The prompt.
    #[arg(long)]
    prompt: String,
    /// A name to prepend (NAME.safetensors).
    #[arg(long)]
    name: Option<PathBuf>,
    /// LoRAs whose text-encoder parts are fused (their UNet parts are not used here).
    #[command(flatten)]
    lora: LoraArgs,
    /// Output .safetensors: `prompt_embeds` [1, 77, D], `pooled_prompt_embeds` [1, P].
    #[arg(long)]
    out: PathBuf,
}

/// Arguments of `name from-text`.
#[derive(Args, Debug)]
pub struct FromTextArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// The name to text-code, e.g. "Barack Obama".
    #[arg(long)]
    text: String,
    /// Token vectors to keep after the start token.
    #[arg(long, default_value_t = magicnaming_core::DEFAULT_NAME_TOKENS)]
    tokens: usize,
    /// Output NAME.safetensors: `name` [tokens, D].
    #[arg(long)]
    out: PathBuf,
}

/// The text encoders of `model`.
fn load_text<B: Backend>(model: &ModelArgs, device: &B::Device) -> Result<SdxlTextEncoders<B>> {
    SdxlTextEncoders::load(&model.source()?, device)
        .with_context(|| format!("loading the text encoders of {}", model.model.display()))
}

fn host<B: Backend, const D: usize>(t: burn::tensor::Tensor<B, D>) -> (Vec<usize>, Vec<u8>) {
    let shape = t.dims().to_vec();
    let bytes = t
        .into_data()
        .iter::<f32>()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    (shape, bytes)
}

impl Job for EncodePromptArgs {
    fn run<B: Backend>(self, device: B::Device) -> Result<()> {
        let mut inputs: Vec<&std::path::Path> = vec![&self.model.model];
        inputs.extend(self.name.as_deref());
        inputs.extend(self.lora.loras.iter().map(|l| l.path.as_path()));
        check_output_file(&self.out, &inputs)?;
        // The name is read first so that a bad name file fails before any model work.
        let name = match &self.name {
            Some(p) => Some(NameEmbedding::<B>::load(p, &device)?),
            None => None,
        };
        let load = self.lora.load_options(Default::default())?;
        let enc = SdxlTextEncoders::load_with(&self.model.source()?, &device, &load).with_context(
            || {
                format!(
                    "loading the text encoders of {}",
                    self.model.model.display()
                )
            },
        )?;
        if let Some(n) = &name {
            anyhow::ensure!(
                n.dim() == enc.token_dim(),
                "{}: name dimension {} does not match the model's prompt dimension {}",
                self.name.as_ref().expect("name given").display(),
                n.dim(),
                enc.token_dim()
            );
        }
        let embeds = enc.encode_prompt(&[&self.prompt])?;
        let prompt_embeds = match &name {
            Some(n) => prepend(embeds.prompt_embeds, n)?,
            None => embeds.prompt_embeds,
        };
        let (s1, b1) = host(prompt_embeds);
        let (s2, b2) = host(embeds.pooled_prompt_embeds);
        let mut meta = vec![
            ("prompt", self.prompt.clone()),
            ("model", self.model.model.display().to_string()),
        ];
        if let Some(p) = &self.name {
            meta.push(("name", p.display().to_string()));
        }
        if !load.loras.is_empty() {
            meta.push(("loras", load.lora_summary()));
        }
        save_raw(
            &self.out,
            vec![
                ("prompt_embeds".into(), s1, b1),
                ("pooled_prompt_embeds".into(), s2, b2),
            ],
            &meta,
        )?;
        log::info!("wrote {}", self.out.display());
        Ok(())
    }
}

impl Job for FromTextArgs {
    fn run<B: Backend>(self, device: B::Device) -> Result<()> {
        anyhow::ensure!(
            !self.text.trim().is_empty(),
            "--text: the name text is empty"
        );
        check_output_file(&self.out, &[&self.model.model])?;
        let enc = load_text::<B>(&self.model, &device)?;
        let name = enc.text_code_name(&self.text, self.tokens)?;
        name.save(&self.out)?;
        log::info!(
            "wrote {} ({} x {}) for {:?}",
            self.out.display(),
            name.num_tokens(),
            name.dim(),
            self.text
        );
        Ok(())
    }
}
