#!/usr/bin/env python3
"""Reference-fixture generator for one UNet LoRA training step on the tiny SDXL model.

Run from the repository root with the pinned venv (see tools/reference/README.md), after
make_pipeline_fixtures.py (tools/reference/make_all.sh does the order):

    python tools/reference/make_lora_train_fixtures.py

Reproduces ONE optimisation step of diffusers' examples/text_to_image/train_text_to_image_lora_sdxl.py
(UNet LoRA through peft: LoraConfig(r=4, lora_alpha=8, init_lora_weights="gaussian",
target_modules=["to_k", "to_q", "to_v", "to_out.0"]), unet.add_adapter, base weights frozen,
float32), with every random draw given as a tensor:

    latents     = (mean + std * latent_eps) * vae.config.scaling_factor   (vae.encode(pixels).latent_dist)
    noisy       = DDPMScheduler(tiny-sdxl/scheduler, prediction_type=C).add_noise(latents, noise, timesteps)
    target      = noise (epsilon) | get_velocity(latents, noise, timesteps) (v_prediction)
    model_pred  = unet(noisy, timesteps, prompt_embeds,
                       added_cond_kwargs={"text_embeds": text_embeds, "time_ids": time_ids}).sample
    loss        = F.mse_loss(model_pred.float(), target.float(), reduction="mean")
    loss.backward(); clip_grad_norm_(lora params, max_grad_norm); AdamW(lr, (0.9, 0.999), 1e-2, 1e-8).step()

Inputs (must exist): tests/fixtures/text/tiny-sdxl/ (unet/, vae/, scheduler/).

Writes tests/fixtures/lora_train/ (deleted and rewritten):
  step-epsilon.safetensors, step-v_prediction.safetensors   float32 (timesteps int64):
      pixels [2,3,32,32], latent_eps / latents / noise / noisy / target / model_pred [2,4,h,w],
      timesteps [2], prompt_embeds [2,77,cross_attention_dim], text_embeds [2,P], time_ids [2,6],
      loss [1], and for every LoRA-wrapped module P (diffusers path, e.g.
      down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q):
        init.P.lora_A [r,in], init.P.lora_B [out,r]   before the step (B seeded N(0, 0.1^2), not 0)
        grad.P.lora_A, grad.P.lora_B                  after backward, before clipping
        after.P.lora_A, after.P.lora_B                after clipping + one AdamW step
  reference.json   per case: rank, alpha, lr, betas, weight_decay, eps, max_grad_norm, grad_norm,
                   clip_factor, prediction_type, scaling_factor, vae_scale_factor, modules, num_modules,
                   versions.

max_grad_norm = 0.5 * (the total grad norm), so clipping scales every gradient by ~0.5.

Deterministic (seeded generators, one thread), no network. If the script finishes, the checks passed.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))

import diffusers  # noqa: E402
import peft  # noqa: E402
from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel  # noqa: E402
from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution  # noqa: E402
from peft import LoraConfig  # noqa: E402

from make_diffusion_fixtures import load_safetensors, save_safetensors  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
SDXL_DIR = ROOT / "tests" / "fixtures" / "text" / "tiny-sdxl"
OUT = ROOT / "tests" / "fixtures" / "lora_train"

CASES = ("epsilon", "v_prediction")
BATCH, SIZE = 2, 32
RANK, ALPHA = 4, 8
TARGETS = ["to_k", "to_q", "to_v", "to_out.0"]
LR, BETAS, WEIGHT_DECAY, ADAM_EPS = 1e-3, (0.9, 0.999), 1e-2, 1e-8
CLIP_RATIO = 0.5  # max_grad_norm = CLIP_RATIO * total grad norm
B_STD = 0.1
TIME_IDS = [[40, 48, 4, 8, 32, 32], [32, 32, 0, 0, 32, 32]]
SEEDS = dict(pixels=1, latent_eps=2, noise=3, timesteps=4, prompt_embeds=5, text_embeds=6, lora_A=7, lora_B=8)


def log(*a):
    print(*a, flush=True)


def write_json(path: Path, obj):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=1, sort_keys=True, allow_nan=False)
        f.write("\n")


def gen(name: str) -> torch.Generator:
    return torch.Generator().manual_seed(SEEDS[name])


def lora_modules(unet) -> dict:
    """diffusers module path -> peft LoRA layer (the wrapped module), sorted by path."""
    out = {}
    for name, m in unet.named_modules():
        if hasattr(m, "lora_A") and "default" in getattr(m, "lora_A", {}):
            out[name] = m
    return dict(sorted(out.items()))


def run_case(case: str, vae, inputs: dict):
    """One training step; returns (tensors, settings)."""
    torch.manual_seed(0)
    unet = UNet2DConditionModel.from_pretrained(str(SDXL_DIR / "unet"), local_files_only=True).float()
    unet.requires_grad_(False)
    unet.train()  # the example trains in train mode (no dropout in this config: dropout 0.0)
    config = LoraConfig(r=RANK, lora_alpha=ALPHA, init_lora_weights="gaussian", target_modules=TARGETS)
    torch.manual_seed(SEEDS["lora_A"])  # peft's gaussian init of A (std 1 / r) draws from the global RNG
    unet.add_adapter(config)
    mods = lora_modules(unet)
    assert mods, "no LoRA modules"
    g_b = gen("lora_B")
    with torch.no_grad():
        for path, m in mods.items():
            assert m.scaling["default"] == ALPHA / RANK, (path, m.scaling)
            assert torch.count_nonzero(m.lora_B["default"].weight) == 0  # peft's B init
            b = m.lora_B["default"].weight
            b.copy_(torch.randn(b.shape, generator=g_b) * B_STD)
    params = []
    for path, m in mods.items():
        params += [m.lora_A["default"].weight, m.lora_B["default"].weight]
    trainable = [p for p in unet.parameters() if p.requires_grad]
    assert len(trainable) == len(params) and all(any(p is q for q in params) for p in trainable)
    for p in params:
        assert p.dtype == torch.float32

    t = {}
    init = {path: (m.lora_A["default"].weight.detach().clone(), m.lora_B["default"].weight.detach().clone())
            for path, m in mods.items()}
    for path, (a, b) in init.items():
        assert a.shape == (RANK, m_in(mods[path])) and b.shape == (m_out(mods[path]), RANK), path
        t[f"init.{path}.lora_A"], t[f"init.{path}.lora_B"] = a, b
    a_all = torch.cat([a.flatten() for a, _ in init.values()])
    assert abs(a_all.std().item() - 1 / RANK) < 0.02, a_all.std()  # gaussian, std 1 / r

    # ---- forward, as the example ----
    scheduler = DDPMScheduler.from_pretrained(str(SDXL_DIR / "scheduler"), prediction_type=case,
                                              local_files_only=True)
    assert scheduler.config.prediction_type == case
    assert scheduler.config.num_train_timesteps == 1000 and scheduler.config.beta_schedule == "scaled_linear"
    latents, noise, timesteps = inputs["latents"], inputs["noise"], inputs["timesteps"]
    noisy = scheduler.add_noise(latents, noise, timesteps)
    # add_noise by hand
    ac = scheduler.alphas_cumprod.to(torch.float32)[timesteps][:, None, None, None]
    assert torch.allclose(noisy, ac.sqrt() * latents + (1 - ac).sqrt() * noise, atol=1e-6)
    if case == "epsilon":
        target = noise
    else:
        target = scheduler.get_velocity(latents, noise, timesteps)
        assert torch.allclose(target, ac.sqrt() * noise - (1 - ac).sqrt() * latents, atol=1e-6)
    model_pred = unet(noisy, timesteps, inputs["prompt_embeds"],
                      added_cond_kwargs={"text_embeds": inputs["text_embeds"], "time_ids": inputs["time_ids"]},
                      return_dict=False)[0]
    loss = F.mse_loss(model_pred.float(), target.float(), reduction="mean")
    loss.backward()

    grads = {}
    for path, m in mods.items():
        ga, gb = m.lora_A["default"].weight.grad, m.lora_B["default"].weight.grad
        assert ga is not None and gb is not None, path
        assert torch.count_nonzero(ga) > 0 and torch.count_nonzero(gb) > 0, path
        grads[path] = (ga.detach().clone(), gb.detach().clone())
        t[f"grad.{path}.lora_A"], t[f"grad.{path}.lora_B"] = grads[path]
    grad_norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad) for p in params])).item()
    max_grad_norm = CLIP_RATIO * grad_norm
    returned = torch.nn.utils.clip_grad_norm_(params, max_grad_norm).item()
    assert abs(returned - grad_norm) <= 1e-6 * grad_norm, (returned, grad_norm)
    clip_factor = max_grad_norm / (grad_norm + 1e-6)  # torch's clip_coef
    assert clip_factor < 1
    for path, m in mods.items():
        assert torch.allclose(m.lora_A["default"].weight.grad, grads[path][0] * clip_factor, rtol=1e-6, atol=0)
    optimizer = torch.optim.AdamW(params, lr=LR, betas=BETAS, weight_decay=WEIGHT_DECAY, eps=ADAM_EPS)
    optimizer.step()
    for path, m in mods.items():
        a1, b1 = m.lora_A["default"].weight.detach().clone(), m.lora_B["default"].weight.detach().clone()
        a0, b0 = init[path]
        assert not torch.equal(a1, a0) and not torch.equal(b1, b0), path
        # first AdamW step: p * (1 - lr * wd) - lr * g / (|g| + eps)  (bias corrections cancel)
        for p0, p1, g in ((a0, a1, grads[path][0]), (b0, b1, grads[path][1])):
            g = g.double() * clip_factor
            want = p0.double() * (1 - LR * WEIGHT_DECAY) - LR * g / (g.abs() + ADAM_EPS)
            assert torch.allclose(p1.double(), want, atol=1e-7, rtol=0), path
        t[f"after.{path}.lora_A"], t[f"after.{path}.lora_B"] = a1, b1

    t.update({"noisy": noisy, "target": target, "model_pred": model_pred.detach(),
              "loss": loss.detach().reshape(1)})
    for k in ("pixels", "latent_eps", "latents", "noise", "timesteps", "prompt_embeds", "text_embeds", "time_ids"):
        t[k] = inputs[k]
    settings = {"rank": RANK, "alpha": ALPHA, "lr": LR, "betas": list(BETAS), "weight_decay": WEIGHT_DECAY,
                "eps": ADAM_EPS, "max_grad_norm": max_grad_norm, "grad_norm": grad_norm,
                "clip_factor": clip_factor, "prediction_type": case, "loss": loss.item(),
                "modules": list(mods), "num_modules": len(mods)}
    log(f"  {case}: loss {loss.item():.6f}, {len(mods)} modules, grad norm {grad_norm:.6g}, "
        f"max_grad_norm {max_grad_norm:.6g}, clip factor {clip_factor:.6f}")
    return t, settings


def m_in(m):
    return m.base_layer.in_features


def m_out(m):
    return m.base_layer.out_features


@torch.no_grad()
def make_inputs(vae, unet_config) -> dict:
    vsf = 2 ** (len(vae.config.block_out_channels) - 1)
    h = w = SIZE // vsf
    pixels = torch.rand(BATCH, 3, SIZE, SIZE, generator=gen("pixels")) * 2 - 1
    dist = vae.encode(pixels).latent_dist
    assert isinstance(dist, DiagonalGaussianDistribution)
    latent_eps = torch.randn(BATCH, 4, h, w, generator=gen("latent_eps"))
    # DiagonalGaussianDistribution.sample() is mean + std * randn, with std = exp(0.5 * clamp(logvar, -30, 20))
    z = dist.mean + dist.std * latent_eps
    moments = vae.quant_conv(vae.encoder(pixels))
    mean, logvar = torch.chunk(moments, 2, dim=1)
    std = torch.exp(0.5 * torch.clamp(logvar, -30.0, 20.0))
    assert torch.equal(mean, dist.mean) and torch.equal(std, dist.std)
    assert torch.equal(z, mean + std * latent_eps)
    # and sample() with a generator that draws exactly latent_eps
    assert torch.equal(dist.sample(generator=gen("latent_eps")), z)
    latents = z * vae.config.scaling_factor
    timesteps = torch.randint(0, 1000, (BATCH,), generator=gen("timesteps"), dtype=torch.int64)
    assert timesteps.unique().numel() == BATCH, timesteps
    p = unet_config.projection_class_embeddings_input_dim - 6 * unet_config.addition_time_embed_dim
    inputs = {
        "pixels": pixels,
        "latent_eps": latent_eps,
        "latents": latents,
        "noise": torch.randn(BATCH, 4, h, w, generator=gen("noise")),
        "timesteps": timesteps,
        "prompt_embeds": torch.randn(BATCH, 77, unet_config.cross_attention_dim, generator=gen("prompt_embeds")),
        "text_embeds": torch.randn(BATCH, p, generator=gen("text_embeds")),
        "time_ids": torch.tensor(TIME_IDS, dtype=torch.float32),
    }
    assert pixels.min() >= -1 and pixels.max() <= 1
    return inputs, vsf


def main():
    diffusers.utils.logging.disable_progress_bar()
    diffusers.utils.logging.set_verbosity_error()  # DDPMScheduler from an Euler config warns about unused keys
    torch.manual_seed(0)
    torch.set_num_threads(1)
    if OUT.exists():
        shutil.rmtree(OUT)
    OUT.mkdir(parents=True)

    vae = AutoencoderKL.from_pretrained(str(SDXL_DIR / "vae"), local_files_only=True).float().eval()
    unet_config = UNet2DConditionModel.load_config(str(SDXL_DIR / "unet"), local_files_only=True)
    unet_config = type("C", (), unet_config)
    inputs, vsf = make_inputs(vae, unet_config)
    assert vsf == 4 and inputs["latents"].shape == (BATCH, 4, 8, 8)

    meta = {"cases": {}, "model": "tests/fixtures/text/tiny-sdxl",
            "example": "diffusers examples/text_to_image/train_text_to_image_lora_sdxl.py",
            "target_modules": TARGETS, "init_lora_weights": "gaussian", "lora_B_init": f"N(0, {B_STD}^2) (seeded)",
            "seeds": SEEDS, "scaling_factor": vae.config.scaling_factor, "vae_scale_factor": vsf,
            "versions": {"torch": torch.__version__.split("+")[0], "diffusers": diffusers.__version__,
                         "peft": peft.__version__}}
    results = {}
    for case in CASES:
        tensors, settings = run_case(case, vae, inputs)
        settings.update({"scaling_factor": vae.config.scaling_factor, "vae_scale_factor": vsf,
                         "file": f"step-{case}.safetensors"})
        settings["versions"] = meta["versions"]
        meta["cases"][case] = settings
        results[case] = tensors
        path = OUT / f"step-{case}.safetensors"
        save_safetensors({k: v.detach().clone().contiguous() for k, v in sorted(tensors.items())}, path, {"format": "pt"})
        back = load_safetensors(path)
        for k, v in back.items():
            want = torch.int64 if k == "timesteps" else torch.float32
            assert v.dtype == want, (k, v.dtype)

    # the two cases share inputs and initial values; only the target (and so everything after) differs
    e, v = results["epsilon"], results["v_prediction"]
    assert sorted(e) == sorted(v)
    for k in e:
        if k.startswith("init.") or k in ("pixels", "latent_eps", "latents", "noise", "timesteps", "noisy",
                                          "prompt_embeds", "text_embeds", "time_ids", "model_pred"):
            assert torch.equal(e[k], v[k]), k
    assert not torch.equal(e["target"], v["target"])
    assert meta["cases"]["epsilon"]["modules"] == meta["cases"]["v_prediction"]["modules"]

    write_json(OUT / "reference.json", meta)
    total = 0
    for p in sorted(OUT.iterdir()):
        p.chmod(0o644)
        total += p.stat().st_size
        log(f"  {p.stat().st_size:>9d}  {p.relative_to(ROOT)}")
    log(f"  total {total / 1e3:.0f} kB")
    assert total < 2e6


if __name__ == "__main__":
    sys.exit(main())
