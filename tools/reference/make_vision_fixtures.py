#!/usr/bin/env python3
"""Reference-fixture generator for the CLIP image side of MagicNaming (image towers,
CLIPImageProcessor preprocessing, the image-to-name encoder).

Run from the repository root with the pinned venv (see tools/reference/README.md):

    python tools/reference/make_vision_fixtures.py

Writes everything to tests/fixtures/vision/ (overwriting). Deterministic: random weights
come from seeded torch generators, test images from a seeded numpy generator; no network.

Outputs
  tower-l/            "L-like" tower: transformers CLIPVisionModelWithProjection (quick_gelu),
                      save_pretrained + preprocessor_config.json (size 32, crop 32)
  clip-l-full/        the same vision weights inside a full transformers CLIPModel
                      (text tower, text_projection, logit_scale, position_ids buffers)
  tower-g/            "G-like" tower: open_clip CLIP (VisionTransformer, exact GELU) saved as
                      open_clip_model.safetensors (`visual.*` + text keys) + open_clip_config.json
  tower-g-file/       the same visual tower alone (keys without `visual.`) as visual.safetensors
                      + a transformers-style config.json next to it
  encoder/            a name encoder folder: config.json (towers ../tower-l, ../tower-g) +
                      head.safetensors (torch nn.Sequential of 3 Linear + GELU)
  images/             small test images (JPEG, EXIF-rotated JPEG, PNG RGBA / L / I;16 / 16-bit RGB,
                      WebP, BMP, GIF) and broken ones (truncated, 1x1, not an image)
  reference.safetensors   float32 reference outputs (see README)
"""

from __future__ import annotations

import json
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
from PIL import Image, ImageOps
from safetensors import safe_open
from safetensors.torch import save_file
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as tvF

import open_clip  # noqa: E402
from open_clip.model import CLIP as OpenClipModel, CLIPTextCfg, CLIPVisionCfg  # noqa: E402
from transformers import (  # noqa: E402
    CLIPConfig,
    CLIPImageProcessor,
    CLIPModel,
    CLIPVisionConfig,
    CLIPVisionModelWithProjection,
)
from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "tests" / "fixtures" / "vision"

# "L-like" tower (transformers layout, quick_gelu): image 32, patch 4 -> 8x8 grid, 65 tokens.
L_CFG = dict(image_size=32, patch_size=4, hidden_size=24, intermediate_size=40, num_hidden_layers=2,
             num_attention_heads=3, projection_dim=12, hidden_act="quick_gelu", layer_norm_eps=1e-5,
             attention_dropout=0.0)
# "G-like" tower (open_clip layout, exact GELU): image 28, patch 7 -> 4x4 grid, 17 tokens;
# head_width 8 -> 4 heads (not width / 64: the head count cannot be guessed from shapes).
G_VISION = dict(image_size=28, patch_size=7, width=32, layers=2, head_width=8, mlp_ratio=2.5)
G_EMBED = 20
G_HEADS = G_VISION["width"] // G_VISION["head_width"]
G_MLP = int(G_VISION["width"] * G_VISION["mlp_ratio"])
# Name head: concat(12 + 20) -> 48 -> 40 -> 8 x 16.
HEAD_HIDDEN = [48, 40]
NUM_TOKENS, TOKEN_DIM = 8, 16

OPENAI_MEAN = [0.48145466, 0.4578275, 0.40821073]
OPENAI_STD = [0.26862954, 0.26130258, 0.27577711]

# Images decoded bit-exactly by any decoder (lossless formats): used for the 1e-4 checks.
LOSSLESS = ["alpha.png", "gray.png", "gray16.png", "rgb16.png", "big.png", "rgb.webp", "rgb.bmp",
            "palette.gif"]
LOSSY = ["rgb.jpg", "exif6.jpg"]
NAME_IMAGES = ["alpha.png", "gray.png", "rgb16.png", "big.png", "rgb.bmp"]
AVERAGE_SET = ["alpha.png", "big.png", "rgb.bmp"]
# Resize cases (in_h, in_w, out_h, out_w): down/up-scaling, odd ratios, one axis only.
RESIZE_CASES = [(37, 45, 32, 38), (30, 48, 32, 51), (130, 200, 32, 49), (50, 40, 40, 32),
                (7, 9, 28, 36), (64, 20, 64, 31), (33, 17, 12, 40)]


def log(*a):
    print(*a, flush=True)


def write_json(path: Path, obj):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, ensure_ascii=False)
        f.write("\n")


def save_safetensors(tensors: dict, path: Path, metadata: dict):
    """safetensors.save_file with a byte-deterministic header (sorted metadata keys)."""
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path), metadata=metadata)
    with open(path, "r+b") as f:
        n = int.from_bytes(f.read(8), "little")
        raw = f.read(n)
        header = json.loads(raw)
        meta = header.pop("__metadata__", {})
        fixed = {"__metadata__": dict(sorted(meta.items())), **header}
        out = json.dumps(fixed, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        out = out + b" " * (n - len(out))
        assert len(out) == n and json.loads(out) == json.loads(raw), path
        f.seek(8)
        f.write(out)


def load_safetensors(path: Path):
    with safe_open(str(path), "pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}


def maxdiff(a, b):
    return (a.float() - b.float()).abs().max().item()


def assert_close(a, b, tol, what):
    d = maxdiff(a, b)
    assert d <= tol, f"{what}: max abs diff {d} > {tol}"
    return d


# --------------------------------------------------------------------------------------
# weights
# --------------------------------------------------------------------------------------

def is_norm(name: str) -> bool:
    return any(s in name for s in ("layer_norm", "layrnorm", "layernorm", "ln_"))


@torch.no_grad()
def perturb(model: nn.Module, seed: int):
    """Make every tensor distinct and non-trivial (LayerNorms != 1/0, biases != 0)."""
    g = torch.Generator().manual_seed(seed)
    for name, p in sorted(model.named_parameters()):
        noise = torch.randn(p.shape, generator=g, dtype=torch.float32)
        if is_norm(name):
            p.copy_(1.0 + 0.2 * noise if name.endswith("weight") else 0.1 * noise)
        elif name.endswith("bias"):
            p.add_(0.05 * noise)
        elif name.endswith(("class_embedding", "position_embedding.weight", "positional_embedding",
                            "token_embedding.weight")):
            p.copy_(0.5 * p + 0.3 * noise)
        elif name == "logit_scale":
            p.add_(0.1)
        else:
            std = float(p.detach().float().std())
            p.add_(0.5 * std * noise)


# --------------------------------------------------------------------------------------
# images
# --------------------------------------------------------------------------------------

def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def write_png16_rgb(path: Path, arr: np.ndarray):
    """A 16-bit RGB PNG (PIL cannot write one): filter 0 on every row."""
    h, w, _ = arr.shape
    raw = b"".join(b"\x00" + arr[y].astype(">u2").tobytes() for y in range(h))
    data = (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0))
            + png_chunk(b"IDAT", zlib.compress(raw, 9)) + png_chunk(b"IEND", b""))
    path.write_bytes(data)


def smooth_rgb(rng, h, w):
    """A smooth colour pattern with mild noise (JPEG-friendly, not constant)."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    r = 128 + 100 * np.sin(x / w * 5.0 + 0.3) * np.cos(y / h * 3.0)
    gch = 128 + 110 * np.cos((x + 2 * y) / (w + h) * 6.0)
    b = 40 + 180 * (x * y) / (w * h)
    img = np.stack([r, gch, b], -1) + rng.normal(0, 12, (h, w, 3))
    return np.clip(np.round(img), 0, 255).astype(np.uint8)


def make_images(folder: Path, rng) -> dict:
    folder.mkdir(parents=True)
    Image.fromarray(smooth_rgb(rng, 37, 45)).save(folder / "rgb.jpg", quality=90)
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 CW to display
    Image.fromarray(smooth_rgb(rng, 30, 48)).save(folder / "exif6.jpg", quality=92, exif=exif.tobytes())
    rgba = np.concatenate([smooth_rgb(rng, 50, 40), np.zeros((50, 40, 1), np.uint8)], -1)
    yy, xx = np.mgrid[0:50, 0:40]
    alpha = np.clip((xx * 7 + yy * 3) - 40, 0, 255)
    alpha[:5, :] = 0
    alpha[-5:, :] = 255
    rgba[..., 3] = alpha.astype(np.uint8)
    Image.fromarray(rgba, "RGBA").save(folder / "alpha.png")
    Image.fromarray(smooth_rgb(rng, 44, 32)[..., 1], "L").save(folder / "gray.png")
    g16 = (rng.integers(0, 600, (34, 30)) + np.mgrid[0:34, 0:30][1] * 3).astype(np.uint16)
    Image.fromarray(g16).save(folder / "gray16.png")
    rgb16 = smooth_rgb(rng, 41, 33).astype(np.uint16) * 257 + rng.integers(0, 257, (41, 33, 3)).astype(np.uint16)
    write_png16_rgb(folder / "rgb16.png", rgb16)
    Image.fromarray(smooth_rgb(rng, 130, 200)).save(folder / "big.png", optimize=True)
    Image.fromarray(smooth_rgb(rng, 38, 38)).save(folder / "rgb.webp", lossless=True)
    Image.fromarray(smooth_rgb(rng, 29, 35)).save(folder / "rgb.bmp")
    pal = Image.fromarray(smooth_rgb(rng, 27, 31)).quantize(colors=16, method=Image.Quantize.MEDIANCUT, dither=0)
    pal.save(folder / "palette.gif", transparency=3)
    # Broken inputs.
    jpg = (folder / "rgb.jpg").read_bytes()
    (folder / "truncated.jpg").write_bytes(jpg[: len(jpg) // 2])
    png = (folder / "big.png").read_bytes()
    (folder / "truncated.png").write_bytes(png[: len(png) * 3 // 5])
    Image.new("RGB", (1, 1), (200, 10, 30)).save(folder / "tiny.png")
    (folder / "not_an_image.png").write_text("this is not a PNG file\n")

    # What PIL actually decodes (checks the fixture is what it claims).
    for broken in ("truncated.jpg", "truncated.png", "not_an_image.png"):
        try:
            Image.open(folder / broken).load()
            raise AssertionError(f"PIL reads {broken}")
        except (OSError, SyntaxError):
            pass
    assert Image.open(folder / "gray16.png").mode == "I;16"
    assert Image.open(folder / "rgb16.png").mode == "RGB"
    assert (np.array(Image.open(folder / "rgb16.png")) == (rgb16 >> 8)).all()
    assert Image.open(folder / "exif6.jpg").getexif().get(0x0112) == 6
    assert Image.open(folder / "palette.gif").mode == "P"
    assert Image.open(folder / "palette.gif").info.get("transparency") == 3
    return {}


def open_like_transformers(path: Path) -> Image.Image:
    """How a caller hands a file to CLIPImageProcessor: PIL open + EXIF transpose (as
    transformers' load_image does), keeping the mode so that the processor's own
    convert_to_rgb composites alpha on white."""
    img = Image.open(path)
    img.load()
    return ImageOps.exif_transpose(img)


def decoded_rgb(img: Image.Image) -> np.ndarray:
    """The RGB8 image the (torchvision) processor starts from."""
    from transformers.image_transforms import convert_to_rgb
    return convert_to_rgb(img, return_numpy=True)


# --------------------------------------------------------------------------------------
# models
# --------------------------------------------------------------------------------------

@torch.no_grad()
def open_clip_visual_outputs(visual, pixel_values):
    """last hidden state (transformer output, before ln_post), pooled (ln_post of the class
    token, before proj) and image embeds, from open_clip's own modules."""
    x = visual._embeds(pixel_values)
    x = visual.transformer(x)
    pooled = visual.ln_post(x)[:, 0]
    embeds = pooled @ visual.proj
    return x, pooled, embeds


def main():
    torch.manual_seed(0)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    rng = np.random.default_rng(1234)

    if OUT.exists():
        shutil.rmtree(OUT)
    OUT.mkdir(parents=True)
    ref = {}

    # ---------------- tower L: transformers CLIPVisionModelWithProjection ----------------
    log("tower L (transformers)")
    l_cfg = CLIPVisionConfig(**L_CFG)
    tower_l = CLIPVisionModelWithProjection(l_cfg).eval()
    perturb(tower_l, 1)
    tower_l.save_pretrained(str(OUT / "tower-l"))
    proc_l = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    proc_l.save_pretrained(str(OUT / "tower-l"))
    keys = load_safetensors(OUT / "tower-l" / "model.safetensors").keys()
    assert all(k.startswith("vision_model.") or k == "visual_projection.weight" for k in keys), sorted(keys)
    tower_l = CLIPVisionModelWithProjection.from_pretrained(str(OUT / "tower-l")).eval()
    proc_l = CLIPImageProcessor.from_pretrained(str(OUT / "tower-l"))
    assert type(proc_l).__name__ == "CLIPImageProcessor" and proc_l.backend == "torchvision"

    pv_l = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(11))
    with torch.no_grad():
        o = tower_l(pixel_values=pv_l)
    ref.update({"l.pixel_values": pv_l, "l.image_embeds": o.image_embeds,
                "l.last_hidden_state": o.last_hidden_state,
                "l.pooled": tower_l.vision_model(pixel_values=pv_l).pooler_output})
    log(f"    L image_embeds std {o.image_embeds.std():.3f}")

    # ---------------- full CLIPModel holding the same vision tower ----------------
    log("full CLIPModel (L vision weights + a text tower)")
    full_cfg = CLIPConfig(
        text_config=dict(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, max_position_embeddings=16, projection_dim=12,
                         bos_token_id=0, eos_token_id=2, pad_token_id=1),
        vision_config={k: v for k, v in L_CFG.items() if k != "projection_dim"},
        projection_dim=12)
    full = CLIPModel(full_cfg).eval()
    perturb(full, 2)
    with torch.no_grad():
        full.vision_model.load_state_dict(tower_l.vision_model.state_dict())
        full.visual_projection.load_state_dict(tower_l.visual_projection.state_dict())
    full.save_pretrained(str(OUT / "clip-l-full"))
    # transformers 4.x files also hold the position_ids buffers (int64): add them.
    sd = load_safetensors(OUT / "clip-l-full" / "model.safetensors")
    sd["vision_model.embeddings.position_ids"] = torch.arange(65, dtype=torch.int64)[None]
    sd["text_model.embeddings.position_ids"] = torch.arange(16, dtype=torch.int64)[None]
    save_safetensors(sd, OUT / "clip-l-full" / "model.safetensors", {"format": "pt"})
    assert any(k.startswith("text_model.") for k in sd) and "logit_scale" in sd and "text_projection.weight" in sd
    full = CLIPModel.from_pretrained(str(OUT / "clip-l-full")).eval()
    with torch.no_grad():
        feats = full.get_image_features(pixel_values=pv_l)
        feats = feats.pooler_output if hasattr(feats, "pooler_output") else feats
    log(f"    full CLIPModel image features vs tower L: {assert_close(feats, ref['l.image_embeds'], 1e-6, 'full'):.2e}")

    # ---------------- tower G: open_clip VisionTransformer ----------------
    log("tower G (open_clip)")
    torch.manual_seed(3)
    oc = OpenClipModel(
        embed_dim=G_EMBED,
        vision_cfg=CLIPVisionCfg(**G_VISION),
        text_cfg=CLIPTextCfg(context_length=16, vocab_size=64, width=16, heads=2, layers=1),
        quick_gelu=False,
    ).eval()
    perturb(oc, 4)
    visual = oc.visual
    assert isinstance(visual, open_clip.transformer.VisionTransformer)
    assert isinstance(visual.transformer.resblocks[0].mlp.gelu, nn.GELU)
    assert visual.transformer.resblocks[0].attn.num_heads == G_HEADS
    gdir = OUT / "tower-g"
    gdir.mkdir()
    oc_sd = {k: v.detach().clone() for k, v in oc.state_dict().items()}
    save_safetensors(oc_sd, gdir / "open_clip_model.safetensors", {"format": "pt"})
    write_json(gdir / "open_clip_config.json", {
        "model_cfg": {"embed_dim": G_EMBED, "vision_cfg": G_VISION,
                      "text_cfg": {"context_length": 16, "vocab_size": 64, "width": 16, "heads": 2, "layers": 1}},
        "preprocess_cfg": {"mean": OPENAI_MEAN, "std": OPENAI_STD},
    })
    # The visual tower alone, keys without `visual.`, with a transformers-style config.
    fdir = OUT / "tower-g-file"
    fdir.mkdir()
    vis_sd = {k[len("visual."):]: v for k, v in oc_sd.items() if k.startswith("visual.")}
    save_safetensors(vis_sd, fdir / "visual.safetensors", {"format": "pt"})
    write_json(fdir / "config.json", {
        "architectures": ["CLIPVisionModelWithProjection"], "model_type": "clip_vision_model",
        "hidden_size": G_VISION["width"], "intermediate_size": G_MLP, "num_hidden_layers": G_VISION["layers"],
        "num_attention_heads": G_HEADS, "image_size": G_VISION["image_size"], "patch_size": G_VISION["patch_size"],
        "projection_dim": G_EMBED, "hidden_act": "gelu", "layer_norm_eps": 1e-5, "num_channels": 3})
    proc_g = CLIPImageProcessor(size={"shortest_edge": 28}, crop_size={"height": 28, "width": 28},
                                image_mean=OPENAI_MEAN, image_std=OPENAI_STD)

    pv_g = torch.randn(2, 3, 28, 28, generator=torch.Generator().manual_seed(12))
    x, pooled, embeds = open_clip_visual_outputs(visual, pv_g)
    with torch.no_grad():
        own = oc.encode_image(pv_g)
    log(f"    open_clip encode_image vs modules: {assert_close(own, embeds, 1e-6, 'encode_image'):.2e}")
    ref.update({"g.pixel_values": pv_g, "g.image_embeds": embeds, "g.pooled": pooled,
                "g.last_hidden_state": x})
    log(f"    G image_embeds std {embeds.std():.3f}")

    # ---------------- images + preprocessing ----------------
    log("images")
    img_dir = OUT / "images"
    make_images(img_dir, rng)
    proc_l_pil = CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    pil_vs_tv = {}
    for name in LOSSLESS + LOSSY:
        img = open_like_transformers(img_dir / name)
        ref[f"img.{name}.decoded"] = torch.from_numpy(decoded_rgb(img).astype(np.float32))
        for tag, proc in (("l", proc_l), ("g", proc_g)):
            pv = proc(images=img, return_tensors="pt")["pixel_values"]
            ref[f"img.{name}.{tag}.pixel_values"] = pv
            with torch.no_grad():
                if tag == "l":
                    e = tower_l(pixel_values=pv).image_embeds
                else:
                    e = open_clip_visual_outputs(visual, pv)[2]
            ref[f"img.{name}.{tag}.image_embeds"] = e
        pil_vs_tv[name] = maxdiff(proc_l_pil(images=img, return_tensors="pt")["pixel_values"],
                                  ref[f"img.{name}.l.pixel_values"])
    log("    CLIPImageProcessorPil vs CLIPImageProcessor (torchvision) pixel_values max diff:")
    for k, v in pil_vs_tv.items():
        log(f"      {k:14s} {v:.4f}")

    # Resampler cases: torchvision's uint8 bicubic antialiased resize (what the processor runs).
    for i, (h, w, oh, ow) in enumerate(RESIZE_CASES):
        arr = torch.from_numpy(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        out = tvF.resize(arr.permute(2, 0, 1).contiguous(), [oh, ow], interpolation=InterpolationMode.BICUBIC,
                         antialias=True)
        assert out.dtype == torch.uint8
        ref[f"resize.{i}.input"] = arr.float()
        ref[f"resize.{i}.output"] = out.permute(1, 2, 0).float()

    # ---------------- name encoder ----------------
    log("name encoder")
    torch.manual_seed(5)
    dims = [L_CFG["projection_dim"] + G_EMBED] + HEAD_HIDDEN + [NUM_TOKENS * TOKEN_DIM]
    layers = []
    for i in range(len(dims) - 1):
        layers.append(nn.Linear(dims[i], dims[i + 1]))
        if i < len(dims) - 2:
            layers.append(nn.GELU())
    head = nn.Sequential(*layers).eval()
    perturb(head, 6)
    edir = OUT / "encoder"
    edir.mkdir()
    head_sd = {}
    for k, v in head.state_dict().items():
        idx, param = k.split(".")
        head_sd[f"layers.{int(idx) // 2}.{param}"] = v
    save_safetensors(head_sd, edir / "head.safetensors", {"format": "magicnaming-name-head"})
    write_json(edir / "config.json", {
        "tower_l": "../tower-l", "tower_g": "../tower-g",
        "head": {"hidden_dims": HEAD_HIDDEN, "activation": "gelu"},
        "num_tokens": NUM_TOKENS, "token_dim": TOKEN_DIM,
        "image_embed_dims": [L_CFG["projection_dim"], G_EMBED]})
    names = []
    for name in NAME_IMAGES:
        emb = torch.cat([ref[f"img.{name}.l.image_embeds"], ref[f"img.{name}.g.image_embeds"]], dim=1)
        with torch.no_grad():
            pred = head(emb).reshape(NUM_TOKENS, TOKEN_DIM)
        ref[f"name.{name}"] = pred
        names.append(pred)
    with torch.no_grad():
        avg = torch.stack([ref[f"name.{n}"] for n in AVERAGE_SET]).mean(0)
    ref["name.average"] = avg
    log(f"    name std {torch.stack(names).std():.3f}")

    meta = {
        "format": "magicnaming-vision-reference",
        "lossless": json.dumps(LOSSLESS), "lossy": json.dumps(LOSSY),
        "name_images": json.dumps(NAME_IMAGES), "average_set": json.dumps(AVERAGE_SET),
        "resize_cases": json.dumps(RESIZE_CASES),
        "pil_vs_torchvision_max_diff": json.dumps(pil_vs_tv),
    }
    save_safetensors({k: v.float().contiguous() for k, v in ref.items()}, OUT / "reference.safetensors", meta)
    total = sum(p.stat().st_size for p in OUT.rglob("*") if p.is_file())
    log(f"wrote {OUT} ({total / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
