"""Assets of the README's main job (examples/generate.rs): a name encoder whose towers are
the tiny vision fixtures and whose head (random, seeded) maps their 12 + 20 image dims to
names of 8 x 40 (the tiny SDXL's prompt width), seeing each photo's largest face, aligned
(`input_crop`). Nothing here is a trained model. The two photos, assets/face_a.png and
assets/face_b.png, are links to the real photos of tests/fixtures/face/ (astronaut.png and
group.png, see the README there).

Run from the repository root: .venv/bin/python tools/reference/make_demo_assets.py
"""
import json
import os

import torch
from safetensors.torch import save_file

os.makedirs("assets/tiny-encoder", exist_ok=True)


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
    "input_crop": {"type": "face", "size": 224},
}
with open("assets/tiny-encoder/config.json", "w") as f:
    json.dump(config, f, indent=2)
print("wrote assets/tiny-encoder/")
