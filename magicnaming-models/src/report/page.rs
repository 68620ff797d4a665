//! The HTML page of a story or an interpolation: self-contained (inline style, no script,
//! nothing fetched from the network), images referenced relatively, every text escaped.
use super::story::StoryReport;

/// `s` with `&`, `<`, `>`, `"` and `'` replaced by their HTML entities (safe in text and
/// in quoted attributes).
pub fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A relative file name as a `src` value: each path segment percent-encoded where it is
/// not a plain character, so a name with spaces or quotes still resolves.
fn src(file: &str) -> String {
    let mut out = String::new();
    for b in file.bytes() {
        if b.is_ascii_alphanumeric() || b"-_./".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn score(v: Option<f32>) -> String {
    v.map_or_else(|| "&ndash;".to_string(), |x| format!("{x:.3}"))
}

fn score64(v: Option<f64>) -> String {
    v.map_or_else(|| "&ndash;".to_string(), |x| format!("{x:.3}"))
}

const STYLE: &str = "body{font-family:sans-serif;margin:1.5em;background:#fafafa;color:#222}\
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(220px,1fr));gap:1em}\
figure{margin:0;background:#fff;border:1px solid #ddd;padding:.5em}\
figure img{width:100%;height:auto;image-rendering:pixelated;display:block}\
figcaption{font-size:.85em;margin-top:.4em}.prompt{font-style:italic}\
.refs figure{display:inline-block;width:220px;vertical-align:top;margin-right:1em}\
table{border-collapse:collapse}td,th{border:1px solid #ddd;padding:.2em .6em;text-align:left}";

/// The page of `report` (its images named relative to the folder the page is in).
pub fn render_page(report: &StoryReport) -> String {
    let title = match report.kind.as_str() {
        "interpolate" => "MagicNaming interpolation",
        _ => "MagicNaming story",
    };
    let mut h = String::new();
    h.push_str("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n");
    h.push_str(&format!(
        "<title>{title}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n"
    ));
    h.push_str(&format!(
        "<h1>{title}</h1>\n<p>Model: <code>{}</code></p>\n",
        html_escape(&report.model)
    ));
    // Settings and aggregates.
    let s = &report.summary;
    h.push_str("<table class=\"summary\">\n");
    for (k, v) in &report.settings {
        h.push_str(&format!(
            "<tr><th>{}</th><td>{}</td></tr>\n",
            html_escape(k),
            html_escape(v)
        ));
    }
    h.push_str(&format!(
        "<tr><th>faces found</th><td>{} of {}</td></tr>\n\
         <tr><th>identity (Face Sim) mean / median</th><td>{} / {}</td></tr>\n\
         <tr><th>CLIP-T mean / median</th><td>{} / {}</td></tr>\n</table>\n",
        s.with_face,
        s.images,
        score64(s.face_sim_mean),
        score64(s.face_sim_median),
        score64(s.clip_t_mean),
        score64(s.clip_t_median)
    ));
    // References.
    h.push_str("<h2>Reference</h2>\n<div class=\"refs\">\n");
    for r in &report.references {
        h.push_str("<figure>");
        if let Some(f) = &r.file {
            h.push_str(&format!(
                "<img src=\"{}\" alt=\"{}\">",
                src(f),
                html_escape(&r.role)
            ));
        }
        h.push_str(&format!(
            "<figcaption><b>{}</b><br><code>{}</code></figcaption></figure>\n",
            html_escape(&r.role),
            html_escape(&r.source)
        ));
    }
    h.push_str("</div>\n<h2>Panels</h2>\n<div class=\"grid\">\n");
    for p in &report.panels {
        h.push_str(&format!(
            "<figure id=\"panel-{}\"><img src=\"{}\" alt=\"panel {}\">\n<figcaption>",
            p.index,
            src(&p.file),
            p.index + 1
        ));
        h.push_str(&format!(
            "<div class=\"prompt\">{}</div>\n",
            html_escape(&p.prompt)
        ));
        let mut facts = vec![format!("#{} &middot; seed {}", p.index + 1, p.seed)];
        if let Some(t) = p.t {
            facts.push(format!("t = {t}"));
        }
        facts.push(format!(
            "face: {}",
            if p.face_found { "found" } else { "none" }
        ));
        facts.push(format!("identity {}", score(p.identity)));
        if p.similarity_a.is_some() || p.similarity_b.is_some() {
            facts.push(format!(
                "to A {} &middot; to B {}",
                score(p.similarity_a),
                score(p.similarity_b)
            ));
        }
        facts.push(format!("CLIP-T {}", score(p.clip_t)));
        h.push_str(&format!(
            "<div class=\"scores\">{}</div></figcaption></figure>\n",
            facts.join(" &middot; ")
        ));
    }
    h.push_str(&format!(
        "</div>\n<h2>Contact sheet</h2>\n<p><img src=\"{}\" alt=\"contact sheet\" style=\"max-width:100%\"></p>\n",
        src(&report.sheet)
    ));
    h.push_str("</body>\n</html>\n");
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::Summary;
    use crate::report::story::{Panel, Reference, STORY_FORMAT};

    #[test]
    fn text_is_escaped_and_images_are_relative() {
        assert_eq!(
            html_escape(r#"<b>"a" & 'b'</b>"#),
            "&lt;b&gt;&quot;a&quot; &amp; &#39;b&#39;&lt;/b&gt;"
        );
        let prompt = "a <script>alert(1)</script> \"cat\"";
        let report = StoryReport {
            format: STORY_FORMAT.into(),
            kind: "story".into(),
            model: "m".into(),
            references: vec![Reference {
                role: "photo".into(),
                file: Some("reference.png".into()),
                source: "me & you.jpg".into(),
            }],
            settings: [("steps".to_string(), "5".to_string())].into(),
            panels: vec![Panel {
                index: 0,
                file: "01 a.png".into(),
                prompt: prompt.into(),
                seed: 3,
                t: None,
                face_found: false,
                identity: None,
                similarity_a: None,
                similarity_b: None,
                clip_t: Some(0.25),
            }],
            summary: Summary::of(&[false], &[None], &[Some(0.25)]),
            sheet: "sheet.png".into(),
            page: "index.html".into(),
        };
        let page = render_page(&report);
        assert!(!page.contains("<script"), "{page}");
        assert!(page.contains("a &lt;script&gt;alert(1)&lt;/script&gt; &quot;cat&quot;"));
        assert!(page.contains("src=\"01%20a.png\""));
        assert!(page.contains("src=\"reference.png\"") && page.contains("src=\"sheet.png\""));
        assert!(page.contains("me &amp; you.jpg") && page.contains("0.250"));
        assert!(!page.contains("http"), "nothing from the network");
    }
}
