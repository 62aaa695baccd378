#!/usr/bin/env bash
# Real-data recipe: Anthropic HH harmless-base (2,312 pairs shipped in ../shared/data).
# Split by prompt with a fixed seed, SFT a tiny generator on the train half's chosen and
# rejected responses (the reference's generator), train BT and ICRM reward models from it,
# report held-out accuracy.
# CPU, a few minutes on 2 cores (tiny model; use --model small or a pretrained model for real accuracy). Usage: bash examples/hh_rlhf.sh [OUT_DIR] [SEED]
set -euo pipefail
OUT=${1:-runs/hh-rlhf}
SEED=${2:-0}
DATA=${ICRM_SHARED_DATA:-$(cd "$(dirname "$0")/../.." && pwd)/shared/data}/hh-rlhf/harmless-base-test.jsonl.gz
COMMON=(--epochs 2 --batch-size 16 --lr 1e-3 --max-length 256 --seed "$SEED")

icrm --quiet data split --data "$DATA" --output "$OUT/data" --test-fraction 0.2 --seed "$SEED"
icrm --quiet sft --data "$OUT/data/train.jsonl" --model tiny --responses both --output "$OUT/sft" "${COMMON[@]}"
for method in bt icrm; do
  icrm --quiet train --data "$OUT/data/train.jsonl" --model "$OUT/sft" --generator "$OUT/sft" \
       --method "$method" --output "$OUT/rm-$method" "${COMMON[@]}"
  icrm --quiet eval --model "$OUT/rm-$method" --data "$OUT/data/test.jsonl" --output "$OUT/eval-$method.json" --overwrite
done
python - "$OUT" <<'PY'
import json, sys
out = sys.argv[1]
for method in ("bt", "icrm"):
    m = json.load(open(f"{out}/eval-{method}.json"))
    print(f"{method:5s} test accuracy {m['accuracy']:.4f} (n={m['n']})")
PY
