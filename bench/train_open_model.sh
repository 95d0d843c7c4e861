#!/usr/bin/env bash
# Train ctadeface's open face model (registry name 'open') from a seed, on CPU.
#
#   bench/train_open_model.sh [OUT] [SEED]      (defaults: build/open_model, 0)
#
# Data: phantoms from ctadeface.phantom (seeds SEED*1000 + i) and the real CTs of ../shared/data
# labelled by ctadeface.annotate (labels cached under OUT/labels): all OpenKBP training
# patients and the heads except vhp_female_head (held out for validation, with the OpenKBP
# validation patients). Budget: <= 2 h on 2 CPU cores. The model folder is
# OUT/Dataset902_OpenFace/nnUNetTrainer__nnUNetPlans__3d_fullres; copy it to
# ctadeface/data/models/open/ to ship it, then run bench/evaluate_open_model.py.
set -euo pipefail
HERE="$(cd "$(dirname "$0")/.." && pwd)"
OUT="${1:-$HERE/build/open_model}"
SEED="${2:-0}"
DATA="${CTADEFACE_SHARED_DATA:-$HERE/../shared/data}"
PY="${PYTHON:-$HERE/.venv/bin/python}"
ITERATIONS="${ITERATIONS:-5000}"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}"
mkdir -p "$OUT"
cd "$HERE"
/usr/bin/env time -p "$PY" -m ctadeface.train \
    --out "$OUT" --seed "$SEED" \
    --phantom-cases 80 --phantom-spacing-range 0.5,5 --phantom-max-voxels 2000000 \
    --real-glob "$DATA/heads/*.nii.gz" --real-glob "$DATA/openkbp/train_pt*.nii.gz" \
    --exclude-real vhp_female_head --label-cache "$OUT/labels" \
    --spacing 2.5 --features 8,16,32,64,128 --patch 64 --batch-size 2 \
    --foreground-fraction 0.5 --iterations "$ITERATIONS" --lr 3e-3 \
    --dataset-id 902 --dataset-name OpenFace --threads "$OMP_NUM_THREADS" --holdout 0 \
    2>&1 | tee "$OUT/train.log"
