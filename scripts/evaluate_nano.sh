#!/usr/bin/env bash
# The numbers of MODEL_CARD.md: the nano model (default: the shipped one) and its baselines on the
# MMRS val split built from $EARTHGPT_DATA (default ../shared/data). Reports go to reports/, named
# after the model: reports/nano_val*.json for the shipped one, reports/v5_val*.json for
# runs/v5/final. The baselines do not depend on the model: they are scored once (remove
# reports/baselines_val*.json to score them again).
#   bash scripts/evaluate_nano.sh [MODEL]       (about 1.5 hours on 2 CPU cores)
set -euo pipefail
cd "$(dirname "$0")/.."
export EARTHGPT_DATA=${EARTHGPT_DATA:-../shared/data}
model=${1:-nano}
name=$(printf '%s' "$model" | sed -e 's#/*$##' -e 's#^runs/##' -e 's#/\(final\|export\)$##' -e 's#[^A-Za-z0-9._-]#_#g')
e=".venv/bin/python -m earthgpt"
[ -f mmrs/val.jsonl ] || $e mmrs build --all-shared "$EARTHGPT_DATA" --out mmrs
general=(--tasks classification vqa caption region_caption grounding --limit 200)
detection=(--tasks detection_hbb detection_obb --limit 100)  # every val detection image
$e eval --data mmrs --model "$model" "${general[@]}" --out "reports/${name}_val.json"
$e eval --data mmrs --model "$model" "${detection[@]}" --max-new-tokens 300 --out "reports/${name}_val_detection.json"
$e eval --data mmrs --model "$model" --tasks vqa --out "reports/${name}_val_vqa_all.json"  # all 2,595 VQA turns
$e eval --data mmrs --model "$model" --tasks classification --out "reports/${name}_val_cls_all.json"  # all 382 AID images
[ -f reports/baselines_val.json ] || $e baselines --data mmrs "${general[@]}" --probe --out reports/baselines_val.json
[ -f reports/baselines_val_vqa_all.json ] || $e baselines --data mmrs --tasks vqa --out reports/baselines_val_vqa_all.json
[ -f reports/baselines_val_detection.json ] || \
    $e baselines --data mmrs "${detection[@]}" --out reports/baselines_val_detection.json
