#!/usr/bin/env bash
# The repo's GPU measurements as one lease of a 2-GPU H200 machine runs them, after the wheel/model bundle is
# staged (../shared/gpu/bundle.sh; bash .gpuN/stage.sh in each call). Three steps, each one device call:
#
#   bash bench/gpu_session.sh start    # the sweep peer (a process per trial) starts on GPU 0 in the background;
#                                      # meanwhile the default path's sweep and the training bench run on GPU 1
#   bash bench/gpu_session.sh finish   # the 8B training rows on GPU 1; waits for the peer; merges both sweeps
#   bash bench/gpu_session.sh merge    # (if finish said the peer is still running) waits again, then merges
#   bash bench/gpu_session.sh multi    # the plan on both GPUs, and one data-parallel trial
#
# Both sweeps run the same plan (examples/gpu/plan.yaml) on one H200 each, at the same time on one host; each
# path's wall time and GPU utilisation are its own GPU's. Results land in $OUT (copy them into reports/).
set -uo pipefail
source bench/gpu_env.sh
OUT=${OUT:-/root/out}; W=/root/work
NOTE="bench/gpu_session.sh on one 2-GPU H200 host: the peer (one fresh process per trial, each suite's own batch size) on GPU 0 and the default path (persistent workers, auto trials per GPU, longest trials first, device-sized eval batches; the shared mixed-adapter pass off, its default) on GPU 1, started at the same time; while the peer ran, the training bench ran on GPU 1 after the default path had finished (the host's 32 CPU cores shared). Each path's wall time and NVML utilisation are of its own GPU."
mkdir -p "$OUT" "$W"
case "${1:-}" in
start)   # ~9 min: peer in the background on GPU 0; the default path's sweep, then the 1B training bench, on GPU 1
  setsid nohup python bench/sweep_throughput.py --paths peer --gpus 0 --work "$W/peer" --out /root/peer.json \
    > /root/peer.log 2>&1 < /dev/null &
  timeout 300 python bench/sweep_throughput.py --paths workers --gpus 1 --work "$W/workers" \
    --out /root/workers.json > "$OUT/workers.log" 2>&1
  tail -n 12 "$OUT/workers.log"; cp /root/workers.json "$OUT/" 2>/dev/null
  CUDA_VISIBLE_DEVICES=1 timeout 300 python bench/train_throughput.py --sections why,stock,liger,ours \
    --time-budget 280 --out /root/train_throughput.json > "$OUT/train_throughput.log" 2>&1
  tail -n 25 "$OUT/train_throughput.log"; cp /root/train_throughput.json "$OUT/" 2>/dev/null; tail -n 3 /root/peer.log
  ;;
finish)  # the 8B-shape training rows on GPU 1 while the peer finishes on GPU 0; then the sweeps merged
  CUDA_VISIBLE_DEVICES=1 timeout 280 python bench/train_throughput.py --sections 8b --time-budget 250 --merge \
    --out /root/train_throughput.json > "$OUT/train_8b.log" 2>&1
  tail -n 12 "$OUT/train_8b.log"; cp /root/train_throughput.json "$OUT/"
  UNTIL=$((560 - SECONDS)) bash "$0" merge   # what is left of this call's ~9 minutes
  ;;
merge)   # waits (up to ~9 min of the call in all) for the peer, then merges both sweeps; call again if still running
  while pgrep -f "paths peer" > /dev/null && [ "$SECONDS" -lt "${UNTIL:-560}" ]; do sleep 2; done
  if pgrep -f "paths peer" > /dev/null; then tail -n 3 /root/peer.log; echo "peer still running"; exit 0; fi
  cp /root/peer.log "$OUT/"; tail -n 5 /root/peer.log
  python bench/sweep_throughput.py --paths "" --merge /root/peer.json --merge /root/workers.json \
    --note "$NOTE" --out "$OUT/sweep_throughput.json" 2>&1 | tail -n 3
  ;;
multi)   # ~7 min: the plan on both GPUs, and one data-parallel LoRA trial (100 steps) at the 1.07B shape
  timeout 560 python bench/multi_gpu.py --parts sweep,ddp --one-gpu-json /root/workers.json \
    --budget 540 --out "$OUT/multi_gpu.json" \
    > "$OUT/multi_gpu.log" 2>&1
  tail -n 25 "$OUT/multi_gpu.log"
  ;;
*) echo "usage: bash bench/gpu_session.sh start|finish|merge|multi" >&2; exit 2 ;;
esac
