#!/usr/bin/env bash
# Prepares, on this (CPU) machine, what tools/bench/run_gpu.sh needs on a lent GPU
# machine, which can reach no package registry and builds nothing:
#   .bench/magicnaming.xz  the CLI built with `--features cuda` (x86-64; CUDA 13.0
#                        bindings: the lent machines' driver 580 / nvcc 13.0), stripped and
#                        xz-compressed (50 MB -> about 10: the call carries 64 MiB in all,
#                        the repository's tracked files about 38 of them)
#   .whl/                wheels the GPU image lacks: diffusers, open_clip_torch and the
#                        needs the image does not have (KINDS.md lists its packages)
# Both folders are added to .git/info/exclude; carry them with the call:
#   run(command="bash tools/bench/run_gpu.sh", carry=[".bench", ".whl"], timeout_s=480)
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
