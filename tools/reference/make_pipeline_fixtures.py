#!/usr/bin/env python3
"""Reference-fixture generator for the full SDXL pipeline (diffusers' StableDiffusionXLPipeline).

Run from the repository root with the pinned venv (see tools/reference/README.md), after
make_text_fixtures.py and make_diffusion_fixtures.py (tools/reference/make_all.sh does the order):

    python tools/reference/make_pipeline_fixtures.py

Inputs (must exist): tests/fixtures/text/tiny-sdxl/ with model_index.json, tokenizer(_2)/,
text_encoder(_2)/ (make_text_fixtures.py) and unet/, vae/ (make_diffusion_fixtures.py).

Writes
  tests/fixtures/text/tiny-sdxl/scheduler/scheduler_config.json
                       SDXL base's EulerDiscreteScheduler config (verbatim), completing the folder
  tests/fixtures/pipeline/ (deleted and rewritten)
    tiny-sdxl-single.safetensors   the same model as one Stability/Civitai-layout checkpoint (fp16):
                       conditioner.embedders.0.transformer.text_model.* (HF CLIP layout),
                       conditioner.embedders.1.model.* (open_clip layout), model.diffusion_model.*,
                       first_stage_model.* (LDM layout)
    tiny-sdxl-single-config/       model_index.json + the component configs, no weights, no tokenizers
    reference.safetensors          float32 references of StableDiffusionXLPipeline runs (cases below)
    reference.json                 every setting of every case (the diffusers call included)

Deterministic (seeded generators, one thread, deterministic algorithms), no network. Every claim is
asserted; if the script finishes, the checks passed.
"""

from __future__ import annotations

import copy
import functools
import json
import math
import shutil
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace

import torch
import torch.nn as nn

sys.path.insert(0, str(Path(__file__).resolve().parent))

import open_clip  # noqa: E402
import transformers  # noqa: E402
from open_clip.transformer import TextTransformer  # noqa: E402

import diffusers  # noqa: E402
from diffusers import (  # noqa: E402
    AutoencoderKL,
    DDIMScheduler,
    EulerDiscreteScheduler,
    StableDiffusionXLPipeline,
)
from diffusers.loaders.single_file_utils import (  # noqa: E402
    convert_ldm_unet_checkpoint,
    convert_ldm_vae_checkpoint,
)
from diffusers.pipelines.stable_diffusion_xl import pipeline_stable_diffusion_xl  # noqa: E402
from diffusers.schedulers import (  # noqa: E402
    scheduling_ddim,
    scheduling_dpmsolver_multistep,
    scheduling_euler_ancestral_discrete,
)

from make_diffusion_fixtures import (  # noqa: E402
    UNET_A,
    UNET_PREFIX,
    VAE,
    VAE_PREFIX,
    assert_same_state,
    check_unet_single_file,
    load_safetensors,
    save_safetensors,
    unet_to_ldm,
    vae_to_ldm,
)
from make_scheduler_fixtures import KINDS, SDXL_BASE, NoiseRecorder, build  # noqa: E402
from make_text_fixtures import (  # noqa: E402
    MAX_LEN,
    model_index,
    open_clip_to_hf,
    run_open_clip_sdxl,
    tok_ids,
)

ROOT = Path(__file__).resolve().parents[2]
SDXL_DIR = ROOT / "tests" / "fixtures" / "text" / "tiny-sdxl"
OUT = ROOT / "tests" / "fixtures" / "pipeline"
SINGLE = OUT / "tiny-sdxl-single.safetensors"
SINGLE_CONFIG = OUT / "tiny-sdxl-single-config"
TEXT_REFERENCE = ROOT / "tests" / "fixtures" / "text" / "reference_a.safetensors"

TE1_PREFIX = "conditioner.embedders.0.transformer.text_model."
TE2_PREFIX = "conditioner.embedders.1.model."

PROMPT = "a photo of a person"
NEGATIVE = "blurry"
NAME = "Barack Obama"  # reference_a.safetensors "name.0"
NAME_LEN = 8
HEIGHT, WIDTH = 48, 64
STEPS = 5
GUIDANCE = 5.0
LATENTS_SEED = 31
EULER_A_SEED = 32
CPU = torch.device("cpu")


def log(*a):
    print(*a, flush=True)


def write_json(path: Path, obj, indent=2, sort_keys=False):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=indent, sort_keys=sort_keys, ensure_ascii=False, allow_nan=False)
        f.write("\n")


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return (a.float() - b.float()).abs().max().item()


def assert_close(a, b, tol, what) -> float:
    d = max_diff(a, b)
    log(f"    {what}: max abs diff {d:.3g}")
    assert d <= tol, f"{what}: max abs diff {d} > {tol}"
    return d


def stats(name, t):
    s, m = t.float().std().item(), t.float().abs().max().item()
    log(f"    {name:34s} shape={tuple(t.shape)} std={s:.4f} absmax={m:.4f}")
    assert torch.isfinite(t).all() and 0.05 < s < 50, (name, s)


def json_safe(config) -> dict:
    """A scheduler's effective config for reading (non-finite floats as strings, no tuples)."""
    out = {}
    for k, v in config.items():
        if k.startswith("_"):
            continue
        if isinstance(v, float) and not math.isfinite(v):
            v = str(v)
        elif isinstance(v, tuple):
            v = list(v)
        out[k] = v
    return out


# --------------------------------------------------------------------------------------
# single file
# --------------------------------------------------------------------------------------

def hf_to_open_clip(sd: dict, layers: int) -> dict:
    """transformers CLIPTextModelWithProjection state dict -> open_clip TextTransformer layout
    (the inverse of make_text_fixtures.open_clip_to_hf)."""
    oc = {
        "token_embedding.weight": sd["text_model.embeddings.token_embedding.weight"],
        "positional_embedding": sd["text_model.embeddings.position_embedding.weight"],
        "ln_final.weight": sd["text_model.final_layer_norm.weight"],
        "ln_final.bias": sd["text_model.final_layer_norm.bias"],
        "text_projection": sd["text_projection.weight"].t().contiguous(),  # [hidden, proj]
    }
    for i in range(layers):
        h = f"text_model.encoder.layers.{i}."
        o = f"transformer.resblocks.{i}."
        a = h + "self_attn."
        oc[o + "attn.in_proj_weight"] = torch.cat([sd[a + f"{p}_proj.weight"] for p in "qkv"], 0)
        oc[o + "attn.in_proj_bias"] = torch.cat([sd[a + f"{p}_proj.bias"] for p in "qkv"], 0)
        for oc_name, hf_name in (("attn.out_proj", "self_attn.out_proj"), ("ln_1", "layer_norm1"),
                                 ("ln_2", "layer_norm2"), ("mlp.c_fc", "mlp.fc1"), ("mlp.c_proj", "mlp.fc2")):
            for p in ("weight", "bias"):
                oc[f"{o}{oc_name}.{p}"] = sd[f"{h}{hf_name}.{p}"]
    assert len(oc) == 5 + 12 * layers
    return {k: v.contiguous() for k, v in oc.items()}


def fp16_exact(t: torch.Tensor, what: str) -> torch.Tensor:
    h = t.half()
    assert torch.equal(h.float(), t.float()), f"{what} is not float16-exact"
    return h.contiguous()


def build_single_file(sds: dict, te2_config) -> dict:
    ckpt = {}
    for k, v in sds["text_encoder"].items():
        assert not k.startswith("text_model."), k  # transformers 5 CLIPTextModel: flat keys
        ckpt[TE1_PREFIX + k] = fp16_exact(v, k)
    # As in Stability's sd_xl_base_1.0.safetensors: an int64 buffer a loader must ignore.
    ckpt[TE1_PREFIX + "embeddings.position_ids"] = torch.arange(MAX_LEN, dtype=torch.int64)[None]
    te2 = sds["text_encoder_2"]
    oc = hf_to_open_clip(te2, te2_config.num_hidden_layers)
    back = open_clip_to_hf(oc, te2_config.num_hidden_layers)
    assert_same_state(back, te2, "open_clip_to_hf(hf_to_open_clip(text_encoder_2))")
    for k, v in oc.items():
        ckpt[TE2_PREFIX + k] = fp16_exact(v, k)
    ckpt[TE2_PREFIX + "logit_scale"] = torch.tensor(4.6052, dtype=torch.float16)  # ln(100), unused
    for k, v in unet_to_ldm(sds["unet"], UNET_A).items():
        ckpt[UNET_PREFIX + k] = fp16_exact(v, k)
    for k, v in vae_to_ldm(sds["vae"], VAE).items():
        ckpt[VAE_PREFIX + k] = fp16_exact(v, k)
    return ckpt


# --------------------------------------------------------------------------------------
# pipeline runs
# --------------------------------------------------------------------------------------

class StepRecorder:
    """Wraps scheduler.step (keeping its signature, which the pipeline inspects for `generator`
    and `eta`) to record the guided noise prediction entering each step."""

    def __init__(self, scheduler):
        self.scheduler, self.model_outputs = scheduler, []
        orig = scheduler.step

        @functools.wraps(orig)
        def step(model_output, timestep, sample, *args, **kwargs):
            self.model_outputs.append(model_output.clone())
            return orig(model_output, timestep, sample, *args, **kwargs)

        scheduler.step = step


def callback(record: list):
    def cb(pipe, i, t, kwargs):
        record.append({k: v.clone() for k, v in kwargs.items()})
        return {}
    return cb


CALLBACK_INPUTS = ["latents", "prompt_embeds", "add_text_embeds", "add_time_ids"]

# The case table: (name, source, scheduler kind (None: the folder's own), extra call kwargs, generator seed).
# "prompt_embeds" in the kwargs is filled in at run time for euler-name.
CASES = [
    ("euler", "folder", None, {"prompt": PROMPT}, None),
    ("euler-a", "folder", "euler-a", {"prompt": PROMPT}, EULER_A_SEED),
    ("ddim", "folder", "ddim", {"prompt": PROMPT}, None),
    ("dpmpp-2m-karras", "folder", "dpmpp-2m-karras", {"prompt": PROMPT}, None),
    ("euler-name", "folder", None, {"prompt_embeds": None, "pooled_prompt_embeds": None}, None),
    ("euler-neg", "folder", None, {"prompt": PROMPT, "negative_prompt": NEGATIVE}, None),
    ("euler-single", "single_file", None, {"prompt": PROMPT}, None),
]

# The exact diffusers calls (reference.json "call"), `pipe` the pipeline of the case's source.
COMMON_CALL = (f"height={HEIGHT}, width={WIDTH}, num_inference_steps={STEPS}, guidance_scale={GUIDANCE}, "
               "latents=init_latents.clone(), output_type='latent'")
CALLS = {
    "euler": f"pipe(prompt={PROMPT!r}, {COMMON_CALL})",
    "euler-a": f"pipe(prompt={PROMPT!r}, {COMMON_CALL}, generator=torch.Generator().manual_seed({EULER_A_SEED}))",
    "ddim": f"pipe(prompt={PROMPT!r}, {COMMON_CALL})",
    "dpmpp-2m-karras": f"pipe(prompt={PROMPT!r}, {COMMON_CALL})",
    "euler-name": f"pipe(prompt_embeds=prompt_embeds_with_name, pooled_prompt_embeds=pooled_prompt_embeds, "
                  f"{COMMON_CALL})",
    "euler-neg": f"pipe(prompt={PROMPT!r}, negative_prompt={NEGATIVE!r}, {COMMON_CALL})",
    "euler-single": f"pipe_single_file(prompt={PROMPT!r}, {COMMON_CALL})",
}
SCHEDULER_CODE = {
    None: "pipe.scheduler (EulerDiscreteScheduler from scheduler/scheduler_config.json)",
    "euler-a": "EulerAncestralDiscreteScheduler.from_config(pipe.scheduler.config)",
    "ddim": "DDIMScheduler.from_config(pipe.scheduler.config)",
    "dpmpp-2m-karras": "DPMSolverMultistepScheduler.from_config(pipe.scheduler.config, use_karras_sigmas=True, "
                       "algorithm_type='dpmsolver++', solver_order=2)",
}


def make_scheduler(kind):
    config = json.loads((SDXL_DIR / "scheduler" / "scheduler_config.json").read_text())
    if kind is None:
        s = EulerDiscreteScheduler.from_config(config)
    else:
        s = build(config, kind)
        cls, overrides = KINDS[kind]
        assert type(s) is cls and all(s.config[k] == v for k, v in overrides.items())
    return s


@torch.no_grad()
def manual_loop(pipe, scheduler, init_latents, pe, npe, pp, npp, add_time_ids, noise):
    """What the Rust pipeline has to do, written out (asserted equal to diffusers' __call__):
    CFG batch [uncond, cond], scale_model_input, UNet, uncond + g (cond - uncond), step."""
    scheduler.set_timesteps(STEPS)
    if hasattr(scheduler, "set_begin_index"):  # DDIM has none
        scheduler.set_begin_index(0)
    latents = init_latents * scheduler.init_noise_sigma
    ehs = torch.cat([npe, pe])
    text_embeds = torch.cat([npp, pp])
    time_ids = torch.cat([add_time_ids, add_time_ids])
    draws = iter(noise)
    module = sys.modules[type(scheduler).__module__]
    orig = getattr(module, "randn_tensor", None)
    if orig is not None:
        module.randn_tensor = lambda *a, **k: next(draws).clone()  # inject the recorded noise
    try:
        for t in scheduler.timesteps:
            x = scheduler.scale_model_input(torch.cat([latents, latents]), t)
            out = pipe.unet(x, t, encoder_hidden_states=ehs,
                            added_cond_kwargs={"text_embeds": text_embeds, "time_ids": time_ids},
                            return_dict=False)[0]
            uncond, cond = out.chunk(2)
            guided = uncond + GUIDANCE * (cond - uncond)
            latents = scheduler.step(guided, t, latents, return_dict=False)[0]
    finally:
        if orig is not None:
            module.randn_tensor = orig
    assert next(draws, None) is None, "unused noise"
    return latents


@torch.no_grad()
def decode(vae, latents):
    return vae.decode(latents / vae.config.scaling_factor, return_dict=False)[0]


def main():
    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.disable_progress_bar()
    torch.manual_seed(0)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    for sub in ("model_index.json", "tokenizer", "tokenizer_2", "text_encoder", "text_encoder_2", "unet", "vae"):
        assert (SDXL_DIR / sub).exists(), (
            f"{SDXL_DIR / sub} missing: run make_text_fixtures.py and make_diffusion_fixtures.py first")
    if OUT.exists():
        shutil.rmtree(OUT)
    OUT.mkdir(parents=True)

    # ---------------- complete the diffusers folder ----------------
    log("diffusers folder")
    sched_dir = SDXL_DIR / "scheduler"
    if sched_dir.exists():
        shutil.rmtree(sched_dir)
    # diffusers writes configs as json.dumps(indent=2, sort_keys=True) + "\n"
    write_json(sched_dir / "scheduler_config.json", SDXL_BASE, indent=2, sort_keys=True)
    pipe = StableDiffusionXLPipeline.from_pretrained(str(SDXL_DIR), variant="fp16", dtype=torch.float32,
                                                     local_files_only=True, add_watermarker=False)
    pipe.set_progress_bar_config(disable=True)
    assert type(pipe.scheduler) is EulerDiscreteScheduler
    assert pipe.vae_scale_factor == 4, pipe.vae_scale_factor  # 3-level tiny VAE: latents 12 x 16
    assert pipe.config.force_zeros_for_empty_prompt is True
    components = ("text_encoder", "text_encoder_2", "unet", "vae")
    files = {"text_encoder": "text_encoder/model.safetensors",
             "text_encoder_2": "text_encoder_2/model.fp16.safetensors",
             "unet": "unet/diffusion_pytorch_model.safetensors",
             "vae": "vae/diffusion_pytorch_model.safetensors"}
    sds = {}
    for c in components:
        m = getattr(pipe, c)
        assert all(p.dtype == torch.float32 for p in m.parameters()), c
        stored = {k: v.float() for k, v in load_safetensors(SDXL_DIR / files[c]).items()}
        sds[c] = stored
        assert_same_state(m.state_dict(), stored, f"from_pretrained {c}")
    with tempfile.TemporaryDirectory() as tmp:
        pipe.save_pretrained(tmp, safe_serialization=True)
        saved_index = json.loads((Path(tmp) / "model_index.json").read_text())
    saved_index.pop("_name_or_path")  # the absolute path it was loaded from; not in Hub files
    folder_index = json.loads((SDXL_DIR / "model_index.json").read_text())
    assert saved_index == folder_index == model_index(full=True), (saved_index, folder_index)

    # ---------------- single file + config folder ----------------
    log("single file")
    te2_config = pipe.text_encoder_2.config
    ckpt = build_single_file(sds, te2_config)
    save_safetensors(ckpt, SINGLE, {
        "format": "pt", "modelspec.architecture": "stable-diffusion-xl-v1-base",
        "description": "tiny random SDXL single-file checkpoint (text encoders, UNet, VAE), "
                       "MagicNaming test fixture; same weights as tests/fixtures/text/tiny-sdxl"})
    for rel in ("model_index.json", "text_encoder/config.json", "text_encoder_2/config.json", "unet/config.json",
                "vae/config.json", "scheduler/scheduler_config.json"):
        (SINGLE_CONFIG / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(SDXL_DIR / rel, SINGLE_CONFIG / rel)

    # diffusers' own converters and loaders on the file
    stored = load_safetensors(SINGLE)
    as_f32 = {k: v.float() for k, v in stored.items()}
    assert_same_state(convert_ldm_unet_checkpoint(as_f32, dict(UNET_A)), sds["unet"], "convert_ldm_unet_checkpoint")
    assert_same_state(convert_ldm_vae_checkpoint(as_f32, dict(VAE)), sds["vae"], "convert_ldm_vae_checkpoint")
    ref_unet = load_safetensors(ROOT / "tests" / "fixtures" / "diffusion" / "reference_unet_a.safetensors")
    check_unet_single_file(SINGLE, SDXL_DIR / "unet", sds["unet"], UNET_A, ref_unet,
                           [float(ref_unet["timestep.0"][0])])
    vae_sf = AutoencoderKL.from_single_file(str(SINGLE), config=str(SDXL_DIR / "vae"), local_files_only=True,
                                            low_cpu_mem_usage=False, dtype=torch.float32)
    assert_same_state(vae_sf.state_dict(), sds["vae"], "AutoencoderKL.from_single_file")
    del vae_sf
    pipe_sf = StableDiffusionXLPipeline.from_single_file(str(SINGLE), config=str(SDXL_DIR), local_files_only=True,
                                                         dtype=torch.float32, add_watermarker=False)
    pipe_sf.set_progress_bar_config(disable=True)
    for c in components:
        assert_same_state(getattr(pipe_sf, c).state_dict(), sds[c], f"from_single_file(config=tiny-sdxl) {c}")
    assert type(pipe_sf.scheduler) is EulerDiscreteScheduler
    assert json_safe(pipe_sf.scheduler.config) == json_safe(pipe.scheduler.config), (
        pipe_sf.scheduler.config, pipe.scheduler.config)
    # The configuration folder without tokenizers is enough for diffusers once tokenizers are given.
    pipe_sf2 = StableDiffusionXLPipeline.from_single_file(str(SINGLE), config=str(SINGLE_CONFIG),
                                                          local_files_only=True, dtype=torch.float32,
                                                          tokenizer=pipe.tokenizer, tokenizer_2=pipe.tokenizer_2,
                                                          add_watermarker=False)
    for c in components:
        assert_same_state(getattr(pipe_sf2, c).state_dict(), sds[c], f"from_single_file(config=single-config) {c}")
    assert json_safe(pipe_sf2.scheduler.config) == json_safe(pipe.scheduler.config)
    del pipe_sf2

    # Token ids: transformers' tokenizers (folder) and open_clip's (what sgm uses for the single file)
    # agree on the texts used here, so both paths see the same ids.
    for text in (PROMPT, NEGATIVE, NAME, ""):
        oc_ids = open_clip.tokenize([text], context_length=MAX_LEN)[0].tolist()
        t1, t2 = tok_ids(pipe.tokenizer, text), tok_ids(pipe.tokenizer_2, text)
        assert t2 == oc_ids, text
        n = oc_ids.index(49407) + 1
        assert t1[:n] == oc_ids[:n] and all(i == 49407 for i in t1[n:]), text

    # open_clip running the stored conditioner.embedders.1 (sgm FrozenOpenCLIPEmbedder2 order)
    # equals transformers' text_encoder_2: penultimate hidden states and pooled text_embeds.
    oc_model = TextTransformer(context_length=MAX_LEN, vocab_size=te2_config.vocab_size, width=te2_config.hidden_size,
                               heads=te2_config.num_attention_heads, layers=te2_config.num_hidden_layers,
                               mlp_ratio=te2_config.intermediate_size / te2_config.hidden_size,
                               output_dim=te2_config.projection_dim, act_layer=nn.GELU, pool_type="argmax",
                               proj_type="linear", proj_bias=False).eval()
    oc_model.load_state_dict({k[len(TE2_PREFIX):]: v.float() for k, v in stored.items()
                              if k.startswith(TE2_PREFIX) and not k.endswith("logit_scale")}, strict=True)
    open_clip_diff = 0.0
    with torch.no_grad():
        for text in (PROMPT, NEGATIVE, NAME):
            ids = open_clip.tokenize([text], context_length=MAX_LEN)[0].tolist()
            r = run_open_clip_sdxl(oc_model, ids)
            o = pipe.text_encoder_2(torch.tensor([ids]), output_hidden_states=True)
            # f32 reordering (fused in_proj vs separate q/k/v matmuls) on O(1) values
            open_clip_diff = max(open_clip_diff,
                                 assert_close(r["penultimate"], o.hidden_states[-2], 1e-5, f"open_clip penult {text!r}"),
                                 assert_close(r["text_embeds"], o.text_embeds, 1e-5, f"open_clip pooled {text!r}"))

    # ---------------- conditioning ----------------
    log("conditioning")
    with torch.no_grad():
        pe, npe_zero, pp, npp_zero = pipe.encode_prompt(PROMPT, device=CPU, num_images_per_prompt=1,
                                                        do_classifier_free_guidance=True)
        assert npe_zero.abs().max() == 0 and npp_zero.abs().max() == 0  # force_zeros_for_empty_prompt
        _, npe_blurry, _, npp_blurry = pipe.encode_prompt(PROMPT, device=CPU, num_images_per_prompt=1,
                                                          do_classifier_free_guidance=True,
                                                          negative_prompt=NEGATIVE)
        name_pe = pipe.encode_prompt(NAME, device=CPU, num_images_per_prompt=1,
                                     do_classifier_free_guidance=False)[0]
    name = name_pe[0, 1:1 + NAME_LEN]
    text_ref = load_safetensors(TEXT_REFERENCE)
    assert_close(name, text_ref["name.0"], 0.0, "name vs reference_a name.0")
    assert_close(pe, text_ref["prompt_embeds.0"], 0.0, "prompt_embeds vs reference_a prompt_embeds.0")
    assert_close(pp, text_ref["pooled_prompt_embeds.0"], 0.0, "pooled vs reference_a pooled_prompt_embeds.0")
    pe_name = torch.cat([pe[:, :1], name[None], pe[:, 1:MAX_LEN - NAME_LEN]], dim=1)
    assert pe_name.shape == (1, MAX_LEN, 40)
    add_time_ids = pipe._get_add_time_ids((HEIGHT, WIDTH), (0, 0), (HEIGHT, WIDTH), dtype=torch.float32,
                                          text_encoder_projection_dim=te2_config.projection_dim)
    assert add_time_ids.tolist() == [[HEIGHT, WIDTH, 0, 0, HEIGHT, WIDTH]]
    init_latents = torch.randn(1, 4, HEIGHT // 4, WIDTH // 4, generator=torch.Generator().manual_seed(LATENTS_SEED))

    ref = {"init_latents": init_latents, "prompt_embeds": pe, "pooled_prompt_embeds": pp,
           "add_time_ids": add_time_ids, "name": name.contiguous(), "prompt_embeds.euler-name": pe_name,
           "negative_prompt_embeds.euler-neg": npe_blurry, "negative_pooled_prompt_embeds.euler-neg": npp_blurry}
    conditioning = {  # (pe, npe, pp, npp) per case, as the UNet must see them
        "euler-name": (pe_name, npe_zero, pp, npp_zero),
        "euler-neg": (pe, npe_blurry, pp, npp_blurry),
    }

    # ---------------- cases ----------------
    log("cases")
    settings = {}
    consistency = {"open_clip_vs_transformers_text_encoder_2": open_clip_diff}
    for case, source, kind, kwargs, seed in CASES:
        log(f"  {case}")
        # every randn_tensor a scheduler step or the pipeline could call, recorded
        recorders = {m: NoiseRecorder(m) for m in (scheduling_euler_ancestral_discrete, scheduling_ddim,
                                                   scheduling_dpmsolver_multistep, pipeline_stable_diffusion_xl)}
        p = pipe if source == "folder" else pipe_sf
        p.scheduler = make_scheduler(kind)
        kwargs = dict(kwargs)
        if "prompt_embeds" in kwargs:
            kwargs.update(prompt_embeds=pe_name, pooled_prompt_embeds=pp)
        steps = StepRecorder(p.scheduler)
        record = []
        for r in recorders.values():
            r.__enter__()
        try:
            generator = torch.Generator().manual_seed(seed) if seed is not None else None
            with torch.no_grad():
                out = p(**kwargs, height=HEIGHT, width=WIDTH, num_inference_steps=STEPS, guidance_scale=GUIDANCE,
                        latents=init_latents.clone(), output_type="latent", generator=generator,
                        callback_on_step_end=callback(record), callback_on_step_end_tensor_inputs=CALLBACK_INPUTS,
                        return_dict=False)[0]
        finally:
            for r in recorders.values():
                r.__exit__()
        draws = {m.__name__.rsplit(".", 1)[-1]: r.draws for m, r in recorders.items() if r.draws}
        noise = []
        if kind == "euler-a":
            assert list(draws) == ["scheduling_euler_ancestral_discrete"], list(draws)
            noise = draws["scheduling_euler_ancestral_discrete"]
            assert len(noise) == STEPS
            for i, n in enumerate(noise):
                ref[f"noise.{case}.{i}"] = n.contiguous()
        else:
            assert not draws, (case, list(draws))
        sched = p.scheduler
        assert len(record) == STEPS == len(sched.timesteps) == len(steps.model_outputs)
        # What the UNet saw: CFG batch [uncond, cond].
        c_pe, c_npe, c_pp, c_npp = conditioning.get(case, (pe, npe_zero, pp, npp_zero))
        assert_close(record[0]["prompt_embeds"], torch.cat([c_npe, c_pe]), 0.0, f"{case} UNet prompt_embeds")
        assert_close(record[0]["add_text_embeds"], torch.cat([c_npp, c_pp]), 0.0, f"{case} UNet text_embeds")
        assert_close(record[0]["add_time_ids"], torch.cat([add_time_ids, add_time_ids]), 0.0, f"{case} time_ids")
        assert torch.equal(record[-1]["latents"], out)
        ref[f"final_latents.{case}"] = out.contiguous()
        ref[f"image.{case}"] = decode(p.vae, out).contiguous()
        if case == "euler":
            for i in range(STEPS):
                ref[f"step_latents.{case}.{i}"] = record[i]["latents"].contiguous()
                ref[f"noise_pred.{case}.{i}"] = steps.model_outputs[i].contiguous()
        # The loop written out (what the Rust side mirrors) reproduces diffusers.
        manual = manual_loop(p, make_scheduler(kind), init_latents, c_pe, c_npe, c_pp, c_npp, add_time_ids, noise)
        consistency[f"manual_loop_vs_pipeline.{case}"] = assert_close(manual, out, 1e-5, f"{case} manual loop")
        sigmas = getattr(sched, "sigmas", None)
        settings[case] = {
            "source": source,
            "scheduler": SCHEDULER_CODE[kind],
            "scheduler_class": type(sched).__name__,
            "scheduler_effective_config": json_safe(sched.config),
            "call": CALLS[case],
            "negative": "negative_prompt 'blurry' (encoded)" if case == "euler-neg"
            else "none: zeros (force_zeros_for_empty_prompt)",
            "generator_seed": seed,
            "timesteps": [float(t) for t in sched.timesteps],
            "sigmas": None if sigmas is None or isinstance(sched, DDIMScheduler) else [float(s) for s in sigmas],
            "init_noise_sigma": float(sched.init_noise_sigma),
            "noise_keys": [f"noise.{case}.{i}" for i in range(len(noise))],
        }

    # How far float32 itself is from the exact result: the same loops in float64 (recorded noise
    # injected), for choosing test tolerances. Not asserted beyond sanity.
    log("  float64 vs float32")
    unet64 = SimpleNamespace(unet=copy.deepcopy(pipe.unet).double())
    vae64 = copy.deepcopy(pipe.vae).double()
    f64 = {}
    for case, source, kind, _, _ in CASES:
        if source != "folder":
            continue
        c = [t.double() for t in conditioning.get(case, (pe, npe_zero, pp, npp_zero))]
        noise = [ref[k].double() for k in settings[case]["noise_keys"]]
        lat64 = manual_loop(unet64, make_scheduler(kind), init_latents.double(), *c, add_time_ids.double(), noise)
        out32 = ref[f"final_latents.{case}"]
        d, m = max_diff(lat64, out32), out32.abs().max().item()
        di = max_diff(decode(vae64, lat64), ref[f"image.{case}"])
        log(f"    {case}: final latents {d:.3g} (absmax {m:.3g}, relative {d / m:.3g}); image {di:.3g}")
        assert d / m < 1e-4, case
        f64[case] = {"final_latents_max_abs_diff": d, "final_latents_absmax": m, "image_max_abs_diff": di}
    del unet64, vae64

    # euler from the single file == euler from the folder (same weights, fp16-exact)
    consistency["euler-single_vs_euler"] = assert_close(ref["final_latents.euler-single"], ref["final_latents.euler"],
                                                        1e-6, "euler-single vs euler")
    # the pipeline's own decode (output_type="pt") == vae.decode(latents / scaling_factor), denormalised
    pipe.scheduler = make_scheduler(None)
    with torch.no_grad():
        img = pipe(prompt=PROMPT, height=HEIGHT, width=WIDTH, num_inference_steps=STEPS, guidance_scale=GUIDANCE,
                   latents=init_latents.clone(), output_type="pt", return_dict=False)[0]
    consistency["output_type_pt_vs_image.euler"] = assert_close(
        img, (ref["image.euler"] / 2 + 0.5).clamp(0, 1), 1e-6, "output_type='pt' vs image.euler")
    # cases really differ from each other
    for a in ("euler-a", "ddim", "dpmpp-2m-karras", "euler-name", "euler-neg"):
        d = max_diff(ref[f"final_latents.{a}"], ref["final_latents.euler"])
        log(f"    final_latents.{a} vs euler: {d:.3g}")
        assert d > 1e-2, a

    log("  stats")
    for k in sorted(ref):
        if k.startswith(("final_latents", "image.euler", "noise_pred.euler.0", "init")):
            stats(k, ref[k])

    meta = {
        "diffusers": diffusers.__version__,
        "torch": torch.__version__.split("+")[0],
        "model": "tests/fixtures/text/tiny-sdxl",
        "single_file": "tests/fixtures/pipeline/tiny-sdxl-single.safetensors",
        "single_file_config": "tests/fixtures/pipeline/tiny-sdxl-single-config",
        "pipeline_folder": "StableDiffusionXLPipeline.from_pretrained(model, variant='fp16', "
                           "dtype=torch.float32, add_watermarker=False)",
        "pipeline_single_file": "StableDiffusionXLPipeline.from_single_file(single_file, config=model, "
                                "local_files_only=True, dtype=torch.float32, add_watermarker=False)",
        "prompt": PROMPT,
        "negative_prompt": None,
        "height": HEIGHT,
        "width": WIDTH,
        "vae_scale_factor": 4,
        "latents_shape": list(init_latents.shape),
        "num_inference_steps": STEPS,
        "guidance_scale": GUIDANCE,
        "guidance_rescale": 0.0,
        "original_size": [HEIGHT, WIDTH],
        "target_size": [HEIGHT, WIDTH],
        "crops_coords_top_left": [0, 0],
        "add_time_ids": add_time_ids[0].tolist(),
        "init_latents": f"torch.randn(1, 4, {HEIGHT // 4}, {WIDTH // 4}, "
                        f"generator=torch.Generator().manual_seed({LATENTS_SEED})); "
                        "the pipeline multiplies given latents by scheduler.init_noise_sigma",
        "name": {"text": NAME, "positions": [1, NAME_LEN],
                 "equals": "tests/fixtures/text/reference_a.safetensors name.0",
                 "prompt_embeds_with_name": "cat([pe[:, :1], name[None], pe[:, 1:77-8]], dim=1)"},
        "image": "vae.decode(final_latents / vae.config.scaling_factor).sample (no postprocessing; "
                 "output_type='pt' gives (image / 2 + 0.5).clamp(0, 1))",
        "cases": settings,
        "consistency_max_abs_diff": consistency,
        "float64_vs_float32": f64,
    }
    write_json(OUT / "reference.json", meta, indent=1)
    save_safetensors({k: v.detach().float().contiguous() for k, v in sorted(ref.items())},
                     OUT / "reference.safetensors",
                     {"format": "pt", "settings": json.dumps(meta, sort_keys=True)})

    total = 0
    for p in sorted(list(OUT.rglob("*")) + list(sched_dir.rglob("*"))):
        if p.is_file():
            p.chmod(0o644)  # safetensors writes 0600
            total += p.stat().st_size
            log(f"  {p.stat().st_size:>10d}  {p.relative_to(ROOT)}")
    log(f"  total {total / 1e6:.2f} MB")
    assert total < 8e6


if __name__ == "__main__":
    sys.exit(main())
