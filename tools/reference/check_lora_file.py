#!/usr/bin/env python3
"""Checks a UNet LoRA file (e.g. one written by the Rust trainer) against diffusers, on the tiny SDXL model.

Run from the repository root with the pinned venv (see tools/reference/README.md), after
make_lora_train_fixtures.py:

    python tools/reference/check_lora_file.py LORA.safetensors OUT.safetensors

Inputs: LORA.safetensors, a UNet-only LoRA in one of two layouts:
  kohya      lora_unet_<name>.lora_down.weight [r, in(, k, k)], .lora_up.weight [out, r(, 1, 1)],
             .alpha (scalar; absent = r), <name> in the original SGM spelling
             (lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q) or in diffusers' spelling
             (lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn1_to_q)
  diffusers  unet.<path>.lora_A.weight / .lora_B.weight (PEFT names, as save_lora_weights writes),
             alpha from the `lora_adapter_metadata` header (unet.lora_alpha / unet.r, alpha_pattern),
             else from unet.<path>.alpha keys, else alpha = r
tests/fixtures/text/tiny-sdxl/ (the model) and tests/fixtures/lora_train/step-epsilon.safetensors
(the UNet inputs).

Does: StableDiffusionXLPipeline.from_pretrained(tiny-sdxl, float32); base_out = the UNet's output on
step-epsilon's noisy / timesteps / prompt_embeds / text_embeds / time_ids; pipe.load_lora_weights(LORA);
lora_out = the same with the adapter active (unfused); pipe.fuse_lora(lora_scale=1.0); fused_out.
Asserts: every module of the file is fused into its UNet weight, each fused weight equals
W + alpha / r * up @ down (numpy float64, 1e-6 abs), no other UNet weight changed, and
fused_out == lora_out (1e-4 abs).

Writes OUT.safetensors: fused_out, base_out, lora_out [2, 4, 8, 8] float32.

Deterministic, no network. If the script finishes, the checks passed.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open

sys.path.insert(0, str(Path(__file__).resolve().parent))

import diffusers  # noqa: E402
from diffusers import StableDiffusionXLPipeline  # noqa: E402

from make_diffusion_fixtures import load_safetensors, save_safetensors, unet_to_ldm  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
SDXL_DIR = ROOT / "tests" / "fixtures" / "text" / "tiny-sdxl"
STEP = ROOT / "tests" / "fixtures" / "lora_train" / "step-epsilon.safetensors"
TOL = 1e-6


def log(*a):
    print(*a, flush=True)


def unet_weights(unet) -> dict:
    """Every Linear / Conv2d weight of the UNet, float64 numpy, by diffusers path."""
    out = {}
    for name, m in unet.named_modules():
        if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d)) and "lora_" not in name:
            out[name.removesuffix(".base_layer")] = m.weight.detach().double().numpy().copy()
    return out


def kohya_names(unet, paths) -> dict:
    """kohya module name (after lora_unet_) -> diffusers path, in both the SGM and diffusers spellings."""
    sd = {k: torch.tensor([float(i)]) for i, k in enumerate(unet.state_dict())}
    keys = list(sd)
    ldm = unet_to_ldm(sd, dict(unet.config))
    out = {}
    for k, v in ldm.items():
        src = keys[int(v.item())]
        if src.endswith(".weight") and src[: -len(".weight")] in paths:
            p = src[: -len(".weight")]
            out[k[: -len(".weight")].replace(".", "_")] = p
    for p in paths:
        name = p.replace(".", "_")
        assert out.get(name, p) == p, (name, p)
        out[name] = p
    return out


def read_lora(path: Path, unet, paths) -> tuple[str, dict]:
    """(layout, {diffusers path: (down [r, ...], up [out, r, ...], alpha)}), float64 numpy."""
    with safe_open(str(path), "pt") as f:
        meta = f.metadata() or {}
        t = {k: f.get_tensor(k).double().numpy() for k in f.keys()}
    mods = {}
    if any(k.startswith("lora_unet_") for k in t):
        layout = "kohya"
        names = kohya_names(unet, paths)
        stems = sorted({k.split(".")[0] for k in t})
        for stem in stems:
            assert stem.startswith("lora_unet_"), f"not a UNet LoRA key: {stem}"
            name = stem[len("lora_unet_"):]
            assert name in names, f"unknown UNet module {name}"
            down, up = t.pop(f"{stem}.lora_down.weight"), t.pop(f"{stem}.lora_up.weight")
            alpha = float(t.pop(f"{stem}.alpha")) if f"{stem}.alpha" in t else float(down.shape[0])
            assert names[name] not in mods, f"{stem}: module given twice"
            mods[names[name]] = (down, up, alpha)
    else:
        layout = "diffusers"
        cfg = json.loads(meta["lora_adapter_metadata"]) if "lora_adapter_metadata" in meta else {}
        stems = sorted({k.rsplit(".lora_", 1)[0] if ".lora_" in k else k.removesuffix(".alpha") for k in t})
        for stem in stems:
            assert stem.startswith("unet."), f"not a UNet LoRA key: {stem}"
            p = stem[len("unet."):]
            assert p in paths, f"unknown UNet module {p}"
            down, up = t.pop(f"{stem}.lora_A.weight"), t.pop(f"{stem}.lora_B.weight")
            r = down.shape[0]
            if "unet.lora_alpha" in cfg:
                assert not cfg.get("unet.rank_pattern"), "rank_pattern is not supported here"
                alpha = float(cfg.get("unet.alpha_pattern", {}).get(p, cfg["unet.lora_alpha"]))
                assert cfg["unet.r"] == r, (p, cfg["unet.r"], r)
            elif f"{stem}.alpha" in t:
                alpha = float(t.pop(f"{stem}.alpha"))
            else:
                alpha = float(r)
            mods[p] = (down, up, alpha)
    assert not t, f"unused keys: {sorted(t)[:5]}"
    assert mods, "no LoRA modules"
    return layout, mods


@torch.no_grad()
def unet_out(pipe, x: dict) -> torch.Tensor:
    return pipe.unet(x["noisy"], x["timesteps"], x["prompt_embeds"],
                     added_cond_kwargs={"text_embeds": x["text_embeds"], "time_ids": x["time_ids"]},
                     return_dict=False)[0].float().clone()


def main(argv):
    if len(argv) != 3:
        sys.exit("usage: check_lora_file.py LORA.safetensors OUT.safetensors")
    lora, out = Path(argv[1]), Path(argv[2])
    diffusers.utils.logging.disable_progress_bar()
    torch.manual_seed(0)
    torch.set_num_threads(1)
    x = load_safetensors(STEP)
    pipe = StableDiffusionXLPipeline.from_pretrained(str(SDXL_DIR), variant="fp16", dtype=torch.float32,
                                                     local_files_only=True, add_watermarker=False)
    pipe.set_progress_bar_config(disable=True)
    pipe.unet.eval()
    w0 = unet_weights(pipe.unet)
    layout, mods = read_lora(lora, pipe.unet, set(w0))
    base_out = unet_out(pipe, x)

    pipe.load_lora_weights(str(lora))
    lora_out = unet_out(pipe, x)
    pipe.fuse_lora(lora_scale=1.0)
    fused_out = unet_out(pipe, x)
    w1 = unet_weights(pipe.unet)
    assert sorted(w1) == sorted(w0)

    worst, smallest = 0.0, np.inf
    for p, w in w0.items():
        if p in mods:
            down, up, alpha = mods[p]
            r = down.shape[0]
            assert up.shape[1] == r, (p, up.shape, down.shape)
            delta = (alpha / r) * (up.reshape(up.shape[0], r) @ down.reshape(r, -1)).reshape(w.shape)
            assert not np.array_equal(w1[p], w), f"{p}: diffusers did not change this weight"
            d = np.abs(w1[p] - (w + delta)).max()
            worst, smallest = max(worst, d), min(smallest, np.abs(delta).max())
            assert d <= TOL, f"{p}: fused weight differs from W + alpha / r * up @ down by {d}"
        else:
            assert np.array_equal(w1[p], w), f"{p}: changed but not in the LoRA"
    d_out = (fused_out - lora_out).abs().max().item()
    assert d_out <= 1e-4, f"fused vs unfused adapter output differ by {d_out}"
    alphas = sorted({m[2] for m in mods.values()})
    ranks = sorted({m[0].shape[0] for m in mods.values()})
    log(f"  {lora}: {layout} layout, {len(mods)} modules, ranks {ranks}, alphas {alphas}")
    log(f"  fused vs W + alpha / r * up @ down: max abs diff {worst:.3g} (smallest max |delta| {smallest:.3g})")
    log(f"  fused_out vs lora_out (unfused adapter): {d_out:.3g}; "
        f"fused_out vs base_out: {(fused_out - base_out).abs().max().item():.3g}")
    out.parent.mkdir(parents=True, exist_ok=True)
    save_safetensors({"base_out": base_out, "fused_out": fused_out, "lora_out": lora_out}, out,
                     {"format": "pt", "lora": str(lora.name), "layout": layout, "modules": str(len(mods))})


if __name__ == "__main__":
    sys.exit(main(sys.argv))
