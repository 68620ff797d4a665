// The user path of the library, exactly as the README shows it: two photos -> two names
// -> an image of a fictional person halfway between them. Run it in a folder holding an
// encoder folder `encoder/`, an SDXL model `sdxl` (a diffusers folder or a single
// `.safetensors` checkpoint) and two photos `me.png` and `friend.png`; it writes
// `surf.png`. The tests run it on the repository's tiny model and encoder.
use magicnaming::prelude::*;

fn main() -> anyhow::Result<()> {
    let device = Default::default();
    let encoder = NameEncoder::<DefaultBackend>::load("encoder", &device)?;
    let me: NameEmbedding<DefaultBackend> = encoder.predict_one("me.png")?;
    let friend = encoder.predict_one("friend.png")?;
    let source = SdxlSource::from_path("sdxl", None)?;
    let pipe = SdxlPipeline::<DefaultBackend>::load(&source, &device)?;
    let options = GenerateOptions::new("a photo of a person surfing")
        .with_name(interpolate(&me, &friend, 0.5)?)
        .with_size(64, 48)
        .with_steps(5)
        .with_seed(7);
    let out = pipe.generate(&options)?;
    out.save_png("surf.png")?;
    let _progress =
        pipe.generate_with_progress(&options, |step, total| eprintln!("{step}/{total}"))?;
    let _rgb: image::RgbImage = out.to_rgb_image()?;
    Ok(())
}
