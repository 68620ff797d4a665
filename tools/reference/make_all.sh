#!/usr/bin/env bash
# Regenerates every reference fixture under tests/fixtures/, in dependency order.
#   PYTHON=.venv/bin/python tools/reference/make_all.sh
# (PYTHON: the venv of tools/reference/requirements.txt; default python3.) Every script is
# deterministic, so a rerun leaves `git status` clean.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PYTHON:-python3}
run() {
    echo "== $1" >&2
    "$PY" "tools/reference/$1" > /dev/null
}
run make_text_fixtures.py       # tests/fixtures/text/ (tiny-sdxl/ minus unet, vae, scheduler)
run make_diffusion_fixtures.py  # tests/fixtures/diffusion/, tiny-sdxl/unet/, tiny-sdxl/vae/
run make_scheduler_fixtures.py  # tests/fixtures/schedulers/
run make_vision_fixtures.py     # tests/fixtures/vision/
run make_train_fixtures.py      # tests/fixtures/train/
run make_pipeline_fixtures.py   # tiny-sdxl/scheduler/, tests/fixtures/pipeline/ (needs text + diffusion)
run make_lora_fixtures.py       # tests/fixtures/lora/ (needs the pipeline fixtures)
run make_lora_train_fixtures.py # tests/fixtures/lora_train/ (needs tiny-sdxl unet, vae, scheduler)
run make_curate_rules.py        # tests/fixtures/curate/rules.* (standard library only)
run make_clip_model_fixtures.py # tests/fixtures/clip_model/ (needs text/ for the tokenizer, face/ for the images)
# tests/fixtures/face/ and magicnaming-models/assets/mtcnn/ need the venv of
# requirements-face.txt (facenet-pytorch pins an older torch):
#   PYTHON=.venv-face/bin/python: run make_face_fixtures.py
# tests/fixtures/curate/ (img2dataset-style shard and parquet) needs only pyarrow
# (requirements-curate.txt):
#   PYTHON=.venv-pq/bin/python: run make_curate_fixtures.py
echo "done" >&2
