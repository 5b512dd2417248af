#!/usr/bin/env bash
# Scores a candidate weights file the way every candidate since session 7 was scored, in one go, so that the figures a
# ship rule reads are always the same ones. Usage:
#   bash benchmarks/finalize_candidate.sh WEIGHTS.safetensors OUT_DIR [--fit-av]
# --fit-av first fits the A/V segment classifier for these weights on the HRF-AV training images (written into the
# card only if its cross-validation beats the margin vote), before any test figure exists.
# Then: every test split (retsam_core.evaluation.report; the classical baseline is reused from docs/model_eval),
# false lesions on the 14 healthy test eyes, CRAE/CRVE/AVR against the expert A/V maps, and flip averaging on
# CHASE_DB1 and HRF-AV. Everything is recorded in the card beside the weights and under OUT_DIR.
set -euo pipefail
W=$1
OUT=$2
CARD=${W%.safetensors}.json
export PYTHONPATH=${PYTHONPATH:-.} OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
mkdir -p "$OUT"
if [ "${3:-}" = "--fit-av" ]; then
  python -m retsam_core.evaluation.av_classifier --card "$CARD" | tee "$OUT/av_classifier.log"
fi
mkdir -p "$OUT/classical"
cp -r docs/model_eval/classical/. "$OUT/classical/"
python -m retsam_core.evaluation.report --weights "$W" --out "$OUT" | tee "$OUT/report.log"
python -m retsam_core.evaluation.healthy_fp --card "$CARD" > "$OUT/healthy_fp.json"
python benchmarks/bench_av_calibre.py --card "$CARD" --json "$OUT/av_calibre.json" > "$OUT/av_calibre.log"
for ds in chase_db1 hrf_av; do
  retsam evaluate --dataset "$ds" --segmenter "$W+flip" --out "$OUT/flip_tta/$ds" --quiet
done
python benchmarks/candidate_figures.py "$OUT"
