#!/usr/bin/env bash
# Make everything a lent GPU's one training call needs, here on the CPU, and prove the call works before spending
# device time on it (a session gets 15 minutes of it, starts included).
#   jobs/prepare_gpu_call.sh [CONFIG]
# 1. `.gpubundle/`: the training canvases of the four datasets' train splits, compact (the GPU machine has no
#    shared datasets); built from ../shared/data (or $RETSAM_DATA) through the canvas cache in runs/cache.
# 2. `.whl/`: skan as a wheel (no deps), which the GPU image lacks, for the benchmark's A/V vote.
# 3. A dry run of `jobs/train_on_one_gpu.sh` with CONFIG cut to 0.3 minutes, on this CPU: training, export and the
#    split into parts, as the GPU call will run them. It catches breakage before the device clock starts.
# 4. The command to hand to the device `run` tool, with what to carry.
set -euo pipefail
CONFIG=${1:-jobs/configs/retsam-small-gpu-distil-vessels-next.json}
PY=${PYTHON:-python3}
DATA=${RETSAM_DATA:-../shared/data}
export PYTHONPATH=$PWD

if [ ! -f .gpubundle/index.json ]; then
  $PY -m retsam_core.datasets.bundle .gpubundle --data-root "$DATA"
fi
if ! ls .whl/skan-*.whl >/dev/null 2>&1; then
  $PY -m pip download -q --no-deps --only-binary=:all: skan -d .whl
fi

DRY=$(mktemp -d)
$PY - "$CONFIG" "$DRY/config.json" <<'EOF'
import json, sys
cfg = json.load(open(sys.argv[1]))
for stage in cfg.get("stages", []):
    cfg[stage]["max_minutes"] = 0.3
cfg["loader_workers"] = 2
json.dump(cfg, open(sys.argv[2], "w"), indent=1)
EOF
echo "dry run on the CPU (0.3 min per stage): $DRY"
fail() {  # LOG MESSAGE
  tail -n 30 "$1"
  echo "$2"
  exit 1
}
RUN="$DRY/run" SPLIT_MB=15 TRAIN_TIMEOUT=300 BENCH_TIMEOUT=5 bash jobs/train_on_one_gpu.sh .gpubundle "$DRY/out" \
  "$DRY/config.json" > "$DRY/dry.log" 2>&1 || fail "$DRY/dry.log" "dry run FAILED"
ls "$DRY"/out/retsam-small.safetensors.part* >/dev/null || fail "$DRY/dry.log" "no weights exported"
grep -q "done:" "$DRY/out/train_stdout.log" || fail "$DRY/out/train_stdout.log" "training did not finish"
echo "dry run OK: $(grep 'done:' "$DRY/out/train_stdout.log" | head -c 160)"

CARRY=$(du -scb --apparent-size .gpubundle .whl | tail -n 1 | cut -f1)
TREE=$(git ls-files -z | du -cb --apparent-size --files0-from=- | tail -n 1 | cut -f1)
echo "carry: .gpubundle + .whl $((CARRY >> 20)) MiB, tracked tree $((TREE >> 20)) MiB:" \
  "$(((CARRY + TREE) >> 20)) of the 64 MiB a device call takes"
[ $((CARRY + TREE)) -lt $((62 << 20)) ] \
  || echo "WARNING: close to the 64 MiB limit; untracked files beside them travel too"
cat <<EOF
device run (kind left out; timeout_s 600; carry [".gpubundle", ".whl"]):
  SPLIT_MB=15 TRAIN_TIMEOUT=540 BENCH_TIMEOUT=30 bash jobs/train_on_one_gpu.sh .gpubundle \$OUT $CONFIG
then here (the card must sit beside the weights, same stem):
  mkdir -p runs/next-gpu && cat FILES_AT/retsam-small.safetensors.part* > runs/next-gpu/retsam-small.safetensors
  cp FILES_AT/retsam-small.json runs/next-gpu/ && bash benchmarks/finalize_candidate.sh \\
    runs/next-gpu/retsam-small.safetensors runs/eval-next-gpu --fit-av
EOF
