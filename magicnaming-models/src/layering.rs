//! The crate's module graph is a layering (see the crate docs): this test reads every
//! source file, resolves each `crate::` / `super::` / `self::` path to the file that
//! defines the module it names, and fails on an import that points up a layer, on an
//! import between two model families, and on two files that import each other.
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Layer of each top-level module: a file may import from its own layer's neutral
/// modules and from any lower layer.
const LAYERS: &[(&str, usize)] = &[
    ("error", 0),
    ("json", 0),
    ("image_file", 0),
    ("bounded_read", 0),
    ("weights", 0),
    ("nn", 1),
    ("clip", 2),
    ("unet", 2),
    ("vae", 2),
    ("schedulers", 2),
    ("face", 2),
    ("sdxl", 3),
    ("name_encoder", 3),
    ("eval", 3),
    ("report", 3),
    ("train", 4),
];

/// Layers whose modules must not import each other (the model families).
const INDEPENDENT: &[usize] = &[2];

fn layer(module: &str) -> Option<usize> {
    LAYERS.iter().find(|(m, _)| *m == module).map(|(_, l)| *l)
}

/// Module path of a source file relative to `src/` (`unet/mod.rs` -> `[unet]`).
fn module_path(rel: &str) -> Vec<String> {
    let stem = rel.trim_end_matches(".rs");
    let mut parts: Vec<String> = stem.split('/').map(str::to_string).collect();
    if matches!(parts.last().map(String::as_str), Some("mod" | "lib")) {
        parts.pop();
    }
    parts
}

fn collect(dir: &Path, root: &Path, out: &mut BTreeMap<Vec<String>, (String, String)>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .expect("src is readable")
        .map(|e| e.expect("entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            collect(&path, root, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let rel = path
                .strip_prefix(root)
                .expect("under src")
                .to_string_lossy()
                .replace('\\', "/");
            let text = std::fs::read_to_string(&path).expect("source is UTF-8");
            out.insert(module_path(&rel), (rel, text));
        }
    }
}

/// The source without comments and without its `#[cfg(test)] mod tests` block.
fn code(text: &str) -> String {
    let text = text.split("#[cfg(test)]\nmod tests").next().unwrap_or("");
    text.lines()
        .map(|l| l.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Every path of `code` that starts with `crate`, `super` or `self`, resolved against
/// the module `me`, with the items of a `::{...}` group expanded one level.
fn paths(code: &str, me: &[String]) -> Vec<Vec<String>> {
    let bytes: Vec<char> = code.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let at_word = i == 0 || !is_ident(bytes[i - 1]) && bytes[i - 1] != ':';
        let rest: String = bytes[i..bytes.len().min(i + 7)].iter().collect();
        let starts = ["crate::", "super::", "self::"]
            .iter()
            .any(|p| rest.starts_with(p));
        if !at_word || !starts {
            i += 1;
            continue;
        }
        // Segments up to a `{`, whitespace or other punctuation.
        let mut segs: Vec<String> = Vec::new();
        let mut cur = String::new();
        let mut j = i;
        while j < bytes.len() {
            let c = bytes[j];
            if is_ident(c) {
                cur.push(c);
                j += 1;
            } else if c == ':' && bytes.get(j + 1) == Some(&':') {
                segs.push(std::mem::take(&mut cur));
                j += 2;
            } else {
                break;
            }
        }
        if !cur.is_empty() {
            segs.push(cur);
        }
        let mut base: Vec<String> = me.to_vec();
        let mut tail = Vec::new();
        for (k, s) in segs.iter().enumerate() {
            match (k, s.as_str()) {
                (0, "crate") => base.clear(),
                (_, "super") => {
                    base.pop();
                }
                (0, "self") => {}
                _ => tail.push(s.clone()),
            }
        }
        base.extend(tail);
        if bytes.get(j) == Some(&'{') {
            let mut depth = 0;
            let mut item = String::new();
            let mut items = Vec::new();
            for &c in &bytes[j..] {
                j += 1;
                match c {
                    '{' => {
                        depth += 1;
                        if depth > 1 {
                            item.push(c);
                        }
                    }
                    '}' => {
                        depth -= 1;
                        if depth == 0 {
                            items.push(std::mem::take(&mut item));
                            break;
                        }
                        item.push(c);
                    }
                    ',' if depth == 1 => items.push(std::mem::take(&mut item)),
                    _ => item.push(c),
                }
            }
            for item in items {
                let first: String = item.trim().chars().take_while(|&c| is_ident(c)).collect();
                match first.as_str() {
                    "" => {}
                    "self" => out.push(base.clone()),
                    _ => {
                        let mut p = base.clone();
                        p.push(first);
                        out.push(p);
                    }
                }
            }
        } else {
            out.push(base);
        }
        i = j.max(i + 1);
    }
    out
}

#[test]
fn no_import_points_up_the_layering() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = BTreeMap::new();
    collect(&root, &root, &mut files);
    let resolve = |path: &[String]| -> Option<Vec<String>> {
        (0..=path.len())
            .rev()
            .map(|n| path[..n].to_vec())
            .find(|p| files.contains_key(p))
    };
    let mut edges = BTreeSet::new();
    for (me, (_, text)) in &files {
        if me.first().is_some_and(|m| m == "layering") {
            continue;
        }
        for p in paths(&code(text), me) {
            if let Some(target) = resolve(&p)
                && &target != me
                && !target.is_empty()
            {
                edges.insert((me.clone(), target));
            }
        }
    }
    assert!(
        edges.len() > 100,
        "the scan found only {} imports",
        edges.len()
    );
    let mut problems = Vec::new();
    let name = |m: &Vec<String>| files[m].0.clone();
    for (from, to) in &edges {
        let (Some(top_from), Some(top_to)) = (from.first(), to.first()) else {
            continue;
        };
        let Some(lf) = layer(top_from) else {
            problems.push(format!("{}: module `{top_from}` has no layer", name(from)));
            continue;
        };
        let Some(lt) = layer(top_to) else {
            problems.push(format!("{}: module `{top_to}` has no layer", name(to)));
            continue;
        };
        if lt > lf {
            problems.push(format!(
                "{} imports {} (a higher layer)",
                name(from),
                name(to)
            ));
        } else if lt == lf && top_from != top_to && INDEPENDENT.contains(&lf) {
            problems.push(format!(
                "{} imports {} (another model family)",
                name(from),
                name(to)
            ));
        }
        if from < to && edges.contains(&(to.clone(), from.clone())) {
            problems.push(format!("{} and {} import each other", name(from), name(to)));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_scan_resolves_paths_to_files() {
    let me = vec!["unet".to_string(), "blocks".to_string()];
    let got = paths(
        "use super::resnet::{A, B};\nuse crate::nn::{norm, precision::cast};\nlet x = crate::json::read_json(p);",
        &me,
    );
    let want: Vec<Vec<String>> = [
        vec!["unet", "resnet", "A"],
        vec!["unet", "resnet", "B"],
        vec!["nn", "norm"],
        vec!["nn", "precision"],
        vec!["json", "read_json"],
    ]
    .iter()
    .map(|v| v.iter().map(|s| s.to_string()).collect())
    .collect();
    assert_eq!(got, want);
}
