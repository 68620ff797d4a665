#!/usr/bin/env python3
"""Precision check: `magicnaming generate` on the tiny SDXL fixture (48 x 64,
5 Euler steps, guidance 5, diffusers' initial latents) on the CPU in f32 and on a GPU
backend in f32 and f16, against diffusers' f32 final latents
(tests/fixtures/pipeline/reference.safetensors, case `euler`).

    python3 tools/bench/check_precision.py BIN [--device cuda:0] [--out DIR]

Writes DIR/precision.json and DIR/precision.md (a Markdown table) and exits 1 when
a run fails its bound. Pure Python (no numpy/torch): it runs where the binary runs.

Bounds (why these numbers):
- f32 on any backend: 1e-3 absolute, the pipeline parity bound of the CPU tests (CPU measures
  2.5e-5..6.1e-5); another summation order (GPU kernels, TF32 is off in burn) stays far
  below it.
- f16: 1% of the largest |latent|: f16 rounds every activation to 11 significant bits
  (4.9e-4 relative); the CPU f16 test (magicnaming-models/tests/models/precision.rs, burn-flex)
  measures 0.19%. A dtype bug is off by O(1) or NaN.
"""
import argparse
import json
import math
import os
import struct
import subprocess
import sys
import tempfile
import time

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
FIX = os.path.join(REPO, "tests", "fixtures")


def read_st(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for k, v in header.items():
        if k == "__metadata__" or v["dtype"] != "F32":
            continue
        a, b = v["data_offsets"]
        out[k] = (list(struct.unpack(f"<{(b - a) // 4}f", data[a:b])), v["shape"])
    return out


def write_st(path, name, values, shape):
    body = struct.pack(f"<{len(values)}f", *values)
    header = json.dumps({name: {"dtype": "F32", "shape": shape, "data_offsets": [0, len(body)]}}).encode()
    header += b" " * (-len(header) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(header)) + header + body)


def write(out, rows, got, scale):
    """Rewrites precision.json / precision.md from the runs so far (after every run: a
    run cut off by its time limit still leaves the finished rows)."""
    cpu = got.get(("cpu", "f32"))
    for row in rows:
        v = got.get((row["device"], row["precision"]))
        if cpu is not None and v is not None:
            row["max_abs_diff_vs_cpu_f32"] = max(abs(x - y) for x, y in zip(v, cpu))
    with open(os.path.join(out, "precision.json"), "w") as f:
        json.dump({"case": "tiny SDXL fixture, 48x64, 5 Euler steps, guidance 5, diffusers' initial latents",
                   "max_abs_reference": scale, "runs": rows}, f, indent=1)
    lines = ["| backend | weights | final latents vs diffusers f32 (max abs) | relative | vs our CPU f32 | bound | result |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['device']} | {r['precision']} | failed (rc {r['rc']}) | | | | {' '.join(r['error'])} |")
            continue
        lines.append(f"| {r['device']} | {r['precision']} | {r['max_abs_diff_vs_diffusers']:.2e} | "
                     f"{r['relative']:.2e} | {r.get('max_abs_diff_vs_cpu_f32', float('nan')):.2e} | "
                     f"{r['bound']:.2e} | {'pass' if r['passed'] else 'FAIL'} |")
    with open(os.path.join(out, "precision.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    return lines


def main():
    p = argparse.ArgumentParser()
    p.add_argument("bin")
    p.add_argument("--device", default="cuda:0")
    p.add_argument("--out", default="target/precision")
    p.add_argument("--timeout", type=float, default=120)
    a = p.parse_args()
    os.makedirs(a.out, exist_ok=True)
    ref = read_st(os.path.join(FIX, "pipeline", "reference.safetensors"))
    init, shape = ref["init_latents"]
    want, _ = ref["final_latents.euler"]
    scale = max(abs(v) for v in want)
    tmp = tempfile.mkdtemp()
    init_path = os.path.join(tmp, "init.safetensors")
    write_st(init_path, "latents", init, shape)
    runs = [("cpu", "f32"), (a.device, "f16"), (a.device, "f32")]
    got, rows, ok = {}, [], True
    for device, prec in runs:
        lat = os.path.join(tmp, f"{device.replace(':', '')}-{prec}.safetensors")
        cmd = [a.bin, "--device", device, "generate", "--model", os.path.join(FIX, "text", "tiny-sdxl"),
               "--prompt", "a photo of a person", "--width", "64", "--height", "48", "--steps", "5",
               "--guidance", "5", "--scheduler", "euler", "--init-latents", init_path,
               "--save-latents", lat, "--precision", prec, "--out", lat + ".png"]
        t0 = time.time()
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=a.timeout)
            rc, err = r.returncode, r.stderr
        except subprocess.TimeoutExpired:
            rc, err = 124, "time limit"
        secs = time.time() - t0
        row = {"device": device, "precision": prec, "seconds": round(secs, 1), "rc": rc}
        if rc != 0:
            row["error"] = err.strip().splitlines()[-3:]
            ok = False
        else:
            v, _ = read_st(lat)["latents"]
            got[(device, prec)] = v
            d = max(abs(x - y) for x, y in zip(v, want))
            finite = all(math.isfinite(x) for x in v)
            bound = 1e-3 if prec == "f32" else 0.01 * scale
            row.update(max_abs_diff_vs_diffusers=d, relative=d / scale, bound=bound,
                       finite=finite, passed=finite and d <= bound)
            ok &= row["passed"]
        rows.append(row)
        print(json.dumps(row), flush=True)
        write(a.out, rows, got, scale)
    print("\n".join(write(a.out, rows, got, scale)))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
