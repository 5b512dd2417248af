#!/usr/bin/env bash
# Train the shipped `small` model on one GPU from a portable bundle, export it, and benchmark GPU inference.
#   jobs/train_on_one_gpu.sh BUNDLE OUT [CONFIG]
# BUNDLE: `python -m retsam_core.datasets.bundle BUNDLE` (built where the datasets are). OUT receives the weights,
# their card, the logs and bench_gpu.json. Every stage has its own time budget (see the config); the export takes
# the last finished stage, so a failure in a late stage still leaves usable weights.
set -uo pipefail
BUNDLE=$1
OUT=$2
CONFIG=${3:-jobs/configs/retsam-small-gpu.json}
RUN=${RUN:-/tmp/retsam-gpu-run}
PY=${PYTHON:-python3}
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
mkdir -p "$OUT"
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; echo "cpus: $(nproc)"; } | tee "$OUT/gpu.txt"
timeout "${TRAIN_TIMEOUT:-480}" $PY jobs/train.py --config "$CONFIG" --bundle-dir "$BUNDLE" --out-dir "$RUN" \
  2>&1 | grep -v "^$" > "$OUT/train_stdout.log"
echo "train exit: ${PIPESTATUS[0]}"; tail -n 4 "$OUT/train_stdout.log"
$PY jobs/train.py --config "$RUN/config.json" --out-dir "$RUN" --export "$OUT/retsam-small.safetensors" || exit 1
$PY benchmarks/bench_model.py --gpu --weights "$OUT/retsam-small.safetensors" --json "$OUT/bench_gpu.json" \
  --eval-summary /nonexistent | tail -n 30
tar czf "$OUT/run_meta.tgz" -C "$RUN" --exclude='*.pt' --exclude='pseudo' .
if [ -n "${SPLIT_MB:-}" ]; then  # some transports cap the size of one file
  split -b "${SPLIT_MB}M" -d "$OUT/retsam-small.safetensors" "$OUT/retsam-small.safetensors.part" && rm "$OUT/retsam-small.safetensors"
fi
