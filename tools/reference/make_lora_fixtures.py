#!/usr/bin/env python3
"""Reference-fixture generator for LoRA files fused into the tiny SDXL model.

Run from the repository root with the pinned venv (see tools/reference/README.md), after
make_pipeline_fixtures.py (tools/reference/make_all.sh does the order):

    python tools/reference/make_lora_fixtures.py

Inputs (must exist): tests/fixtures/text/tiny-sdxl/ (complete diffusers folder),
tests/fixtures/pipeline/tiny-sdxl-single.safetensors (the same model as one single file) and
tests/fixtures/pipeline/reference.safetensors (the pipeline's init latents).

Writes tests/fixtures/lora/ (deleted and rewritten):
  kohya-sgm.safetensors       kohya/A1111 LoRA, UNet names in the original SGM spelling
                              (input_blocks_4_1_...), alpha != rank, one LoCon 3x3 convolution,
                              te1 and te2 keys
  kohya-diffusers.safetensors kohya LoRA with the UNet names in diffusers' spelling
  peft.safetensors            diffusers' save_lora_weights of PEFT adapters (lora_A / lora_B,
                              lora_alpha != r in the lora_adapter_metadata header)
  loha.safetensors            LyCORIS LoHa (kohya names), one conv with Tucker cores
  lokr.safetensors            LyCORIS LoKr (kohya names), whole and low-rank factors, one conv
                              with a Tucker core
  dora.safetensors            kohya LoRA with DoRA magnitudes (dora_scale), per output row and per
                              input channel
  bad-sd15.safetensors        a LoRA made for SD 1.5: attn2.to_k down [r, 768] (SD 1.5's text width)
  bad-no-lora.safetensors     tensors, none of them a LoRA part
  bad-rank.safetensors        lora_up rank 4, lora_down rank 3
  bad-nan.safetensors         a NaN in a lora_up weight
  reference.safetensors       float32 references, per case C:
                                fused.C.<component>.<module path>.weight   every weight the case changes
                                final_latents.C                            5-step generation, fused model
  reference.json              every case's settings

Cases: kohya-sgm, kohya-diffusers, peft (diffusers load_lora_weights + fuse_lora(lora_scale=0.7)),
kohya-sgm-single (the same, on StableDiffusionXLPipeline.from_single_file), two
(set_adapters(["sgm", "peft"], adapter_weights=[0.7, 0.4]) + fuse_lora()), loha and lokr
(numpy formulas at multiplier 0.7; diffusers does not load them), dora (LyCORIS' own merge at
multiplier 0.7). Each diffusers result is
asserted equal to the formula W + m * alpha / rank * up @ down computed in numpy, module by module,
and every module of every file is asserted to have been fused.

Deterministic (seeded generators, one thread), no network. If the script finishes, the checks passed.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import diffusers  # noqa: E402
import peft  # noqa: E402
import transformers  # noqa: E402
from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline  # noqa: E402
from peft import LoraConfig  # noqa: E402
from peft.utils import get_peft_model_state_dict  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

from make_diffusion_fixtures import UNET_A, load_safetensors, save_safetensors, unet_to_ldm  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
SDXL_DIR = ROOT / "tests" / "fixtures" / "text" / "tiny-sdxl"
SINGLE = ROOT / "tests" / "fixtures" / "pipeline" / "tiny-sdxl-single.safetensors"
PIPELINE_REF = ROOT / "tests" / "fixtures" / "pipeline" / "reference.safetensors"
OUT = ROOT / "tests" / "fixtures" / "lora"

PROMPT = "a photo of a person"
HEIGHT, WIDTH, STEPS, GUIDANCE = 48, 64, 5, 5.0
SCALE = 0.7
TWO_WEIGHTS = (0.7, 0.4)

# UNet modules (diffusers paths) of the kohya files: attention, feed-forward, projections, a
# resnet's 3x3 conv1 (LoCon) and its time_emb_proj.
UNET_MODULES = [
    "down_blocks.1.attentions.0.proj_in",
    "down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q",
    "down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_out.0",
    "down_blocks.1.attentions.0.transformer_blocks.1.attn2.to_k",
    "down_blocks.1.attentions.1.transformer_blocks.0.ff.net.0.proj",
    "mid_block.attentions.0.transformer_blocks.0.attn2.to_v",
    "mid_block.attentions.0.transformer_blocks.1.ff.net.2",
    "up_blocks.0.attentions.2.transformer_blocks.1.attn1.to_k",
    "up_blocks.0.attentions.0.proj_out",
    "down_blocks.0.resnets.1.conv1",
]
# diffusers 0.42.1 with transformers 5's flat CLIPTextModel leaves text encoder 1's kohya
# self_attn keys unconverted (`to_q_lora` "UNEXPECTED"): te1 is exercised on its MLP.
TE1_MODULES = ["encoder.layers.0.mlp.fc2", "encoder.layers.2.mlp.fc1"]
TE2_MODULES = ["encoder.layers.0.self_attn.k_proj", "encoder.layers.3.self_attn.out_proj"]
# Ranks of the kohya files' modules, in turn; one alpha for all, different from every rank.
# (diffusers 0.42.1 maps per-module kohya alphas to PEFT alpha_pattern keys that miss attn2 and
# text-encoder modules, which then get the most common alpha: with one alpha per file its
# fused weights are the formula's.)
RANKS = [4, 2, 3]
KOHYA_ALPHA = 1.5


def log(*a):
    print(*a, flush=True)


def write_json(path: Path, obj):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=1, sort_keys=True, allow_nan=False)
        f.write("\n")


def load_pipe(single: bool = False):
    if single:
        pipe = StableDiffusionXLPipeline.from_single_file(str(SINGLE), config=str(SDXL_DIR), local_files_only=True,
                                                          dtype=torch.float32, add_watermarker=False)
    else:
        pipe = StableDiffusionXLPipeline.from_pretrained(str(SDXL_DIR), variant="fp16", dtype=torch.float32,
                                                         local_files_only=True, add_watermarker=False)
    pipe.set_progress_bar_config(disable=True)
    assert type(pipe.scheduler) is EulerDiscreteScheduler
    return pipe


def weights(pipe) -> dict:
    """Every Linear / Conv2d weight of the three models, float64 numpy, by (component, path)."""
    out = {}
    for comp, model in (("unet", pipe.unet), ("te1", pipe.text_encoder), ("te2", pipe.text_encoder_2)):
        for name, m in model.named_modules():
            if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d)) and "lora_" not in name:
                w = m.weight
                name = name.removesuffix(".base_layer")  # PEFT wraps a targeted layer
                # transformers 5 nests CLIPTextModelWithProjection's tower under text_model., not
                # CLIPTextModel's: paths are kept without it (as the Rust modules name them).
                name = name.removeprefix("text_model.") if comp != "unet" else name
                out[(comp, name)] = w.detach().double().numpy().copy()
    return out


def sgm_names() -> dict:
    """diffusers UNet path -> SGM (LDM) path, through make_diffusion_fixtures.unet_to_ldm."""
    pipe_unet = load_pipe().unet
    sd = {k: torch.tensor([float(i)]) for i, k in enumerate(pipe_unet.state_dict())}
    names = list(sd)
    ldm = unet_to_ldm(sd, UNET_A)
    out = {}
    for k, v in ldm.items():
        src = names[int(v.item())]
        if src.endswith(".weight"):
            out[src[: -len(".weight")]] = k[: -len(".weight")]
    return out


def rng(seed):
    return np.random.default_rng(seed)


def kohya_file(pipe_w: dict, spelling: str, seed: int):
    """A kohya LoRA (lora_down / lora_up / alpha) and its deltas (alpha / rank * up @ down)."""
    r = rng(seed)
    sgm = sgm_names() if spelling == "sgm" else None
    tensors, deltas = {}, {}
    modules = [("unet", m) for m in UNET_MODULES] + [("te1", m) for m in TE1_MODULES] + \
              [("te2", m) for m in TE2_MODULES]
    for i, (comp, path) in enumerate(modules):
        w = pipe_w[(comp, path)]
        rank = RANKS[i % len(RANKS)]
        alpha = KOHYA_ALPHA
        if comp == "unet":
            name = "lora_unet_" + (sgm[path] if sgm else path).replace(".", "_")
        else:
            name = f"lora_{comp}_text_model_" + path.replace(".", "_")
        out_dim, in_dim = w.shape[0], w.shape[1]
        kernel = w.shape[2:]
        down = r.normal(0, 0.3, (rank, in_dim, *kernel)).astype(np.float32)
        up = r.normal(0, 0.3, (out_dim, rank, *([1] * len(kernel)))).astype(np.float32)
        tensors[f"{name}.lora_down.weight"] = down
        tensors[f"{name}.lora_up.weight"] = up
        tensors[f"{name}.alpha"] = np.array(alpha, dtype=np.float32)
        delta = (up.reshape(out_dim, rank).astype(np.float64) @ down.reshape(rank, -1).astype(np.float64))
        deltas[(comp, path)] = (alpha / rank) * delta.reshape(w.shape)
    return tensors, deltas


def save_np(tensors: dict, path: Path, metadata=None):
    save_safetensors({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in sorted(tensors.items())}, path,
                     metadata)


def peft_file(pipe, path: Path, seed: int):
    """PEFT adapters on the UNet and both text encoders, saved by save_lora_weights; their deltas."""
    g = torch.Generator().manual_seed(seed)
    # (a regex is matched against whole module names; attn1.to_q of down_blocks.1 is also in
    # kohya-sgm, so "two" sums two deltas there)
    unet_cfg = LoraConfig(r=4, lora_alpha=6, init_lora_weights=False,
                          target_modules=r".*(down_blocks\.1\.attentions\.0\.transformer_blocks\.0\.attn1\.to_q"
                                         r"|mid_block\.attentions\.0\.transformer_blocks\.1\.attn2\.to_v"
                                         r"|up_blocks\.0\.attentions\.1\.proj_in"
                                         r"|up_blocks\.0\.attentions\.2\.transformer_blocks\.0\.ff\.net\.2)")
    te_cfg = LoraConfig(r=2, lora_alpha=3, init_lora_weights=False,
                        target_modules=r".*encoder\.layers\.1\.(self_attn\.q_proj|mlp\.fc2)")
    pipe.unet.add_adapter(unet_cfg)
    # transformers' add_adapter asks for peft >= 0.22 (unreleased); peft's own injection is what
    # it calls.
    peft.inject_adapter_in_model(te_cfg, pipe.text_encoder)
    peft.inject_adapter_in_model(te_cfg, pipe.text_encoder_2)
    with torch.no_grad():
        for model in (pipe.unet, pipe.text_encoder, pipe.text_encoder_2):
            for name, p in model.named_parameters():
                if "lora_" in name:
                    p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    layers = {c: get_peft_model_state_dict(getattr(pipe, c)) for c in ("unet", "text_encoder", "text_encoder_2")}
    path.parent.mkdir(parents=True, exist_ok=True)
    StableDiffusionXLPipeline.save_lora_weights(
        str(path.parent), weight_name=path.name, unet_lora_layers=layers["unet"],
        text_encoder_lora_layers=layers["text_encoder"], text_encoder_2_lora_layers=layers["text_encoder_2"],
        unet_lora_adapter_metadata=pipe.unet.peft_config["default"].to_dict(),
        text_encoder_lora_adapter_metadata=te_cfg.to_dict(),
        text_encoder_2_lora_adapter_metadata=te_cfg.to_dict())
    deltas = {}
    for comp, model, cfg in (("unet", pipe.unet, unet_cfg), ("te1", pipe.text_encoder, te_cfg),
                             ("te2", pipe.text_encoder_2, te_cfg)):
        for name, m in model.named_modules():
            name = name.removeprefix("text_model.") if comp != "unet" else name
            if hasattr(m, "lora_A") and "default" in m.lora_A:
                a = m.lora_A["default"].weight.detach().double().numpy()
                b = m.lora_B["default"].weight.detach().double().numpy()
                deltas[(comp, name)] = (cfg.lora_alpha / cfg.r) * (b.reshape(b.shape[0], -1) @ a.reshape(a.shape[0], -1))
    return deltas


def loha_file(pipe_w: dict, seed: int):
    """LoHa: (w1a @ w1b) * (w2a @ w2b) * alpha / rank; a 3x3 conv with Tucker cores
    (einsum 'i j k l, j r, i p -> p r k l', LyCORIS' layout: w_a [rank, out], w_b [rank, in])."""
    r = rng(seed)
    tensors, deltas = {}, {}
    mods = [("unet", "down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_v", False),
            ("unet", "down_blocks.0.resnets.0.conv2", True),
            ("unet", "up_blocks.1.resnets.2.conv1", False),
            ("te1", "encoder.layers.1.self_attn.v_proj", False)]
    for i, (comp, path, tucker) in enumerate(mods):
        w = pipe_w[(comp, path)]
        rank, alpha = 2 + i % 2, 1.5
        name = ("lora_unet_" + path.replace(".", "_")) if comp == "unet" else \
            f"lora_{comp}_text_model_" + path.replace(".", "_")
        out_dim, in_dim, kernel = w.shape[0], w.shape[1], w.shape[2:]
        f = lambda *s: r.normal(0, 0.4, s).astype(np.float32)  # noqa: E731
        if tucker:
            w1a, w1b, w2a, w2b = f(rank, out_dim), f(rank, in_dim), f(rank, out_dim), f(rank, in_dim)
            t1, t2 = f(rank, rank, *kernel), f(rank, rank, *kernel)
            tensors.update({f"{name}.hada_t1": t1, f"{name}.hada_t2": t2})
            m1 = np.einsum("ijkl,jr,ip->prkl", t1.astype(np.float64), w1b.astype(np.float64), w1a.astype(np.float64))
            m2 = np.einsum("ijkl,jr,ip->prkl", t2.astype(np.float64), w2b.astype(np.float64), w2a.astype(np.float64))
        else:
            flat = int(np.prod(w.shape[1:]))
            w1a, w1b, w2a, w2b = f(out_dim, rank), f(rank, flat), f(out_dim, rank), f(rank, flat)
            m1 = w1a.astype(np.float64) @ w1b.astype(np.float64)
            m2 = w2a.astype(np.float64) @ w2b.astype(np.float64)
        tensors.update({f"{name}.hada_w1_a": w1a, f"{name}.hada_w1_b": w1b, f"{name}.hada_w2_a": w2a,
                        f"{name}.hada_w2_b": w2b, f"{name}.alpha": np.array(alpha, dtype=np.float32)})
        deltas[(comp, path)] = (alpha / rank) * (m1 * m2).reshape(w.shape)
    return tensors, deltas


def lokr_file(pipe_w: dict, seed: int):
    """LoKr: kron(w1, w2) * alpha / rank (rank of the low-rank factor; scale 1 when both are whole)."""
    r = rng(seed)
    f = lambda *s: r.normal(0, 0.4, s).astype(np.float32)  # noqa: E731
    tensors, deltas = {}, {}
    # (component, path, w1 split (a, c), form of w2: "whole" | "lowrank" | "tucker")
    mods = [("unet", "down_blocks.1.attentions.0.transformer_blocks.1.attn1.to_q", (4, 4), "lowrank"),
            ("unet", "mid_block.attentions.0.transformer_blocks.0.ff.net.2", (4, 8), "whole"),
            ("unet", "up_blocks.1.resnets.0.conv2", (4, 4), "tucker"),
            ("te2", "encoder.layers.2.mlp.fc1", (6, 4), "lowrank")]
    for i, (comp, path, (a, c), form) in enumerate(mods):
        w = pipe_w[(comp, path)]
        name = ("lora_unet_" + path.replace(".", "_")) if comp == "unet" else \
            f"lora_{comp}_text_model_" + path.replace(".", "_")
        out_dim, in_dim, kernel = w.shape[0], w.shape[1], w.shape[2:]
        assert out_dim % a == 0 and in_dim % c == 0, (path, w.shape, a, c)
        b, d = out_dim // a, in_dim // c
        rank, alpha = 2, 3.0
        if i % 2 == 0:
            w1 = f(a, c)
            tensors[f"{name}.lokr_w1"] = w1
        else:
            w1a, w1b = f(a, rank), f(rank, c)
            tensors.update({f"{name}.lokr_w1_a": w1a, f"{name}.lokr_w1_b": w1b})
            w1 = w1a.astype(np.float64) @ w1b.astype(np.float64)
        if form == "whole":
            w2 = f(b, d, *kernel)
            tensors[f"{name}.lokr_w2"] = w2
        elif form == "lowrank":
            w2a, w2b = f(b, rank), f(rank, d * int(np.prod(kernel or (1,))))
            tensors.update({f"{name}.lokr_w2_a": w2a, f"{name}.lokr_w2_b": w2b})
            w2 = w2a.astype(np.float64) @ w2b.astype(np.float64)
        else:
            w2a, w2b, t2 = f(rank, b), f(rank, d), f(rank, rank, *kernel)
            tensors.update({f"{name}.lokr_w2_a": w2a, f"{name}.lokr_w2_b": w2b, f"{name}.lokr_t2": t2})
            w2 = np.einsum("ijkl,jr,ip->prkl", t2.astype(np.float64), w2b.astype(np.float64), w2a.astype(np.float64))
        decomposed = form != "whole" or i % 2 == 1
        tensors[f"{name}.alpha"] = np.array(alpha, dtype=np.float32)
        scale = alpha / rank if decomposed else 1.0
        w1 = np.asarray(w1, dtype=np.float64)
        if w2.ndim == 4:
            w1 = w1[:, :, None, None]
        deltas[(comp, path)] = scale * np.kron(w1, w2).reshape(w.shape)
    return tensors, deltas


@torch.no_grad()
def dora_file(pipe, pipe_w: dict, seed: int):
    """kohya LoRA with DoRA magnitudes (dora_scale), merged by LyCORIS itself:
    LoConModule.make_module_from_state_dict(...).get_merged_weight(multiplier) for magnitudes per
    output row ([out, 1, ...], LyCORIS' default), and lycoris.functional.general._weight_decompose
    with wd_on_out=False for one per input channel ([1, in])."""
    from lycoris.functional.general import _weight_decompose
    from lycoris.modules.locon import LoConModule
    g = torch.Generator().manual_seed(seed)
    mods = [("unet", "down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_q", True),
            ("unet", "up_blocks.1.resnets.1.conv1", True),
            ("te2", "encoder.layers.1.mlp.fc1", False)]
    modules = {"unet": pipe.unet, "te2": pipe.text_encoder_2.text_model}
    tensors, fused = {}, {}
    for comp, path, on_out in mods:
        w = torch.from_numpy(pipe_w[(comp, path)]).float()
        orig = modules[comp].get_submodule(path)
        assert torch.equal(orig.weight, w), path
        rank, alpha = 4, 2.0
        out_dim, in_dim, kernel = w.shape[0], w.shape[1], tuple(w.shape[2:])
        down = torch.randn((rank, in_dim, *kernel), generator=g) * 0.3
        up = torch.randn((out_dim, rank, *([1] * len(kernel))), generator=g) * 0.3
        diff = (up.reshape(out_dim, rank) @ down.reshape(rank, -1)).reshape(w.shape) * (alpha / rank)
        if on_out:
            norm = (w + diff).reshape(out_dim, -1).norm(dim=1).reshape(out_dim, *[1] * (w.dim() - 1))
            dora = norm * (1 + 0.5 * torch.rand(norm.shape, generator=g))
            m = LoConModule.make_module_from_state_dict(f"lora_{path}", orig, up, down, None, alpha, dora)
            merged = m.get_merged_weight(multiplier=SCALE)[0]
        else:
            norm = (w + diff).norm(dim=0, keepdim=True)
            dora = norm * (1 + 0.5 * torch.rand(norm.shape, generator=g))
            merged = _weight_decompose(w + diff, dora, SCALE, wd_on_out=False)
        name = ("lora_unet_" + path.replace(".", "_")) if comp == "unet" else \
            f"lora_{comp}_text_model_" + path.replace(".", "_")
        tensors.update({f"{name}.lora_down.weight": down.numpy(), f"{name}.lora_up.weight": up.numpy(),
                        f"{name}.alpha": np.array(alpha, dtype=np.float32), f"{name}.dora_scale": dora.numpy()})
        fused[(comp, path)] = merged.detach().double().numpy()
    return tensors, fused


def run(pipe, init_latents) -> torch.Tensor:
    with torch.no_grad():
        return pipe(prompt=PROMPT, height=HEIGHT, width=WIDTH, num_inference_steps=STEPS, guidance_scale=GUIDANCE,
                    latents=init_latents.clone(), output_type="latent", return_dict=False)[0]


def check_fused(case, before: dict, after: dict, expected_deltas: dict, ref: dict, tol=1e-5):
    """after == before + delta for every expected module (and nothing else changed); store fused weights."""
    worst = 0.0
    for key, w0 in before.items():
        w1 = after[key]
        if key in expected_deltas:
            want = w0 + expected_deltas[key]
            d = np.abs(w1 - want).max()
            worst = max(worst, d)
            assert d <= tol, f"{case} {key}: diffusers fused vs formula differ by {d}"
            assert np.abs(expected_deltas[key]).max() > 1e-2, (case, key)
            ref[f"fused.{case}.{key[0]}.{key[1]}.weight"] = torch.from_numpy(w1.astype(np.float32))
        else:
            assert np.array_equal(w1, w0), f"{case} {key}: changed but not in the LoRA"
    log(f"  {case}: {len(expected_deltas)} modules fused; diffusers vs numpy formula max diff {worst:.3g}")
    return worst


def main():
    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.disable_progress_bar()
    torch.manual_seed(0)
    torch.set_num_threads(1)
    if OUT.exists():
        shutil.rmtree(OUT)
    OUT.mkdir(parents=True)
    init_latents = load_safetensors(PIPELINE_REF)["init_latents"].float()
    ref, settings, consistency = {}, {}, {}
    base = load_pipe()
    w0 = weights(base)
    w0_single = weights(load_pipe(single=True))
    for k in w0:
        assert np.array_equal(w0[k], w0_single[k]), k  # the single file holds the same (fp16-exact) weights
    del base

    # ---- kohya files: SGM and diffusers spellings ----
    files = {}
    for case, spelling, seed in (("kohya-sgm", "sgm", 1), ("kohya-diffusers", "diffusers", 2)):
        tensors, deltas = kohya_file(w0, spelling, seed)
        save_np(tensors, OUT / f"{case}.safetensors", {"ss_network_module": "networks.lora"})
        files[case] = deltas
        pipe = load_pipe()
        pipe.load_lora_weights(str(OUT / f"{case}.safetensors"))
        pipe.fuse_lora(lora_scale=SCALE)
        scaled = {k: SCALE * v for k, v in deltas.items()}
        consistency[case] = check_fused(case, w0, weights(pipe), scaled, ref)
        ref[f"final_latents.{case}"] = run(pipe, init_latents)
        settings[case] = {"file": f"{case}.safetensors", "diffusers": "load_lora_weights(file); fuse_lora(lora_scale=0.7)",
                          "scale": SCALE, "modules": len(deltas)}
        del pipe
    # both spellings hold the same module set
    assert set(files["kohya-sgm"]) == set(files["kohya-diffusers"])

    # ---- the SGM file on the single-file pipeline ----
    pipe = load_pipe(single=True)
    pipe.load_lora_weights(str(OUT / "kohya-sgm.safetensors"))
    pipe.fuse_lora(lora_scale=SCALE)
    consistency["kohya-sgm-single"] = check_fused("kohya-sgm-single", w0, weights(pipe),
                                                  {k: SCALE * v for k, v in files["kohya-sgm"].items()}, {})
    ref["final_latents.kohya-sgm-single"] = run(pipe, init_latents)
    settings["kohya-sgm-single"] = {"file": "kohya-sgm.safetensors", "model": "tests/fixtures/pipeline/tiny-sdxl-single.safetensors",
                                    "diffusers": "from_single_file(model, config=tiny-sdxl); load_lora_weights(file); "
                                                 "fuse_lora(lora_scale=0.7)", "scale": SCALE}
    del pipe

    # ---- PEFT, saved by diffusers ----
    maker = load_pipe()
    peft_deltas = peft_file(maker, OUT / "peft.safetensors", seed=3)
    del maker
    files["peft"] = peft_deltas
    pipe = load_pipe()
    pipe.load_lora_weights(str(OUT / "peft.safetensors"))
    pipe.fuse_lora(lora_scale=SCALE)
    consistency["peft"] = check_fused("peft", w0, weights(pipe), {k: SCALE * v for k, v in peft_deltas.items()}, ref)
    ref["final_latents.peft"] = run(pipe, init_latents)
    settings["peft"] = {"file": "peft.safetensors", "diffusers": "load_lora_weights(file); fuse_lora(lora_scale=0.7)",
                        "scale": SCALE, "lora_alpha / r": "unet 6 / 4, text encoders 3 / 2", "modules": len(peft_deltas)}
    del pipe

    # ---- two at once ----
    pipe = load_pipe()
    pipe.load_lora_weights(str(OUT / "kohya-sgm.safetensors"), adapter_name="sgm")
    pipe.load_lora_weights(str(OUT / "peft.safetensors"), adapter_name="peft")
    pipe.set_adapters(["sgm", "peft"], adapter_weights=list(TWO_WEIGHTS))
    pipe.fuse_lora(adapter_names=["sgm", "peft"], lora_scale=1.0)
    two = {}
    for name, m in ((n, TWO_WEIGHTS[i]) for i, n in enumerate(("kohya-sgm", "peft"))):
        for k, v in files[name].items():
            two[k] = two.get(k, 0) + m * v
    consistency["two"] = check_fused("two", w0, weights(pipe), two, ref)
    ref["final_latents.two"] = run(pipe, init_latents)
    settings["two"] = {"files": ["kohya-sgm.safetensors", "peft.safetensors"],
                       "diffusers": "load_lora_weights(a, adapter_name='sgm'); load_lora_weights(b, adapter_name='peft'); "
                                    "set_adapters(['sgm', 'peft'], adapter_weights=[0.7, 0.4]); "
                                    "fuse_lora(adapter_names=['sgm', 'peft'], lora_scale=1.0)",
                       "scales": list(TWO_WEIGHTS)}
    del pipe

    # ---- LoHa, LoKr: numpy formulas ----
    for case, maker, seed in (("loha", loha_file, 4), ("lokr", lokr_file, 5)):
        tensors, deltas = maker(w0, seed)
        save_np(tensors, OUT / f"{case}.safetensors", {"ss_network_module": "lycoris.kohya"})
        fused = {k: w0[k] + SCALE * v for k, v in deltas.items()}
        for k, v in fused.items():
            ref[f"fused.{case}.{k[0]}.{k[1]}.weight"] = torch.from_numpy(v.astype(np.float32))
        settings[case] = {"file": f"{case}.safetensors", "scale": SCALE, "modules": len(deltas),
                          "formula": maker.__doc__.strip()}
        log(f"  {case}: {len(deltas)} modules (numpy)")

    # ---- DoRA: LyCORIS' own merge ----
    tensors, fused = dora_file(load_pipe(), w0, seed=6)
    save_np(tensors, OUT / "dora.safetensors", {"ss_network_module": "lycoris.kohya"})
    for k, v in fused.items():
        assert np.abs(v - w0[k]).max() > 1e-2, k
        ref[f"fused.dora.{k[0]}.{k[1]}.weight"] = torch.from_numpy(v.astype(np.float32))
    settings["dora"] = {"file": "dora.safetensors", "scale": SCALE, "modules": len(fused),
                        "formula": dora_file.__doc__.strip()}
    log(f"  dora: {len(fused)} modules (LyCORIS)")

    # ---- bad inputs ----
    r = rng(9)
    # SD 1.5's cross-attention width is 768: its attn2.to_k LoRA has down [r, 768]; the same module
    # here is [32, 40].
    save_np({"lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn2_to_k.lora_down.weight":
             r.normal(0, 1, (4, 768)).astype(np.float32),
             "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn2_to_k.lora_up.weight":
             r.normal(0, 1, (320, 4)).astype(np.float32),
             "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn2_to_k.alpha": np.array(4.0, np.float32)},
            OUT / "bad-sd15.safetensors")
    save_np({"model.diffusion_model.conv_in.weight": r.normal(0, 1, (4, 4, 3, 3)).astype(np.float32)},
            OUT / "bad-no-lora.safetensors")
    save_np({"lora_te1_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight":
             r.normal(0, 1, (3, 16)).astype(np.float32),
             "lora_te1_text_model_encoder_layers_0_self_attn_q_proj.lora_up.weight":
             r.normal(0, 1, (16, 4)).astype(np.float32)}, OUT / "bad-rank.safetensors")
    up = r.normal(0, 1, (16, 4)).astype(np.float32)
    up[3, 1] = np.nan
    # (save_safetensors' read-back check compares with torch.equal, which NaN fails)
    save_file({"lora_te1_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight":
               torch.from_numpy(r.normal(0, 1, (4, 16)).astype(np.float32)),
               "lora_te1_text_model_encoder_layers_0_self_attn_q_proj.lora_up.weight": torch.from_numpy(up)},
              str(OUT / "bad-nan.safetensors"))

    for k in ("kohya-sgm", "kohya-diffusers", "peft", "two"):
        d = (ref[f"final_latents.{k}"] - ref["final_latents.kohya-sgm"]).abs().max().item()
        log(f"  final_latents.{k} vs kohya-sgm: {d:.3g}")
    d = (ref["final_latents.kohya-sgm-single"] - ref["final_latents.kohya-sgm"]).abs().max().item()
    assert d <= 1e-5, d  # same fp16-exact weights
    pipe_ref = load_safetensors(PIPELINE_REF)["final_latents.euler"]
    assert (ref["final_latents.kohya-sgm"] - pipe_ref).abs().max() > 1e-2  # the LoRA changes the result

    meta = {"diffusers": diffusers.__version__, "peft": peft.__version__, "torch": torch.__version__.split("+")[0],
            "model": "tests/fixtures/text/tiny-sdxl", "prompt": PROMPT, "height": HEIGHT, "width": WIDTH,
            "steps": STEPS, "guidance": GUIDANCE,
            "init_latents": "tests/fixtures/pipeline/reference.safetensors init_latents",
            "cases": settings, "diffusers_vs_formula_max_abs_diff": consistency}
    write_json(OUT / "reference.json", meta)
    save_safetensors({k: v.detach().float().contiguous() for k, v in sorted(ref.items())},
                     OUT / "reference.safetensors", {"format": "pt"})
    total = 0
    for p in sorted(OUT.iterdir()):
        p.chmod(0o644)
        total += p.stat().st_size
        log(f"  {p.stat().st_size:>9d}  {p.relative_to(ROOT)}")
    log(f"  total {total / 1e3:.0f} kB")
    assert total < 1e6


if __name__ == "__main__":
    sys.exit(main())
