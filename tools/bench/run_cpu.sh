#!/usr/bin/env bash
# CPU comparison: `magicnaming bench` (ndarray backend, release, f32) against
# diffusers / transformers / open_clip on PyTorch CPU (f32), same shapes, random weights,
# one after the other in one run, then the table of docs/BENCHMARKS.md (tools/bench/compare.py).
#
#   bash tools/bench/run_cpu.sh [sdxl|towers|all] [OUTDIR]
#
# The sizes are the CPU-feasible ones of docs/BENCHMARKS.md (SDXL-size models need about
# 14 GiB of RAM for the whole-image row; the ViT-bigG tower about 8). `sdxl` and `towers`
# run half each (each half takes under about 10 minutes on 2 cores); `all` (default) runs both. Needs a release build (`cargo build --release -p
# magicnaming-cli`) and the reference venv ($PYTHON, default .venv/bin/python).
set -euo pipefail
cd "$(dirname "$0")/../.."
part=${1:-all}
out=${2:-target/bench-cpu}
mkdir -p "$out"
BIN=${MAGICNAMING_BIN:-target/release/magicnaming}
PY=${PYTHON:-.venv/bin/python}
SDXL=(--components text,unet,vae,image --resolution 128 --steps 2 --warmup 1 --iters 3 --image-iters 2)
TOWERS=(--components towers --tower-batch 4 --warmup 1 --iters 2)
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
pairs=()
for p in sdxl towers; do
  [[ -f $out/ours-$p.json && -f $out/diffusers-$p.json ]] && pairs+=("$out/ours-$p.json" "$out/diffusers-$p.json")
done
python3 tools/bench/compare.py "${pairs[@]}" --command "\`bash tools/bench/run_cpu.sh\`" | tee "$out/table.md"
