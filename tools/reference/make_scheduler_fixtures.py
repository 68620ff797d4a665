#!/usr/bin/env python3
"""Reference-fixture generator for the SDXL schedulers (diffusers 0.42.1).

Run from the repository root with the pinned venv (see tools/reference/README.md):

    python tools/reference/make_scheduler_fixtures.py

Writes tests/fixtures/schedulers/ (overwriting):
  cases.json              every case: the scheduler_config.json it starts from, the kind asked
                          for (null = the file's own class), and per step count the schedule
                          (timesteps, sigmas, init_noise_sigma, order)
  trajectories.safetensors  float32 tensors "<case>/<steps>/<field>", each stacked over steps
                          [n, 1, 4, 6, 8]: sample_in, model_input, model_output, prev_sample
                          (+ noise for stochastic steps), and "<case>/<steps>/latents_noise"
                          [1, 4, 6, 8], the N(0, 1) draw that the loop scales by init_noise_sigma

Each scheduler is built the way a diffusers user switches schedulers:
`XScheduler.from_config(config, **overrides)`, with overrides use_karras_sigmas=True,
algorithm_type="dpmsolver++", solver_order=2 for "dpmpp-2m-karras". The loop is the one of
StableDiffusionXLPipeline (set_begin_index(0); scale_model_input; model; step), with the
deterministic fake model  model_output = 0.5 * tanh(model_input) + 0.1 * t / 1000.
Deterministic: fixed seeds, no network.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import torch
from safetensors.torch import save_file

import diffusers
from diffusers import (
    DDIMScheduler,
    DPMSolverMultistepScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
)
from diffusers.schedulers import scheduling_ddim, scheduling_euler_ancestral_discrete

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "tests" / "fixtures" / "schedulers"
SHAPE = (1, 4, 6, 8)
STEPS = [1, 5, 30]

# stabilityai/stable-diffusion-xl-base-1.0, scheduler/scheduler_config.json (verbatim).
SDXL_BASE = {
    "_class_name": "EulerDiscreteScheduler",
    "_diffusers_version": "0.19.0.dev0",
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "clip_sample": False,
    "interpolation_type": "linear",
    "num_train_timesteps": 1000,
    "prediction_type": "epsilon",
    "sample_max_value": 1.0,
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "timestep_spacing": "leading",
    "trained_betas": None,
    "use_karras_sigmas": False,
}

KINDS = {
    "euler": (EulerDiscreteScheduler, {}),
    "euler-a": (EulerAncestralDiscreteScheduler, {}),
    "ddim": (DDIMScheduler, {}),
    "dpmpp-2m-karras": (
        DPMSolverMultistepScheduler,
        {"use_karras_sigmas": True, "algorithm_type": "dpmsolver++", "solver_order": 2},
    ),
}


def sdxl(**changes):
    return {**SDXL_BASE, **changes}


# (name, scheduler_config.json content, kind asked for or None for the file's class, DDIM eta)
CASES = [
    # The four schedulers on SDXL base's own config.
    ("euler", sdxl(), None, 0.0),
    ("euler_a", sdxl(), "euler-a", 0.0),
    ("ddim", sdxl(), "ddim", 0.0),
    ("dpmpp_2m_karras", sdxl(), "dpmpp-2m-karras", 0.0),
    # Timestep spacings and prediction types.
    ("euler_trailing", sdxl(timestep_spacing="trailing"), "euler", 0.0),
    ("euler_linspace", sdxl(timestep_spacing="linspace"), "euler", 0.0),
    ("euler_vpred", sdxl(prediction_type="v_prediction"), "euler", 0.0),
    ("euler_a_trailing_vpred", sdxl(timestep_spacing="trailing", prediction_type="v_prediction"),
     "euler-a", 0.0),
    # Zero-terminal-SNR v-prediction (rescaled betas, trailing), DDIM with eta > 0.
    ("ddim_zero_snr_vpred", sdxl(timestep_spacing="trailing", prediction_type="v_prediction",
                                 rescale_betas_zero_snr=True), "ddim", 0.0),
    ("ddim_eta", sdxl(), "ddim", 0.5),
    # A config without clip_sample / set_alpha_to_one: DDIM takes its own defaults
    # (clip_sample=True, set_alpha_to_one=True, steps_offset=0), like from_config does.
    ("ddim_class_defaults", {"_class_name": "EulerDiscreteScheduler", "beta_start": 0.00085,
                             "beta_end": 0.012, "beta_schedule": "scaled_linear"}, "ddim", 0.0),
    # Native classes with other options.
    ("euler_karras_sigma_min", {"_class_name": "EulerDiscreteScheduler", "use_karras_sigmas": True,
                                "final_sigmas_type": "sigma_min", "timestep_spacing": "leading",
                                "steps_offset": 1}, None, 0.0),
    ("euler_cosine_loglinear", {"_class_name": "EulerDiscreteScheduler",
                                "beta_schedule": "squaredcos_cap_v2",
                                "interpolation_type": "log_linear"}, None, 0.0),
    ("dpmpp_2m_linspace", {"_class_name": "DPMSolverMultistepScheduler", "beta_start": 0.00085,
                           "beta_end": 0.012, "beta_schedule": "scaled_linear",
                           "timestep_spacing": "linspace"}, None, 0.0),
    ("dpmpp_2m_karras_heun_vpred", {"_class_name": "DPMSolverMultistepScheduler",
                                    "beta_start": 0.00085, "beta_end": 0.012,
                                    "beta_schedule": "scaled_linear", "solver_type": "heun",
                                    "prediction_type": "v_prediction", "timestep_spacing": "leading",
                                    "steps_offset": 1}, "dpmpp-2m-karras", 0.0),
]


def build(config: dict, kind: str | None):
    if kind is None:
        cls, overrides = getattr(diffusers, config["_class_name"]), {}
    else:
        cls, overrides = KINDS[kind]
    return cls.from_config(dict(config), **overrides)


class NoiseRecorder:
    """Wraps a scheduler module's randn_tensor to record every draw."""

    def __init__(self, module):
        self.module, self.orig, self.draws = module, module.randn_tensor, []

    def __enter__(self):
        def rec(*args, **kwargs):
            out = self.orig(*args, **kwargs)
            self.draws.append(out.clone())
            return out

        self.module.randn_tensor = rec
        return self

    def __exit__(self, *exc):
        self.module.randn_tensor = self.orig


def fake_model(model_input: torch.Tensor, t) -> torch.Tensor:
    return 0.5 * torch.tanh(model_input) + 0.1 * float(t) / 1000.0


def run(name: str, config: dict, kind: str | None, eta: float, steps: int, seed: int):
    sched = build(config, kind)
    sched.set_timesteps(steps)
    if hasattr(sched, "set_begin_index"):
        sched.set_begin_index(0)
    init_noise_sigma = float(sched.init_noise_sigma)
    latents_noise = torch.randn(SHAPE, generator=torch.Generator().manual_seed(seed), dtype=torch.float32)
    latents = latents_noise * sched.init_noise_sigma
    gen = torch.Generator().manual_seed(seed + 1)
    module = scheduling_ddim if isinstance(sched, DDIMScheduler) else scheduling_euler_ancestral_discrete
    rec = {k: [] for k in ("sample_in", "model_input", "model_output", "prev_sample")}
    noise = []
    with NoiseRecorder(module) as recorder:
        for t in sched.timesteps:
            rec["sample_in"].append(latents.clone())
            model_input = sched.scale_model_input(latents, t)
            rec["model_input"].append(model_input.clone())
            model_output = fake_model(model_input, t)
            rec["model_output"].append(model_output.clone())
            before = len(recorder.draws)
            kwargs = {"generator": gen}
            if isinstance(sched, DDIMScheduler):
                kwargs["eta"] = eta
            latents = sched.step(model_output, t, latents, return_dict=False, **kwargs)[0]
            assert latents.dtype == torch.float32
            rec["prev_sample"].append(latents.clone())
            drawn = recorder.draws[before:]
            assert len(drawn) <= 1
            if drawn:
                noise.append(drawn[0])
    stochastic = isinstance(sched, EulerAncestralDiscreteScheduler) or (
        isinstance(sched, DDIMScheduler) and eta > 0)
    assert len(noise) == (steps if stochastic else 0), (name, len(noise))
    tensors = {f"{name}/{steps}/{k}": torch.stack(v).contiguous() for k, v in rec.items()}
    tensors[f"{name}/{steps}/latents_noise"] = latents_noise.contiguous()
    if noise:
        tensors[f"{name}/{steps}/noise"] = torch.stack(noise).contiguous()
    assert all(torch.isfinite(v).all() for v in tensors.values()), name
    sigmas = getattr(sched, "sigmas", None)
    # DDIM has no sigmas; DPM's `sigmas` before set_timesteps is the training table, after it
    # the inference schedule (n + 1 values), as for Euler.
    schedule = {
        "timesteps": [float(t) for t in sched.timesteps],
        "timesteps_dtype": str(sched.timesteps.dtype).removeprefix("torch."),
        "sigmas": None if sigmas is None or isinstance(sched, DDIMScheduler)
        else [float(s) for s in sigmas],
        "init_noise_sigma": init_noise_sigma,
        "order": int(sched.order),
        "class": type(sched).__name__,
        # For reading only (non-finite floats as strings, e.g. lambda_min_clipped "-inf").
        "effective_config": {k: (str(v) if isinstance(v, float) and not math.isfinite(v) else v)
                             for k, v in sched.config.items() if not k.startswith("_")},
    }
    return schedule, tensors


def main():
    torch.set_num_threads(1)
    shutil.rmtree(OUT, ignore_errors=True)
    OUT.mkdir(parents=True)
    cases, tensors = [], {}
    for ci, (name, config, kind, eta) in enumerate(CASES):
        per_steps = {}
        for steps in STEPS:
            schedule, t = run(name, config, kind, eta, steps, seed=1000 * ci + steps)
            per_steps[str(steps)] = schedule
            tensors.update(t)
        cases.append({"name": name, "config": config, "kind": kind, "eta": eta, "steps": per_steps})
        print(f"{name}: {per_steps['5']['class']} timesteps(5) = {per_steps['5']['timesteps']}", flush=True)
    with open(OUT / "cases.json", "w", encoding="utf-8") as f:
        json.dump({"shape": list(SHAPE), "diffusers": diffusers.__version__, "cases": cases}, f, indent=1,
                  allow_nan=False)
        f.write("\n")
    save_file(dict(sorted(tensors.items())), str(OUT / "trajectories.safetensors"))
    for p in sorted(OUT.iterdir()):
        print(p.relative_to(ROOT), p.stat().st_size, flush=True)


if __name__ == "__main__":
    main()
