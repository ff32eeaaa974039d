#!/usr/bin/env bash
# Reproduce EarthGPT-Nano (MODEL_CARD.md) from the data in $EARTHGPT_DATA (default ../shared/data):
# build the MMRS set, train stage 1 and the four steps of stage 2 with the CPU recipe (v2, then a
# classification-heavy continuation and a short polish that gives the answer formats back: v3,
# then low-rate steps from v3's exported delta on a mix with classification weighted 12 and
# RSVQA's VQA weighted by dataset, run for 250 and for 500 steps, and the two runs averaged: v6;
# v5 and v4, shipped before it, were 250 steps of that phase with classification weighted 8 and
# 4), export the shipped delta, which replaces assets/earthgpt-nano (git checkout
# assets/earthgpt-nano restores it).
#   bash scripts/reproduce_nano.sh            (5 to 7 hours on 2 CPU cores; resumes if stopped)
#   bash scripts/reproduce_nano.sh --from-v3  (v6's last phase only, 70 minutes to 4 hours: v3's
#                                              delta is the one v3 shipped, taken from git history)
# Start from scratch by removing runs/nano_cpu_stage1, runs/nano_v2_stage2, runs/nano_v3_stage2,
# runs/nano_v3_polish, runs/nano_v3_export, runs/nano_v6_250 and runs/nano_v6_stage2 first.
set -euo pipefail
cd "$(dirname "$0")/.."
export EARTHGPT_DATA=${EARTHGPT_DATA:-../shared/data}
py=.venv/bin/python
# v3 as shipped (commit d35acb3); v4, v5 and v6 were trained from this very file.
V3_COMMIT=d35acb3
V3_SHA256=e48930e83fb191e8037457f2b2493148c74ec769a413647630a3bd22f9cf67dc
case "${1:-}" in
    "") from_v3=0 ;;
    --from-v3) from_v3=1 ;;
    *) echo "usage: bash scripts/reproduce_nano.sh [--from-v3]" >&2; exit 2 ;;
esac
if [ "$from_v3" = 1 ] && ! git cat-file -e "$V3_COMMIT:assets/earthgpt-nano/model.safetensors" 2>/dev/null; then
    echo "--from-v3 needs commit $V3_COMMIT (v3's shipped delta) in this clone's history;" \
        "a shallow clone lacks it: git fetch --unshallow, or run without --from-v3" >&2
    exit 2
fi
$py -m earthgpt mmrs build --all-shared "$EARTHGPT_DATA" --out mmrs
if [ "$from_v3" = 1 ]; then
    mkdir -p runs/nano_v3_export
    for f in config.json model.safetensors; do
        git show "$V3_COMMIT:assets/earthgpt-nano/$f" > "runs/nano_v3_export/$f"
    done
    echo "$V3_SHA256  runs/nano_v3_export/model.safetensors" | sha256sum --check --quiet
else
    $py -m train train/configs/nano_cpu_stage1.yaml
    $py -m train train/configs/nano_cpu_stage2_v2.yaml
    $py -m train train/configs/nano_cpu_stage2_v3.yaml
    $py -m train train/configs/nano_cpu_stage2_v3_polish.yaml
    $py -m train.export_weights runs/nano_v3_polish/final runs/nano_v3_export
fi
# v6: the last phase over 250 and over 500 steps from v3, and the average of the two runs.
$py -m train train/configs/nano_cpu_stage2_v6.yaml optim.max_steps=250 run.output_dir=runs/nano_v6_250
$py -m train train/configs/nano_cpu_stage2_v6.yaml
$py -m train.soup runs/nano_v6_soup runs/nano_v6_250/final=0.5 runs/nano_v6_stage2/final=0.5
$py -m train.export_weights runs/nano_v6_soup assets/earthgpt-nano
