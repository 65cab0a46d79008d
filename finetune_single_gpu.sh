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

# The demo, end to end on generated assets (fixed seeds; see README "Two commands"):
#   1. a tiny T5, six captioned clips (4 for the base stage, 2 for LoRA) and a tiny VAE fitted to them
#   2. the latent cache of all clips (training then runs neither the VAE nor T5)
#   3. a full fine-tune of a tiny text-to-video model from random weights on the 4 base clips
#   4. a LoRA fine-tune on top of it (mode finetune, only adapters train) on the 2 new clips
#   5. every caption sampled with the base alone and with base + LoRA (outputs/demo/base, outputs/demo/base+lora)
#   6. the learning report: loss curves, clip vs samples, nearest clips, verdict (outputs/demo/learning_report.png)
T=(); mark=$SECONDS
stage() { T+=("$1=$((SECONDS - mark))"); echo "== $1: $((SECONDS - mark)) s"; mark=$SECONDS; }
newest() { ls -td "$1"-* | head -n 1; }
MODEL=configs/demo/tiny_t2v.yaml LORA_MODEL=configs/demo/tiny_t2v_lora.yaml RUN=configs/demo/sft_tiny.yaml
[ -f demo_assets/.complete ] || "$PYTHON" tools/make_demo_assets.py demo_assets
stage assets
"$PYTHON" tools/build_latent_cache.py --base $MODEL $RUN configs/demo/stage_base.yaml demo_assets/paths.yaml \
  --data demo_assets/data demo_assets/data_lora --no-progress
stage cache
"$PYTHON" train_video.py --base $MODEL $RUN configs/demo/stage_base.yaml demo_assets/paths.yaml
base=$(newest runs/demo/demo-base)
stage base
"$PYTHON" train_video.py --base $LORA_MODEL $RUN configs/demo/stage_lora.yaml demo_assets/paths.yaml --load "$base"
lora=$(newest runs/demo/demo-lora)
stage lora
rm -rf outputs/demo/base outputs/demo/base+lora
"$PYTHON" sample_video.py --base $MODEL configs/demo/inference_tiny.yaml demo_assets/paths.yaml \
  --load "$base" --output-dir outputs/demo/base
"$PYTHON" sample_video.py --base $LORA_MODEL configs/demo/inference_tiny.yaml demo_assets/paths.yaml \
  --load "$base" --lora-load "$lora" --output-dir outputs/demo/base+lora
stage sampling
"$PYTHON" tools/demo_report.py --base-run "$base" --lora-run "$lora" --assets demo_assets --samples outputs/demo --times "${T[@]}"
echo "demo done: base $base, LoRA $lora, videos in outputs/demo, report outputs/demo/learning_report.png"
