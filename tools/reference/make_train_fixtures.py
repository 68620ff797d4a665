"""Reference for the name-head training step: two AdamW steps of PyTorch on a
small NameHead (3 Linear + exact GELU), with MSE loss and global-norm gradient clipping,
written to tests/fixtures/train/adamw_steps.safetensors.

Run from the repository root: .venv/bin/python tools/reference/make_train_fixtures.py
"""
import json
import os

import torch
from safetensors.torch import save_file

torch.manual_seed(0)
E, H1, H2, K, D, B = 12, 16, 20, 3, 5, 6
LR, WD, EPS, CLIP = 1e-2, 1e-2, 1e-8, 0.1


class Head(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.layers = torch.nn.ModuleList(
            [torch.nn.Linear(E, H1), torch.nn.Linear(H1, H2), torch.nn.Linear(H2, K * D)]
        )

    def forward(self, x):
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = torch.nn.functional.gelu(x)
        return x.reshape(x.shape[0], K, D)


head = Head()
x = torch.randn(B, E)
y = torch.randn(B, K, D)
out = {"x": x, "y": y}
out.update({f"init.{k}": v.detach().clone() for k, v in head.state_dict().items()})
opt = torch.optim.AdamW(head.parameters(), lr=LR, betas=(0.9, 0.999), eps=EPS, weight_decay=WD)
norms = []
for step in range(2):
    opt.zero_grad()
    loss = torch.nn.functional.mse_loss(head(x), y)
    loss.backward()
    norms.append(float(torch.nn.utils.clip_grad_norm_(head.parameters(), CLIP)))
    opt.step()
    out[f"loss.{step}"] = loss.detach().reshape(1)
    out.update({f"step{step}.{k}": v.detach().clone() for k, v in head.state_dict().items()})
assert min(norms) > CLIP, f"clipping must be active in the fixture: norms {norms}"
meta = {"E": E, "H1": H1, "H2": H2, "K": K, "D": D, "B": B, "lr": LR, "weight_decay": WD, "eps": EPS,
        "clip": CLIP, "grad_norms": norms, "torch": torch.__version__}
os.makedirs("tests/fixtures/train", exist_ok=True)
save_file({k: v.contiguous().float() for k, v in out.items()}, "tests/fixtures/train/adamw_steps.safetensors",
          metadata={"config": json.dumps(meta)})
print("wrote tests/fixtures/train/adamw_steps.safetensors", meta)
