#!/usr/bin/env bash
# Fine-tune on N GPUs of one machine with torchrun (N from NUM_GPUS, default 8).
#   bash finetune_multi_gpus.sh configs/cogvideox_2b_lora.yaml configs/sft.yaml
set -euo pipefail
cd "$(dirname "$0")"
[ $# -gt 0 ] || set -- configs/cogvideox_2b_lora.yaml configs/sft.yaml
export PYTORCH_CUDA_ALLOC_CONF=${PYTORCH_CUDA_ALLOC_CONF:-expandable_segments:True}
exec torchrun --standalone --nproc_per_node="${NUM_GPUS:-8}" train_video.py --base "$@" --seed "${SEED:-$RANDOM}"
