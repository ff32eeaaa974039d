#!/usr/bin/env bash
# Reproduce EarthGPT-Nano (MODEL_CARD.md) from the data in $EARTHGPT_DATA (default ../shared/data):
# build the MMRS set, train stage 1 and the four steps of stage 2 with the CPU recipe (v2, then a
# classification-heavy continuation and a short polish that gives the answer formats back: v3,
# then 250 low-rate steps from v3's exported delta on a mix with classification weighted 8: v5;
# v4, shipped before it, was the same phase with classification weighted 4), export the shipped
# delta, which replaces assets/earthgpt-nano (git checkout assets/earthgpt-nano restores it).
#   bash scripts/reproduce_nano.sh            (4 to 5 hours on 2 CPU cores; resumes if stopped)
#   bash scripts/reproduce_nano.sh --from-v3  (v5's last phase only, 20 to 80 minutes: v3's delta
#                                              is the one v3 shipped, taken from git history)
# Start from scratch by removing runs/nano_cpu_stage1, runs/nano_v2_stage2, runs/nano_v3_stage2,
# runs/nano_v3_polish, runs/nano_v3_export and runs/nano_v5_stage2 first.
set -euo pipefail
cd "$(dirname "$0")/.."
export EARTHGPT_DATA=${EARTHGPT_DATA:-../shared/data}
py=.venv/bin/python
# v3 as shipped (commit d35acb3); v4 and v5 were trained from this very file.
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
$py -m train train/configs/nano_cpu_stage2_v5.yaml
$py -m train.export_weights runs/nano_v5_stage2/final assets/earthgpt-nano
