#!/usr/bin/env bash
# Reproduce EarthGPT-Nano (MODEL_CARD.md) from the data in $EARTHGPT_DATA (default ../shared/data):
# build the MMRS set, train stage 1 and the four steps of stage 2 with the CPU recipe (v2, then a
# classification-heavy continuation and a short polish that gives the answer formats back: v3,
# then 250 low-rate steps from v3's exported delta on a mix with classification weighted 8: v5;
# v4, shipped before it, was the same phase with classification weighted 4), export the shipped
# delta, which replaces assets/earthgpt-nano (git checkout assets/earthgpt-nano restores it).
#   bash scripts/reproduce_nano.sh            (4 to 5 hours on 2 CPU cores; resumes if stopped)
# Start from scratch by removing runs/nano_cpu_stage1, runs/nano_v2_stage2, runs/nano_v3_stage2,
# runs/nano_v3_polish, runs/nano_v3_export and runs/nano_v5_stage2 first.
set -euo pipefail
cd "$(dirname "$0")/.."
export EARTHGPT_DATA=${EARTHGPT_DATA:-../shared/data}
py=.venv/bin/python
$py -m earthgpt mmrs build --all-shared "$EARTHGPT_DATA" --out mmrs
$py -m train train/configs/nano_cpu_stage1.yaml
$py -m train train/configs/nano_cpu_stage2_v2.yaml
$py -m train train/configs/nano_cpu_stage2_v3.yaml
$py -m train train/configs/nano_cpu_stage2_v3_polish.yaml
$py -m train.export_weights runs/nano_v3_polish/final runs/nano_v3_export
$py -m train train/configs/nano_cpu_stage2_v5.yaml
$py -m train.export_weights runs/nano_v5_stage2/final assets/earthgpt-nano
