#!/usr/bin/env bash
# Reproduce the README's GPU tables on one H100/H200 (each section stays under 10 minutes).
#   bash benchmarks/run_h100.sh dit      # DiT step: 2B/5B LoRA and full, checkpointing modes, SDPA backends
#   bash benchmarks/run_h100.sh vae      # VAE encode/decode vs diffusers
#   bash benchmarks/run_h100.sh train    # train_video.py end to end: 2B LoRA at 49x480x720, latent cache vs pixels
#   bash benchmarks/run_h100.sh sample   # sample_video.py: seconds per video, 50 steps
#   bash benchmarks/run_h100.sh speed    # DiT step, ours vs diffusers in one process
#   bash benchmarks/run_h100.sh roofline # step (and sampled video) lower bounds from the matmul and attention kernels alone (bf16, FP8)
#   bash benchmarks/run_h100.sh profile  # kernel time by category (matmul, attention, fused, copies, gaps) of 2B/5B LoRA steps
#   bash benchmarks/run_h100.sh auto     # checkpoint_mode auto: planned kept activations / recompute saved vs measured peak / step
#   bash benchmarks/run_h100.sh ckpt     # checkpoint save cost: 2B LoRA, DeepSpeed write vs manifest + fsync
#   bash benchmarks/run_h100.sh sft      # full fine-tuning under ZeRO-2 with the optimizer: 2B, 5B (CPU offload) vs diffusers
#   bash benchmarks/run_h100.sh mixed    # 2B LoRA r128 step on a batch of 480x720 stills and on a 49x480x720 clip
#   bash benchmarks/run_h100.sh precision  # fp16/bf16 through train_video.py (README "fp16 and bf16 numbers"); PRECISION picks:
#       sft16 | sft_bf16: 2B full fine-tune, 200 steps (~7 min each: setup, 1.26 s a step, the ~30 GB final save)
#       lora: 2B LoRA fp16 + bf16 side by side, 200 steps; store8: 5B LoRA bf16 vs FP8 base storage (+ seed 2), 100 steps
#       fp8_lora | fp8_sft: bf16 vs FP8 matmuls, 300 steps, compiled, one validation sample each; loss curves and each sample (precision-<PRECISION>-<case>.png) in $OUT
#         (fp8_sft's two full fine-tunes run one after the other and fit one call each: PRECISION_ARGS="--cases 2b_sft:bf16" first,
#         then the plain command on the same warm machine, which keeps the finished case and runs the FP8 one)
# Output goes to stdout and, when OUT is set, to $OUT/<section>.log.
set -uo pipefail
cd "$(dirname "$0")/.."
section=${1:?section: dit|vae|train|sample|speed|sft|roofline|profile|auto|ckpt|mixed|precision|gputests}
log=${OUT:+$OUT/$section.log}
run() { echo "+ $*"; timeout "${STEP_TIMEOUT:-540}" "$@"; echo "exit $?"; }
{
case "$section" in
  mixed)
    run python3 benchmarks/mixed_step.py --config configs/cogvideox_2b_lora.yaml --lora-rank 128 --size 480 720 --frames 49 \
      --image-batch ${IMAGE_BATCH:-8} --video-batch 1 --precision bf16 ;;
  gputests) run python3 -m pytest -q -m gpu tests/models tests/vae -p no:cacheprovider ;;
  dit)
    run python3 benchmarks/dit_step.py configs/cogvideox_2b_lora.yaml --lora-rank 128 --checkpoint none full selective --check-attention
    run python3 benchmarks/dit_step.py configs/cogvideox_5b_lora.yaml --lora-rank 128 --checkpoint full selective
    run python3 benchmarks/dit_step.py configs/cogvideox_2b.yaml --full --checkpoint full selective
    run python3 benchmarks/dit_step.py configs/cogvideox_5b.yaml --full --checkpoint full selective
    run python3 benchmarks/dit_step.py configs/cogvideox1.5_5b_lora.yaml --lora-rank 128 --frames 81 --height 768 --width 1360 \
      --checkpoint full selective selective+compile --steps 3 ;;
  vae) run python3 benchmarks/vae.py --cases ${VAE_CASES:-49x480x720 81x768x1360} --repeat ${VAE_REPEAT:-3} ;;
  train)
    # latent cache (built first; CACHE_MODES="cache shard-cache" adds the WebDataset shard cache) vs the
    # transformer alone, then pixels (VAE + T5 every step)
    run python3 benchmarks/train_run.py --config configs/cogvideox_2b_lora.yaml --steps 12 --frames 49 --size 480 720 \
      --clips "${CLIPS:-.devdata/clips}" --zero-stage 2 --precision bf16 --data ${CACHE_MODES:-cache} --checkpoint-mode selective --compile --dit-only
    run python3 benchmarks/train_run.py --config configs/cogvideox_2b_lora.yaml --steps 12 --frames 49 --size 480 720 \
      --clips "${CLIPS:-.devdata/clips}" --zero-stage 2 --precision bf16 --data pixels --checkpoint-mode selective --compile ;;
  roofline)
    # step lower bounds from the kernels alone (attention: FA4 where installed, cuDNN, flash, efficient);
    # DIFF_2B / DIFF_5B: diffusers steps of a speed run
    run python3 benchmarks/roofline.py configs/cogvideox_2b.yaml ${DIFF_2B:+--diffusers-s $DIFF_2B}
    run python3 benchmarks/roofline.py configs/cogvideox_5b.yaml ${DIFF_5B:+--diffusers-s $DIFF_5B}
    run python3 benchmarks/roofline.py configs/cogvideox_2b.yaml --full --backends fa4 cudnn
    run python3 benchmarks/roofline.py configs/cogvideox_5b.yaml --full --backends fa4 cudnn
    # the FP8 rows' own bounds (transformer_args.fp8: projections through torch._scaled_mm)
    run python3 benchmarks/roofline.py configs/cogvideox_2b.yaml --fp8 --backends fa4 ${DIFF_2B:+--diffusers-s $DIFF_2B}
    run python3 benchmarks/roofline.py configs/cogvideox_5b.yaml --fp8 --backends fa4 ${DIFF_5B:+--diffusers-s $DIFF_5B}
    # sampling floors, 50 steps with CFG (2B in fp16 as released, 5B in bf16), decode as in the README's VAE table
    run python3 benchmarks/roofline.py configs/cogvideox_2b.yaml --sampling --dtype fp16 --backends fa4 cudnn --decode-s 2.27 --target-s 22.5
    run python3 benchmarks/roofline.py configs/cogvideox_5b.yaml --sampling --dtype bf16 --backends fa4 cudnn --decode-s 2.27 --target-s 45
    run python3 benchmarks/roofline.py configs/cogvideox_5b.yaml --sampling --dtype bf16 --fp8 --backends fa4 --decode-s 2.27 --target-s 45 ;;
  profile)
    # PROFILE_SETTING: the setting profiled (default selective+compile)
    run python3 benchmarks/profile_step.py configs/cogvideox_2b_lora.yaml --lora-rank 128 --setting ${PROFILE_SETTING:-selective+compile} --top 25
    run python3 benchmarks/profile_step.py configs/cogvideox_5b_lora.yaml --lora-rank 128 --setting ${PROFILE_SETTING:-selective+compile} --top 25 ;;
  auto)
    # AUTO_EXTRAS: what every case adds to its checkpointing (default compile; e.g. compile+fa4)
    run python3 benchmarks/checkpoint_auto.py configs/cogvideox_2b.yaml --lora-rank 128 --budgets 3 6 12 --extras ${AUTO_EXTRAS:-compile}
    run python3 benchmarks/checkpoint_auto.py configs/cogvideox_2b.yaml --full --modes full selective selective_mlp_out none --budgets 5 10 20 \
      --extras ${AUTO_EXTRAS:-compile} ;;
  sample)
    # SAMPLE_ARGS adds speed switches, e.g. SAMPLE_ARGS="--compile --attention-backend fa4 --step-cache 0.05"
    # (--compile max-autotune: Triton matmuls with the elementwise work in their epilogues)
    run python3 benchmarks/sample_speed.py --base configs/cogvideox_2b.yaml --dtype fp16 --repeats 1 ${SAMPLE_ARGS:-}
    run python3 benchmarks/sample_speed.py --base configs/cogvideox_5b.yaml --dtype bf16 --repeats 1 ${SAMPLE_ARGS:-} ;;
  speed)
    # ours vs diffusers (+ PEFT LoRA, gradient checkpointing), DiT fwd+bwd in one process; SPEED_ARGS
    # picks models/settings, e.g. SPEED_ARGS="--models 2b-lora --ours selective+compile full+compile", or the fast
    # paths against diffusers: SPEED_ARGS="--models 2b-lora 5b-lora --ours selective+compile+cudnn selective+compile+fa4
    # selective+compile+fa4+fp8" (FA4 from requirements-gpu.txt, FP8 from torchao); +autotune instead of +compile
    # compiles in inductor's max-autotune mode (transformer_args.compile: max-autotune)
    run python3 benchmarks/vs_diffusers.py ${SPEED_ARGS:-} ;;
  sft)
    # full fine-tuning steps under DeepSpeed ZeRO-2 (bf16, AdamW, clipping), ours vs diffusers in one
    # process; each line stays under 9 minutes (the first run JIT-builds FusedAdam / CPU Adam).
    # SFT_ONLY=2b or 5b runs one line (one 10-minute device call each); SFT_ARGS adds options.
    case "${SFT_ONLY:-both}" in 2b|both) run python3 benchmarks/sft_vs_diffusers.py --models 2b-full ${SFT_ARGS:-} ;; esac
    case "${SFT_ONLY:-both}" in 5b|both) run python3 benchmarks/sft_vs_diffusers.py --models 5b-full --offload ${SFT_ARGS:-} ;; esac ;;
  precision)
    # at PRECISION_BUDGET_S the runs get SIGTERM, save the step they reached (up to 60 s more) and the steps they logged are
    # printed; --reuse: calling the same section again on the same warm machine keeps the finished cases, resumes the
    # stopped ones and runs the rest (so a case may span device calls); clips: CLIPS (generated if absent,
    # which needs imageio-ffmpeg: on a machine without it, make them elsewhere and carry the folder, e.g.
    # python3 -c "from cogvideox_sat.demo.clips import make_sft_folder as m; m('.devdata/clips49', n_clips=4, num_frames=49, height=480, width=720, fps=8)");
    # PRECISION_STEPS: steps of the sft16 / sft_bf16 / lora runs (200); PRECISION_FRAMES: clip frames of every case but
    # store8 (49; 13 makes a step ~4x cheaper, e.g. to fit an fp8_* comparison's 2 x 300 steps in one device call)
    # PRECISION_ARGS: more precision_run.py options, e.g. --parallel for the two fp8_lora runs side by side
    # PRECISION_ATTENTION: the cases' attention kernel (cudnn; fa4 where installed: pinned, so a run resumed in a later call keeps it)
    # the runs print their phase (assets, cache, start) and every 30 s each run's step or setup line, so a call cut
    # off shows where its time went; keep PRECISION_BUDGET_S + 60 s to save + the wheel install + ~20 s for the report inside the call's limit
    # finished cases are read again for their metrics and model states only: their optimizer state (~20 GB for a 2B
    # full fine-tune) goes first, so the next case's final save fits the machine's 64 GB disk
    pr() { find "${PRECISION_WORK:-/root/precision}" -name '*optim_states.pt' -delete 2>/dev/null
      run python3 benchmarks/precision_run.py --data cache --checkpoint-mode selective --budget-s "${PRECISION_BUDGET_S:-440}" --reuse \
      --attention-backend "${PRECISION_ATTENTION:-cudnn}" \
      --frames "${PRECISION_FRAMES:-49}" ${CLIPS:+--clips "$CLIPS"} --work "${PRECISION_WORK:-/root/precision}" \
      --summary "${OUT:-/tmp}/precision-$PRECISION.json" "$@" ${PRECISION_ARGS:-}; }  # a case's own --frames (store8) comes later and wins
    case "${PRECISION:?PRECISION: sft16|sft_bf16|lora|store8|fp8_lora|fp8_sft}" in
      sft16) pr --cases 2b_sft:fp16 --steps ${PRECISION_STEPS:-200} ;;
      sft_bf16) pr --cases 2b_sft:bf16 --steps ${PRECISION_STEPS:-200} ;;
      lora) pr --cases 2b_lora:fp16 2b_lora:bf16 --steps ${PRECISION_STEPS:-200} --parallel ;;
      store8) pr --cases 5b_lora:bf16 5b_lora:bf16+store8 5b_lora:bf16@2 --steps 100 --frames 13 --parallel ;;
      fp8_lora) pr --cases 2b_lora:bf16 2b_lora:bf16+fp8 --steps 300 --compile --sample --plot "${OUT:-/tmp}/fp8_2b_lora.png" ;;
      fp8_sft) pr --cases 2b_sft:bf16 2b_sft:bf16+fp8 --steps 300 --compile --sample --plot "${OUT:-/tmp}/fp8_2b_sft.png" ;;
      *) echo "unknown PRECISION $PRECISION"; exit 2 ;;
    esac ;;
  ckpt)
    # cost per save of the 2B LoRA checkpoint: DeepSpeed's write alone vs manifest + fsync (README "Faults and recovery")
    run python3 benchmarks/checkpoint_save.py --config configs/cogvideox_2b_lora.yaml --lora-rank 128 --zero-stage 2 \
      --repeats 3 --out "${CKPT_DIR:-/tmp/ckpt-bench}" ;;
  *) echo "unknown section $section"; exit 2 ;;
esac
} 2>&1 | tee ${log:-/dev/null}
