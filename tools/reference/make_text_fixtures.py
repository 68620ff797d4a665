#!/usr/bin/env python3
"""Reference-fixture generator for the SDXL text-encoder side of MagicNaming.

Run from the repository root with the pinned venv (see tools/reference/README.md):

    python tools/reference/make_text_fixtures.py

Writes everything to tests/fixtures/text/ (overwriting), except tiny-sdxl/unet/, tiny-sdxl/vae/
(written by make_diffusion_fixtures.py) and tiny-sdxl/scheduler/ (make_pipeline_fixtures.py),
which it leaves alone. Deterministic: all random weights come from seeded torch generators; no
network, no model downloads.

Outputs
  tiny-sdxl/                       config A: diffusers folder (tokenizers + two text encoders +
                                   the full model_index.json of the complete SDXL folder)
  tiny-sdxl-b.safetensors          config B: single-file SDXL checkpoint (sgm key layout)
  tiny-sdxl-b-config/              config B: diffusers-style configs, no weights / tokenizers
  prompts.json, tokens.json        inputs and the token ids fed to the encoders
  reference_a.safetensors          float32 reference outputs for config A
  reference_b.safetensors          float32 reference outputs for config B
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import sys
from pathlib import Path

import torch
import torch.nn as nn

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import open_clip  # noqa: E402
from open_clip.tokenizer import bytes_to_unicode, default_bpe  # noqa: E402
from open_clip.transformer import TextTransformer  # noqa: E402
from safetensors import safe_open  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from transformers import (  # noqa: E402
    CLIPTextConfig,
    CLIPTextModel,
    CLIPTextModelWithProjection,
    CLIPTokenizer,
)
from diffusers import StableDiffusionXLPipeline  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "tests" / "fixtures" / "text"
MAX_LEN = 77
VOCAB = 49408

PROMPTS = [
    "a photo of a person",
    "",
    "Café crème à la façon de Zoë, naïve résumé",
    "東京の夜景 写真 😀🎉 emoji!!",
    "wait...what?!?! ---- (((best quality))) [x] {y}",
    "  multiple   spaces\tand\nnewlines  ",
    "year 2024, 3.14159, 1,000,000 and 42nd street",
    "Barack Obama",
    "a very detailed portrait, " * 20,
]
NAMES = ["Barack Obama", "Zoë Saldaña", "Jet Li"]
NAME_LEN = 8  # name text-coding: prompt_embeds positions 1..=8

# SDXL base legacy token ids in the text-encoder configs.
TOKEN_IDS = dict(bos_token_id=0, eos_token_id=2, pad_token_id=1)

# Config A
A_TE1 = dict(hidden_size=16, intermediate_size=37, num_hidden_layers=3, num_attention_heads=2,
             hidden_act="quick_gelu", projection_dim=768)
A_TE2 = dict(hidden_size=24, intermediate_size=48, num_hidden_layers=4, num_attention_heads=3,
             hidden_act="gelu", projection_dim=20)
# Config B
B_TE1 = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
             hidden_act="quick_gelu", projection_dim=768)
B_TE2_WIDTH, B_TE2_HEADS, B_TE2_LAYERS, B_TE2_MLP_RATIO, B_TE2_PROJ = 16, 2, 2, 4.0, 12

B_PREFIX_TE1 = "conditioner.embedders.0.transformer.text_model."
B_PREFIX_TE2 = "conditioner.embedders.1.model."


def log(*a):
    print(*a, flush=True)


# --------------------------------------------------------------------------------------
# 1. tokenizer files
# --------------------------------------------------------------------------------------

def clip_vocab_and_merges():
    """vocab.json / merges.txt exactly as openai/clip-vit-large-patch14 ships them,
    reconstructed from open_clip's bpe_simple_vocab_16e6.txt.gz (SimpleTokenizer logic)."""
    lines = gzip.open(default_bpe()).read().decode("utf-8").split("\n")
    merges = lines[1:49152 - 256 - 2 + 1]
    vocab = list(bytes_to_unicode().values())
    vocab = vocab + [v + "</w>" for v in vocab]
    for m in merges:
        vocab.append("".join(m.split()))
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    assert len(vocab) == VOCAB and len(set(vocab)) == VOCAB, len(vocab)
    assert len(merges) == 48894
    return {tok: i for i, tok in enumerate(vocab)}, merges


def write_tokenizer(folder: Path, vocab: dict, merges: list, pad_token: str) -> CLIPTokenizer:
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "vocab.json", "w", encoding="utf-8") as f:
        json.dump(vocab, f, ensure_ascii=False)
    with open(folder / "merges.txt", "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n" + "\n".join(merges) + "\n")
    # transformers 5: CLIPTokenizer(vocab_file=..., merges_file=...) silently ignores the
    # files; from_pretrained on a folder holding vocab.json + merges.txt reads them.
    tok = CLIPTokenizer.from_pretrained(str(folder), pad_token=pad_token, model_max_length=MAX_LEN)
    tok.save_pretrained(str(folder))  # writes tokenizer.json + tokenizer_config.json
    cfg_path = folder / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    for k in ("is_local", "local_files_only"):  # from_pretrained bookkeeping, not tokenizer config
        cfg.pop(k, None)
    write_json(cfg_path, cfg)
    # transformers 5 no longer writes special_tokens_map.json; write the classic one.
    special = {
        "bos_token": "<|startoftext|>",
        "eos_token": "<|endoftext|>",
        "pad_token": pad_token,
        "unk_token": "<|endoftext|>",
    }
    with open(folder / "special_tokens_map.json", "w", encoding="utf-8") as f:
        json.dump(special, f, indent=2)
        f.write("\n")
    # Reload from the folder (tokenizer.json) and from vocab.json + merges.txt only: must agree.
    tok_saved = CLIPTokenizer.from_pretrained(str(folder))
    tmp = folder.parent / (folder.name + ".__tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    for fn in ("vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(folder / fn, tmp / fn)
    tok_files = CLIPTokenizer.from_pretrained(str(tmp))
    shutil.rmtree(tmp)
    for t in (tok_saved, tok_files):
        assert t.pad_token == pad_token and t.model_max_length == MAX_LEN, (t.pad_token, t.model_max_length)
        for p in PROMPTS + NAMES:
            assert tok_ids(t, p) == tok_ids(tok, p), (folder, p)
    return tok_saved


def tok_ids(tok, text):
    return tok(text, padding="max_length", max_length=MAX_LEN, truncation=True).input_ids


# --------------------------------------------------------------------------------------
# weights
# --------------------------------------------------------------------------------------

def is_norm(name: str) -> bool:
    return "layer_norm" in name or ".ln_" in name or name.startswith("ln_")


@torch.no_grad()
def perturb(model: nn.Module, seed: int):
    """Make every tensor distinct and non-trivial (LayerNorms != 1/0, biases != 0)."""
    g = torch.Generator().manual_seed(seed)
    for name, p in sorted(model.named_parameters()):
        noise = torch.randn(p.shape, generator=g, dtype=torch.float32)
        if is_norm(name):
            if name.endswith("weight"):
                p.copy_(1.0 + 0.2 * noise)
            else:
                p.copy_(0.1 * noise)
        elif name.endswith("bias"):
            p.add_(0.05 * noise)
        elif "embedding" in name:
            # token/position embeddings: std ~0.1 so the first LN sees a real signal
            p.copy_(0.1 * noise + 0.5 * p)
        else:
            std = float(p.detach().float().std())
            p.add_(0.5 * std * noise)


@torch.no_grad()
def round_to_fp16_values(model: nn.Module):
    """Rounds every parameter to the nearest float16-representable value (kept in float32)."""
    for p in model.parameters():
        p.copy_(p.half().float())


def text_config(**kw) -> CLIPTextConfig:
    return CLIPTextConfig(vocab_size=VOCAB, max_position_embeddings=MAX_LEN, layer_norm_eps=1e-5,
                          attention_dropout=0.0, dropout=0.0, **TOKEN_IDS, **kw)


def save_safetensors(tensors: dict, path: Path, metadata: dict):
    """safetensors.save_file, then make the header byte-deterministic: the Rust writer serialises
    __metadata__ from a HashMap, so its key order changes from run to run. Re-emit the same JSON
    with sorted metadata keys (same length, so tensor offsets are untouched)."""
    save_file(tensors, str(path), metadata=metadata)
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
    with safe_open(str(path), "pt") as f:  # validate
        assert f.metadata() == metadata
        for k, v in tensors.items():
            assert torch.equal(f.get_tensor(k), v), k


def load_safetensors(path: Path):
    out = {}
    with safe_open(str(path), "pt") as f:
        for k in f.keys():
            out[k] = f.get_tensor(k)
    return out


def assert_close(a, b, tol, what):
    d = (a.float() - b.float()).abs().max().item()
    assert d <= tol, f"{what}: max abs diff {d} > {tol}"
    return d


def stats(name, t):
    log(f"    {name:28s} shape={tuple(t.shape)} std={t.float().std().item():.4f} "
        f"absmax={t.float().abs().max().item():.4f}")


# --------------------------------------------------------------------------------------
# HF encoder helpers
# --------------------------------------------------------------------------------------

@torch.no_grad()
def run_hf(model, ids):
    """Returns dict of all outputs of a transformers CLIP text model for one id row."""
    x = torch.tensor([ids], dtype=torch.long)
    o = model(x, output_hidden_states=True)
    hs = torch.cat(list(o.hidden_states), dim=0)  # [L+1, 77, H]
    r = {"hidden_states": hs}
    if isinstance(model, CLIPTextModelWithProjection):
        r["text_embeds"] = o.text_embeds
        r["last_hidden_state"] = o.last_hidden_state
    else:
        r["last_hidden_state"] = o.last_hidden_state
        r["pooled"] = o.pooler_output
    return r


# --------------------------------------------------------------------------------------
# open_clip encoder (config B, encoder 2)
# --------------------------------------------------------------------------------------

@torch.no_grad()
def run_open_clip_sdxl(model: TextTransformer, ids):
    """What sgm's FrozenOpenCLIPEmbedder2(layer="penultimate", always_return_pooled=True) does,
    plus every intermediate hidden state."""
    text = torch.tensor([ids], dtype=torch.long)
    x = model.token_embedding(text)
    x = x + model.positional_embedding
    states = [x]
    for blk in model.transformer.resblocks:
        x = blk(x, attn_mask=model.attn_mask)
        states.append(x)
    penultimate = states[-2]
    o = model.ln_final(states[-1])
    pooled = o[torch.arange(o.shape[0]), text.argmax(dim=-1)] @ model.text_projection
    # cross-check against open_clip's own forward
    pooled_oc = model(text)
    assert_close(pooled, pooled_oc, 1e-6, "open_clip pooled vs forward()")
    return {"hidden_states": torch.cat(states, 0), "penultimate": penultimate, "text_embeds": pooled}


def open_clip_to_hf(sd: dict, layers: int) -> dict:
    """open_clip text tower state dict -> transformers CLIPTextModelWithProjection state dict.
    (The mapping the Rust loader implements for conditioner.embedders.1.model.*)"""
    hf = {
        "text_model.embeddings.token_embedding.weight": sd["token_embedding.weight"],
        "text_model.embeddings.position_embedding.weight": sd["positional_embedding"],
        "text_model.final_layer_norm.weight": sd["ln_final.weight"],
        "text_model.final_layer_norm.bias": sd["ln_final.bias"],
        "text_projection.weight": sd["text_projection"].t().contiguous(),
    }
    for i in range(layers):
        o = f"transformer.resblocks.{i}."
        h = f"text_model.encoder.layers.{i}."
        qw, kw, vw = sd[o + "attn.in_proj_weight"].chunk(3, dim=0)
        qb, kb, vb = sd[o + "attn.in_proj_bias"].chunk(3, dim=0)
        hf.update({
            h + "self_attn.q_proj.weight": qw, h + "self_attn.q_proj.bias": qb,
            h + "self_attn.k_proj.weight": kw, h + "self_attn.k_proj.bias": kb,
            h + "self_attn.v_proj.weight": vw, h + "self_attn.v_proj.bias": vb,
            h + "self_attn.out_proj.weight": sd[o + "attn.out_proj.weight"],
            h + "self_attn.out_proj.bias": sd[o + "attn.out_proj.bias"],
            h + "layer_norm1.weight": sd[o + "ln_1.weight"], h + "layer_norm1.bias": sd[o + "ln_1.bias"],
            h + "layer_norm2.weight": sd[o + "ln_2.weight"], h + "layer_norm2.bias": sd[o + "ln_2.bias"],
            h + "mlp.fc1.weight": sd[o + "mlp.c_fc.weight"], h + "mlp.fc1.bias": sd[o + "mlp.c_fc.bias"],
            h + "mlp.fc2.weight": sd[o + "mlp.c_proj.weight"], h + "mlp.fc2.bias": sd[o + "mlp.c_proj.bias"],
        })
    return {k: v.contiguous() for k, v in hf.items()}


# --------------------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------------------

def model_index(full: bool):
    """model_index.json. full: exactly as diffusers 0.42.1's StableDiffusionXLPipeline.save_pretrained
    writes it for the complete folder (make_pipeline_fixtures.py asserts this); otherwise the
    text-encoder part only (config B's configuration folder)."""
    index = {
        "_class_name": "StableDiffusionXLPipeline",
        "_diffusers_version": "0.42.1",
        "feature_extractor": [None, None],
        "force_zeros_for_empty_prompt": True,
        "image_encoder": [None, None],
        "scheduler": ["diffusers", "EulerDiscreteScheduler"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "text_encoder_2": ["transformers", "CLIPTextModelWithProjection"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "tokenizer_2": ["transformers", "CLIPTokenizer"],
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
    }
    if not full:
        for k in ("feature_extractor", "image_encoder", "scheduler", "unet", "vae"):
            del index[k]
    return index


# Sub-folders of tiny-sdxl/ that other scripts write (this script leaves them in place).
FOREIGN = {"unet": "make_diffusion_fixtures.py", "vae": "make_diffusion_fixtures.py",
           "scheduler": "make_pipeline_fixtures.py"}


def clear_output():
    """Deletes everything under OUT except tiny-sdxl/{unet,vae,scheduler}."""
    OUT.mkdir(parents=True, exist_ok=True)
    for p in sorted(OUT.iterdir()):
        if p.name == "tiny-sdxl" and p.is_dir():
            for q in sorted(p.iterdir()):
                if q.name not in FOREIGN:
                    shutil.rmtree(q) if q.is_dir() else q.unlink()
        else:
            shutil.rmtree(p) if p.is_dir() else p.unlink()


def write_json(path: Path, obj):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, ensure_ascii=False)
        f.write("\n")


def main():
    torch.manual_seed(0)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)

    clear_output()
    write_json(OUT / "prompts.json", {"prompts": PROMPTS, "names": NAMES})

    # ---------------- tokenizers ----------------
    log("tokenizers")
    vocab, merges = clip_vocab_and_merges()
    a_dir = OUT / "tiny-sdxl"
    tok1 = write_tokenizer(a_dir / "tokenizer", vocab, merges, pad_token="<|endoftext|>")
    tok2 = write_tokenizer(a_dir / "tokenizer_2", vocab, merges, pad_token="!")
    assert tok1.pad_token_id == 49407 and tok2.pad_token_id == 0
    oc_tok = open_clip.get_tokenizer("ViT-bigG-14")
    assert isinstance(oc_tok, open_clip.SimpleTokenizer)

    def tokenize_all(text):
        t1 = tok_ids(tok1, text)
        t2 = tok_ids(tok2, text)
        oc = open_clip.tokenize([text], context_length=MAX_LEN)[0].tolist()
        assert oc_tok([text])[0].tolist() == oc
        full = tok1(text).input_ids
        return {"text": text, "tok1": t1, "tok2": t2, "open_clip": oc, "untruncated_length": len(full)}

    disagreements = []
    tokens = {
        "max_length": MAX_LEN,
        "pad_ids": {"tok1": 49407, "tok2": 0, "open_clip": 0},
        "ids_used": {
            "reference_a": {"text_encoder": "tok1", "text_encoder_2": "tok2"},
            "reference_b": {"conditioner.embedders.0": "tok1", "conditioner.embedders.1": "open_clip"},
        },
        "prompts": [],
        "names": [],
        "disagreements": disagreements,
    }
    for kind, texts in (("prompts", PROMPTS), ("names", NAMES)):
        for i, text in enumerate(texts):
            e = tokenize_all(text)
            tokens[kind].append(e)
            # non-padding ids: everything up to and including the first EOT
            def unpadded(ids):
                return ids[: ids.index(49407) + 1]
            u1, u2, uo = unpadded(e["tok1"]), unpadded(e["tok2"]), unpadded(e["open_clip"])
            if not (u1 == u2 == uo):
                disagreements.append({"kind": kind, "index": i, "text": text,
                                      "tok1": u1, "tok2": u2, "open_clip": uo})
            # padding as expected
            assert all(t == 49407 for t in e["tok1"][len(u1):])
            assert all(t == 0 for t in e["tok2"][len(u2):])
            assert all(t == 0 for t in e["open_clip"][len(uo):])
    write_json(OUT / "tokens.json", tokens)
    log(f"  tokenizer disagreements: {len(disagreements)}")
    for d in disagreements:
        log("   ", json.dumps(d, ensure_ascii=False))

    # ---------------- config A ----------------
    log("config A")
    write_json(a_dir / "model_index.json", model_index(full=True))
    torch.manual_seed(1)
    te1 = CLIPTextModel(text_config(**A_TE1)).eval()
    perturb(te1, seed=101)
    round_to_fp16_values(te1)  # so single-file checkpoints can hold it in fp16 exactly
    te1.save_pretrained(str(a_dir / "text_encoder"), safe_serialization=True)
    torch.manual_seed(2)
    te2 = CLIPTextModelWithProjection(text_config(**A_TE2)).eval()
    perturb(te2, seed=102)
    te2.half().save_pretrained(str(a_dir / "text_encoder_2"), safe_serialization=True, variant="fp16")
    assert sorted(os.listdir(a_dir / "text_encoder")) == ["config.json", "model.safetensors"]
    assert sorted(os.listdir(a_dir / "text_encoder_2")) == ["config.json", "model.fp16.safetensors"]

    # Load back exactly what was stored (fp16 upcast to fp32 for text_encoder_2).
    te1_sd = load_safetensors(a_dir / "text_encoder" / "model.safetensors")
    te2_sd = load_safetensors(a_dir / "text_encoder_2" / "model.fp16.safetensors")
    assert all(v.dtype == torch.float32 for v in te1_sd.values())
    assert all(v.dtype == torch.float16 for v in te2_sd.values())
    te1_ref = CLIPTextModel(CLIPTextConfig.from_pretrained(str(a_dir / "text_encoder"))).eval()
    te1_ref.load_state_dict(te1_sd, strict=True)
    te2_ref = CLIPTextModelWithProjection(CLIPTextConfig.from_pretrained(str(a_dir / "text_encoder_2"))).float().eval()
    te2_ref.load_state_dict({k: v.float() for k, v in te2_sd.items()}, strict=True)
    # and via transformers' own loader
    te1_fp = CLIPTextModel.from_pretrained(str(a_dir / "text_encoder")).eval()
    te2_fp = CLIPTextModelWithProjection.from_pretrained(str(a_dir / "text_encoder_2"), variant="fp16",
                                                         dtype=torch.float32).eval()
    for ref, fp in ((te1_ref, te1_fp), (te2_ref, te2_fp)):
        fsd = fp.state_dict()
        for k, v in ref.state_dict().items():
            assert torch.equal(v, fsd[k]), k

    pipe = StableDiffusionXLPipeline(vae=None, text_encoder=te1_ref, text_encoder_2=te2_ref, tokenizer=tok1,
                                     tokenizer_2=tok2, unet=None, scheduler=None,
                                     force_zeros_for_empty_prompt=True, add_watermarker=False)

    ref_a = {}
    meta_a = {}
    for i, text in enumerate(PROMPTS):
        t = tokens["prompts"][i]
        pe, npe, pp, npp = pipe.encode_prompt(text, device=torch.device("cpu"), num_images_per_prompt=1,
                                              do_classifier_free_guidance=True, negative_prompt=None)
        r1 = run_hf(te1_ref, t["tok1"])
        r2 = run_hf(te2_ref, t["tok2"])
        manual = torch.cat([r1["hidden_states"][-2:-1], r2["hidden_states"][-2:-1]], dim=-1)
        assert_close(pe, manual, 0.0, f"A prompt {i}: encode_prompt vs manual")
        assert_close(pp, r2["text_embeds"], 0.0, f"A prompt {i}: pooled vs manual")
        assert r1["hidden_states"].shape == (A_TE1["num_hidden_layers"] + 1, MAX_LEN, A_TE1["hidden_size"])
        ref_a[f"prompt_embeds.{i}"] = pe
        ref_a[f"pooled_prompt_embeds.{i}"] = pp
        ref_a[f"te1_hidden_states.{i}"] = r1["hidden_states"]
        ref_a[f"te2_hidden_states.{i}"] = r2["hidden_states"]
        ref_a[f"te1_last_hidden_state.{i}"] = r1["last_hidden_state"]
        ref_a[f"te1_pooled.{i}"] = r1["pooled"]
        meta_a[f"ids.te1.{i}"] = json.dumps(t["tok1"])
        meta_a[f"ids.te2.{i}"] = json.dumps(t["tok2"])
        if i == 0:
            ref_a["negative_empty_prompt_embeds"] = npe
            ref_a["negative_empty_pooled"] = npp
            assert npe.abs().max() == 0 and npp.abs().max() == 0
        if text == "":
            # explicit negative_prompt="" is NOT zeroed by diffusers: it encodes "".
            _, npe2, _, npp2 = pipe.encode_prompt("x", device=torch.device("cpu"), num_images_per_prompt=1,
                                                  do_classifier_free_guidance=True, negative_prompt="")
            assert_close(npe2, pe, 0.0, "negative_prompt='' == encode('')")
            assert_close(npp2, pp, 0.0, "negative_pooled='' == encode('')")
    for j, name in enumerate(NAMES):
        pe, _, _, _ = pipe.encode_prompt(name, device=torch.device("cpu"), num_images_per_prompt=1,
                                         do_classifier_free_guidance=False)
        ref_a[f"name.{j}"] = pe[0, 1:1 + NAME_LEN].contiguous()
        meta_a[f"ids.name.te1.{j}"] = json.dumps(tokens["names"][j]["tok1"])
        meta_a[f"ids.name.te2.{j}"] = json.dumps(tokens["names"][j]["tok2"])
    # The folder must also load as a diffusers pipeline (without unet/vae/scheduler) and reproduce.
    pipe2 = StableDiffusionXLPipeline.from_pretrained(str(a_dir), variant="fp16", dtype=torch.float32,
                                                      unet=None, vae=None, scheduler=None, add_watermarker=False)
    for i in (0, 2, 4, 8):
        pe, _, pp, _ = pipe2.encode_prompt(PROMPTS[i], device=torch.device("cpu"), num_images_per_prompt=1,
                                           do_classifier_free_guidance=False)
        assert_close(pe, ref_a[f"prompt_embeds.{i}"], 0.0, f"from_pretrained pipeline prompt {i}")
        assert_close(pp, ref_a[f"pooled_prompt_embeds.{i}"], 0.0, f"from_pretrained pipeline pooled {i}")
    del pipe2

    log("  config A output stats (prompt 0 / long prompt):")
    for k in ("prompt_embeds.0", "pooled_prompt_embeds.0", "prompt_embeds.8", "te1_pooled.0", "name.1"):
        stats(k, ref_a[k])
    for i in range(len(PROMPTS)):
        s = ref_a[f"prompt_embeds.{i}"].std().item()
        assert 0.1 < s < 10, (i, s)
        assert 0.1 < ref_a[f"pooled_prompt_embeds.{i}"].std().item() < 10
    meta_a.update({"format": "pt", "config": "tiny-sdxl (A)", "prompts": json.dumps(PROMPTS, ensure_ascii=False),
                   "names": json.dumps(NAMES, ensure_ascii=False)})
    save_safetensors({k: v.detach().float().contiguous() for k, v in ref_a.items()}, OUT / "reference_a.safetensors",
                     metadata=meta_a)

    # ---------------- config B ----------------
    log("config B")
    torch.manual_seed(3)
    b_te1_cfg = text_config(**B_TE1)
    b_te1_cfg.architectures = ["CLIPTextModel"]
    b_te1 = CLIPTextModel(b_te1_cfg).eval()
    perturb(b_te1, seed=201)

    torch.manual_seed(4)
    oc = TextTransformer(context_length=MAX_LEN, vocab_size=VOCAB, width=B_TE2_WIDTH, heads=B_TE2_HEADS,
                         layers=B_TE2_LAYERS, mlp_ratio=B_TE2_MLP_RATIO, output_dim=B_TE2_PROJ,
                         act_layer=nn.GELU, pool_type="argmax", proj_type="linear", proj_bias=False).eval()
    perturb(oc, seed=202)

    ckpt = {}
    te1_keys = b_te1.state_dict()
    assert not any(k.startswith("text_model.") for k in te1_keys)  # transformers 5: no prefix
    for k, v in te1_keys.items():
        ckpt[B_PREFIX_TE1 + k] = v.detach().float().contiguous()
    ckpt[B_PREFIX_TE1 + "embeddings.position_ids"] = torch.arange(MAX_LEN, dtype=torch.int64)[None]
    oc_sd = oc.state_dict()
    assert "attn_mask" not in oc_sd
    for k, v in oc_sd.items():
        ckpt[B_PREFIX_TE2 + k] = v.detach().half().contiguous()
    ckpt[B_PREFIX_TE2 + "logit_scale"] = torch.tensor(4.6052, dtype=torch.float16)  # ln(100), as trained CLIPs
    g = torch.Generator().manual_seed(203)
    ckpt["model.diffusion_model.time_embed.0.weight"] = torch.randn(8, 4, generator=g).half()
    ckpt["model.diffusion_model.time_embed.0.bias"] = torch.randn(8, generator=g).half()
    ckpt["first_stage_model.decoder.conv_in.bias"] = torch.randn(4, generator=g).half()
    ckpt["denoiser.sigmas"] = torch.linspace(0.03, 14.6, 16, dtype=torch.float32)
    save_safetensors(ckpt, OUT / "tiny-sdxl-b.safetensors",
                     metadata={"format": "pt", "modelspec.architecture": "stable-diffusion-xl-v1-base",
                               "description": "tiny random SDXL single-file checkpoint (text encoders only), "
                                              "MagicNaming test fixture"})

    # config folder
    bc = OUT / "tiny-sdxl-b-config"
    write_json(bc / "model_index.json", model_index(full=False))
    b_te1_cfg.save_pretrained(str(bc / "text_encoder"))
    b_te2_cfg = text_config(hidden_size=B_TE2_WIDTH, intermediate_size=int(B_TE2_WIDTH * B_TE2_MLP_RATIO),
                            num_hidden_layers=B_TE2_LAYERS, num_attention_heads=B_TE2_HEADS,
                            hidden_act="gelu", projection_dim=B_TE2_PROJ)
    b_te2_cfg.architectures = ["CLIPTextModelWithProjection"]
    b_te2_cfg.save_pretrained(str(bc / "text_encoder_2"))

    # Reload exactly what was stored (fp16 upcast for embedders.1)
    stored = load_safetensors(OUT / "tiny-sdxl-b.safetensors")
    b_te1_ref = CLIPTextModel(CLIPTextConfig.from_pretrained(str(bc / "text_encoder"))).eval()
    b_te1_ref.load_state_dict({k[len(B_PREFIX_TE1):]: v for k, v in stored.items()
                               if k.startswith(B_PREFIX_TE1) and not k.endswith("position_ids")}, strict=True)
    oc_ref = TextTransformer(context_length=MAX_LEN, vocab_size=VOCAB, width=B_TE2_WIDTH, heads=B_TE2_HEADS,
                             layers=B_TE2_LAYERS, mlp_ratio=B_TE2_MLP_RATIO, output_dim=B_TE2_PROJ,
                             act_layer=nn.GELU, pool_type="argmax", proj_type="linear", proj_bias=False).eval()
    oc_stored = {k[len(B_PREFIX_TE2):]: v.float() for k, v in stored.items()
                 if k.startswith(B_PREFIX_TE2) and k != B_PREFIX_TE2 + "logit_scale"}
    oc_ref.load_state_dict(oc_stored, strict=True)
    # HF equivalent of the open_clip tower, built from the stored values (proves the mapping)
    b_te2_hf = CLIPTextModelWithProjection(CLIPTextConfig.from_pretrained(str(bc / "text_encoder_2"))).eval()
    b_te2_hf.load_state_dict(open_clip_to_hf(oc_stored, B_TE2_LAYERS), strict=True)

    ref_b = {}
    meta_b = {}
    max_map_diff = 0.0

    def encode_b(t):
        nonlocal max_map_diff
        r1 = run_hf(b_te1_ref, t["tok1"])
        r2 = run_open_clip_sdxl(oc_ref, t["open_clip"])
        # mapping cross-check: the HF CLIPTextModelWithProjection built by open_clip_to_hf()
        h = run_hf(b_te2_hf, t["open_clip"])
        max_map_diff = max(max_map_diff,
                           assert_close(h["hidden_states"], r2["hidden_states"], 1e-5, "HF vs open_clip hs"),
                           assert_close(h["hidden_states"][-2:-1], r2["penultimate"], 1e-5, "HF vs oc penult"),
                           assert_close(h["text_embeds"], r2["text_embeds"], 1e-5, "HF vs oc pooled"))
        pe = torch.cat([r1["hidden_states"][-2:-1], r2["penultimate"]], dim=-1)
        return pe, r1, r2

    for i, text in enumerate(PROMPTS):
        t = tokens["prompts"][i]
        pe, r1, r2 = encode_b(t)
        ref_b[f"prompt_embeds.{i}"] = pe
        ref_b[f"pooled_prompt_embeds.{i}"] = r2["text_embeds"]
        ref_b[f"te1_hidden_states.{i}"] = r1["hidden_states"]
        ref_b[f"te2_hidden_states.{i}"] = r2["hidden_states"]
        ref_b[f"te1_last_hidden_state.{i}"] = r1["last_hidden_state"]
        ref_b[f"te1_pooled.{i}"] = r1["pooled"]
        meta_b[f"ids.te1.{i}"] = json.dumps(t["tok1"])
        meta_b[f"ids.te2.{i}"] = json.dumps(t["open_clip"])
    for j, name in enumerate(NAMES):
        pe, _, _ = encode_b(tokens["names"][j])
        ref_b[f"name.{j}"] = pe[0, 1:1 + NAME_LEN].contiguous()
        meta_b[f"ids.name.te1.{j}"] = json.dumps(tokens["names"][j]["tok1"])
        meta_b[f"ids.name.te2.{j}"] = json.dumps(tokens["names"][j]["open_clip"])
    ref_b["negative_empty_prompt_embeds"] = torch.zeros_like(ref_b["prompt_embeds.0"])
    ref_b["negative_empty_pooled"] = torch.zeros_like(ref_b["pooled_prompt_embeds.0"])
    log(f"  open_clip -> HF mapping max abs diff: {max_map_diff:.3g}")
    log("  config B output stats (prompt 0 / long prompt):")
    for k in ("prompt_embeds.0", "pooled_prompt_embeds.0", "prompt_embeds.8", "te1_pooled.0", "name.1"):
        stats(k, ref_b[k])
    for i in range(len(PROMPTS)):
        assert 0.1 < ref_b[f"prompt_embeds.{i}"].std().item() < 10
        assert 0.1 < ref_b[f"pooled_prompt_embeds.{i}"].std().item() < 10
    meta_b.update({"format": "pt", "config": "tiny-sdxl-b (B)", "prompts": json.dumps(PROMPTS, ensure_ascii=False),
                   "names": json.dumps(NAMES, ensure_ascii=False)})
    save_safetensors({k: v.detach().float().contiguous() for k, v in ref_b.items()}, OUT / "reference_b.safetensors",
                     metadata=meta_b)

    total = 0
    for p in sorted(OUT.rglob("*")):
        rel = p.relative_to(OUT).parts
        if len(rel) > 1 and rel[0] == "tiny-sdxl" and rel[1] in FOREIGN:
            continue
        if p.is_file():
            p.chmod(0o644)  # safetensors writes 0600
            total += p.stat().st_size
            log(f"  {p.stat().st_size:>10d}  {p.relative_to(ROOT)}")
    log(f"  total {total / 1e6:.2f} MB")
    assert total < 30e6


if __name__ == "__main__":
    sys.exit(main())
