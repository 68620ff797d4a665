//! Hostile inputs and impossible outputs, refused by name before any long work: an image
//! that declares 40000 x 40000 pixels (a decompression bomb), an output folder that does
//! not exist, an output that would overwrite an input.
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{bin, fixtures};

/// CRC-32 (IEEE) of PNG chunks.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &b in bytes {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    out.extend((data.len() as u32).to_be_bytes());
    let mut body = kind.to_vec();
    body.extend(data);
    out.extend(&body);
    out.extend(crc32(&body).to_be_bytes());
}

/// A PNG whose header declares `w` x `h` 8-bit RGB pixels, with a valid zlib stream of
/// one zero row (a bomb's header: the rows a real one would inflate are not needed to
/// show that the header alone is refused).
fn bomb_png(path: &Path, w: u32, h: u32) {
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::new();
    ihdr.extend(w.to_be_bytes());
    ihdr.extend(h.to_be_bytes());
    ihdr.extend([8, 2, 0, 0, 0]);
    chunk(&mut png, b"IHDR", &ihdr);
    // zlib: stored block of 1 + 3 * 16 zero bytes (the first 16 pixels of row 0).
    let row = vec![0u8; 1 + 3 * 16];
    let mut z = vec![0x78, 0x01, 0x01];
    z.extend((row.len() as u16).to_le_bytes());
    z.extend((!(row.len() as u16)).to_le_bytes());
    z.extend(&row);
    let (mut a, mut b) = (1u32, 0u32);
    for &x in &row {
        a = (a + x as u32) % 65521;
        b = (b + a) % 65521;
    }
    z.extend(((b << 16) | a).to_be_bytes());
    chunk(&mut png, b"IDAT", &z);
    chunk(&mut png, b"IEND", &[]);
    std::fs::write(path, png).unwrap();
}

/// Runs `c` to the end; its stderr, wall time and peak resident memory (bytes).
// The child is reaped by `wait4`, which also gives its own resource usage.
#[allow(clippy::zombie_processes)]
fn run_measured(c: &mut Command) -> (bool, String, Duration, u64) {
    let start = Instant::now();
    let child = c
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id() as libc::pid_t;
    let mut stderr = child.stderr.unwrap();
    let mut text = String::new();
    std::io::Read::read_to_string(&mut stderr, &mut text).unwrap();
    let mut status = 0;
    // SAFETY: wait4 on our own child with valid out-pointers; the zeroed rusage is a
    // plain C struct.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(r, pid, "wait4");
    let ok = libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0;
    (ok, text, start.elapsed(), usage.ru_maxrss as u64 * 1024)
}

#[test]
fn a_40000_pixel_square_png_is_refused_at_once_in_little_memory() {
    let dir = tempfile::tempdir().unwrap();
    let bomb = dir.path().join("bomb.png");
    bomb_png(&bomb, 40_000, 40_000);
    let out = dir.path().join("e.safetensors");
    let (ok, err, took, peak) = run_measured(
        bin()
            .arg("embed-image")
            .arg("--tower")
            .arg(fixtures().join("vision/tower-l"))
            .arg("--image")
            .arg(&bomb)
            .arg("--out")
            .arg(&out),
    );
    assert!(!ok, "refused");
    assert!(
        err.contains("bomb.png") && err.contains("40000x40000") && err.contains("limit"),
        "{err}"
    );
    assert!(!out.exists(), "nothing written");
    // The bounds: under a second and under 200 MB (the tiny tower and the
    // binary's own ~20 MB; decoding would take 4.8 GB).
    assert!(took < Duration::from_secs(1), "took {took:?}");
    assert!(peak < 200 << 20, "peak memory {peak} bytes");

    // The face detector reads through the same limits.
    let (ok, err, _, _) = run_measured(bin().args(["face", "detect", "--image"]).arg(&bomb));
    assert!(!ok && err.contains("40000x40000"), "{err}");

    // The limit is a setting: a real photo over a low limit is refused, by the flag's name.
    let astronaut = fixtures().join("face/astronaut.png");
    let (ok, err, _, _) = run_measured(
        bin()
            .args(["--max-image-pixels", "1000", "face", "detect", "--image"])
            .arg(&astronaut),
    );
    assert!(!ok && err.contains("--max-image-pixels"), "{err}");
}

#[test]
fn impossible_outputs_fail_before_any_model_is_loaded() {
    let dir = tempfile::tempdir().unwrap();
    let model = fixtures().join("text/tiny-sdxl");
    let generate = |out: &Path| {
        let mut c = bin();
        c.arg("generate")
            .arg("--model")
            .arg(&model)
            .args([
                "--prompt", "a cat", "--steps", "2", "--width", "32", "--height", "32",
            ])
            .arg("--out")
            .arg(out);
        c
    };
    let missing = dir.path().join("missing-folder/x.png");
    let (ok, err, took, _) = run_measured(&mut generate(&missing));
    assert!(!ok && err.contains("missing-folder"), "{err}");
    assert!(
        !err.contains("loading"),
        "failed before loading the model: {err}"
    );
    assert!(took < Duration::from_secs(2), "took {took:?}");

    // An output that is one of the inputs.
    let name = dir.path().join("me.safetensors");
    // Never read: the output check comes first.
    std::fs::write(&name, b"not read").unwrap();
    let (ok, err, _, _) = run_measured(
        bin()
            .arg("name")
            .arg("mix")
            .arg(&name)
            .arg(&name)
            .args(["--t", "0.5"])
            .arg("--out")
            .arg(&name),
    );
    assert!(!ok && err.contains("overwrite the input"), "{err}");
    assert_eq!(std::fs::read(&name).unwrap(), b"not read");
    let photo = dir.path().join("photo.png");
    std::fs::copy(fixtures().join("face/astronaut.png"), &photo).unwrap();
    let (ok, err, _, _) = run_measured(
        bin()
            .args(["face", "crop", "--image"])
            .arg(&photo)
            .arg("--out")
            .arg(dir.path().join(".").join("photo.png")),
    );
    assert!(!ok && err.contains("overwrite the input"), "{err}");
    // The benchmark's report, before any component runs.
    let (ok, err, took, _) = run_measured(
        bin()
            .args(["bench", "--components", "norms", "--json"])
            .arg(dir.path().join("no-such-folder/report.json")),
    );
    assert!(!ok && err.contains("no-such-folder"), "{err}");
    assert!(took < Duration::from_secs(2), "took {took:?}");
    // A folder where a file is expected.
    let (ok, err, _, _) = run_measured(&mut generate(dir.path()));
    assert!(!ok && err.contains("is a folder"), "{err}");
}
