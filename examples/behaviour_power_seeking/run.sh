#!/usr/bin/env bash
# Reproduces examples/behaviour_power_seeking on a CPU (embedded preset: Gemma 3 270M, layer 9,
# its shipped SAE). Training checkpoints stay under $OUT; the committed example keeps the final
# vectors, logs and evaluation outputs.
set -euo pipefail
OUT=${OUT:-runs/behaviour_power_seeking}
PY=${PY:-python}
TRAIN="--behaviour power-seeking --layer 9 --epochs 2 --max-pairs ${MAX_PAIRS:-32} --validation-fraction 0.03 --threads 1"
$PY -m yapo_interp.train --method bipo $TRAIN --out "$OUT/train/bipo"
$PY -m yapo_interp.train --method yapo $TRAIN --out "$OUT/train/yapo"
$PY -m yapo_interp.behaviour --behaviour power-seeking \
    --vectors "$OUT/train/bipo/vector" "$OUT/train/yapo/vector" \
    --multipliers ${MULTIPLIERS:--2 -1 0 1 2} --max-items "${MAX_ITEMS:-8}" \
    --cost --cost-max-tokens 64 --batch-size 8 --threads 1 --out "$OUT/evaluate"
