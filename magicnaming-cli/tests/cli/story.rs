//! `story` and `interpolate` as users drive them, on the tiny model and the tiny encoder:
//! every file written, story.json against the repository's schema, the page naming only
//! images that exist (and showing them in headless Chromium where installed), and bad
//! input refused by name before any generation.
use std::path::{Path, PathBuf};
use std::process::Output;

use serde_json::Value;

use crate::common::{bin, fixtures};
use crate::schema::validate;

pub fn root() -> PathBuf {
    fixtures().join("../..")
}

fn tiny_sdxl() -> String {
    fixtures().join("text/tiny-sdxl").display().to_string()
}

pub fn recognizer() -> String {
    fixtures()
        .join("face/iresnet_tiny.pth")
        .display()
        .to_string()
}

pub fn tiny_clip() -> String {
    fixtures()
        .join("clip_model/tiny-clip")
        .display()
        .to_string()
}

pub fn ok(out: &Output) -> String {
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "{err}");
    err
}

pub fn fails_with(out: &Output, needle: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "expected a failure naming {needle}");
    assert!(err.contains(needle), "expected {needle:?} in: {err}");
}

pub fn json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

fn schema() -> Value {
    json(&root().join("docs/schemas/story.schema.json"))
}

/// `story` on the tiny model (64 x 48, 3 steps) with `extra` flags.
fn story(out: &Path, extra: &[&str]) -> Output {
    let mut c = bin();
    c.args(["story", "--model", &tiny_sdxl()])
        .args(["--width", "64", "--height", "48", "--steps", "3"])
        .arg("--out")
        .arg(out)
        .args(extra);
    c.output().unwrap()
}

/// A name predicted by the tiny encoder from a repository photo.
fn name_of(photo: &str, out: &Path) -> String {
    ok(&bin()
        .args(["name", "from-image", "--encoder"])
        .arg(root().join("assets/tiny-encoder"))
        .arg("--image")
        .arg(root().join(photo))
        .arg("--out")
        .arg(out)
        .output()
        .unwrap());
    out.display().to_string()
}

/// The `src="..."` values of a page, percent-decoded.
fn image_sources(page: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = page;
    while let Some(i) = rest.find("src=\"") {
        rest = &rest[i + 5..];
        let end = rest.find('"').expect("closing quote");
        let raw = &rest[..end];
        let mut bytes = Vec::new();
        let b = raw.as_bytes();
        let mut k = 0;
        while k < b.len() {
            if b[k] == b'%' && k + 2 < b.len() {
                bytes.push(u8::from_str_radix(&raw[k + 1..k + 3], 16).unwrap());
                k += 3;
            } else {
                bytes.push(b[k]);
                k += 1;
            }
        }
        out.push(String::from_utf8(bytes).unwrap());
        rest = &rest[end..];
    }
    out
}

/// Every image the page names exists beside it and is relative; every panel is named.
fn check_page(dir: &Path, report: &Value) -> String {
    let page = std::fs::read_to_string(dir.join("index.html")).unwrap();
    let sources = image_sources(&page);
    for s in &sources {
        assert!(
            !s.contains("://") && !s.starts_with('/'),
            "{s}: not a relative path"
        );
        assert!(
            dir.join(s).is_file(),
            "the page names {s}, which is not there"
        );
    }
    for p in report["panels"].as_array().unwrap() {
        let f = p["file"].as_str().unwrap();
        assert!(sources.iter().any(|s| s == f), "the page lacks panel {f}");
    }
    assert!(sources.iter().any(|s| s == "sheet.png"));
    page
}

#[test]
fn story_writes_every_file_scored_and_the_json_follows_the_schema() {
    let dir = tempfile::tempdir().unwrap();
    let prompts = dir.path().join("story.txt");
    let long = format!(
        "a person {}",
        "walking through a very long street ".repeat(15)
    );
    std::fs::write(
        &prompts,
        format!("a photo of a person surfing\n\na <b>portrait</b> & \"oil\" of a person\n{long}\n"),
    )
    .unwrap();
    let out = dir.path().join("out");
    let err = ok(&story(
        &out,
        &[
            "--photo",
            root().join("assets/face_a.png").to_str().unwrap(),
            "--encoder",
            root().join("assets/tiny-encoder").to_str().unwrap(),
            "--prompts",
            prompts.to_str().unwrap(),
            "--recognizer",
            &recognizer(),
            "--clip",
            &tiny_clip(),
        ],
    ));
    // The long prompt is warned about (and truncated), as by `generate`.
    assert!(err.contains("too long"), "{err}");
    let report = json(&out.join("story.json"));
    let errors = validate(&schema(), &report);
    assert!(errors.is_empty(), "{}", errors.join("\n"));
    let panels = report["panels"].as_array().unwrap();
    assert_eq!(panels.len(), 3, "blank lines are skipped");
    for (i, p) in panels.iter().enumerate() {
        let file = out.join(p["file"].as_str().unwrap());
        assert_eq!(p["file"], format!("{:02}.png", i + 1));
        let png = std::fs::read(&file).unwrap();
        let text = String::from_utf8_lossy(&png);
        for needle in ["prompt", "seed", "steps", "scheduler", "panel", "photo"] {
            assert!(
                text.contains(needle),
                "{}: no {needle} chunk",
                file.display()
            );
        }
        assert_eq!(p["seed"], 0, "one seed for all without --vary-seed");
        let c = p["clip_t"].as_f64().expect("CLIP-T with --clip");
        assert!(c.abs() <= 1.0);
    }
    assert_eq!(
        panels[1]["prompt"],
        "a <b>portrait</b> & \"oil\" of a person"
    );
    assert_eq!(report["references"][0]["role"], "photo");
    assert!(out.join("reference.png").is_file());
    let sheet = image::open(out.join("sheet.png")).unwrap();
    assert_eq!((sheet.width(), sheet.height()), (3 * 64 + 2 * 4, 48));
    let page = check_page(&out, &report);
    assert!(page.contains("a &lt;b&gt;portrait&lt;/b&gt; &amp; &quot;oil&quot; of a person"));
    assert!(!page.contains("<b>portrait"), "prompts are escaped");

    // eval-id on the story folder scores the same panels with the same prompts: its
    // CLIP-T equals the story's (the PNGs are lossless, the images identical).
    let report_path = dir.path().join("eval.json");
    ok(&bin()
        .args(["eval-id", "--reference"])
        .arg(root().join("assets/face_a.png"))
        .arg("--images")
        .arg(&out)
        .args([
            "--recognizer",
            &recognizer(),
            "--clip",
            &tiny_clip(),
            "--out",
        ])
        .arg(&report_path)
        .output()
        .unwrap());
    let eval = json(&report_path);
    let images = eval["images"].as_array().unwrap();
    assert_eq!(images.len(), 3);
    for (e, p) in images.iter().zip(panels) {
        assert_eq!(e["prompt"], p["prompt"]);
        assert_eq!(e["face_found"], p["face_found"]);
        let d = (e["clip_t"].as_f64().unwrap() - p["clip_t"].as_f64().unwrap()).abs();
        // The same f32 computation on the same pixels: equal up to JSON's f32 printing.
        assert!(d < 1e-6, "CLIP-T story vs eval-id: {d}");
    }

    // The validator can fail: a broken copy of the report is refused, by path.
    let mut broken = report.clone();
    broken["panels"][0]["identity"] = Value::String("high".into());
    broken["summary"]
        .as_object_mut()
        .unwrap()
        .remove("face_rate");
    broken["extra"] = Value::Bool(true);
    let errors = validate(&schema(), &broken);
    assert_eq!(errors.len(), 3, "{errors:?}");
    assert!(errors.iter().any(|e| e.starts_with("$.panels[0].identity")));
}

#[test]
fn a_name_alone_is_scored_against_the_first_panel_and_interpolation_against_its_ends() {
    let dir = tempfile::tempdir().unwrap();
    let a = name_of("assets/face_a.png", &dir.path().join("a.safetensors"));
    let b = name_of("assets/face_b.png", &dir.path().join("b.safetensors"));
    let prompts = dir.path().join("story.txt");
    std::fs::write(&prompts, "a person on a boat\na person on a horse\n").unwrap();
    let out = dir.path().join("named");
    ok(&story(
        &out,
        &[
            "--name",
            &a,
            "--prompts",
            prompts.to_str().unwrap(),
            "--vary-seed",
            "--seed",
            "7",
        ],
    ));
    let report = json(&out.join("story.json"));
    assert!(validate(&schema(), &report).is_empty());
    assert_eq!(report["references"][0]["role"], "first panel");
    assert_eq!(report["references"][0]["file"], "01.png");
    let seeds: Vec<u64> = report["panels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["seed"].as_u64().unwrap())
        .collect();
    assert_eq!(seeds, [7, 8]);
    // The tiny model's pictures are noise: no face, so no identity (and no recognizer).
    assert!(report["panels"][0]["identity"].is_null());
    check_page(&out, &report);

    let out = dir.path().join("interp");
    let mut c = bin();
    c.args([
        "interpolate",
        "--model",
        &tiny_sdxl(),
        "--name-a",
        &a,
        "--name-b",
        &b,
    ])
    .args([
        "--points",
        "0.25,0.5,1",
        "--slerp",
        "--prompt",
        "a portrait",
    ])
    .args(["--width", "64", "--height", "48", "--steps", "3"])
    .args(["--recognizer", &recognizer(), "--out"])
    .arg(&out);
    ok(&c.output().unwrap());
    let report = json(&out.join("story.json"));
    let errors = validate(&schema(), &report);
    assert!(errors.is_empty(), "{}", errors.join("\n"));
    assert_eq!(report["kind"], "interpolate");
    let ts: Vec<f64> = report["panels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["t"].as_f64().unwrap())
        .collect();
    assert_eq!(ts, [0.25, 0.5, 1.0]);
    // t = 0 was not asked for: end A is rendered beside the panels; end B is panel 3.
    assert_eq!(report["references"][0]["file"], "a.png");
    assert_eq!(report["references"][1]["file"], "03.png");
    assert!(out.join("a.png").is_file() && !out.join("b.png").exists());
    let sheet = image::open(out.join("sheet.png")).unwrap();
    assert_eq!(sheet.width(), 3 * 64 + 2 * 4, "only the asked-for points");
    check_page(&out, &report);
}

#[test]
fn bad_story_input_fails_by_name_before_any_generation() {
    let dir = tempfile::tempdir().unwrap();
    let prompts = dir.path().join("story.txt");
    std::fs::write(&prompts, "a person\n").unwrap();
    let empty = dir.path().join("empty.txt");
    std::fs::write(&empty, "\n  \n").unwrap();
    let plain = dir.path().join("plain.png");
    image::RgbImage::from_pixel(96, 96, image::Rgb([120, 130, 140]))
        .save(&plain)
        .unwrap();
    let encoder = root().join("assets/tiny-encoder");
    let photo = root().join("assets/face_a.png");
    let out = dir.path().join("out");
    let run = |extra: &[&str]| story(&out, extra);
    let with_photo = |p: &Path, prompts: &Path| {
        run(&[
            "--photo",
            p.to_str().unwrap(),
            "--encoder",
            encoder.to_str().unwrap(),
            "--prompts",
            prompts.to_str().unwrap(),
        ])
    };
    fails_with(&with_photo(&photo, &empty), "no prompts");
    fails_with(&with_photo(&plain, &prompts), "plain.png: no face found");
    fails_with(&run(&["--prompts", prompts.to_str().unwrap()]), "--name");
    assert!(!out.exists(), "a refused story writes nothing");
    // An output folder with something in it: refused unless --overwrite.
    std::fs::create_dir(&out).unwrap();
    std::fs::write(out.join("keep.txt"), "x").unwrap();
    fails_with(&with_photo(&photo, &prompts), "not empty");
    assert_eq!(std::fs::read_dir(&out).unwrap().count(), 1);
    let mut args = vec![
        "--overwrite",
        "--photo",
        photo.to_str().unwrap(),
        "--encoder",
        encoder.to_str().unwrap(),
        "--prompts",
        prompts.to_str().unwrap(),
    ];
    ok(&run(&args));
    assert!(out.join("01.png").is_file() && out.join("keep.txt").is_file());
    // A prompts file inside the folder may not be overwritten by a panel.
    std::fs::write(out.join("01.png"), "a person\n").unwrap();
    let inside = out.join("01.png");
    args[6] = inside.to_str().unwrap();
    fails_with(&run(&args), "overwrite the input");
}

/// A browser on PATH for the page test.
fn chromium() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    for name in [
        "chromium",
        "chromium-browser",
        "google-chrome",
        "google-chrome-stable",
        "chromium-headless-shell",
    ] {
        for dir in std::env::split_paths(&path) {
            let p = dir.join(name);
            if p.is_file() {
                return Some(p);
            }
        }
    }
    None
}

#[test]
fn the_page_shows_every_panel_in_headless_chromium() {
    let Some(browser) = chromium() else {
        eprintln!(
            "skipped: no chromium, chromium-browser or google-chrome on PATH (the page's images \
             are still checked by the other story tests)"
        );
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let prompts = dir.path().join("story.txt");
    std::fs::write(&prompts, "a person\na person at sea\na person in snow\n").unwrap();
    let out = dir.path().join("out");
    ok(&story(
        &out,
        &[
            "--photo",
            root().join("assets/face_a.png").to_str().unwrap(),
            "--encoder",
            root().join("assets/tiny-encoder").to_str().unwrap(),
            "--prompts",
            prompts.to_str().unwrap(),
        ],
    ));
    let page = std::fs::read_to_string(out.join("index.html")).unwrap();
    // A probe copy of the page that records, once loaded, how many images decoded.
    let probe = page.replace(
        "</body>",
        "<script>window.addEventListener('load', () => { const im = [...document.images]; \
         document.body.setAttribute('data-probe', im.filter(i => i.complete && i.naturalWidth > 0).length \
         + '/' + im.length); });</script></body>",
    );
    std::fs::write(out.join("probe.html"), probe).unwrap();
    let profile = dir.path().join("profile");
    let run = |extra: &[&str], file: &str| {
        let mut c = std::process::Command::new(&browser);
        c.args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(["--virtual-time-budget=5000", "--window-size=1200,1400"])
        .args(extra)
        .arg(format!("file://{}", out.join(file).display()));
        c.output().unwrap()
    };
    let dom = run(&["--dump-dom"], "probe.html");
    let dom = String::from_utf8_lossy(&dom.stdout);
    // 3 panels, the reference photo and the contact sheet.
    assert!(
        dom.contains("data-probe=\"5/5\""),
        "images decoded in Chromium: {dom}"
    );
    let shot = dir.path().join("page.png");
    let r = run(&[&format!("--screenshot={}", shot.display())], "index.html");
    assert!(shot.is_file(), "{}", String::from_utf8_lossy(&r.stderr));
    let img = image::open(&shot).unwrap().to_rgb8();
    // The page background is #fafafa and the panels are saturated noise: the screenshot
    // must hold many pixels far from the background.
    let busy = img
        .pixels()
        .filter(|p| p.0.iter().any(|&v| (v as i32 - 0xfa).abs() > 60))
        .count();
    eprintln!(
        "screenshot {}x{}: {busy} pixels off the background",
        img.width(),
        img.height()
    );
    assert!(
        busy > 3 * 64 * 48,
        "the panels are not visible ({busy} busy pixels)"
    );
}
