//! Checks of a command's output paths, made before any model is loaded: a long job that
//! cannot write its result fails in its first second, not its last.
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

/// The folder `path` will be written into (`.` for a bare file name).
fn parent_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// `path` made absolute through its existing folder (the file itself need not exist).
fn resolved(path: &Path) -> Option<PathBuf> {
    if let Ok(p) = path.canonicalize() {
        return Some(p);
    }
    let dir = parent_of(path).canonicalize().ok()?;
    Some(dir.join(path.file_name()?))
}

/// Checks that the file `out` can be written: its folder exists and takes a new file,
/// `out` is not a folder, and it is none of `inputs` (an output never overwrites an
/// input).
///
/// # Errors
/// Naming `out` (and the input it would overwrite).
pub fn check_output_file(out: &Path, inputs: &[&Path]) -> Result<()> {
    if out.as_os_str().is_empty() {
        bail!("the output path is empty");
    }
    if out.is_dir() {
        bail!("{}: is a folder; the output is a file", out.display());
    }
    let dir = parent_of(out);
    check_writable_dir(&dir).with_context(|| format!("cannot write {}", out.display()))?;
    if let Some(target) = resolved(out) {
        for input in inputs {
            if resolved(input).as_ref() == Some(&target) {
                bail!(
                    "{}: the output would overwrite the input {}",
                    out.display(),
                    input.display()
                );
            }
        }
    }
    Ok(())
}

/// Checks that the output folder `out` can be made: it is a folder or does not exist, and
/// the nearest existing folder above it takes new files.
///
/// # Errors
/// Naming `out`.
pub fn check_output_dir(out: &Path) -> Result<()> {
    if out.exists() && !out.is_dir() {
        bail!("{}: exists and is not a folder", out.display());
    }
    let mut dir = out.to_path_buf();
    while !dir.exists() {
        dir = parent_of(&dir);
    }
    check_writable_dir(&dir).with_context(|| format!("cannot write {}", out.display()))
}

/// The folder exists, is a folder, and a file can be created in it (created and removed).
fn check_writable_dir(dir: &Path) -> Result<()> {
    if !dir.is_dir() {
        bail!("the folder {} does not exist", dir.display());
    }
    let probe = dir.join(format!(".magicnaming-write-check-{}", std::process::id()));
    std::fs::File::create(&probe)
        .with_context(|| format!("the folder {} does not take new files", dir.display()))?;
    let _ = std::fs::remove_file(&probe);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_folders_inputs_and_folders_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("in.png");
        std::fs::write(&input, b"x").unwrap();
        let e = check_output_file(&dir.path().join("missing/x.png"), &[]).unwrap_err();
        assert!(format!("{e:#}").contains("does not exist"), "{e:#}");
        let e = check_output_file(&input, &[&input]).unwrap_err();
        assert!(e.to_string().contains("overwrite the input"), "{e}");
        // The same file through another spelling of its path.
        let other = dir.path().join(".").join("in.png");
        assert!(check_output_file(&other, &[&input]).is_err());
        assert!(check_output_file(dir.path(), &[]).is_err());
        assert!(check_output_file(&dir.path().join("out.png"), &[&input]).is_ok());
        assert!(check_output_dir(&dir.path().join("a/b/c")).is_ok());
        assert!(check_output_dir(&input).is_err());
    }
}
