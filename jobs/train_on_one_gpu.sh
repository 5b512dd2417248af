#!/usr/bin/env bash
# Train the shipped `small` model on one GPU from a portable bundle, export it, and benchmark GPU inference.
#   jobs/train_on_one_gpu.sh BUNDLE OUT [CONFIG]
# BUNDLE: `python -m retsam_core.datasets.bundle BUNDLE` (built where the datasets are). OUT receives the weights,
# their card, the logs and bench_gpu.json. Every stage has its own time budget (see the config); the export takes
# the last finished stage, so a failure in a late stage still leaves usable weights. If the run fails before its
# time is up (say the config's device_sampler on a new GPU), it resumes from its last finished stage with patches
# cut by CPU threads instead, the multi-task budget shrunk to the time left.
set -uo pipefail
BUNDLE=$1
OUT=$2
CONFIG=${3:-jobs/configs/retsam-small-gpu.json}
RUN=${RUN:-/tmp/retsam-gpu-run}
PY=${PYTHON:-python3}
BUDGET=${TRAIN_TIMEOUT:-480}
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
if [ -d .whl ]; then  # packages the GPU image lacks (skan, for the A/V vote in bench_model's segment()), as carried wheels
  $PY -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl && export PYTHONPATH=$PWD:/tmp/site
fi
mkdir -p "$OUT"
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; echo "cpus: $(nproc)"; } | tee "$OUT/gpu.txt"
T0=$(date +%s)
timeout "$BUDGET" $PY jobs/train.py --config "$CONFIG" --bundle-dir "$BUNDLE" --out-dir "$RUN" \
  2>&1 | grep -v "^$" > "$OUT/train_stdout.log"
rc=${PIPESTATUS[0]}
echo "train exit: $rc after $(( $(date +%s) - T0 )) s"; tail -n 4 "$OUT/train_stdout.log"
LEFT=$(( BUDGET - ($(date +%s) - T0) ))
if [ "$rc" -ne 0 ] && [ "$rc" -ne 124 ] && [ "$LEFT" -gt 150 ]; then
  echo "resuming with CPU patch threads in the ${LEFT} s left (stage minutes shrunk to fit)"
  timeout "$LEFT" $PY jobs/train.py --config "$CONFIG" --bundle-dir "$BUNDLE" --out-dir "$RUN" --loader-workers 14 \
    --no-device-sampler --minutes-within $(( LEFT - 150 )) 2>&1 | grep -v "^$" > "$OUT/train_fallback_stdout.log"
  echo "fallback train exit: ${PIPESTATUS[0]}"; tail -n 4 "$OUT/train_fallback_stdout.log"
fi
$PY jobs/train.py --config "$RUN/config.json" --out-dir "$RUN" --export "$OUT/retsam-small.safetensors" || exit 1
timeout "${BENCH_TIMEOUT:-60}" $PY benchmarks/bench_model.py --gpu --weights "$OUT/retsam-small.safetensors" \
  --json "$OUT/bench_gpu.json" --eval-summary /nonexistent | tail -n 30
tar czf "$OUT/run_meta.tgz" -C "$RUN" --exclude='*.pt' --exclude='pseudo' .
if [ -n "${SPLIT_MB:-}" ]; then  # some transports cap the size of one file
  split -b "${SPLIT_MB}M" -d "$OUT/retsam-small.safetensors" "$OUT/retsam-small.safetensors.part" && rm "$OUT/retsam-small.safetensors"
fi
