#!/usr/bin/env python3
"""Prints the benchmark table of docs/BENCHMARKS.md from `magicnaming bench --json` and
`bench_diffusers.py --json` (or `bench_faces.py --json`) outputs of the same run.

    python3 tools/bench/compare.py OURS.json DIFFUSERS.json [MORE_OURS.json MORE_DIFFUSERS.json ...]
        [--command "bash tools/bench/run_gpu.sh"] [--peaks PEAKS.json] [--build-times]

Files come in pairs (ours, diffusers or pytorch); rows are paired by component name. The ratio is
ours / diffusers of the medians: below 1 means ours is faster (the target on a GPU:
at most 0.8 for the whole image). --build-times adds, for pairs that loaded a model
from files (not random weights), a row per component with the seconds each side took to
load it (the reports' `build_s`). --peaks adds peak-device-memory rows from the JSON
that run_gpu.sh writes ({"label": {"ours": bytes, "diffusers": bytes}, ...}).
Standard library only.
"""
import argparse
import json
import sys

LABELS = {"diffusers": "Diffusers", "pytorch": "PyTorch"}
HEADERS = {"diffusers": "diffusers", "pytorch": "facenet-pytorch / PyTorch"}

def load(path):
    """One report; `A.json+B.json+...` merges the components of several runs of one tool
    (header, settings and memory from the first; commands joined)."""
    reports = []
    for part in path.split("+"):
        with open(part) as f:
            r = json.load(f)
        if r.get("schema") != "magicnaming-bench/1":
            sys.exit(f"{part}: not a magicnaming-bench/1 report")
        reports.append(r)
    merged = dict(reports[0])
    merged["components"] = [c for r in reports for c in r["components"]]
    merged["command"] = "\n".join(r["command"] for r in reports)
    return merged


def fmt_ms(c):
    if c is None or c.get("median_ms") is None:
        return "-"
    m, lo, hi = c["median_ms"], c["min_ms"], c["max_ms"]
    def f(x):
        return f"{x / 1e3:.2f} s" if x >= 1e4 else f"{x:.0f} ms" if x >= 100 else f"{x:.1f} ms"
    n = len(c.get("samples_ms") or [])
    return f"{f(m)} ({f(lo)}–{f(hi)}, n={n})"


def gib(b):
    return "-" if b is None else f"{b / 2**30:.2f} GiB"


def card(r):
    return r.get("device_name", "?").split("; host")[0]


def table(pairs, command, peaks, build_times=False):
    ref = " / ".join(dict.fromkeys(HEADERS[theirs["tool"]] for _, theirs in pairs))
    lines = [
        f"| component | ours | {ref} | ratio (ours / {ref}) | card | date | command |",
        "|---|---|---|---|---|---|---|",
    ]
    for ours, theirs in pairs:
        by_name = {c["name"]: c for c in theirs["components"]}
        ours_by_name = {c["name"]: c for c in ours["components"]}
        names = list(by_name) + [n for n in ours_by_name if n not in by_name]
        date = ours["date"][:10]
        dev = card(theirs)
        for name in names:
            c, t = ours_by_name.get(name), by_name.get(name)
            if c is None:  # not measured by ours (e.g. stopped by a time limit)
                c = {"name": name, "what": t["what"] + " (ours: not measured)"}
            ratio = "-"
            if c and t and c.get("median_ms") and t.get("median_ms"):
                ratio = f"{c['median_ms'] / t['median_ms']:.2f}"
            what = c["what"]
            if name.startswith("tower:") and c.get("median_ms") and t:
                batch = ours["settings"]["tower_batch"]
                what += f"; {batch / c['median_ms'] * 1e3:.3g} vs {batch / t['median_ms'] * 1e3:.3g} img/s"
            lines.append(f"| {name}: {what} | {fmt_ms(c)} | {fmt_ms(t)} | {ratio} | {dev} | {date} | {command} |")
        if build_times and not str(ours["settings"].get("model", "")).startswith("random"):
            for name in names:
                c, t = ours_by_name.get(name), by_name.get(name)
                if c and t and c.get("build_s") and t.get("build_s"):
                    ratio = f"{c['build_s'] / t['build_s']:.2f}"
                    lines.append(f"| load {name}: from {ours['settings']['model']} (f16 files as f32) | {c['build_s']:.1f} s | {t['build_s']:.1f} s | {ratio} | {dev} | {date} | {command} |")
        if ours["device"].lower().startswith("cpu"):
            a = ours["memory"].get("host_peak_rss_bytes")
            b = theirs["memory"].get("host_peak_rss_bytes")
            ratio = f"{a / b:.2f}" if a and b else "-"
            lines.append(f"| peak host memory (whole process) | {gib(a)} | {gib(b)} | {ratio} | {dev} | {date} | {command} |")
    for label, p in (peaks or {}).items():
        a, b = p.get("ours"), p.get("diffusers")
        ratio = f"{a / b:.2f}" if a and b else "-"
        date = pairs[0][0]["date"][:10]
        lines.append(f"| peak GPU memory, {label} (nvidia-smi) | {gib(a)} | {gib(b)} | {ratio} | {card(pairs[0][1])} | {date} | {command} |")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("files", nargs="+", help="pairs: OURS.json DIFFUSERS.json ...")
    p.add_argument("--command", default="see below")
    p.add_argument("--peaks")
    p.add_argument("--build-times", action="store_true")
    a = p.parse_args(argv)
    if len(a.files) % 2:
        p.error("give the JSON files in pairs: ours, diffusers")
    reports = [load(f) for f in a.files]
    pairs = list(zip(reports[0::2], reports[1::2]))
    for ours, theirs in pairs:
        if ours.get("tool") != "magicnaming" or theirs.get("tool") not in ("diffusers", "pytorch"):
            p.error("each pair must be (magicnaming, diffusers or pytorch)")
        # bench_faces.py's reports carry only the face settings.
        sdxl_keys = ("resolution", "steps", "guidance", "tower_batch") if theirs["tool"] == "diffusers" else ()
        for key in sdxl_keys + ("face_image", "face_batch"):
            if ours["settings"].get(key) != theirs["settings"].get(key):
                p.error(f"settings differ: {key} {ours['settings'].get(key)} vs {theirs['settings'].get(key)}")
    peaks = None
    if a.peaks:
        with open(a.peaks) as f:
            peaks = json.load(f)
    print(table(pairs, a.command, peaks, a.build_times))
    print()
    for ours, theirs in pairs:
        s = ours["settings"]
        names = [c["name"] for c in ours["components"] + theirs["components"]]
        sizes = []
        if any(not n.startswith(("tower:", "face:")) for n in names):
            sizes.append(f"{s['resolution']}x{s['resolution']}, {s['steps']} steps, guidance {s['guidance']:g}")
        if any(n.startswith("tower:") for n in names):
            sizes.append(f"tower batch {s['tower_batch']}")
        if any(n.startswith("face:") for n in names):
            sizes.append(f"faces: detection on {s['face_image']}, IResNet-50 batch {s['face_batch']}")
        print(f"Settings: {'; '.join(sizes)}; warm-up {s['warmup']} (image {s['image_warmup']}), "
              f"up to {s['iters']} timed runs (image {s['image_iters']})"
              + (f", {s['budget_s']:g} s per component" if s.get("budget_s") is not None else "")
              + "; cells: median (min–max, n = timed runs).")
        print(f"Ours: {ours['implementation']}, {ours['dtype']}. {LABELS[theirs['tool']]}: "
              f"{theirs['implementation']}, {theirs['dtype']}"
              + (f", {theirs['settings']['torch_threads']} torch threads" if theirs['settings'].get('torch_threads') else "")
              + (f", VAE decode in {theirs['settings'].get('vae_dtype')}" if theirs['settings'].get('vae_dtype') else "")
              + ".")
        print(f"Machine: {ours['device_name']}.")
        la, lb = ours.get("host_load") or {}, theirs.get("host_load") or {}
        def span(l):
            a, b = (l.get("start") or [None])[0], (l.get("end") or [None])[0]
            return "?" if a is None else f"{a:.1f} -> {'?' if b is None else f'{b:.1f}'}"
        if la or lb:
            print(f"Load average (1 min), start -> end: ours {span(la)}, {theirs['tool']} {span(lb)}.")
        print("```sh")
        print(ours["command"])
        print(theirs["command"])
        print("```")


if __name__ == "__main__":
    main()
