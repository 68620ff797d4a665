#!/usr/bin/env bash
# Prepares, on a build machine (no GPU needed), what tools/bench/run_gpu.sh needs on a GPU
# machine that has no network access and builds nothing (docs/BENCHMARKS.md):
#   .bench/magicnaming.xz  the CLI built with `--features cuda` (x86-64; CUDA 13.0
#                        bindings, for driver 580 / CUDA 13.0), stripped and xz-compressed
#                        (50 MB -> about 10: the last line printed is the size to copy,
#                        against a 64 MiB limit)
#   .whl/                wheels a PyTorch image typically lacks: diffusers, open_clip_torch
#                        and their dependencies beyond torch, transformers, timm, safetensors
# Both folders are added to .git/info/exclude; copy them to the GPU machine with the
# repository and run `bash tools/bench/run_gpu.sh` there.
#
#   bash tools/bench/prepare_gpu.sh [--no-build]
set -euo pipefail
cd "$(dirname "$0")/../.."
exclude=$(git rev-parse --git-path info/exclude)
for p in /.bench/ /.whl/; do grep -qxF "$p" "$exclude" 2> /dev/null || echo "$p" >> "$exclude"; done
mkdir -p .bench .whl

if [[ ${1:-} != --no-build ]]; then
  # Release, burn's default features (autotune, fusion) through the `cuda` feature.
  CUDARC_CUDA_VERSION=13000 cargo build --release -p magicnaming-cli --features cuda
  strip -o target/release/magicnaming-cuda target/release/magicnaming
  xz -T0 -6 -c target/release/magicnaming-cuda > .bench/magicnaming.xz
fi

python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
  --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform any -d .whl \
  diffusers==0.42.1 open_clip_torch==3.3.0 ftfy==6.3.1 wcwidth==0.2.13 importlib_metadata==8.7.0
ls -la .bench .whl
du -sh .bench .whl
echo "travelling: $(( ( $(git ls-files -z | xargs -0 du -cb | tail -1 | cut -f1) + $(du -sb .bench .whl | awk '{s+=$1} END {print s}') ) / 1048576 )) MiB of 64 (tracked files + .bench + .whl; untracked files add to it)"
