"""Writes an SDXL-size diffusers folder with random fp16 weights, for the load benchmark.

    python tools/bench/make_random_sdxl.py OUTDIR

Every tensor of diffusers' UNet2DConditionModel / AutoencoderKL and transformers'
CLIPTextModel / CLIPTextModelWithProjection, built from the configurations of
tools/bench/configs/sdxl-base on the meta device, is filled with `randn * 0.02`
(`torch.Generator().manual_seed(0)`) and stored as float16 in
`<part>/diffusion_pytorch_model.safetensors` / `<part>/model.safetensors`, as SDXL base's
fp16 files are (6.9 GB in all). The tokenizers are the CLIP vocabulary of
tests/fixtures/text/tiny-sdxl. Both sides of `run_cpu.sh load` read this folder.
"""
import json
import os
import shutil
import sys

import torch
from safetensors.torch import save_file

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIGS = os.path.join(REPO, "tools", "bench", "configs", "sdxl-base")
TOKENIZERS = os.path.join(REPO, "tests", "fixtures", "text", "tiny-sdxl")


def random_state(module: torch.nn.Module, gen: torch.Generator) -> dict:
    out = {}
    for name, t in module.state_dict(keep_vars=False).items():
        if t.dtype.is_floating_point:
            out[name] = (torch.randn(t.shape, generator=gen) * 0.02).half().contiguous()
        else:  # position_ids
            out[name] = torch.arange(t.numel(), dtype=t.dtype).reshape(t.shape)
    return out


def main():
    out = sys.argv[1]
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    gen = torch.Generator().manual_seed(0)
    os.makedirs(out, exist_ok=True)
    parts = [
        ("text_encoder", lambda c: CLIPTextModel(CLIPTextConfig(**c)), "model.safetensors"),
        ("text_encoder_2", lambda c: CLIPTextModelWithProjection(CLIPTextConfig(**c)), "model.safetensors"),
        ("vae", lambda c: AutoencoderKL.from_config(c), "diffusion_pytorch_model.safetensors"),
        ("unet", lambda c: UNet2DConditionModel.from_config(c), "diffusion_pytorch_model.safetensors"),
    ]
    for sub, build, file in parts:
        with open(os.path.join(CONFIGS, sub, "config.json")) as f:
            config = json.load(f)
        with torch.device("meta"):
            module = build(config)
        state = random_state(module, gen)
        os.makedirs(os.path.join(out, sub), exist_ok=True)
        shutil.copy(os.path.join(CONFIGS, sub, "config.json"), os.path.join(out, sub, "config.json"))
        save_file(state, os.path.join(out, sub, file), metadata={"format": "pt"})
        n = sum(t.numel() for t in state.values())
        print(f"{sub}: {len(state)} tensors, {n} values", flush=True)
        del state, module
    for name in ("model_index.json",):
        shutil.copy(os.path.join(CONFIGS, name), os.path.join(out, name))
    shutil.copytree(os.path.join(CONFIGS, "scheduler"), os.path.join(out, "scheduler"), dirs_exist_ok=True)
    for tok in ("tokenizer", "tokenizer_2"):
        shutil.copytree(os.path.join(TOKENIZERS, tok), os.path.join(out, tok), dirs_exist_ok=True)


if __name__ == "__main__":
    main()
