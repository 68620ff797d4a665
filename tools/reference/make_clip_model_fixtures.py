#!/usr/bin/env python3
"""Reference-fixture generator for CLIP-T (the cosine of a full CLIP model's image and text
embeddings), as evaluation papers compute it with transformers' `CLIPModel`.

Run from the repository root with the pinned venv (see tools/reference/README.md):

    python tools/reference/make_clip_model_fixtures.py

Writes tests/fixtures/clip_model/ (overwriting). Deterministic: seeded random weights; the
images are committed fixtures of the repository; no network.

Outputs
  tiny-clip/          a transformers `CLIPModel` (save_pretrained: config.json with text_config
                      and vision_config, model.safetensors) with CLIP's real vocabulary size
                      (49408) and context length (77) so that real prompts tokenize as with
                      openai/clip-vit-large-patch14, but 4-wide text and 8-wide vision
                      transformers; + preprocessor_config.json (CLIPImageProcessor, 32 px).
                      No tokenizer files: CLIP's vocabulary is bundled in the crate, and the
                      reference tokenizes with tests/fixtures/text/tiny-sdxl/tokenizer (the same
                      vocabulary, pad <|endoftext|>).
  reference.json      images (repository paths), prompts, their ids (padded/truncated to 77 as
                      CLIPProcessor(padding="max_length", truncation=True)), image and text
                      embeddings (projected, not normalised), and CLIP-T = cosine for every
                      (image, prompt) pair
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from PIL import Image
from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPTokenizer

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "tests/fixtures/clip_model"
TOKENIZER = ROOT / "tests/fixtures/text/tiny-sdxl/tokenizer"
IMAGES = ["tests/fixtures/face/astronaut.png", "tests/fixtures/face/group.png",
          "tests/fixtures/face/align_112.png"]
PROMPTS = [
    "a photo of an astronaut",
    "a group of people smiling, oil painting",
    "",
    # Over 77 tokens: truncated to 75 + EOS, as CLIPProcessor(truncation=True).
    "a very long prompt " + " ".join(f"word{i}" for i in range(60)) + " that keeps going past the context",
]


def features(out):
    """transformers 5 may return a model output whose pooler_output holds the projection."""
    return out.pooler_output if hasattr(out, "pooler_output") else out


def main():
    torch.manual_seed(0)
    cfg = CLIPConfig(
        text_config=dict(vocab_size=49408, hidden_size=4, intermediate_size=8, num_hidden_layers=1,
                         num_attention_heads=2, max_position_embeddings=77,
                         bos_token_id=49406, eos_token_id=2, pad_token_id=1),
        vision_config=dict(hidden_size=8, intermediate_size=16, num_hidden_layers=1,
                           num_attention_heads=2, image_size=32, patch_size=8),
        projection_dim=6)
    model = CLIPModel(cfg).eval()
    with torch.no_grad():
        # Random, non-trivial LayerNorm and bias values (the defaults are 1 and 0).
        g = torch.Generator().manual_seed(1)
        for name, p in model.named_parameters():
            if name.endswith("bias") or "layer_norm" in name or "layrnorm" in name:
                p.add_(0.1 * torch.randn(p.shape, generator=g))
        model.logit_scale.fill_(4.0)
    if OUT.exists():
        shutil.rmtree(OUT)
    d = OUT / "tiny-clip"
    model.save_pretrained(str(d))
    proc = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    proc.save_pretrained(str(d))
    model = CLIPModel.from_pretrained(str(d)).eval()
    proc = CLIPImageProcessor.from_pretrained(str(d))
    tok = CLIPTokenizer.from_pretrained(str(TOKENIZER))
    assert tok.pad_token == "<|endoftext|>"

    images = [Image.open(ROOT / p).convert("RGB") for p in IMAGES]
    pv = proc(images=images, return_tensors="pt")["pixel_values"]
    enc = tok(PROMPTS, padding="max_length", max_length=77, truncation=True, return_tensors="pt")
    assert enc["input_ids"].shape == (len(PROMPTS), 77)
    with torch.no_grad():
        img = features(model.get_image_features(pixel_values=pv))
        txt = features(model.get_text_features(input_ids=enc["input_ids"]))
        # The model's own logits: logit_scale.exp() x cosine, so cosine = logits / scale.
        logits = model(input_ids=enc["input_ids"], pixel_values=pv).logits_per_image
    cos = (img / img.norm(dim=-1, keepdim=True)) @ (txt / txt.norm(dim=-1, keepdim=True)).T
    assert (cos - logits / model.logit_scale.exp()).abs().max() < 1e-5
    ref = {
        "images": IMAGES,
        "prompts": PROMPTS,
        "input_ids": enc["input_ids"].tolist(),
        "image_embeds": img.tolist(),
        "text_embeds": txt.tolist(),
        "clip_t": cos.tolist(),
        "logit_scale": model.logit_scale.item(),
    }
    with open(OUT / "reference.json", "w", encoding="utf-8") as f:
        json.dump(ref, f, indent=1)
        f.write("\n")
    print("clip_t", cos)


if __name__ == "__main__":
    main()
