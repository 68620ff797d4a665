#!/usr/bin/env python3
"""Times diffusers / transformers / open_clip on the shapes `magicnaming bench` times.

Same components, names, warm-up, timed runs and JSON layout as `magicnaming bench`
(magicnaming-cli/src/bench_cmd.rs), so that tools/bench/compare.py can pair the rows:

- text:  StableDiffusionXLPipeline.encode_prompt (both encoders, one prompt, guidance on)
- unet:  one UNet2DConditionModel call at batch 2 (guidance), latents resolution / 8
- vae:   AutoencoderKL.decode of one latent, in the dtype the pipeline decodes in (float32
         under a float16 pipeline when the VAE says force_upcast, as SDXL's does;
         --vae-fp16 times it in float16)
- image: a whole StableDiffusionXLPipeline call (output_type="pt")
- lora-step: one step of diffusers' train_text_to_image_lora_sdxl.py (not in the default set):
         the UNet frozen with PEFT adapters (rank 4, alpha 4, gaussian init) on to_q, to_k, to_v,
         to_out.0, batch 1, latents resolution / 8 sampled from a given mean / std and
         scaled, DDPMScheduler.add_noise at timestep 500, MSE, backward,
         clip_grad_norm_(1.0), AdamW(1e-4, weight_decay 1e-2), zero_grad
- tower:NAME: an image tower at --tower-batch (transformers CLIPVisionModelWithProjection
         for transformers configurations, open_clip's VisionTransformer for open_clip ones)

Weights are random, built from configuration files (default: tools/bench/configs/, the
same values as the Rust presets; a Rust unit test checks that), or real with --model.
Float16 + SDPA on CUDA, float32 on CPU by default. GPU work is synchronised before
every clock read. Run from the repository root.
"""
import argparse
import gc
import json
import os
import resource
import shlex
import statistics
import sys
import time
from datetime import datetime, timezone

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
CONFIGS = os.path.join(HERE, "configs")
PRESET_TOWERS = {
    "vit-l-14": os.path.join(CONFIGS, "vit-l-14.json"),
    "vit-bigg-14": os.path.join(CONFIGS, "vit-bigg-14.json"),
}
# The full CLIP vocabulary, as SDXL's two tokenizers use it (pad "<|endoftext|>" / "!").
DEFAULT_TOKENIZERS = os.path.join(REPO, "tests", "fixtures", "text", "tiny-sdxl")
COMPONENTS = ["text", "unet", "vae", "image", "towers"]
EXTRA = ["lora-step"]  # not in the default set


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", help="real diffusers SDXL folder (from_pretrained)")
    p.add_argument("--config", default=os.path.join(CONFIGS, "sdxl-base"),
                   help="diffusers-style folder of configurations for random weights")
    p.add_argument("--tokenizers", default=DEFAULT_TOKENIZERS,
                   help="folder with tokenizer/ and tokenizer_2/ (when --config has none)")
    p.add_argument("--tower", action="append", default=[],
                   help="vit-l-14, vit-bigg-14 or a configuration .json; repeatable")
    p.add_argument("--components", default=",".join(COMPONENTS))
    p.add_argument("--resolution", type=int, default=1024)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--guidance", type=float, default=5.0)
    p.add_argument("--tower-batch", type=int, default=64)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--iters", type=int, default=10)
    p.add_argument("--image-iters", type=int)
    p.add_argument("--budget-s", type=float,
                   help="stop a component's timed runs after this many seconds (after at least one)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", choices=["fp16", "bf16", "fp32"],
                   help="default: fp16 on CUDA, fp32 on CPU")
    p.add_argument("--vae-fp16", action="store_true",
                   help="decode in float16 even when the VAE asks for force_upcast")
    p.add_argument("--threads", type=int, help="torch CPU threads")
    p.add_argument("--prompt", default="a photograph of an astronaut riding a horse")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json")
    a = p.parse_args(argv)
    a.components = [c for c in a.components.split(",") if c]
    bad = [c for c in a.components if c not in COMPONENTS + EXTRA]
    if bad:
        p.error(f"unknown components {bad}: expected some of {COMPONENTS + EXTRA}")
    if a.resolution <= 0 or a.resolution % 8:
        p.error("--resolution must be a positive multiple of 8")
    if min(a.steps, a.iters, a.tower_batch) < 1 or a.warmup < 0:
        p.error("--steps, --iters and --tower-batch must be >= 1, --warmup >= 0")
    a.tower = a.tower or ["vit-l-14", "vit-bigg-14"]
    a.dtype = a.dtype or ("fp16" if a.device.startswith("cuda") else "fp32")
    a.image_iters = a.image_iters or a.iters
    return a


def read_json(path):
    with open(path) as f:
        return json.load(f)


def device_name(device):
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    model = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            model = next(l.split(":", 1)[1].strip() for l in f if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{model} ({os.cpu_count()} threads)"


class Bench:
    def __init__(self, args):
        self.a = args
        self.device = torch.device(args.device)
        self.dtype = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}[args.dtype]
        self.cuda = self.device.type == "cuda"
        self.rows = []
        self.text_attn = self.unet_attn = self.vae_dtype = None
        self.on_row = lambda: None

    def sync(self):
        if self.cuda:
            torch.cuda.synchronize(self.device)

    def time_runs(self, warmup, iters, fn):
        """`warmup` untimed runs, then `iters` timed ones (fewer, at least one, once
        --budget-s seconds have passed); outputs live until the sync."""
        def run():
            self.sync()
            t0 = time.perf_counter()
            out = fn()
            self.sync()
            ms = (time.perf_counter() - t0) * 1e3
            del out
            return ms
        began = time.perf_counter()
        first = None
        for i in range(warmup):
            ms = run()
            first = ms if i == 0 else first
        samples = []
        while len(samples) < iters:
            if self.a.budget_s is not None and samples and time.perf_counter() - began > self.a.budget_s:
                print(f"--budget-s reached: {len(samples)} of {iters} timed runs", file=sys.stderr)
                break
            samples.append(run())
        return first, samples

    def record(self, name, what, build_s, fn, warmup=None, iters=None):
        warmup = self.a.warmup if warmup is None else warmup
        iters = self.a.iters if iters is None else iters
        if self.cuda:
            torch.cuda.reset_peak_memory_stats(self.device)
        first, samples = self.time_runs(warmup, iters, fn)
        s = sorted(samples)
        row = {
            "name": name, "what": what, "build_s": build_s, "first_ms": first,
            "iters": len(samples), "median_ms": statistics.median(s), "min_ms": s[0],
            "max_ms": s[-1], "mean_ms": statistics.fmean(s), "samples_ms": samples,
        }
        if self.cuda:
            row["peak_allocated_bytes"] = torch.cuda.max_memory_allocated(self.device)
            row["peak_reserved_bytes"] = torch.cuda.max_memory_reserved(self.device)
        print(f"{name}: median {row['median_ms']:.1f} ms (min {s[0]:.1f}, max {s[-1]:.1f})",
              file=sys.stderr, flush=True)
        self.rows.append(row)
        self.on_row()

    def on_device(self, build):
        """Builds a module (random init directly on the device), cast to the dtype."""
        t0 = time.perf_counter()
        with torch.device(self.device):
            m = build()
        m = m.to(self.device, self.dtype).eval().requires_grad_(False)
        self.sync()
        return m, time.perf_counter() - t0

    # --- SDXL -----------------------------------------------------------------------
    def sdxl_parts(self):
        from diffusers import AutoencoderKL, EulerDiscreteScheduler, UNet2DConditionModel
        from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer
        a = self.a
        if a.model:
            def load(cls, sub):
                def build():
                    return cls.from_pretrained(a.model, subfolder=sub, torch_dtype=self.dtype)
                return build
            te1, te2 = load(CLIPTextModel, "text_encoder"), load(CLIPTextModelWithProjection, "text_encoder_2")
            unet, vae = load(UNet2DConditionModel, "unet"), load(AutoencoderKL, "vae")
            root = a.model
            vcfg = read_json(os.path.join(root, "vae", "config.json"))
        else:
            c = a.config
            def text(cls, sub):
                cfg = CLIPTextConfig.from_json_file(os.path.join(c, sub, "config.json"))
                return lambda: cls._from_config(cfg, attn_implementation="sdpa")
            te1, te2 = text(CLIPTextModel, "text_encoder"), text(CLIPTextModelWithProjection, "text_encoder_2")
            ucfg = read_json(os.path.join(c, "unet", "config.json"))
            vcfg = read_json(os.path.join(c, "vae", "config.json"))
            unet = lambda: UNet2DConditionModel.from_config(ucfg)
            vae = lambda: AutoencoderKL.from_config(vcfg)
            root = c
        tok_root = root if os.path.isdir(os.path.join(root, "tokenizer")) else a.tokenizers
        tokenizers = [CLIPTokenizer.from_pretrained(os.path.join(tok_root, t)) for t in ("tokenizer", "tokenizer_2")]
        sched_file = os.path.join(root, "scheduler", "scheduler_config.json")
        if not os.path.isfile(sched_file):  # as the Rust bench: SDXL base's scheduler
            sched_file = os.path.join(CONFIGS, "sdxl-base", "scheduler", "scheduler_config.json")
        scheduler = EulerDiscreteScheduler.from_config(read_json(sched_file))
        index = os.path.join(root, "model_index.json")
        force_zeros = read_json(index).get("force_zeros_for_empty_prompt", True) if os.path.isfile(index) else True
        vae_factor = 2 ** (len(vcfg.get("block_out_channels", [64])) - 1)
        return te1, te2, unet, vae, tokenizers, scheduler, force_zeros, vae_factor

    def pipeline(self, parts, te1=None, te2=None, unet=None, vae=None):
        from diffusers import StableDiffusionXLPipeline
        _, _, _, _, (tok1, tok2), scheduler, force_zeros, _ = parts
        pipe = StableDiffusionXLPipeline(
            vae=vae, text_encoder=te1, text_encoder_2=te2, tokenizer=tok1, tokenizer_2=tok2,
            unet=unet, scheduler=scheduler, force_zeros_for_empty_prompt=force_zeros,
            add_watermarker=False)
        pipe.set_progress_bar_config(disable=True)
        return pipe

    def run_sdxl(self):
        a, dev = self.a, self.device
        want = set(a.components)
        image = "image" in want
        parts = self.sdxl_parts()
        b_te1, b_te2, b_unet, b_vae = parts[:4]
        te1, s1 = self.on_device(b_te1)
        te2, s2 = self.on_device(b_te2)
        self.text_attn = getattr(te1.config, "_attn_implementation", None)
        if "text" in want:
            pipe = self.pipeline(parts, te1, te2)
            self.record("text", "both text encoders, 1 prompt + unconditional", s1 + s2,
                        lambda: pipe.encode_prompt(a.prompt, device=dev, num_images_per_prompt=1,
                                                   do_classifier_free_guidance=True))
            del pipe
        token_dim = te1.config.hidden_size + te2.config.hidden_size
        pooled_dim = te2.config.projection_dim
        if not image:
            del te1, te2
            te1 = te2 = None
            gc.collect()
        unet = vae = None
        g = torch.Generator(dev).manual_seed(a.seed)
        randn = lambda *shape, dtype=None: torch.randn(*shape, generator=g, device=dev, dtype=dtype or self.dtype)
        if want & {"unet", "image"}:
            unet, build_s = self.on_device(b_unet)
            self.unet_attn = type(next(iter(unet.attn_processors.values()), None)).__name__
            if "unet" in want:
                l = a.resolution // parts[7]
                sample = randn(2, unet.config.in_channels, l, l)
                ctx = randn(2, 77, token_dim)
                added = {"text_embeds": randn(2, pooled_dim),
                         "time_ids": torch.tensor([[a.resolution, a.resolution, 0, 0, a.resolution, a.resolution]] * 2,
                                                  device=dev, dtype=self.dtype)}
                t = torch.tensor(500.0, device=dev)
                self.record("unet", f"one UNet step, batch 2 (guidance), latents {l}x{l}", build_s,
                            lambda: unet(sample, t, encoder_hidden_states=ctx, added_cond_kwargs=added,
                                         return_dict=False)[0])
                del sample, ctx, added
            if not image:
                del unet
                unet = None
                gc.collect()
        if want & {"vae", "image"}:
            vae, build_s = self.on_device(b_vae)
            upcast = self.dtype == torch.float16 and vae.config.force_upcast and not a.vae_fp16
            self.vae_dtype = "fp32" if upcast or self.dtype == torch.float32 else a.dtype
            if "vae" in want:
                f = 2 ** (len(vae.config.block_out_channels) - 1)
                l = a.resolution // f
                z = randn(1, vae.config.latent_channels, l, l)
                dvae = vae
                if upcast:  # what the pipeline does for force_upcast VAEs under fp16
                    dvae = vae.to(torch.float32)
                    z = z.float()
                sf = vae.config.scaling_factor
                self.record("vae", f"VAE decode, {l}x{l} -> {a.resolution}x{a.resolution} ({self.vae_dtype})", build_s,
                            lambda: dvae.decode(z / sf, return_dict=False)[0])
                if upcast:
                    vae.to(self.dtype)
                del z
            if a.vae_fp16 and vae.config.force_upcast:
                vae.register_to_config(force_upcast=False)
            if not image:
                del vae
                vae = None
                gc.collect()
        if image:
            pipe = self.pipeline(parts, te1, te2, unet, vae)
            def gen():
                return pipe(a.prompt, num_inference_steps=a.steps, guidance_scale=a.guidance,
                            height=a.resolution, width=a.resolution,
                            generator=torch.Generator(dev).manual_seed(a.seed), output_type="pt").images
            self.record("image", f"whole image {a.resolution}x{a.resolution}, {a.steps} steps, guidance {a.guidance:g}, "
                        f"{type(pipe.scheduler).__name__}", 0.0, gen, warmup=min(a.warmup, 1), iters=a.image_iters)
            del pipe
        del te1, te2, unet, vae
        gc.collect()
        if self.cuda:
            torch.cuda.empty_cache()

    # --- a LoRA training step ---------------------------------------------------------
    def run_lora_step(self):
        from diffusers import DDPMScheduler
        from peft import LoraConfig
        a, dev = self.a, self.device
        parts = self.sdxl_parts()
        unet, build_s = self.on_device(parts[2])
        sched_cfg = dict(parts[5].config)
        noise_scheduler = DDPMScheduler.from_config(sched_cfg)
        unet.add_adapter(LoraConfig(r=4, lora_alpha=4, init_lora_weights="gaussian",
                                    target_modules=["to_k", "to_q", "to_v", "to_out.0"]))
        params = [p for p in unet.parameters() if p.requires_grad]
        for p in params:  # trainable parameters in float32, as the script casts them
            p.data = p.data.float()
        optimizer = torch.optim.AdamW(params, lr=1e-4, betas=(0.9, 0.999), weight_decay=1e-2, eps=1e-8)
        unet.train()
        g = torch.Generator(dev).manual_seed(a.seed)
        randn = lambda *shape: torch.randn(*shape, generator=g, device=dev, dtype=torch.float32)
        l = a.resolution // parts[7]
        c = unet.config
        pooled_dim = c.projection_class_embeddings_input_dim - 6 * c.addition_time_embed_dim
        mean, std = randn(1, c.in_channels, l, l), 0.05 + 0.1 * torch.rand(1, c.in_channels, l, l, generator=g, device=dev)
        eps, noise = randn(1, c.in_channels, l, l), randn(1, c.in_channels, l, l)
        t = torch.tensor([500], device=dev)
        ctx = randn(1, 77, c.cross_attention_dim).to(self.dtype)
        added = {"text_embeds": randn(1, pooled_dim).to(self.dtype),
                 "time_ids": torch.tensor([[a.resolution, a.resolution, 0, 0, a.resolution, a.resolution]],
                                          device=dev, dtype=self.dtype)}
        sf = 0.13025

        def step():
            latents = (mean + std * eps) * sf
            noisy = noise_scheduler.add_noise(latents, noise, t)
            pred = unet(noisy.to(self.dtype), t, ctx, added_cond_kwargs=added, return_dict=False)[0]
            loss = torch.nn.functional.mse_loss(pred.float(), noise.float(), reduction="mean")
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            optimizer.zero_grad()
            return loss.detach()

        with torch.inference_mode(False), torch.enable_grad():
            self.record("lora-step", f"one LoRA training step (rank 4, {len(params) // 2} adapters), batch 1, "
                        f"latents {l}x{l}: forward, backward, clip, AdamW", build_s, step)
        del unet, optimizer, params
        gc.collect()

    # --- image towers ---------------------------------------------------------------
    def tower(self, spec):
        path = PRESET_TOWERS.get(spec, spec)
        if not path.endswith(".json"):
            raise SystemExit(f"--tower {spec}: expected vit-l-14, vit-bigg-14 or a configuration .json")
        root = read_json(path)
        if spec in PRESET_TOWERS:
            name = spec
        else:
            name = os.path.basename(os.path.dirname(os.path.abspath(path))) or os.path.splitext(os.path.basename(path))[0]
        if "model_cfg" in root or "vision_cfg" in root:
            import open_clip.model as ocm
            cfg = root.get("model_cfg", root)
            build = lambda: ocm._build_vision_tower(cfg["embed_dim"], cfg["vision_cfg"],
                                                    quick_gelu=cfg.get("quick_gelu", False))
            size = cfg["vision_cfg"].get("image_size", 224)
            kind = "open_clip VisionTransformer"
            call = lambda m, x: m(x)
        else:
            from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection
            cfg = CLIPVisionConfig(**root.get("vision_config", root))
            build = lambda: CLIPVisionModelWithProjection._from_config(cfg, attn_implementation="sdpa")
            size = cfg.image_size
            kind = "transformers CLIPVisionModelWithProjection"
            call = lambda m, x: m(pixel_values=x).image_embeds
        return name, build, size, kind, call

    def run_towers(self):
        a = self.a
        g = torch.Generator(self.device).manual_seed(a.seed)
        for spec in a.tower:
            name, build, size, kind, call = self.tower(spec)
            model, build_s = self.on_device(build)
            x = torch.randn(a.tower_batch, 3, size, size, generator=g, device=self.device, dtype=self.dtype)
            self.record(f"tower:{name}", f"image tower {name}, batch {a.tower_batch} at {size}x{size} ({kind})",
                        build_s, lambda: call(model, x))
            del model, x
            gc.collect()
            if self.cuda:
                torch.cuda.empty_cache()


def script_name():
    """This script as the command line named it, relative to the repository when inside."""
    path = os.path.abspath(sys.argv[0] or __file__)
    return os.path.relpath(path, REPO) if path.startswith(REPO + os.sep) else sys.argv[0]


def make_report(a, b, started, load_start):
    import diffusers, transformers, open_clip
    return {
        "schema": "magicnaming-bench/1",
        "tool": "diffusers",
        "implementation": f"diffusers {diffusers.__version__}, transformers {transformers.__version__}, "
                          f"open_clip {open_clip.__version__}, torch {torch.__version__}",
        "device": str(b.device),
        "device_name": device_name(b.device),
        "dtype": a.dtype,
        "date": started,
        "command": " ".join(shlex.quote(x) for x in [script_name()] + sys.argv[1:]),
        "settings": {
            "model": a.model or f"random weights, configurations of {os.path.relpath(a.config)}",
            "resolution": a.resolution, "steps": a.steps, "guidance": a.guidance,
            "tower_batch": a.tower_batch, "warmup": a.warmup, "iters": a.iters,
            "image_iters": a.image_iters, "image_warmup": min(a.warmup, 1), "prompt": a.prompt,
            "seed": a.seed, "budget_s": a.budget_s, "text_attention": b.text_attn, "unet_attention": b.unet_attn,
            "vae_dtype": b.vae_dtype, "torch_threads": torch.get_num_threads(),
        },
        "components": b.rows,
        "host_load": {"start": load_start, "end": list(os.getloadavg())},
        "memory": {
            "host_peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
            "device_peak_bytes": max((r.get("peak_allocated_bytes", 0) for r in b.rows), default=None) if b.cuda else None,
            "note": "device_peak_bytes: torch.cuda.max_memory_allocated, the largest over the components",
        },
    }


def write_json(path, report):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(report, f, indent=2, sort_keys=True)
        f.write("\n")
    os.replace(tmp, path)


def main(argv=None):
    a = parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    b = Bench(a)
    load_start = list(os.getloadavg())
    started = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    if a.json:  # the report after each component: a run stopped by a time limit keeps its rows
        b.on_row = lambda: write_json(a.json, make_report(a, b, started, load_start))
    with torch.inference_mode():
        if set(a.components) & {"text", "unet", "vae", "image"}:
            b.run_sdxl()
        if "towers" in a.components:
            b.run_towers()
    if "lora-step" in a.components:
        b.run_lora_step()
    report = make_report(a, b, started, load_start)
    print(f"diffusers bench on {report['device']} ({report['device_name']}), {a.dtype}")
    print(f"{'component':<22} {'median ms':>12} {'min ms':>12} {'max ms':>12} {'first ms':>12} {'build s':>9}  what")
    for r in b.rows:
        first = "-" if r["first_ms"] is None else f"{r['first_ms']:.1f}"
        print(f"{r['name']:<22} {r['median_ms']:>12.1f} {r['min_ms']:>12.1f} {r['max_ms']:>12.1f} {first:>12} "
              f"{r['build_s']:>9.1f}  {r['what']}")
    print(f"peak host memory (ru_maxrss): {report['memory']['host_peak_rss_bytes'] / 2**30:.2f} GiB")
    if a.json:
        write_json(a.json, report)


if __name__ == "__main__":
    main()
