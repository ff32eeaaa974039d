#!/usr/bin/env bash
# Multi-node EarthGPT training under SLURM: one launcher task per node, accelerate starts one
# process per GPU. Nothing cluster-specific is hard-coded: pass partition, account, time etc. to
# sbatch, and the run through the environment.
#
#   sbatch --nodes 4 --gpus-per-node 8 --cpus-per-task 64 --partition <yours> \
#     --export ALL,CONFIG=train/configs/7b_stage1.yaml,ACCEL=train/configs/accelerate/fsdp.yaml \
#     scripts/slurm_train.sh data.sources=[mmrs=mmrs/train.jsonl] run.output_dir=runs/7b_s1
#
# Environment: CONFIG (required), ACCEL (accelerate config, default multi_gpu.yaml),
# GPUS_PER_NODE (default: SLURM_GPUS_ON_NODE, else 8), MASTER_PORT (default 29500),
# PYTHON (default .venv/bin/python if present, else python). Extra arguments are key=value
# overrides for the training config. Resuming: submit the same command again (run.resume=auto).
#SBATCH --job-name=earthgpt-train
#SBATCH --ntasks-per-node=1
#SBATCH --output=%x-%j.out
set -euo pipefail

: "${CONFIG:?set CONFIG to a training YAML, e.g. train/configs/7b_stage1.yaml}"
ACCEL="${ACCEL:-train/configs/accelerate/multi_gpu.yaml}"
GPUS_PER_NODE="${GPUS_PER_NODE:-${SLURM_GPUS_ON_NODE:-8}}"
MASTER_PORT="${MASTER_PORT:-29500}"
if [[ -z "${PYTHON:-}" ]]; then
  if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python; fi
fi
NNODES="${SLURM_NNODES:-1}"
MASTER_ADDR="$(scontrol show hostnames "${SLURM_JOB_NODELIST}" | head -n 1)"
export MASTER_ADDR MASTER_PORT
OVERRIDES="$(printf '%q ' "$@")"   # quoted: overrides such as data.sources=[…] hold glob characters

echo "nodes ${NNODES} × ${GPUS_PER_NODE} GPUs, master ${MASTER_ADDR}:${MASTER_PORT}, config ${CONFIG}"
# \$SLURM_NODEID is expanded by each task on its own node, so every node gets its machine rank.
srun --kill-on-bad-exit=1 bash -c "${PYTHON} -m accelerate.commands.launch \
  --config_file ${ACCEL} \
  --num_machines ${NNODES} --machine_rank \${SLURM_NODEID} \
  --num_processes $((NNODES * GPUS_PER_NODE)) \
  --main_process_ip ${MASTER_ADDR} --main_process_port ${MASTER_PORT} \
  --rdzv_backend static --same_network \
  -m train ${CONFIG} ${OVERRIDES}"
