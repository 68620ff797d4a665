#!/usr/bin/env bash
# CPU comparison: `magicnaming bench` (ndarray backend, release, f32) against
# diffusers / transformers / open_clip on PyTorch CPU (f32), same shapes, random weights,
# one after the other in one run, then the table of docs/BENCHMARKS.md (tools/bench/compare.py).
#
#   bash tools/bench/run_cpu.sh [sdxl|towers|faces|all] [OUTDIR]
#
# The sizes are the CPU-feasible ones of docs/BENCHMARKS.md (SDXL-size models need about
# 14 GiB of RAM for the whole-image row; the ViT-bigG tower about 8). `sdxl` and `towers`
# run half each (each half takes under about 10 minutes on 2 cores); `all` (default) runs both. Needs a release build (`cargo build --release -p
# magicnaming-cli`) and the reference venv ($PYTHON, default .venv/bin/python).
# `faces` (not in `all`) times MTCNN on the astronaut photo upscaled to 1024 x 1024 (PIL
# LANCZOS, written once to OUTDIR and read by both sides) and IResNet-50 at batch 32,
# against facenet-pytorch 2.6.0 and PyTorch (tools/bench/bench_faces.py, as many torch
# threads as CPUs); about 5 minutes on 2 cores.
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
export RUST_LOG=${RUST_LOG:-warn}
# Make tokenizers (and anything else) take no extra threads beyond torch's own.
export TOKENIZERS_PARALLELISM=false

if [[ $part == sdxl || $part == all ]]; then
  "$BIN" --device cpu bench "${SDXL[@]}" --json "$out/ours-sdxl.json"
  "$PY" tools/bench/bench_diffusers.py --device cpu "${SDXL[@]}" --json "$out/diffusers-sdxl.json"
fi
if [[ $part == towers || $part == all ]]; then
  "$BIN" --device cpu bench "${TOWERS[@]}" --json "$out/ours-towers.json"
  "$PY" tools/bench/bench_diffusers.py --device cpu "${TOWERS[@]}" --json "$out/diffusers-towers.json"
fi
if [[ $part == faces ]]; then
  "$PY" tools/bench/bench_faces.py --make-image tests/fixtures/face/astronaut.png --side 1024 --image "$out/face-1024.png"
  "$BIN" --device cpu bench --components faces "${FACES[@]}" --json "$out/ours-faces.json"
  "$PY" tools/bench/bench_faces.py --threads "$(nproc)" "${FACES[@]/--face-image/--image}" --json "$out/pytorch-faces.json"
fi
pairs=()
for p in sdxl:diffusers towers:diffusers faces:pytorch; do
  p2=${p#*:} p=${p%:*}
  [[ -f $out/ours-$p.json && -f $out/$p2-$p.json ]] && pairs+=("$out/ours-$p.json" "$out/$p2-$p.json")
done
cmd="bash tools/bench/run_cpu.sh"
[[ $part == faces ]] && cmd+=" faces"
python3 tools/bench/compare.py "${pairs[@]}" --command "\`$cmd\`" | tee "$out/table.md"
