//! Step 4 of LaionCele's construction: each kept name text-coded (step 3) and drawn by
//! SDXL a few times from its name embedding alone (`docs/METHOD.md`, (c)), so that step 5
//! can ask whether the model knows one consistent face for it.
//!
//! ```text
//! DIR/<person>/<seed>.png     one image per seed, written atomically as it is made
//! ```
//! `<person>` is [`person_dir`] of the name. A rerun skips the images already there, so
//! an interrupted step resumes where it stopped; images made elsewhere (another machine,
//! another tool) can be laid out the same way and read with [`generated_images`].
use std::path::{Path, PathBuf};

use burn::tensor::backend::Backend;
use magicnaming_core::NameEmbedding;

use super::names::words;
use crate::sdxl::{GenerateOptions, SdxlPipeline};
use crate::train::manifest::fnv1a64;
use crate::{ModelError, Result};

/// What step 4 draws.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct GenerateConfig {
    /// The prompt the name embedding is prepended to.
    pub prompt: String,
    /// Negative prompt (`None`: the model's empty-prompt rule).
    pub negative_prompt: Option<String>,
    /// Images per name (the paper draws four).
    pub count: usize,
    /// First seed; image `i` uses `seed + i`.
    pub seed: u64,
    /// Denoising steps.
    pub steps: usize,
    /// Guidance scale.
    pub guidance: f64,
    /// Width and height in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
    /// Name tokens `K` after the start token.
    pub num_tokens: usize,
}

impl Default for GenerateConfig {
    fn default() -> Self {
        Self {
            prompt: "a close-up photo of a person, looking at the camera".into(),
            negative_prompt: None,
            count: 4,
            seed: 0,
            steps: 30,
            guidance: 5.0,
            width: 1024,
            height: 1024,
            num_tokens: magicnaming_core::DEFAULT_NAME_TOKENS,
        }
    }
}

impl GenerateConfig {
    /// The seeds drawn for each name.
    pub fn seeds(&self) -> impl Iterator<Item = u64> + '_ {
        (0..self.count as u64).map(|i| self.seed.wrapping_add(i))
    }
}

/// The folder name of a person's generated images: the name's words (accents folded,
/// lower case) joined by `_`, ASCII letters and digits only, then the 16 hex digits of the
/// name's 64-bit FNV-1a hash. Two names with the same folder are refused before step 4
/// ([`check_person_dirs`]).
pub fn person_dir(name: &str) -> String {
    let stem: String = words(name)
        .join("_")
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
        .take(64)
        .collect();
    format!(
        "{}{}{:016x}",
        stem,
        if stem.is_empty() { "" } else { "_" },
        fnv1a64(name.as_bytes())
    )
}

/// Checks that no two of `names` share a [`person_dir`].
///
/// # Errors
/// Naming both people and the folder.
pub fn check_person_dirs<'a>(names: impl IntoIterator<Item = &'a String>) -> Result<()> {
    let mut seen: std::collections::BTreeMap<String, &String> = Default::default();
    for n in names {
        if let Some(other) = seen.insert(person_dir(n), n) {
            return Err(ModelError::InvalidInput(format!(
                "{other:?} and {n:?} would share the folder {}: rename one in the names file",
                person_dir(n)
            )));
        }
    }
    Ok(())
}

const IMAGE_EXTS: [&str; 4] = ["png", "jpg", "jpeg", "webp"];

/// The images of `name` under `dir` ([`person_dir`]), in file-name order; empty when the
/// folder is missing.
///
/// # Errors
/// An unreadable folder.
pub fn generated_images(dir: &Path, name: &str) -> Result<Vec<PathBuf>> {
    let folder = dir.join(person_dir(name));
    if !folder.is_dir() {
        return Ok(Vec::new());
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(&folder)
        .map_err(|e| ModelError::io(&folder, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| IMAGE_EXTS.contains(&e.to_ascii_lowercase().as_str()))
        })
        .collect();
    files.sort();
    Ok(files)
}

/// Draws `config.count` images of each of `names` into `dir` (see the module docs),
/// skipping those already there; calls `progress(done, total)` after each image.
/// Returns how many were drawn in this call.
///
/// # Errors
/// A name the text encoders refuse, settings the pipeline refuses (checked before the
/// first image), I/O.
pub fn generate_images<B: Backend>(
    pipe: &SdxlPipeline<B>,
    names: &[String],
    config: &GenerateConfig,
    dir: &Path,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<usize> {
    let base = || {
        let mut o = GenerateOptions::<B>::new(config.prompt.clone())
            .with_size(config.width, config.height)
            .with_steps(config.steps)
            .with_guidance(config.guidance);
        if let Some(n) = &config.negative_prompt {
            o = o.with_negative_prompt(n.clone());
        }
        o
    };
    pipe.check(&base())?;
    let total = names.len() * config.count;
    let (mut done, mut drawn) = (0, 0);
    for name in names {
        let folder = dir.join(person_dir(name));
        let todo: Vec<u64> = config
            .seeds()
            .filter(|s| !folder.join(format!("{s}.png")).exists())
            .collect();
        done += config.count - todo.len();
        if todo.is_empty() {
            continue;
        }
        std::fs::create_dir_all(&folder).map_err(|e| ModelError::io(&folder, e))?;
        let coded = pipe
            .text
            .text_code_names(&[name.as_str()], config.num_tokens)?;
        let [_, k, d] = coded.dims();
        let tokens = coded.reshape([k, d]);
        let embedding = NameEmbedding::new(tokens, name.clone())?;
        for seed in todo {
            let options = base().with_name(embedding.clone()).with_seed(seed);
            let mut out = pipe.generate(&options)?;
            out.set_text("name", name.clone());
            let path = folder.join(format!("{seed}.png"));
            magicnaming_core::write_atomic(&path, &out.to_png()?)?;
            drawn += 1;
            done += 1;
            progress(done, total);
        }
        log::info!("generated {} images of {name:?}", config.count);
    }
    Ok(drawn)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn person_folders_are_safe_and_distinct() {
        assert!(person_dir("Zoë Saldaña").starts_with("zoe_saldana_"));
        assert_ne!(person_dir("Zoë Saldaña"), person_dir("Zoe Saldana"));
        let odd = person_dir("../../etc/passwd");
        assert!(!odd.contains('/') && !odd.contains('.'), "{odd}");
        // No ASCII letters: the hash alone.
        assert_eq!(person_dir("李小龙").len(), 16);
        let names = ["Ada".to_string(), "Alan".to_string()];
        assert!(check_person_dirs(&names).is_ok());
    }
}
