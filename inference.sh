#!/usr/bin/env bash
# Generate videos from the prompts in the inference config's input_file.
#   bash inference.sh configs/cogvideox_5b.yaml configs/inference.yaml
# NUM_GPUS=N splits the prompts over N processes; add `--model-parallel-size N --sequence-parallel`
# to have the N GPUs share each video instead (Ulysses; N must divide the attention heads).
set -euo pipefail
cd "$(dirname "$0")"
[ $# -gt 0 ] || set -- configs/cogvideox_5b.yaml configs/inference.yaml
export PYTORCH_CUDA_ALLOC_CONF=${PYTORCH_CUDA_ALLOC_CONF:-expandable_segments:True}
if [ "${NUM_GPUS:-1}" -gt 1 ]; then
  exec torchrun --standalone --nproc_per_node="$NUM_GPUS" sample_video.py --base "$@" --seed "${SEED:-$RANDOM}"
fi
exec "${PYTHON:-python3}" sample_video.py --base "$@" --seed "${SEED:-$RANDOM}"
