#!/usr/bin/env bash
# Re-record the small run checked into samples/runs/mlp_gloo_2rank: 2 ranks on CPU with
# gloo, the 16 x Linear(512, 512) MLP, DDP's default buckets (25 MB, first 1 MB), 20
# training steps of which steps 5..9 are recorded (wait 3, warmup 2, active 5).
# Run from anywhere; needs the project's virtual environment (make install).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"
OUT=samples/runs/mlp_gloo_2rank
export OMP_NUM_THREADS=1
"$VENV/bin/tracekit" profile --overwrite --out "$OUT" --wait 3 --warmup 2 --steps 5 -- \
    "$VENV/bin/torchrun" --nproc_per_node 2 samples/train_ddp.py --model mlp --steps 20
du -sh "$OUT"
