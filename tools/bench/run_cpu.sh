#!/usr/bin/env bash
# CPU comparison: `magicnaming bench` on both CPU backends (flex, the default, and
# ndarray; release, f32) against diffusers / transformers / open_clip on PyTorch CPU (f32),
# same shapes, random weights, one after the other in one run, then the tables of
# docs/BENCHMARKS.md (tools/bench/compare.py, each backend against PyTorch).
#
#   bash tools/bench/run_cpu.sh [sdxl|towers|faces|load|lora|all] [OUTDIR]
#
# BACKENDS (default "flex flex-burn ndarray") picks the backends; `flex-burn` is burn-flex
# with burn's own ops only (`bench --no-kernels`: none of our burn-flex paths).
#
# The sizes are the CPU-feasible ones of docs/BENCHMARKS.md (SDXL-size models need about
# 14 GiB of RAM for the whole-image row; the ViT-bigG tower about 8). `sdxl` and `towers`
# run half each (each half takes under about 10 minutes on 2 cores); `all` (default) runs both. Needs a release build (`cargo build --release -p
# magicnaming-cli`) and the reference venv ($PYTHON, default .venv/bin/python).
# `faces` (not in `all`) times MTCNN on the astronaut photo upscaled to 1024 x 1024 (PIL
# LANCZOS, written once to OUTDIR and read by both sides) and IResNet-50 at batch 32,
# against facenet-pytorch 2.6.0 and PyTorch (tools/bench/bench_faces.py, as many torch
# threads as CPUs); about 5 minutes on 2 cores.
# `load` (not in `all`) times loading an SDXL-size diffusers folder of random fp16 weights
# (tools/bench/make_random_sdxl.py writes it to $SDXL_RANDOM, default OUTDIR/sdxl-rand,
# 6.9 GB, when missing) as f32, then one 64 x 64 step: the "build" column of each side;
# about 18 GiB of RAM; the files are read once before each side so that both find them in
# the page cache.
# `lora` (not in `all`) times one LoRA training step of the SDXL-size UNet (random weights,
# f32) at 128 x 128, batch 1, rank 4 on every attention projection, against the diffusers
# script's step with PEFT (bench_diffusers.py lora-step), and ours again with burn's balanced
# activation checkpointing; each in its own process, so that each peak is the step's;
# about 12 GiB of RAM.
set -euo pipefail
cd "$(dirname "$0")/../.."
part=${1:-all}
out=${2:-target/bench-cpu}
mkdir -p "$out"
BIN=${MAGICNAMING_BIN:-target/release/magicnaming}
PY=${PYTHON:-.venv/bin/python}
SDXL=(--components text,unet,vae,image --resolution 128 --steps 2 --warmup 1 --iters 3 --image-iters 2)
TOWERS=(--components towers --tower-batch 4 --warmup 1 --iters 2)
FACES=(--face-image "$out/face-1024.png" --face-batch 32 --warmup 1 --iters 3)
BACKENDS=${BACKENDS:-flex flex-burn ndarray}
export RUST_LOG=${RUST_LOG:-warn}
# Make tokenizers (and anything else) take no extra threads beyond torch's own.
export TOKENIZERS_PARALLELISM=false

ours() { # ours PART ARGS...: one bench per backend
  local p=$1; shift
  for b in $BACKENDS; do
    case $b in
      # burn-flex with burn's own ops only: what our burn-flex paths change.
      flex-burn) "$BIN" --device flex bench --no-kernels "$@" --json "$out/$b-$p.json" ;;
      *) "$BIN" --device "$b" bench "$@" --json "$out/$b-$p.json" ;;
    esac
  done
}
if [[ $part == sdxl || $part == all ]]; then
  ours sdxl "${SDXL[@]}"
  "$PY" tools/bench/bench_diffusers.py --device cpu "${SDXL[@]}" --json "$out/diffusers-sdxl.json"
fi
if [[ $part == towers || $part == all ]]; then
  ours towers "${TOWERS[@]}"
  "$PY" tools/bench/bench_diffusers.py --device cpu "${TOWERS[@]}" --json "$out/diffusers-towers.json"
fi
if [[ $part == faces ]]; then
  "$PY" tools/bench/bench_faces.py --make-image tests/fixtures/face/astronaut.png --side 1024 --image "$out/face-1024.png"
  ours faces --components faces "${FACES[@]}"
  "$PY" tools/bench/bench_faces.py --threads "$(nproc)" "${FACES[@]/--face-image/--image}" --json "$out/pytorch-faces.json"
fi
if [[ $part == lora ]]; then
  LORA=(--components lora-step --resolution 128 --warmup 1 --iters 3)
  ours lora "${LORA[@]}"
  for b in $BACKENDS; do
    "$BIN" --device "$b" bench "${LORA[@]}" --balanced-checkpointing --json "$out/$b-lora-ckpt.json"
  done
  "$PY" tools/bench/bench_diffusers.py --device cpu "${LORA[@]}" --json "$out/diffusers-lora.json"
fi
if [[ $part == load ]]; then
  model=${SDXL_RANDOM:-$out/sdxl-rand}
  [[ -d $model/unet ]] || "$PY" tools/bench/make_random_sdxl.py "$model"
  LOAD=(--model "$model" --components text,unet --resolution 64 --warmup 0 --iters 1)
  # Each side finds the files in the page cache: read them once first.
  warm() { cat "$model"/*/*.safetensors > /dev/null; }
  for b in $BACKENDS; do warm; "$BIN" --device "$b" bench "${LOAD[@]}" --json "$out/$b-load.json"; done
  warm
  "$PY" tools/bench/bench_diffusers.py --device cpu "${LOAD[@]}" --json "$out/diffusers-load.json"
fi
cmd="bash tools/bench/run_cpu.sh"
[[ $part != all ]] && cmd+=" $part"
for b in $BACKENDS; do
  pairs=()
  for p in sdxl:diffusers towers:diffusers faces:pytorch load:diffusers; do
    p2=${p#*:} p=${p%:*}
    [[ -f $out/$b-$p.json && -f $out/$p2-$p.json ]] && pairs+=("$out/$b-$p.json" "$out/$p2-$p.json")
  done
  [[ ${#pairs[@]} -gt 0 ]] || continue
  echo "### $b"
  python3 tools/bench/compare.py "${pairs[@]}" --command "\`$cmd\`" --build-times
done | tee "$out/table.md"
