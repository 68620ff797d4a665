//! `magicnaming`: the command-line front end of MagicNaming.
//!
//! Every command that runs a network takes `--device cpu|flex|ndarray|wgpu[:N]|cuda[:N]` among the
//! backends compiled in (cargo features `ndarray` (default), `wgpu`, `cuda`). On `wgpu`
//! and `cuda` devices, compiled kernels and autotune results are kept in one cache
//! directory (`--kernel-cache`, see [`magicnaming_models::nn::kernels::cache`]).
mod args;
mod bench;
mod curate_cmds;
mod dataset_cmds;
mod device;
mod eval_cmds;
mod face_cmds;
mod generate_cmd;
mod image_cmds;
mod lora_cmds;
mod name_cmds;
mod outputs;
mod story_cmds;
mod story_run;
mod tensors;
mod text_cmds;
mod train_cmds;
mod train_lora_cmd;
mod warmup_cmd;

use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand};

use device::{dispatch, parse_devices, DeviceSpec};
use magicnaming_models::image_file::{set_image_limits, ImageLimits};
use magicnaming_models::nn::kernels::cache::KernelCacheConfig;

#[derive(Parser, Debug)]
#[command(
    name = "magicnaming",
    version,
    about = "Consistent-identity SDXL generation by finding a person's name embedding (MagicNaming, AAAI 2025)"
)]
struct Cli {
    /// Device: cpu (burn-flex, else burn-ndarray), flex, ndarray, wgpu[:N] or cuda[:N] (among the backends compiled in); `train` takes a
    /// comma-separated list of one backend (cuda:0,cuda:1) for data parallelism.
    #[arg(long, global = true, default_value_t = String::new(), hide_default_value = true)]
    device: String,
    /// Largest image accepted, in pixels (width x height), checked from the file's header
    /// before decoding; the decoded size may be 8 bytes a pixel of it.
    #[arg(long, global = true, default_value_t = ImageLimits::DEFAULT.max_pixels)]
    max_image_pixels: u64,
    /// Directory of compiled kernels and autotune results of the GPU backends (wgpu,
    /// cuda); default $MAGICNAMING_CACHE_DIR, else $XDG_CACHE_HOME/magicnaming, else
    /// ~/.cache/magicnaming. Not used on the CPU backend. $MAGICNAMING_AUTOTUNE_LEVEL
    /// (minimal, balanced (default), extensive, full) sets the autotune effort.
    #[arg(long, global = true, value_name = "DIR")]
    kernel_cache: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Encode a prompt as SDXL does; with --name, the name-prepended embeddings.
    EncodePrompt(text_cmds::EncodePromptArgs),
    /// Generate an image with SDXL; with --name, of that person.
    Generate(generate_cmd::GenerateArgs),
    /// Embed an image with one CLIP image tower.
    EmbedImage(image_cmds::EmbedImageArgs),
    /// Make, mix and inspect name embeddings.
    #[command(subcommand)]
    Name(NameCommand),
    /// Build training datasets.
    #[command(subcommand)]
    Dataset(DatasetCommand),
    /// Train the name encoder's head on a dataset folder.
    Train(train_cmds::TrainArgs),
    /// Validation metrics of an encoder on a dataset, as JSON.
    Eval(train_cmds::EvalArgs),
    /// Fine-tune the UNet with LoRA on a dataset's images, each captioned with its person's
    /// name prepended (writes a kohya or diffusers LoRA file).
    TrainLora(train_lora_cmd::TrainLoraArgs),
    /// One identity across a list of prompts: panels, story.json, a contact sheet and an
    /// HTML page, scored for identity (Face Sim) and prompt following (CLIP-T).
    Story(story_cmds::StoryArgs),
    /// Fictional people between two names (the paper's interpolation figure), as a story.
    Interpolate(story_cmds::InterpolateArgs),
    /// Face Sim and CLIP-T of images, as identity-generation papers report them (JSON).
    EvalId(eval_cmds::EvalIdArgs),
    /// Detect, align and compare faces (MTCNN, ArcFace).
    #[command(subcommand)]
    Face(FaceCommand),
    /// Inspect LoRA files.
    #[command(subcommand)]
    Lora(LoraCommand),
    /// Run once what one generation needs at one shape (text encoders, UNet, VAE decode),
    /// filling the kernel cache of a GPU backend; reports the time of each stage.
    Warmup(warmup_cmd::WarmupArgs),
    /// Time SDXL's components and the CLIP image towers (medians after warm-up).
    Bench(bench::BenchArgs),
    /// Show which backends this binary was built with.
    Backends,
}

#[derive(Subcommand, Debug)]
enum DatasetCommand {
    /// Text-code the names and embed the photos of a manifest into a dataset folder
    /// (resumable: run again with the same --out to continue).
    Build(dataset_cmds::BuildArgs),
    /// Find listed people's names in captions (LaionCele steps 1 and 2: whole words, case
    /// and accents ignored, aliases merged): a manifest for `dataset build`.
    ExtractNames(dataset_cmds::ExtractNamesArgs),
    /// Deduplicate each person's images (exact copies; near copies by CLIP embedding) and
    /// drop people with too few left (LaionCele steps 6 and 8).
    Filter(dataset_cmds::FilterArgs),
    /// LaionCele's eight steps from captioned images and a names list to a dataset folder
    /// (resumable; `--shard I/N` splits the people across machines).
    Curate(Box<curate_cmds::CurateArgs>),
    /// Join the folders of `dataset curate --shard I/N` runs and build the dataset.
    Merge(curate_cmds::MergeArgs),
    /// Print the funnel of a curation (people and images in and out of each step) and
    /// write it to DIR/report.json.
    Report(curate_cmds::ReportArgs),
}

#[derive(Subcommand, Debug)]
enum LoraCommand {
    /// Format, ranks, alphas and targets of a LoRA file; with --model, the keys that match
    /// none of the model's modules.
    Info(lora_cmds::InfoArgs),
}

#[derive(Subcommand, Debug)]
enum FaceCommand {
    /// Detect faces (MTCNN): boxes, scores, five landmarks as JSON, largest first.
    Detect(face_cmds::DetectArgs),
    /// Write one face aligned to the ArcFace template (scaled to --size).
    Crop(face_cmds::CropArgs),
    /// ArcFace embedding of the largest face (or of an aligned 112 x 112 crop).
    Embed(face_cmds::EmbedArgs),
    /// Cosine similarity of the largest faces of two images.
    Similarity(face_cmds::SimilarityArgs),
}

#[derive(Subcommand, Debug)]
enum NameCommand {
    /// Text-code a (celebrity's) name: the 8 token vectors after the start token.
    FromText(text_cmds::FromTextArgs),
    /// Predict a name from photo(s) of a person with a trained encoder.
    FromImage(image_cmds::FromImageArgs),
    /// Interpolate two names (linear, or spherical with --slerp).
    Mix(name_cmds::MixArgs),
    /// Print a name file's shape and provenance.
    Info {
        /// The name file.
        file: PathBuf,
    },
}

fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let cli = Cli::parse();
    magicnaming::memory::reuse_freed_memory();
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(cli))) {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            eprintln!("error: {e:#}");
            std::process::exit(1);
        }
        Err(panic) => {
            // burn's GPU backends panic when device memory runs out (their allocator has no
            // error path); the panic message is already printed.
            if let Some(hint) = out_of_memory_hint(&panic_message(&*panic)) {
                eprintln!("error: {hint}");
            }
            std::process::exit(101);
        }
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default()
}

/// A remedy for a panic that reads as device memory running out.
fn out_of_memory_hint(message: &str) -> Option<String> {
    let m = message.to_ascii_lowercase();
    let oom = [
        "out of memory",
        "out_of_memory",
        "no pool handles allocation",
        "outofmemory",
    ]
    .iter()
    .any(|k| m.contains(k));
    oom.then(|| {
        "out of device memory: try --precision f16, a smaller --width/--height, or a smaller batch"
            .to_string()
    })
}

/// Whether `devices` belong to a cubecl backend compiled in (wgpu, cuda): those compile
/// kernels and autotune, the CPU backend does neither.
fn uses_kernel_cache(devices: &[DeviceSpec]) -> bool {
    let compiled = device::compiled_backends();
    devices
        .iter()
        .any(|d| *d != DeviceSpec::Cpu && compiled.contains(&d.feature()))
}

fn run(cli: Cli) -> Result<()> {
    set_image_limits(ImageLimits {
        max_pixels: cli.max_image_pixels,
        max_decoded_bytes: cli.max_image_pixels.saturating_mul(8),
        ..ImageLimits::DEFAULT
    });
    let device: Vec<DeviceSpec> = if cli.device.is_empty() {
        vec![DeviceSpec::default()]
    } else {
        parse_devices(&cli.device)?
    };
    // Before the first device is created: cubecl reads its configuration once.
    if uses_kernel_cache(&device) && !matches!(cli.command, Command::Backends) {
        KernelCacheConfig::from_env(cli.kernel_cache.as_deref())?.apply()?;
    }
    match cli.command {
        Command::EncodePrompt(args) => dispatch(&device, args),
        Command::Name(NameCommand::FromText(args)) => dispatch(&device, args),
        Command::Name(NameCommand::Mix(args)) => dispatch(&device, args),
        Command::Name(NameCommand::FromImage(args)) => dispatch(&device, args),
        Command::Generate(args) => dispatch(&device, args),
        Command::EmbedImage(args) => dispatch(&device, args),
        Command::Name(NameCommand::Info { file }) => {
            dispatch(&device, name_cmds::InfoArgs { file })
        }
        Command::Dataset(DatasetCommand::Build(args)) => dispatch(&device, args),
        Command::Dataset(DatasetCommand::ExtractNames(args)) => args.run(),
        Command::Dataset(DatasetCommand::Filter(args)) => dispatch(&device, args),
        Command::Dataset(DatasetCommand::Curate(args)) => dispatch(&device, *args),
        Command::Dataset(DatasetCommand::Merge(args)) => dispatch(&device, args),
        Command::Dataset(DatasetCommand::Report(args)) => args.run(),
        Command::Train(args) => dispatch(&device, args),
        Command::Eval(args) => dispatch(&device, args),
        Command::TrainLora(args) => dispatch(&device, args),
        Command::Story(args) => dispatch(&device, args),
        Command::Interpolate(args) => dispatch(&device, args),
        Command::EvalId(args) => dispatch(&device, args),
        Command::Bench(args) => dispatch(&device, args),
        Command::Warmup(args) => dispatch(&device, args),
        Command::Lora(LoraCommand::Info(args)) => dispatch(&device, args),
        Command::Face(FaceCommand::Detect(args)) => dispatch(&device, args),
        Command::Face(FaceCommand::Crop(args)) => dispatch(&device, args),
        Command::Face(FaceCommand::Embed(args)) => dispatch(&device, args),
        Command::Face(FaceCommand::Similarity(args)) => dispatch(&device, args),
        Command::Backends => {
            println!("{}", device::compiled_backends().join(" "));
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{out_of_memory_hint, uses_kernel_cache, DeviceSpec};

    #[test]
    fn only_compiled_gpu_backends_use_the_kernel_cache() {
        assert!(!uses_kernel_cache(&[DeviceSpec::Cpu]));
        assert_eq!(
            uses_kernel_cache(&[DeviceSpec::Cuda(1)]),
            cfg!(feature = "cuda")
        );
        assert_eq!(
            uses_kernel_cache(&[DeviceSpec::Wgpu(None)]),
            cfg!(feature = "wgpu")
        );
    }

    #[test]
    fn allocator_panics_get_a_remedy() {
        for m in [
            "No pool handles allocation of size 411041792",
            "DriverError(CUDA_ERROR_OUT_OF_MEMORY, \"out of memory\")",
        ] {
            assert!(out_of_memory_hint(m).unwrap().contains("f16"), "{m}");
        }
        assert!(out_of_memory_hint("index out of bounds").is_none());
    }
}
