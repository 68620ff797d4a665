#!/usr/bin/env python3
"""Reference-fixture generator for the SDXL diffusion side (UNet, VAE) of MagicNaming.

Run from the repository root with the pinned venv (see tools/reference/README.md):

    python tools/reference/make_diffusion_fixtures.py

Writes tests/fixtures/diffusion/ (deleted and rewritten) and the unet/ and vae/ components of
the complete tiny SDXL folder tests/fixtures/text/tiny-sdxl/ (only those two sub-folders are
replaced; make_text_fixtures.py writes the rest, make_pipeline_fixtures.py the scheduler).
Deterministic: all random weights and inputs come from seeded torch generators; no network, no
model downloads.

Outputs
  ../text/tiny-sdxl/unet/    UNet A (SDXL-structured, 2 levels, linear projections), diffusers
                             folder: config.json + diffusion_pytorch_model.safetensors (fp32)
  ../text/tiny-sdxl/vae/     AutoencoderKL, diffusers folder (fp32, current Linear attention keys)
  tiny-unet-b/               UNet B (3 levels, conv projections, other heads / time options),
                             diffusers folder with only diffusion_pytorch_model.fp16.safetensors
  tiny-vae-legacy/           the same VAE with the old diffusers attention names
                             (query/key/value/proj_attn), fp32
  tiny-unet-b-single.safetensors single-file checkpoint holding UNet B only (fp16)
  reference_unet_a.safetensors, reference_unet_b.safetensors, reference_vae.safetensors
                             float32 inputs and outputs
  sdxl_keys.json             parameter names/shapes of the real SDXL base UNet and VAE (built on
                             the meta device from the preset configs), in diffusers and LDM layout

The single-file checkpoint holding UNet A and the VAE (LDM keys) is the full SDXL checkpoint
tests/fixtures/pipeline/tiny-sdxl-single.safetensors, built from these folders by
make_pipeline_fixtures.py (with unet_to_ldm / vae_to_ldm below).

Every weight is perturbed (norms and biases included) and then rounded to float16-representable
values, so the fp32 folders, the fp16 variant and the fp16 single files hold exactly the same
numbers and one reference serves every format.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import torch
import torch.nn as nn
from safetensors import safe_open
from safetensors.torch import save_file

from diffusers import AutoencoderKL, UNet2DConditionModel
from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint, convert_ldm_vae_checkpoint

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "tests" / "fixtures" / "diffusion"
# UNet A and the VAE are components of the complete tiny SDXL folder (text fixture "tiny-sdxl").
SDXL_DIR = ROOT / "tests" / "fixtures" / "text" / "tiny-sdxl"
UNET_A_DIR = SDXL_DIR / "unet"
VAE_DIR = SDXL_DIR / "vae"

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."

# UNet A: SDXL structure (DownBlock2D first, text_time conditioning, linear projections) at tiny
# widths; D = 40 and P = 20 match the text-stack fixture "tiny-sdxl".
UNET_A = dict(
    sample_size=8,
    in_channels=4,
    out_channels=4,
    down_block_types=["DownBlock2D", "CrossAttnDownBlock2D"],
    up_block_types=["CrossAttnUpBlock2D", "UpBlock2D"],
    block_out_channels=[16, 32],
    layers_per_block=2,
    transformer_layers_per_block=[1, 2],
    attention_head_dim=[2, 4],
    norm_num_groups=8,
    norm_eps=1e-5,
    cross_attention_dim=40,
    use_linear_projection=True,
    addition_embed_type="text_time",
    addition_time_embed_dim=8,
    projection_class_embeddings_input_dim=6 * 8 + 20,
    flip_sin_to_cos=True,
    freq_shift=0,
    upcast_attention=False,
)

# UNet B: another shape to prove config-driven building: 3 levels (SD-1.5-like block order),
# conv 1x1 projections, per-level heads [2, 4, 8] (mid block head_dim 6), int
# transformer_layers_per_block, sin-then-cos embeddings with freq_shift 1, eps 1e-6.
# D = 48 and P = 12 match the text-stack fixture config B.
UNET_B = dict(
    sample_size=8,
    in_channels=4,
    out_channels=4,
    down_block_types=["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    up_block_types=["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
    block_out_channels=[16, 32, 48],
    layers_per_block=1,
    transformer_layers_per_block=1,
    attention_head_dim=[2, 4, 8],
    norm_num_groups=8,
    norm_eps=1e-6,
    cross_attention_dim=48,
    use_linear_projection=False,
    addition_embed_type="text_time",
    addition_time_embed_dim=4,
    projection_class_embeddings_input_dim=6 * 4 + 12,
    flip_sin_to_cos=False,
    freq_shift=1,
    upcast_attention=True,
)

VAE = dict(
    in_channels=3,
    out_channels=3,
    down_block_types=["DownEncoderBlock2D"] * 3,
    up_block_types=["UpDecoderBlock2D"] * 3,
    block_out_channels=[8, 16, 16],
    layers_per_block=2,
    latent_channels=4,
    norm_num_groups=4,
    sample_size=64,
    scaling_factor=0.13025,
    force_upcast=True,
)

# stabilityai/stable-diffusion-xl-base-1.0 unet/config.json and vae/config.json
SDXL_UNET = dict(
    act_fn="silu", addition_embed_type="text_time", addition_embed_type_num_heads=64,
    addition_time_embed_dim=256, attention_head_dim=[5, 10, 20], block_out_channels=[320, 640, 1280],
    center_input_sample=False, class_embed_type=None, class_embeddings_concat=False, conv_in_kernel=3,
    conv_out_kernel=3, cross_attention_dim=2048, cross_attention_norm=None,
    down_block_types=["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"], downsample_padding=1,
    dual_cross_attention=False, encoder_hid_dim=None, encoder_hid_dim_type=None, flip_sin_to_cos=True,
    freq_shift=0, in_channels=4, layers_per_block=2, mid_block_only_cross_attention=None,
    mid_block_scale_factor=1, mid_block_type="UNetMidBlock2DCrossAttn", norm_eps=1e-05, norm_num_groups=32,
    num_attention_heads=None, num_class_embeds=None, only_cross_attention=False, out_channels=4,
    projection_class_embeddings_input_dim=2816, resnet_out_scale_factor=1.0, resnet_skip_time_act=False,
    resnet_time_scale_shift="default", sample_size=128, time_cond_proj_dim=None, time_embedding_act_fn=None,
    time_embedding_dim=None, time_embedding_type="positional", timestep_post_act=None,
    transformer_layers_per_block=[1, 2, 10],
    up_block_types=["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"], upcast_attention=None,
    use_linear_projection=True,
)
SDXL_VAE = dict(
    act_fn="silu", block_out_channels=[128, 256, 512, 512], down_block_types=["DownEncoderBlock2D"] * 4,
    force_upcast=True, in_channels=3, latent_channels=4, layers_per_block=2, norm_num_groups=32,
    out_channels=3, sample_size=1024, scaling_factor=0.13025, up_block_types=["UpDecoderBlock2D"] * 4,
)


def log(*a):
    print(*a, flush=True)


# --------------------------------------------------------------------------------------
# weights
# --------------------------------------------------------------------------------------

@torch.no_grad()
def perturb(model: nn.Module, seed: int):
    """Every tensor distinct and non-trivial: norm weights 1 + N(0, 0.2^2), norm biases N(0, 0.1^2),
    other biases += N(0, 0.05^2), other weights += 0.5 std N(0, 1). Then everything is rounded to
    float16-representable values (fp32 and fp16 files then hold the same numbers)."""
    g = torch.Generator().manual_seed(seed)
    norm_params = set()
    for mname, m in model.named_modules():
        if isinstance(m, (nn.GroupNorm, nn.LayerNorm)):
            for pname, _ in m.named_parameters(recurse=False):
                norm_params.add(f"{mname}.{pname}")
    for name, p in sorted(model.named_parameters()):
        noise = torch.randn(p.shape, generator=g, dtype=torch.float32)
        if name in norm_params:
            p.copy_(1.0 + 0.2 * noise if name.endswith("weight") else 0.1 * noise)
        elif name.endswith("bias"):
            p.add_(0.05 * noise)
        else:
            std = float(p.detach().float().std())
            p.add_(0.5 * std * noise)
        p.copy_(p.half().float())


def save_safetensors(tensors: dict, path: Path, metadata: dict | None = None):
    """safetensors.save_file, with the header's __metadata__ keys sorted (the writer orders them
    randomly), so reruns give identical bytes."""
    save_file(tensors, str(path), metadata=metadata)
    if metadata:
        with open(path, "r+b") as f:
            n = int.from_bytes(f.read(8), "little")
            raw = f.read(n)
            header = json.loads(raw)
            meta = header.pop("__metadata__")
            fixed = {"__metadata__": dict(sorted(meta.items())), **header}
            out = json.dumps(fixed, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
            out = out + b" " * (n - len(out))
            assert len(out) == n and json.loads(out) == json.loads(raw), path
            f.seek(8)
            f.write(out)
    with safe_open(str(path), "pt") as f:
        for k, v in tensors.items():
            assert torch.equal(f.get_tensor(k), v), k


def load_safetensors(path: Path) -> dict:
    with safe_open(str(path), "pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}


def write_json(path: Path, obj):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=1, ensure_ascii=False)
        f.write("\n")


def assert_same_state(a: dict, b: dict, what: str):
    assert sorted(a) == sorted(b), (what, sorted(set(a) ^ set(b))[:10])
    for k in a:
        assert a[k].shape == b[k].shape, (what, k, a[k].shape, b[k].shape)
        if a[k].device.type != "meta":
            assert torch.equal(a[k].float(), b[k].float()), (what, k)


def stats_ok(name: str, t: torch.Tensor):
    s = t.float().std().item()
    log(f"    {name:28s} shape={tuple(t.shape)} std={s:.4f} absmax={t.abs().max().item():.4f}")
    assert 0.05 < s < 20, f"{name}: std {s} out of range"


# --------------------------------------------------------------------------------------
# diffusers -> LDM (inverse of diffusers' convert_ldm_unet_checkpoint / convert_ldm_vae_checkpoint)
# --------------------------------------------------------------------------------------

UNET_RESNET_TO_LDM = [
    ("norm1.", "in_layers.0."), ("conv1.", "in_layers.2."), ("norm2.", "out_layers.0."),
    ("conv2.", "out_layers.3."), ("time_emb_proj.", "emb_layers.1."), ("conv_shortcut.", "skip_connection."),
]


def as_list(v, n):
    return list(v) if isinstance(v, (list, tuple)) else [v] * n


def unet_to_ldm(sd: dict, config: dict) -> dict:
    levels = len(config["block_out_channels"])
    lpb = as_list(config["layers_per_block"], levels)
    assert len(set(lpb)) == 1, "diffusers' converter only supports an int layers_per_block"
    lpb = lpb[0]
    fixed = {
        "time_embedding.linear_1.": "time_embed.0.", "time_embedding.linear_2.": "time_embed.2.",
        "add_embedding.linear_1.": "label_emb.0.0.", "add_embedding.linear_2.": "label_emb.0.2.",
        "conv_in.": "input_blocks.0.0.", "conv_norm_out.": "out.0.", "conv_out.": "out.2.",
    }
    up_has_attn = ["CrossAttn" in t for t in config["up_block_types"]]
    out = {}

    def resnet(rest):
        for a, b in UNET_RESNET_TO_LDM:
            if rest.startswith(a):
                return b + rest[len(a):]
        raise KeyError(rest)

    for k, v in sd.items():
        parts = k.split(".")
        new = None
        for a, b in fixed.items():
            if k.startswith(a):
                new = b + k[len(a):]
        if new is None and parts[0] == "down_blocks":
            b, kind, j, rest = int(parts[1]), parts[2], int(parts[3]), ".".join(parts[4:])
            base = 1 + b * (lpb + 1)
            if kind == "resnets":
                new = f"input_blocks.{base + j}.0.{resnet(rest)}"
            elif kind == "attentions":
                new = f"input_blocks.{base + j}.1.{rest}"
            elif kind == "downsamplers":
                assert rest.startswith("conv."), k
                new = f"input_blocks.{base + lpb}.0.op.{rest[len('conv.'):]}"
        elif new is None and parts[0] == "mid_block":
            kind, j, rest = parts[1], int(parts[2]), ".".join(parts[3:])
            if kind == "resnets":
                new = f"middle_block.{2 * j}.{resnet(rest)}"
            else:
                new = f"middle_block.1.{rest}"
        elif new is None and parts[0] == "up_blocks":
            b, kind, j, rest = int(parts[1]), parts[2], int(parts[3]), ".".join(parts[4:])
            base = b * (lpb + 1)
            if kind == "resnets":
                new = f"output_blocks.{base + j}.0.{resnet(rest)}"
            elif kind == "attentions":
                new = f"output_blocks.{base + j}.1.{rest}"
            elif kind == "upsamplers":
                slot = 2 if up_has_attn[b] else 1
                new = f"output_blocks.{base + lpb}.{slot}.{rest}"
        assert new is not None, k
        assert new not in out, (k, new)
        out[new] = v
    return out


def vae_to_ldm(sd: dict, config: dict, conv_attention: bool = True) -> dict:
    n = len(config["block_out_channels"])
    out = {}
    attn = {"group_norm.": "norm.", "to_q.": "q.", "to_k.": "k.", "to_v.": "v.", "to_out.0.": "proj_out."}
    for k, v in sd.items():
        coder, rest = k.split(".", 1)
        parts = rest.split(".")
        if rest.startswith("conv_norm_out."):
            new = f"{coder}.norm_out.{rest[len('conv_norm_out.'):]}"
        elif parts[0] in ("down_blocks", "up_blocks"):
            i = int(parts[1])
            li = i if parts[0] == "down_blocks" else n - 1 - i
            word = "down" if parts[0] == "down_blocks" else "up"
            tail = ".".join(parts[4:])
            if parts[2] == "resnets":
                tail = tail.replace("conv_shortcut", "nin_shortcut")
                new = f"{coder}.{word}.{li}.block.{parts[3]}.{tail}"
            else:  # downsamplers.0.conv / upsamplers.0.conv
                new = f"{coder}.{word}.{li}.{'downsample' if word == 'down' else 'upsample'}.{tail}"
        elif parts[0] == "mid_block":
            if parts[1] == "resnets":
                new = f"{coder}.mid.block_{int(parts[2]) + 1}.{'.'.join(parts[3:])}"
            else:
                tail = ".".join(parts[3:])
                for a, b in attn.items():
                    if tail.startswith(a):
                        tail = b + tail[len(a):]
                        break
                else:
                    raise KeyError(k)
                new = f"{coder}.mid.attn_1.{tail}"
                if conv_attention and v.ndim == 2:
                    v = v[:, :, None, None]  # LDM stores q/k/v/proj_out as 1x1 convolutions
        else:
            new = k  # conv_in, conv_out, quant_conv, post_quant_conv
        if coder in ("quant_conv", "post_quant_conv"):
            new = k
        assert new not in out, (k, new)
        out[new] = v
    return out


def legacy_vae_names(sd: dict) -> dict:
    """Current diffusers VAE keys -> the old AttentionBlock names (query/key/value/proj_attn)."""
    ren = {"to_q.": "query.", "to_k.": "key.", "to_v.": "value.", "to_out.0.": "proj_attn."}
    out = {}
    for k, v in sd.items():
        new = k
        if ".attentions." in k:
            head, tail = k.rsplit(".attentions.0.", 1)
            for a, b in ren.items():
                if tail.startswith(a):
                    tail = b + tail[len(a):]
            new = f"{head}.attentions.0.{tail}"
        out[new] = v
    return out


# --------------------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------------------

def make_unet(cfg: dict, seed: int) -> UNet2DConditionModel:
    torch.manual_seed(seed)
    m = UNet2DConditionModel(**cfg).eval()
    perturb(m, seed + 1000)
    return m


def unet_refs(unet, sample, ehs, text_embeds, time_ids, timesteps):
    ref = {"sample": sample, "encoder_hidden_states": ehs, "text_embeds": text_embeds, "time_ids": time_ids}
    with torch.no_grad():
        for i, t in enumerate(timesteps):
            cond = {"text_embeds": text_embeds, "time_ids": time_ids}
            out = unet(sample, t, encoder_hidden_states=ehs, added_cond_kwargs=cond, return_dict=False)[0]
            ref[f"out.{i}"] = out.contiguous()
            if torch.is_tensor(t):
                ref[f"timestep.{i}"] = t.float().contiguous()
            else:
                ref[f"timestep.{i}"] = torch.tensor([float(t)])
            tt = t if torch.is_tensor(t) else torch.tensor([float(t)]).expand(sample.shape[0])
            ref[f"t_emb.{i}"] = unet.time_proj(tt).contiguous()
            stats_ok(f"out.{i}", out)
        ref["add_time_emb"] = unet.add_time_proj(time_ids.flatten()).reshape(time_ids.shape[0], -1).contiguous()
    return ref


def check_unet_single_file(path: Path, folder: Path, sd: dict, cfg: dict, ref: dict, timesteps):
    """diffusers' own single-file loading of our LDM file reproduces the folder's model."""
    ckpt = load_safetensors(path)
    conv = convert_ldm_unet_checkpoint({k: v.float() for k, v in ckpt.items()}, dict(cfg))
    assert_same_state(conv, sd, f"convert_ldm_unet_checkpoint({path.name})")
    m = UNet2DConditionModel.from_single_file(str(path), config=str(folder), local_files_only=True,
                                              low_cpu_mem_usage=False, torch_dtype=torch.float32).eval()
    assert_same_state(m.state_dict(), sd, f"from_single_file({path.name})")
    with torch.no_grad():
        out = m(ref["sample"], timesteps[0], encoder_hidden_states=ref["encoder_hidden_states"],
                added_cond_kwargs={"text_embeds": ref["text_embeds"], "time_ids": ref["time_ids"]},
                return_dict=False)[0]
    assert torch.equal(out, ref["out.0"]), path


def main():
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    for d in (OUT, UNET_A_DIR, VAE_DIR):
        if d.exists():
            shutil.rmtree(d)
    OUT.mkdir(parents=True)

    # ---------------- UNet A ----------------
    log("UNet A")
    unet_a = make_unet(UNET_A, 11)
    dir_a = UNET_A_DIR
    unet_a.save_pretrained(str(dir_a), safe_serialization=True)
    assert sorted(p.name for p in dir_a.iterdir()) == ["config.json", "diffusion_pytorch_model.safetensors"]
    sd_a = load_safetensors(dir_a / "diffusion_pytorch_model.safetensors")
    assert all(v.dtype == torch.float32 for v in sd_a.values())
    unet_a = UNet2DConditionModel.from_pretrained(str(dir_a)).eval()  # reload through diffusers
    assert_same_state(unet_a.state_dict(), sd_a, "tiny-sdxl/unet reload")
    g = torch.Generator().manual_seed(21)
    sample = torch.randn(2, 4, 6, 8, generator=g)
    ehs = torch.randn(2, 77, 40, generator=g)
    text_embeds = torch.randn(2, 20, generator=g)
    time_ids = torch.tensor([[1024.0, 1024.0, 0.0, 0.0, 1024.0, 1024.0],
                             [768.0, 1344.0, 16.0, 32.0, 832.0, 1216.0]])
    timesteps_a = [500.0, torch.tensor([999.0, 21.0])]
    ref_a = unet_refs(unet_a, sample, ehs, text_embeds, time_ids, timesteps_a)

    # ---------------- UNet B ----------------
    log("UNet B")
    unet_b = make_unet(UNET_B, 12)
    dir_b = OUT / "tiny-unet-b"
    unet_b.half().save_pretrained(str(dir_b), safe_serialization=True, variant="fp16")
    assert sorted(p.name for p in dir_b.iterdir()) == ["config.json", "diffusion_pytorch_model.fp16.safetensors"]
    sd_b16 = load_safetensors(dir_b / "diffusion_pytorch_model.fp16.safetensors")
    assert all(v.dtype == torch.float16 for v in sd_b16.values())
    sd_b = {k: v.float() for k, v in sd_b16.items()}
    unet_b = UNet2DConditionModel.from_pretrained(str(dir_b), variant="fp16", torch_dtype=torch.float32).eval()
    assert_same_state(unet_b.state_dict(), sd_b, "tiny-unet-b reload")
    assert unet_b.dtype == torch.float32
    g = torch.Generator().manual_seed(22)
    # 6 x 10 is not divisible by 2^2: exercises the explicit upsample sizes (3 -> 5 -> 10)
    sample_b = torch.randn(1, 4, 6, 10, generator=g)
    ehs_b = torch.randn(1, 77, 48, generator=g)
    text_b = torch.randn(1, 12, generator=g)
    time_ids_b = torch.tensor([[896.0, 1152.0, 8.0, 24.0, 896.0, 1152.0]])
    timesteps_b = [37.0, torch.tensor([640.0])]
    ref_b = unet_refs(unet_b, sample_b, ehs_b, text_b, time_ids_b, timesteps_b)

    # ---------------- VAE ----------------
    log("VAE")
    torch.manual_seed(13)
    vae = AutoencoderKL(**VAE).eval()
    perturb(vae, 1013)
    dir_v = VAE_DIR
    vae.save_pretrained(str(dir_v), safe_serialization=True)
    sd_v = load_safetensors(dir_v / "diffusion_pytorch_model.safetensors")
    vae = AutoencoderKL.from_pretrained(str(dir_v)).eval()
    assert_same_state(vae.state_dict(), sd_v, "tiny-sdxl/vae reload")
    # old attention names: diffusers still loads them (ModelMixin._fix_state_dict_keys_on_load)
    dir_vl = OUT / "tiny-vae-legacy"
    dir_vl.mkdir()
    shutil.copy(dir_v / "config.json", dir_vl / "config.json")
    legacy = legacy_vae_names(sd_v)
    assert sum(".query." in k or ".proj_attn." in k for k in legacy) == 8
    save_safetensors(legacy, dir_vl / "diffusion_pytorch_model.safetensors", {"format": "pt"})
    vae_l = AutoencoderKL.from_pretrained(str(dir_vl)).eval()
    assert_same_state(vae_l.state_dict(), sd_v, "tiny-vae-legacy via diffusers")

    g = torch.Generator().manual_seed(23)
    latents = torch.randn(1, 4, 6, 8, generator=g)
    image = torch.rand(1, 3, 48, 64, generator=g) * 2 - 1
    with torch.no_grad():
        decoded = vae.decode(latents, return_dict=False)[0]
        dist = vae.encode(image).latent_dist
        noise = torch.randn(dist.mean.shape, generator=g)
        sampled = dist.mean + dist.std * noise
    ref_v = {"latents": latents, "decoded": decoded.contiguous(), "image": image,
             "mean": dist.mean.contiguous(), "std": dist.std.contiguous(),
             "noise": noise, "sampled": sampled.contiguous()}
    for k in ("decoded", "mean", "std", "sampled"):
        stats_ok(k, ref_v[k])

    # ---------------- single files (LDM layout, fp16) ----------------
    log("single files")
    ldm_b = {UNET_PREFIX + k: v.half().contiguous() for k, v in unet_to_ldm(sd_b, UNET_B).items()}
    single_b = OUT / "tiny-unet-b-single.safetensors"
    save_safetensors(ldm_b, single_b, {"format": "pt"})
    check_unet_single_file(single_b, dir_b, sd_b, UNET_B, ref_b, timesteps_b)

    # ---------------- references ----------------
    meta = lambda c: {"config": json.dumps(c, sort_keys=True), "diffusers": "0.42.1"}  # noqa: E731
    save_safetensors({k: v.contiguous() for k, v in ref_a.items()}, OUT / "reference_unet_a.safetensors", meta(UNET_A))
    save_safetensors({k: v.contiguous() for k, v in ref_b.items()}, OUT / "reference_unet_b.safetensors", meta(UNET_B))
    save_safetensors(ref_v, OUT / "reference_vae.safetensors", meta(VAE))

    # ---------------- SDXL base key lists (meta device, no weights) ----------------
    log("SDXL key lists")
    with torch.device("meta"):
        sdxl_unet = UNet2DConditionModel(**SDXL_UNET)
        sdxl_vae = AutoencoderKL(**SDXL_VAE)
    usd, vsd = sdxl_unet.state_dict(), sdxl_vae.state_dict()
    uldm = unet_to_ldm(usd, SDXL_UNET)
    vldm = vae_to_ldm(vsd, SDXL_VAE)
    assert_same_state(convert_ldm_unet_checkpoint({UNET_PREFIX + k: v for k, v in uldm.items()}, SDXL_UNET),
                      usd, "SDXL unet key round trip")
    assert_same_state(convert_ldm_vae_checkpoint({VAE_PREFIX + k: v for k, v in vldm.items()}, SDXL_VAE),
                      vsd, "SDXL vae key round trip")
    n_unet = sum(v.numel() for v in usd.values())
    log(f"  SDXL UNet: {len(usd)} tensors, {n_unet / 1e9:.3f} B parameters; VAE: {len(vsd)} tensors")
    shapes = lambda d: {k: list(v.shape) for k, v in sorted(d.items())}  # noqa: E731
    write_json(OUT / "sdxl_keys.json", {
        "source": "stabilityai/stable-diffusion-xl-base-1.0 unet/config.json and vae/config.json, "
                  "diffusers 0.42.1 on the meta device",
        "unet_parameters": n_unet,
        "unet": shapes(usd), "unet_ldm": shapes(uldm), "vae": shapes(vsd), "vae_ldm": shapes(vldm),
    })

    for d in (OUT, UNET_A_DIR, VAE_DIR):
        for p in d.rglob("*"):
            if p.is_file():
                p.chmod(0o644)  # safetensors writes 0600
    total = sum(p.stat().st_size for d in (OUT, UNET_A_DIR, VAE_DIR) for p in d.rglob("*") if p.is_file())
    log(f"total {total / 1e6:.2f} MB")
    assert total < 10e6


if __name__ == "__main__":
    sys.exit(main())
