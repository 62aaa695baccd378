#!/usr/bin/env bash
# Real-data recipe: GSM8K best-of-4 verification with the shipped graded model solutions.
# Questions are split in halves by a fixed seed. A tiny backbone is trained by SFT on GSM8K
# train solutions; the ICRM generator continues from it on all graded solutions of the train
# half, right and wrong (the reference's generator); then pointwise verifiers (BCE, and BCE +
# ICRM consistency) on the train half; best-of-4 on the test half vs random@4 and pass@4.
# CPU, a few minutes on 2 cores (tiny model). Usage: bash examples/gsm8k_verification.sh [OUT_DIR] [SEED]
set -euo pipefail
OUT=${1:-runs/gsm8k}
SEED=${2:-0}
SHARED=${ICRM_SHARED_DATA:-$(cd "$(dirname "$0")/../.." && pwd)/shared/data}
COMMON=(--batch-size 16 --lr 1e-3 --max-length 320 --seed "$SEED")

icrm --quiet data gsm8k-bon --data "$SHARED/gsm8k/example_model_solutions.jsonl.gz" --output "$OUT/data" --seed "$SEED"
icrm --quiet data gsm8k-sft --data "$SHARED/gsm8k/train.jsonl.gz" --output "$OUT/sft.jsonl" --overwrite
icrm --quiet sft --data "$OUT/sft.jsonl" --model tiny --output "$OUT/sft" --epochs 1 "${COMMON[@]}"
icrm --quiet sft --data "$OUT/data/pointwise_train.jsonl" --model "$OUT/sft" --responses all --output "$OUT/gen" \
     --epochs 1 "${COMMON[@]}"
for method in bt icrm-nosft; do
  icrm --quiet train --data "$OUT/data/pointwise_train.jsonl" --model "$OUT/sft" --generator "$OUT/gen" \
       --method "$method" --output "$OUT/verifier-$method" --epochs 2 "${COMMON[@]}"
  icrm --quiet bon --model "$OUT/verifier-$method" --data "$OUT/data/bon_test.jsonl" --n 1,2,4 \
       --output "$OUT/bon-$method.json" --overwrite
done
python - "$OUT" <<'PY'
import json, sys
out = sys.argv[1]
for method in ("bt", "icrm-nosft"):
    r = json.load(open(f"{out}/bon-{method}.json"))
    print(f"{method:10s} best-of-4 {r['accuracy']['4']:.4f}  random@4 {r['random']['4']:.4f}  "
          f"pass@4 {r['pass']['4']:.4f}  majority@4 {r.get('majority', {}).get('4', float('nan')):.4f}")
PY
