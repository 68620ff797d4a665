//! Support shared by the CLI tests: the binary under test, the fixtures, and reading what
//! it writes through the library's own safetensors reader.
#![allow(dead_code)] // each test module uses a different subset

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use magicnaming_models::weights::SafetensorsFile;
use safetensors::Dtype;

/// The `magicnaming` binary, logging warnings only.
pub fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_magicnaming"));
    c.env("RUST_LOG", "warn");
    c
}

/// The repository's `tests/fixtures`.
pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures")
}

/// The largest absolute difference of two equally long slices.
pub fn max_abs_diff(got: &[f32], want: &[f32]) -> f32 {
    assert_eq!(got.len(), want.len(), "lengths differ");
    got.iter()
        .zip(want)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max)
}

/// One tensor of a safetensors file, which must be stored as F32 (values, shape).
pub fn read_f32(path: &Path, name: &str) -> (Vec<f32>, Vec<usize>) {
    let file = SafetensorsFile::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let entry = file
        .entry(name)
        .unwrap_or_else(|| panic!("{}: no tensor {name}", path.display()));
    assert_eq!(entry.dtype, Dtype::F32, "{}: {name}", path.display());
    file.read_f32(name).unwrap()
}

/// Writes one F32 tensor (the library's writer).
pub fn write_f32(path: &Path, name: &str, shape: Vec<usize>, values: &[f32]) {
    let bytes =
        magicnaming_models::weights::write::f32_safetensors(&[(name, values.to_vec(), shape)], &[])
            .unwrap();
    std::fs::write(path, bytes).unwrap();
}

/// Each tensor's dtype, shape and stored bytes, and the metadata: what two files must share
/// to be equal bit for bit (whatever their header order).
pub type RawFile = (
    BTreeMap<String, (Dtype, Vec<usize>, Vec<u8>)>,
    BTreeMap<String, String>,
);

/// The raw content of a safetensors file, for bit-exact comparisons (integer tensors too).
pub fn raw_tensors(path: &Path) -> RawFile {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let tensors = st
        .tensors()
        .into_iter()
        .map(|(k, v)| (k, (v.dtype(), v.shape().to_vec(), v.data().to_vec())))
        .collect();
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let meta = meta
        .metadata()
        .clone()
        .unwrap_or_default()
        .into_iter()
        .collect();
    (tensors, meta)
}

/// Starts `cmd` (output discarded), waits until `ready()` holds (polling every
/// millisecond, at most two minutes, the process still running), then kills it with
/// SIGKILL and checks that it did not finish.
pub fn kill_when(mut cmd: Command, mut ready: impl FnMut() -> bool) {
    use std::process::Stdio;
    use std::time::{Duration, Instant};
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while !ready() {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended before it could be killed"
        );
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "not ready in time"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    child.kill().unwrap(); // SIGKILL on Unix
    assert!(!child.wait().unwrap().success(), "killed mid-way");
}
