#!/usr/bin/env bash
# EarthGPT-Nano on one GPU, in about 9 minutes of GPU time: builds what is missing (the offline base,
# the MMRS set), trains stage 1 and stage 2 for as many steps as each stage's seconds allow (measured
# by a short probe of the real config on this machine: train/budget.py), evaluates the result on the
# val split and writes the delta in the shipped form.
#   bash scripts/train_nano_gpu.sh [OUT]                  (OUT: runs/nano_gpu)
#   cp -r runs/nano_gpu/delta/. assets/earthgpt-nano/     (to ship it, after reading its scores)
# Needs a CUDA build of torch 2.13.0 in .venv (a machine whose pip finds the CPU wheel first has that
# one: install the CUDA one over it) and the data folder. Environment, with defaults:
#   EARTHGPT_DATA=../shared/data   MMRS=mmrs (built from the data folder when MMRS/train.jsonl is missing)
#   STAGE1_SECONDS=120  STAGE2_SECONDS=210   training time of each stage, after its probe
#   PROBE_STEPS=30                            steps of each probe (its first logged window is left out)
#   EVAL_LIMIT=200                            items a task in the val evaluation (0: no evaluation);
#                                             detection: every val image up to 100, HBB only
#   TINY=1                                    the CPU check of this script: the tiny random model,
#                                             a few steps, 2 items a task (tests/test_train_nano_gpu.py)
# Writes OUT/stage1 and OUT/stage2 (the runs), OUT/delta (the weights), OUT/val.json and
# OUT/val_detection.json (scores, with .md summaries) and OUT/timing.tsv (seconds of each phase).
set -euo pipefail
cd "$(dirname "$0")/.."
export EARTHGPT_DATA=${EARTHGPT_DATA:-../shared/data}
py=${PYTHON:-.venv/bin/python}
out=${1:-runs/nano_gpu}
mmrs=${MMRS:-mmrs}
stage1_s=${STAGE1_SECONDS:-120}
stage2_s=${STAGE2_SECONDS:-210}
probe=${PROBE_STEPS:-30}
limit=${EVAL_LIMIT:-200}
det_limit=100
max_new=300
tiny=${TINY:-0}

common=(run.tensorboard=false "data.sources=[mmrs=$mmrs/train.jsonl]" "data.feature_cache=cache/vision-nano")
if [ "$tiny" = 1 ]; then
  # The same configs on the tiny random model: the wiring, data, probes, budget and export of a
  # real run in seconds on a CPU.
  common+=(model.preset=tiny model.pretrained=false model.tokenizer=byte-level
           "model.config={image_token_id: 259}" "run.mixed_precision='no'" data.num_workers=0
           optim.batch_size=2 data.max_length=512 "data.feature_cache=$out/cache")
  probe=${PROBE_STEPS:-3}
  stage1_s=${STAGE1_SECONDS:-2}
  stage2_s=${STAGE2_SECONDS:-2}
  limit=${EVAL_LIMIT:-2}
  det_limit=2
  max_new=16
else
  if ! "$py" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
    echo "error: torch sees no CUDA GPU ($("$py" -c 'import torch; print("torch", torch.__version__)')): this recipe" \
         "needs one. Install a CUDA build of torch 2.13.0 in .venv, or train on the CPU with" \
         "scripts/reproduce_nano.sh; TINY=1 runs this script's CPU check." >&2
    exit 2
  fi
  "$py" -c 'import torch; print("[gpu]", torch.cuda.get_device_name(0))'
  "$py" -m earthgpt weights prepare
fi

mkdir -p "$out"
timing=$out/timing.tsv
printf 'phase\tseconds\tsteps\n' > "$timing"
clock() { date +%s.%N; }
since() { "$py" -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.1f}')" "$1" "$(clock)"; }

t=$(clock)
if [ ! -f "$mmrs/train.jsonl" ]; then
  if [ ! -d "$EARTHGPT_DATA" ]; then
    echo "error: no MMRS set at $mmrs and no data folder at $EARTHGPT_DATA to build it from" \
         "(set EARTHGPT_DATA or MMRS)" >&2
    exit 2
  fi
  "$py" -m earthgpt mmrs build --all-shared "$EARTHGPT_DATA" --out "$mmrs" --no-progress
fi
printf 'mmrs\t%s\t\n' "$(since "$t")" >> "$timing"

# train_stage N SECONDS [overrides…]: a probe of the real config (run.stop_at), the steps that fit
# SECONDS at its speed, then the real run from step 0 (the probe's feature cache is reused).
train_stage() {
  local stage=$1 seconds=$2; shift 2
  local config=train/configs/nano_gpu_stage$stage.yaml probe_dir=$out/probe$stage t steps
  t=$(clock)
  rm -rf "$probe_dir"
  "$py" -m train "$config" "${common[@]}" "$@" "run.output_dir=$probe_dir" optim.max_steps=100000 \
    "optim.warmup_steps=$probe" "run.stop_at=$probe" run.save_every=100000 run.log_every=1 \
    run.export_final=false run.keep_checkpoints=1 > "$out/probe$stage.log"
  steps=$("$py" -m train.budget "$probe_dir" --seconds "$seconds" --min-steps 10)
  printf 'probe%s\t%s\t%s\n' "$stage" "$(since "$t")" "$probe" >> "$timing"
  rm -rf "$probe_dir"
  echo "[stage $stage] $steps steps fit ${seconds}s (probe of $probe steps: $out/probe$stage.log)"
  t=$(clock)
  "$py" -m train "$config" "${common[@]}" "$@" "run.output_dir=$out/stage$stage" "optim.max_steps=$steps"
  printf 'stage%s\t%s\t%s\n' "$stage" "$(since "$t")" "$steps" >> "$timing"
}

stage2=("model.init_from=$out/stage1/final")
# A model.config override replaces the config's whole mapping: the tiny stage 2 names the position
# signal again, so that the CPU check adds it to a stage-1 export as the real stage 2 does.
[ "$tiny" = 1 ] && stage2+=("model.config={image_token_id: 259, projector: {position: fourier2d}}")
train_stage 1 "$stage1_s"
train_stage 2 "$stage2_s" "${stage2[@]}"

t=$(clock)
max_mb=40
[ "$tiny" = 1 ] && max_mb=1000  # the tiny model's random base is not a packaged one: its delta is whole
"$py" -m train.export_weights "$out/stage2/final" "$out/delta" --max-mb "$max_mb"
printf 'export\t%s\t\n' "$(since "$t")" >> "$timing"

if [ "$limit" -gt 0 ]; then
  t=$(clock)
  "$py" -m earthgpt eval --data "$mmrs" --model "$out/delta" --no-progress --out "$out/val.json" \
    --tasks classification vqa caption region_caption grounding --limit "$limit"
  "$py" -m earthgpt eval --data "$mmrs" --model "$out/delta" --no-progress --out "$out/val_detection.json" \
    --tasks detection_hbb --limit "$det_limit" --max-new-tokens "$max_new"
  printf 'eval\t%s\t\n' "$(since "$t")" >> "$timing"
fi
cat "$timing"
echo "[done] weights: $out/delta; scores: $out/val.md, $out/val_detection.md"
