//! Name-space demo on the bundled tiny SDXL text stack (random weights):
//! text-code two names, make fictional identities between them, and prepend one to a
//! prompt, as MagicNaming does before the UNet.
//!
//! cargo run --release --example name_space -- [MODEL] [OUT_DIR]
use std::path::PathBuf;

use burn::backend::NdArray;
use magicnaming::models::sdxl::{SdxlSource, SdxlTextEncoders};
use magicnaming::{interpolate, prepend};

type B = NdArray<f32>;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let model = args.next().map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/text/tiny-sdxl"
        ))
    });
    let out = args
        .next()
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("out/name_space"));
    std::fs::create_dir_all(&out)?;
    let device = Default::default();
    let source = SdxlSource::from_path(&model, None)?;
    let text = SdxlTextEncoders::<B>::load(&source, &device)?;
    println!(
        "model {} (prompt width D = {}, pooled P = {})",
        model.display(),
        text.token_dim(),
        text.pooled_dim()
    );

    let a = text.text_code_name_default("Barack Obama")?;
    let b = text.text_code_name_default("Jet Li")?;
    for t in [0.0, 0.25, 0.5, 0.75, 1.0] {
        let name = interpolate(&a, &b, t)?;
        let path = out.join(format!("name_t{:.2}.safetensors", t));
        name.save(&path)?;
        let prompt = text.encode_prompt(&["a photo of a person reading in a cafe"])?;
        let with_name = prepend(prompt.prompt_embeds, &name)?;
        println!(
            "t = {t:.2}: {} -> prompt embeddings {:?}",
            path.display(),
            with_name.dims()
        );
    }
    Ok(())
}
