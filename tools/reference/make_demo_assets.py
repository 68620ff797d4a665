"""Assets of the README's main job (examples/generate.rs), all tiny and random:
two drawn "face photos" and a name encoder whose towers are the tiny vision fixtures and
whose head (random, seeded) maps their 12 + 20 image dims to names of 8 x 40 (the tiny
SDXL's prompt width). Nothing here is a trained model.

Run from the repository root: .venv/bin/python tools/reference/make_demo_assets.py
"""
import json
import os

import torch
from PIL import Image, ImageDraw
from safetensors.torch import save_file

os.makedirs("assets/tiny-encoder", exist_ok=True)


def face(path, skin, hair, eyes, mouth_up):
    im = Image.new("RGB", (96, 96), (235, 240, 245))
    d = ImageDraw.Draw(im)
    d.ellipse((18, 8, 78, 40), fill=hair)
    d.ellipse((22, 16, 74, 84), fill=skin)
    d.ellipse((34, 38, 44, 46), fill=eyes)
    d.ellipse((52, 38, 62, 46), fill=eyes)
    d.arc((36, 52, 60, 72), 20 if mouth_up else 200, 160 if mouth_up else 340, fill=(150, 40, 40), width=3)
    im.save(path, optimize=True)


face("assets/face_a.png", (241, 194, 125), (60, 40, 20), (40, 60, 120), True)
face("assets/face_b.png", (141, 85, 36), (20, 20, 20), (30, 30, 30), False)

torch.manual_seed(1234)
dims = [12 + 20, 48, 40, 8 * 40]
tensors = {}
for i in range(3):
    layer = torch.nn.Linear(dims[i], dims[i + 1])
    tensors[f"layers.{i}.weight"] = layer.weight.detach().contiguous()
    tensors[f"layers.{i}.bias"] = layer.bias.detach().contiguous()
save_file(tensors, "assets/tiny-encoder/head.safetensors", metadata={"format": "magicnaming-name-head"})
config = {
    "tower_l": "../../tests/fixtures/vision/tower-l",
    "tower_g": "../../tests/fixtures/vision/tower-g",
    "head": {"hidden_dims": [48, 40], "activation": "gelu"},
    "num_tokens": 8,
    "token_dim": 40,
    "image_embed_dims": [12, 20],
    "note": "random, untrained head over tiny random towers: for the offline demo only",
}
with open("assets/tiny-encoder/config.json", "w") as f:
    json.dump(config, f, indent=2)
print("wrote assets/face_a.png, assets/face_b.png, assets/tiny-encoder/")
