#!/usr/bin/env bash
# Fine-tune on one GPU (or the CPU when there is none).
#   bash finetune_single_gpu.sh                      # the demo: tiny model, generated clips, a few CPU minutes
#   bash finetune_single_gpu.sh MODEL.yaml RUN.yaml  # your configs, e.g. configs/cogvideox_2b_lora.yaml configs/sft.yaml
set -euo pipefail
cd "$(dirname "$0")"
export WORLD_SIZE=1 RANK=0 LOCAL_RANK=0 LOCAL_WORLD_SIZE=1
export PYTORCH_CUDA_ALLOC_CONF=${PYTORCH_CUDA_ALLOC_CONF:-expandable_segments:True}
PYTHON=${PYTHON:-python3}

if [ $# -gt 0 ]; then
  exec "$PYTHON" train_video.py --base "$@" --seed "${SEED:-$RANDOM}"
fi

# Demo: assets (tiny random T5 + a dozen synthetic clips), a short LoRA fine-tune, one sample.
[ -f demo_assets/data/.complete ] || "$PYTHON" tools/make_demo_assets.py demo_assets
"$PYTHON" train_video.py --base configs/demo/tiny_t2v_lora.yaml configs/demo/sft_tiny.yaml
"$PYTHON" sample_video.py --base configs/demo/tiny_t2v_lora.yaml configs/demo/inference_tiny.yaml
