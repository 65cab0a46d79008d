#!/usr/bin/env bash
# Multi-GPU measurements (issue 11) on one machine with N GPUs (NUM_GPUS, default: nvidia-smi's count).
# One section per device call; each stays under ~9 minutes (STEP_TIMEOUT caps every command, 540 s).
#   bash benchmarks/run_multi_gpu.sh dp        # 2B LoRA 49x480x720 through train_video.py: N GPUs vs 1 GPU x N
#                                              #   accumulation (same global batch); ZeRO-2 then ZeRO-3 (DP_STAGES="2 3";
#                                              #   ~4 min each: DP_STAGES=2 and DP_STAGES=3 as two calls to be safe)
#   bash benchmarks/run_multi_gpu.sh resume    # 2B LoRA ZeRO-2 on N GPUs, checkpoint at 3, resumed on N/2 (universal)
#   bash benchmarks/run_multi_gpu.sh vae       # VAE context parallel, cp 1 2 4, 49x480x720 and 81x768x1360 (VAE_CASES)
#   bash benchmarks/run_multi_gpu.sh vae32     # the same in fp32 at 49x480x720: equality to one GPU without bf16 noise
#   bash benchmarks/run_multi_gpu.sh ulysses   # DiT Ulysses scaling: 2B (30 heads: degrees 1 2) and 5B (48 heads:
#                                              #   1 2 4 8) at 49x480x720, 1.5-5B at 81x768x1360 degrees 2 4;
#                                              #   ULYSSES_ONLY=2b|5b|15 runs one of the three
#   bash benchmarks/run_multi_gpu.sh sft3      # 5B full fine-tuning, ZeRO-3 + offload_optimizer on N GPUs, 4 steps
#   bash benchmarks/run_multi_gpu.sh tiny      # every section's script on the CPU (2 gloo processes), a few minutes
# Assets (generated clips, stand-in T5, random VAE) are made once in WORK (default /tmp/multi_gpu_bench) and
# reused by later sections on the same machine. Output goes to stdout and, when OUT is set, to $OUT/<section>.log.
set -uo pipefail
cd "$(dirname "$0")/.."
section=${1:?section: dp|resume|vae|vae32|ulysses|sft3|tiny}
log=${OUT:+$OUT/$section.log}
[ -z "${OUT:-}" ] || mkdir -p "$OUT"
NUM_GPUS=${NUM_GPUS:-$(nvidia-smi -L 2>/dev/null | grep -c '^GPU')}
[ "$NUM_GPUS" -ge 1 ] || NUM_GPUS=1
WORK=${WORK:-/tmp/multi_gpu_bench}
export PYTORCH_CUDA_ALLOC_CONF=${PYTORCH_CUDA_ALLOC_CONF:-expandable_segments:True}
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}  # `-m cogvideox_sat...` in torchrun's workers
run() { echo "+ $*"; timeout "${STEP_TIMEOUT:-540}" "$@"; echo "exit $?"; }
# the degrees among "$@" that divide NUM_GPUS
dividing() { local d out=""; for d in "$@"; do [ "$d" -le "$NUM_GPUS" ] && [ $((NUM_GPUS % d)) -eq 0 ] && out="$out $d"; done; echo $out; }
TORCHRUN=(python3 -m torch.distributed.run --standalone --nproc_per_node="$NUM_GPUS")
TRAIN=(python3 benchmarks/multi_gpu_train.py --gpus "$NUM_GPUS" --work "$WORK")
{
echo "NUM_GPUS=$NUM_GPUS WORK=$WORK"
case "$section" in
  dp)
    for stage in ${DP_STAGES:-2 3}; do
      run "${TRAIN[@]}" dp --config configs/cogvideox_2b_lora.yaml --zero-stage "$stage" --steps 6 --baseline-steps 3 --skip 2 ${DP_ARGS:-}
    done ;;
  resume) run "${TRAIN[@]}" resume --config configs/cogvideox_2b_lora.yaml --zero-stage 2 --steps 5 --save-at 3 ${RESUME_ARGS:-} ;;
  vae) run "${TORCHRUN[@]}" benchmarks/vae_cp.py --cases ${VAE_CASES:-49x480x720 81x768x1360} --cp-sizes 1 2 4 ${VAE_ARGS:-} ;;
  vae32) run "${TORCHRUN[@]}" benchmarks/vae_cp.py --cases 49x480x720 --cp-sizes 1 2 4 --dtype fp32 --repeat 1 ;;
  ulysses)
    # Ulysses gives each rank heads / degree heads: 2B's 30 heads allow degrees 1 2 (3 5 6 ...), 5B's 48 allow 1 2 4 8
    case "${ULYSSES_ONLY:-all}" in 2b|all) run "${TORCHRUN[@]}" benchmarks/ulysses.py configs/cogvideox_2b.yaml \
      --frames 49 --height 480 --width 720 --degrees $(dividing 1 2) --checkpoint full ;; esac
    case "${ULYSSES_ONLY:-all}" in 5b|all) run "${TORCHRUN[@]}" benchmarks/ulysses.py configs/cogvideox_5b.yaml \
      --frames 49 --height 480 --width 720 --degrees $(dividing 1 2 4 8) --checkpoint full ;; esac
    case "${ULYSSES_ONLY:-all}" in 15|all) run "${TORCHRUN[@]}" benchmarks/ulysses.py configs/cogvideox1.5_5b.yaml \
      --frames 81 --height 768 --width 1360 --degrees $(dividing 2 4) --checkpoint full --warmup 1 --steps 3 ;; esac ;;
  sft3)
    # the first offloaded run JIT-builds DeepSpeed's CPU Adam (a minute or two)
    run "${TRAIN[@]}" sft --config configs/cogvideox_5b.yaml --zero-stage 3 --offload --steps 4 --skip 2 ${SFT_ARGS:-} ;;
  tiny)
    NUM_GPUS=2
    run python3 benchmarks/multi_gpu_train.py dp --tiny --work "$WORK-tiny"
    run python3 benchmarks/multi_gpu_train.py resume --tiny --work "$WORK-tiny"
    run python3 benchmarks/multi_gpu_train.py sft --tiny --config configs/demo/tiny_t2v.yaml --zero-stage 3 --work "$WORK-tiny"
    run env OMP_NUM_THREADS=1 python3 -m torch.distributed.run --standalone --nproc_per_node=2 benchmarks/vae_cp.py --tiny
    run env OMP_NUM_THREADS=1 python3 -m torch.distributed.run --standalone --nproc_per_node=2 \
      benchmarks/ulysses.py configs/cogvideox_5b.yaml --tiny ;;
  *) echo "unknown section $section"; exit 2 ;;
esac
} 2>&1 | tee ${log:-/dev/null}
