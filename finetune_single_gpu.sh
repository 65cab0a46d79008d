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

# The demo, end to end on generated assets:
#   1. a tiny T5, a tiny VAE and a dozen captioned synthetic clips (no network)
#   2. a short full fine-tune of a tiny text-to-video model: the "base" weights
#   3. a LoRA fine-tune on top of that base (mode: finetune, only the LoRA matrices train)
#   4. a video sampled from base + LoRA: an mp4 and a PNG contact sheet
[ -f demo_assets/data/.complete ] || "$PYTHON" tools/make_demo_assets.py demo_assets
newest() { ls -td "$1"-* | head -n 1; }
"$PYTHON" train_video.py --base configs/demo/tiny_t2v.yaml configs/demo/sft_tiny.yaml demo_assets/paths.yaml \
  --experiment-name demo-base
base=$(newest runs/demo/demo-base)
"$PYTHON" train_video.py --base configs/demo/tiny_t2v_lora.yaml configs/demo/sft_tiny.yaml demo_assets/paths.yaml \
  --experiment-name demo-lora --mode finetune --load "$base"
lora=$(newest runs/demo/demo-lora)
"$PYTHON" sample_video.py --base configs/demo/tiny_t2v_lora.yaml configs/demo/inference_tiny.yaml demo_assets/paths.yaml \
  --load "$base" --lora-load "$lora"
echo "demo done: base $base, LoRA $lora, videos in outputs/demo"
