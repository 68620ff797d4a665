#!/usr/bin/env bash
# GPU comparison, in one script run on the GPU machine (an H100/H200 class card). It builds
# nothing. Same card, same run: diffusers (fp16, SDPA, eager) first, then `magicnaming
# bench` (cuda backend, f16), then the table (tools/bench/compare.py).
#
# Expects, copied with the repository (docs/BENCHMARKS.md says how to make them):
#   .bench/magicnaming.xz         x86-64 binary built with `--features cuda`, xz-compressed
#   .whl/*.whl                    diffusers, open_clip_torch and the needs the image lacks
#   .bench/cubecl-cache.tar.gz    optional: the kernel cache (autotune results + PTX) of an earlier run
# and writes to $OUT (default target/bench-gpu): table.md (also printed last),
# precision.md/.json, results.tar.gz (every JSON, log and memory trace) and cubecl-cache.tar.gz (copy it as
# .bench/cubecl-cache.tar.gz next time: autotune then costs nothing).
#
# Every process runs under its own time limit (seconds, env overridable) and writes its
# JSON after each component, so a slow one still leaves the rows it finished; the
# default limits add up to 510 s. Sizes: env RES (1024), STEPS (30), TOWER_BATCH (64),
# T_* limits in seconds (0 skips that process; T_PRECISION 100 for the precision check
# first, T_PRECISION_RUN 30 for each of its three runs; T_OURS_UNET_NOK 0: the UNet step
# without our kernels),
# WARMUP (2), ITERS (10), IMAGE_ITERS (3), BUDGET_S (15: a component's timed runs stop
# after that many seconds, after at least one), OURS_DTYPE (f16); BENCH_ARGS (extra arguments of
# both benches, e.g. a --config), OURS_DEVICE (cuda:0), DIFF_DEVICE (cuda), DIFF_DTYPE (fp16)
# (the last four let the script be tried on a CPU machine with tiny configurations);
# WARMUP_MODEL (a real SDXL folder or file: `magicnaming warmup` runs first at RES, OURS_DTYPE,
# batch 2, filling the kernel cache, limit T_OURS_WARMUP, 120 s); DRY_RUN=1 prints each
# command instead of running it (no GPU, binary or Python stack needed).
set -uo pipefail
cd "$(dirname "$0")/../.."
REPO=$PWD
OUTDIR=${OUT:-$REPO/target/bench-gpu}
mkdir -p "$OUTDIR"
WORK=$(mktemp -d)
RES_DIR=$WORK/results
mkdir -p "$RES_DIR"
if [[ -z ${MAGICNAMING_BIN:-} && -f .bench/magicnaming.xz ]]; then
  python3 -c "import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], 'wb'))" \
    .bench/magicnaming.xz "$WORK/magicnaming" && chmod +x "$WORK/magicnaming"
  MAGICNAMING_BIN=$WORK/magicnaming
fi
BIN=$(realpath "${MAGICNAMING_BIN:-.bench/magicnaming}")
PY=${PYTHON:-python3}
DRY_RUN=${DRY_RUN:-0}
WARMUP_MODEL=${WARMUP_MODEL:-} T_OURS_WARMUP=${T_OURS_WARMUP:-120}
RES=${RES:-1024} STEPS=${STEPS:-30} TOWER_BATCH=${TOWER_BATCH:-64}
WARMUP=${WARMUP:-2} ITERS=${ITERS:-10} IMAGE_ITERS=${IMAGE_ITERS:-3} BUDGET_S=${BUDGET_S:-15}
OURS_DTYPE=${OURS_DTYPE:-f16} DIFF_DTYPE=${DIFF_DTYPE:-fp16}
OURS_DEVICE=${OURS_DEVICE:-cuda:0} DIFF_DEVICE=${DIFF_DEVICE:-cuda}
read -r -a EXTRA <<< "${BENCH_ARGS:-}"
T_DIFF_SDXL=${T_DIFF_SDXL:-100} T_DIFF_TOWERS=${T_DIFF_TOWERS:-40}
T_OURS_UNET=${T_OURS_UNET:-80} T_OURS_VAE=${T_OURS_VAE:-40}
T_OURS_IMAGE=${T_OURS_IMAGE:-80} T_OURS_TOWERS=${T_OURS_TOWERS:-40}
T_OURS_LORA=${T_OURS_LORA:-240}; T_DIFF_LORA=${T_DIFF_LORA:-180}
T_PRECISION=${T_PRECISION:-100} T_PRECISION_RUN=${T_PRECISION_RUN:-30} T_OURS_NORMS=${T_OURS_NORMS:-30}
# Off by default (the limits above already add up to 510 s): the UNet step again with `--no-kernels`,
# burn's ops in place of ours, to measure what our kernels change.
T_OURS_UNET_NOK=${T_OURS_UNET_NOK:-0}
COMMON=(--resolution "$RES" --steps "$STEPS" --tower-batch "$TOWER_BATCH"
        --warmup "$WARMUP" --iters "$ITERS" --image-iters "$IMAGE_ITERS" --budget-s "$BUDGET_S"
        "${EXTRA[@]}")
say() { echo "== $* (${SECONDS}s)"; }

say "environment"
if [[ $DRY_RUN == 1 ]]; then echo "dry run: $BIN, nothing is executed"; else
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm --format=csv | tee "$RES_DIR/gpu.csv"
if [[ ! -x $BIN ]]; then echo "no executable at $BIN (carry .bench/magicnaming.xz)"; exit 2; fi
if [[ $OURS_DEVICE == cuda* ]] && ! "$BIN" backends | grep -qw cuda; then
  echo "$BIN was not built with --features cuda"; exit 2
fi
if [[ $T_DIFF_SDXL -gt 0 || $T_DIFF_TOWERS -gt 0 ]]; then
  if compgen -G ".whl/*.whl" > /dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
  fi
  "$PY" -c "import torch, diffusers, transformers, open_clip; print('torch', torch.__version__, 'diffusers', diffusers.__version__, 'transformers', transformers.__version__, 'open_clip', open_clip.__version__)" \
    || { echo "the Python stack is incomplete (carry .whl, see docs/BENCHMARKS.md)"; exit 2; }
fi
fi

# The kernel cache (autotune results in autotune/, compiled PTX in cuda/): magicnaming
# reads MAGICNAMING_CACHE_DIR (the same layout as the cubecl.toml earlier runs wrote).
CACHE=$WORK/cache
mkdir -p "$CACHE"
if [[ -f .bench/cubecl-cache.tar.gz ]]; then tar -xzf .bench/cubecl-cache.tar.gz -C "$CACHE"; fi
export MAGICNAMING_CACHE_DIR=$CACHE

# $OUT/results.tar.gz is rewritten after every process (one archive instead of many
# files), so what finished is kept even if the run is cut off.
pack() { tar -czf "$OUTDIR/results.tar.gz" -C "$WORK" results; }

# NAME LIMIT CMD...: runs CMD in $WORK under a time limit while sampling the GPU's used
# memory every 50 ms; the peak minus the idle level before goes to NAME.peak (MiB).
run() {
  local name=$1 limit=$2; shift 2
  [[ $limit -gt 0 ]] || return 0
  if [[ $DRY_RUN == 1 ]]; then say "$name (limit ${limit}s): $*"; return 0; fi
  local idle; idle=$(nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits | head -1)
  nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 50 > "$RES_DIR/$name.mem" 2> /dev/null &
  local smi=$!
  say "$name (limit ${limit}s)"
  (cd "$WORK" && timeout --kill-after=10 "$limit" "$@") > "$RES_DIR/$name.log" 2>&1
  local rc=$?
  kill "$smi" 2> /dev/null; wait "$smi" 2> /dev/null
  local peak; peak=$(sort -n "$RES_DIR/$name.mem" | tail -1)
  echo $(( ${peak:-0} - ${idle:-0} )) > "$RES_DIR/$name.peak"
  grep -v '^\[' "$RES_DIR/$name.log" | tail -n 12
  pack
  if [[ $rc -ne 0 ]]; then echo "!! $name exited with $rc (124/137: time limit)"; tail -n 5 "$RES_DIR/$name.log"; fi
}

# Precision first: the tiny SDXL fixture on the CPU in f32 and on the GPU in
# f32 and f16 against diffusers' f32 final latents (tools/bench/check_precision.py).
if [[ $T_PRECISION -gt 0 && $DRY_RUN == 1 ]]; then
  say "precision (limit ${T_PRECISION}s): check_precision.py $BIN --device $OURS_DEVICE"
elif [[ $T_PRECISION -gt 0 ]]; then
  say "precision (limit ${T_PRECISION}s)"
  # Autotune effort does not change results: the check uses the minimal level.
  (cd "$WORK" && MAGICNAMING_AUTOTUNE_LEVEL=${PRECISION_AUTOTUNE:-minimal} RUST_LOG=warn timeout --kill-after=10 "$T_PRECISION" "$PY" "$REPO/tools/bench/check_precision.py" "$BIN" \
    --device "$OURS_DEVICE" --out "$OUTDIR" --timeout "$T_PRECISION_RUN") 2>&1 | tee "$RES_DIR/precision.log" | tail -n 8
  pack
fi

DIFF=("$PY" "$REPO/tools/bench/bench_diffusers.py" --device "$DIFF_DEVICE" --dtype "$DIFF_DTYPE" "${COMMON[@]}")
run diffusers-sdxl "$T_DIFF_SDXL" "${DIFF[@]}" --components text,unet,vae,image --json "$RES_DIR/diffusers-sdxl.json"
run diffusers-towers "$T_DIFF_TOWERS" "${DIFF[@]}" --components towers --json "$RES_DIR/diffusers-towers.json"
# One LoRA training step at the resolution, batch 1 (diffusers' script with PEFT).
run diffusers-lora "$T_DIFF_LORA" "${DIFF[@]}" --components lora-step --json "$RES_DIR/diffusers-lora.json"

OURS=("$BIN" --device "$OURS_DEVICE" bench --dtype "$OURS_DTYPE" "${COMMON[@]}")
export RUST_LOG=${RUST_LOG:-info}
# Compiles and tunes a generation's kernels at these shapes into the cache, timed per stage.
if [[ -n $WARMUP_MODEL ]]; then
  run ours-warmup "$T_OURS_WARMUP" "$BIN" --device "$OURS_DEVICE" warmup --model "$(realpath "$WARMUP_MODEL")" \
    --resolution "$RES" --dtype "$OURS_DTYPE" --batch 2
fi
# One process per group: autotune results of the first reach the others through the cache.
run ours-unet "$T_OURS_UNET" "${OURS[@]}" --components text,unet --json "$RES_DIR/ours-unet.json"
run ours-norms "$T_OURS_NORMS" "${OURS[@]}" --components norms --json "$RES_DIR/ours-norms.json"
run ours-unet-nokernels "$T_OURS_UNET_NOK" "${OURS[@]}" --components unet --no-kernels --json "$RES_DIR/ours-unet-nokernels.json"
run ours-vae "$T_OURS_VAE" "${OURS[@]}" --components vae --json "$RES_DIR/ours-vae.json"
run ours-image "$T_OURS_IMAGE" "${OURS[@]}" --components image --json "$RES_DIR/ours-image.json"
run ours-towers "$T_OURS_TOWERS" "${OURS[@]}" --components towers --json "$RES_DIR/ours-towers.json"
run ours-lora "$T_OURS_LORA" "${OURS[@]}" --components lora-step --json "$RES_DIR/ours-lora.json"

if [[ $DRY_RUN == 1 ]]; then say "dry run done"; exit 0; fi
say "table"
mib() { cat "$RES_DIR/$1.peak" 2> /dev/null || echo 0; }
cat > "$RES_DIR/peaks.json" << EOF
{"SDXL (ours: the whole-image process; diffusers: the text/UNet/VAE/image process)":
   {"ours": $(( $(mib ours-image) * 1048576 )), "diffusers": $(( $(mib diffusers-sdxl) * 1048576 ))},
 "image towers process": {"ours": $(( $(mib ours-towers) * 1048576 )), "diffusers": $(( $(mib diffusers-towers) * 1048576 ))}}
EOF
ours_sdxl=$(for f in unet vae image; do [[ -s $RES_DIR/ours-$f.json ]] && printf '%s+' "$RES_DIR/ours-$f.json"; done)
args=()
[[ -n $ours_sdxl && -s $RES_DIR/diffusers-sdxl.json ]] && args+=("${ours_sdxl%+}" "$RES_DIR/diffusers-sdxl.json")
[[ -s $RES_DIR/ours-towers.json && -s $RES_DIR/diffusers-towers.json ]] && args+=("$RES_DIR/ours-towers.json" "$RES_DIR/diffusers-towers.json")
[[ -s $RES_DIR/ours-lora.json && -s $RES_DIR/diffusers-lora.json ]] && args+=("$RES_DIR/ours-lora.json" "$RES_DIR/diffusers-lora.json")
if [[ ${#args[@]} -gt 0 ]]; then
  python3 tools/bench/compare.py "${args[@]}" --peaks "$RES_DIR/peaks.json" \
    --command '`bash tools/bench/run_gpu.sh`' > "$OUTDIR/table.md"
else
  echo "no pair of reports to compare: see results.tar.gz" > "$OUTDIR/table.md"
fi
pack
# Autotune results and compiled PTX (~110 MB, ~10 MB compressed): copied back as
# .bench/cubecl-cache.tar.gz, it spares the next run the JIT compilation of every kernel
# shape already seen (8-30 s each on an H200, docs/BENCHMARKS.md).
tar -czf "$OUTDIR/cubecl-cache.tar.gz" -C "$CACHE" .
ls -la "$OUTDIR"
cat "$OUTDIR/table.md"
