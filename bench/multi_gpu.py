"""Multi-GPU on one box, measured: the GPU plan swept over one GPU and over two, one data-parallel LoRA trial
against the same trial on one GPU, and (where Ray is installed) the Ray executor against the local one.

    source bench/gpu_env.sh                              # NVLink multicast off, offline, unbuffered output
    python bench/multi_gpu.py --out reports/gpu/multi_gpu.json                          # every part, ~8 min
    python bench/multi_gpu.py --parts sweep --one-gpu-json /root/sweep_1gpu.json --out A.json  # reuse a 1-GPU run
    python bench/multi_gpu.py --parts ddp --merge A.json --out reports/gpu/multi_gpu.json      # parts one by one
    python bench/multi_gpu.py --parts ray --ray-plan full --merge A.json --out B.json     # the whole plan by Ray
    python bench/multi_gpu.py --analyse reports/gpu/multi_gpu.json --out reports/gpu/multi_gpu.json  # no run
    python bench/multi_gpu.py --tiny --out /tmp/multi_gpu.json      # CPU check: tiny Llama, fake GPU ids, gloo

Parts (`--parts`, comma-separated; each part's failure is recorded in the JSON and the next part runs):

* sweep — `bench/sweep_throughput.py --paths workers` (persistent workers, `tunegate run` as a user runs it) with
  the first GPU and with both: `sweep_speedup` = one-GPU wall / two-GPU wall of the whole plan, whether the gate
  verdicts are identical, and, from each trial's manifest, whether every trial saw exactly one GPU.
  `--one-gpu-json` reuses a one-GPU `sweep_throughput.py --paths workers` result measured earlier.
  `analysis` (copied to the top level as `sweep_analysis`) explains the speedup from the trial records of both
  runs: per run the seconds outside the trials (wall minus first start to last end), the trials' summed seconds,
  the most trials at once (`slots`), the critical path of the plan's `from_arm` dependencies (a continuing trial
  may start once its parent has trained) and the list-scheduling lower bound outside + max(critical path,
  trial seconds / slots); `best_possible_speedup` = one-GPU wall / two-GPU bound, `bound_speedup` = the bounds'
  ratio, and a `reading` in words. `--analyse REPORT.json` adds it to a report written earlier (nothing is run).
* ddp — a randomly initialised 1.07B Llama (hidden 2048, 16 layers, the train bench's shape; SmolLM2's
  tokenizer; bf16), prompt/completion rows of ~800-1000 tokens, and one LoRA trial (r16, all-linear) run twice
  with `tunegate run --gpus 0,1`: `gpus_per_trial: 1` with micro-batch B and accumulation 2G, then
  `gpus_per_trial: 2` (accelerate launch, DDP) with B and G: the same global batch, seed and steps.
  `ddp_speedup` = the two trials' recorded tokens/s (real tokens of all ranks over the training time);
  `ddp_speedup_steady` the same over the steps after `--warmup-steps`; the loss curves and their mean relative
  difference; whether both trials counted the same tokens (a DDP count of rank 0 alone would be half).
* ray — `ray start --head` with two GPU resources on this machine, then a plan run by
  `tunegate run --executor ray --ray-address HOST:PORT` and by the local executor. `--ray-plan small` (default):
  baseline and two 10-step LoRA trials, every item output compared (`results_identical`). `--ray-plan full`:
  the sweep part's plan (`--plan`; `--tiny`: the sweep bench's tiny plan) by Ray, against the local executor's
  run with the sweep's two-GPU options — the sweep part's own two-GPU run (its store) when that part runs in the
  same invocation, else a run here: per-trial statuses, gate verdicts (`verdicts_identical`, the headline:
  GPU runs are not bit-identical across processes, so differing item outputs are counted, not failed on) and
  the wall seconds of each. Recorded as skipped where Ray is not installed.

Everything goes to `--out` after each part (device, versions, date, raw times, per-step data), so a part that
runs out of time leaves the earlier parts' numbers behind; `--budget` (seconds) bounds the whole invocation.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import random
import re
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from functools import cache
from importlib import metadata
from pathlib import Path
from types import ModuleType
from typing import Any
from unittest.mock import patch

import yaml

sys.path.append(str(Path(__file__).resolve().parents[1]))  # bench._common from this checkout, PYTHONPATH or not
from bench._common import GPU_PLAN, REPO, item_outputs, llama_config, say
from harness.run import versions as harness_versions
from harness.store import Store

SWEEP_BENCH = REPO / "bench" / "sweep_throughput.py"
PARTS = ("sweep", "ddp", "ray")
MULTICAST_OFF = {"NCCL_NVLS_ENABLE": "0", "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1", "NVSHMEM_DISABLE_NVLS": "1"}
TARGET_SPEEDUP, TARGET_LOSS_REL_DIFF = 1.8, 0.02
HEAD_STOP_MARGIN = 60.0  # seconds kept after the ray run: the head drains for up to 30 s on SIGTERM, then the JSON
SUITE = "mg_tiny"


@dataclass(frozen=True)
class DdpSettings:
    """The data-parallel comparison (written to the JSON)."""

    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    steps: int
    batch: int  # micro-batch per process (B)
    accum: int  # accumulation of the two-GPU trial (G); the one-GPU trial accumulates 2G
    max_length: int
    min_words: int  # words per row (one token each) before the chat template's tokens
    max_words: int
    lr: float = 2e-4
    r: int = 16
    alpha: int = 32
    dropout: float = 0.0  # no dropout: the two curves then differ only by arithmetic and the reduction order
    seed: int = 0


DDP_GPU = DdpSettings(
    hidden=2048,
    intermediate=8192,
    layers=16,
    heads=32,
    kv_heads=8,
    steps=60,
    batch=8,
    accum=4,
    max_length=1024,
    min_words=780,
    max_words=980,
)
DDP_TINY = DdpSettings(
    hidden=64,
    intermediate=128,
    layers=2,
    heads=4,
    kv_heads=2,
    steps=3,
    batch=2,
    accum=1,
    max_length=128,
    min_words=20,
    max_words=60,
)


# ------------------------------------------------------------------------------------------------ plumbing


class Clock:
    """The invocation's time budget: a child process gets what is left, less a margin to write the JSON and the
    time `reserved` for the parts still to come (so one part that hangs does not take the others' time)."""

    def __init__(self, budget: float) -> None:
        self.deadline = time.monotonic() + budget
        self.reserved = 0.0

    def left(self, margin: float = 15.0) -> float:
        return max(30.0, self.deadline - time.monotonic() - margin - self.reserved)


class Interrupted(Exception):
    """SIGTERM (`timeout`, a lease ending): the running part is stopped, recorded as such, and the JSON written."""


def on_sigterm(signum: int, frame: Any) -> None:
    raise Interrupted(f"stopped by signal {signum}")


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ) | {"PYTHONUNBUFFERED": "1", "TOKENIZERS_PARALLELISM": "false"} | (extra or {})
    for key, value in MULTICAST_OFF.items():
        env.setdefault(key, value)
    paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    if str(REPO) not in paths:  # the children import this checkout's harness, as this process does
        env["PYTHONPATH"] = os.pathsep.join([str(REPO), *paths])
    return env


def run_logged(
    tag: str, cmd: list[str], *, cwd: Path, env: dict[str, str], timeout: float, log: Path
) -> tuple[int | None, float]:
    """Run `cmd` in its own process group, its output prefixed with `tag` here and kept in `log`; past `timeout`
    the whole group (workers and ranks included) is stopped. Returns (exit code or None on timeout, seconds)."""
    cwd.mkdir(parents=True, exist_ok=True)
    say(f"[{tag}] $ {' '.join(cmd)}  (time limit {timeout:.0f}s)")
    started = time.perf_counter()
    proc = subprocess.Popen(
        cmd,
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
        start_new_session=True,
    )
    timed_out = threading.Event()

    def stop() -> None:
        timed_out.set()
        kill_group(proc, term_wait=10)

    timer = threading.Timer(timeout, stop)
    timer.start()
    assert proc.stdout is not None
    try:
        with log.open("a") as out:
            for line in proc.stdout:
                out.write(line)
                say(f"  [{tag}] {line.rstrip()}")
        proc.wait()
    finally:
        timer.cancel()
        if proc.poll() is None:  # interrupted here: the child's whole group goes too (it is in its own session)
            stop()
    seconds = time.perf_counter() - started
    say(f"[{tag}] {'TIMED OUT' if timed_out.is_set() else f'exit {proc.returncode}'} after {seconds:.1f}s")
    return (None if timed_out.is_set() else proc.returncode), seconds


def gpu_ids_arg(ids: list[str]) -> str:
    """`tunegate run --gpus`: ids are a comma list; a lone number is a COUNT ('0' = no GPU), so one id gets a
    trailing comma ('0,' = GPU 0)."""
    return ",".join(ids) + ("," if len(ids) == 1 else "")


def tunegate_run(
    tag: str,
    plan: Path,
    store_url: str,
    cwd: Path,
    clock: Clock,
    *options: str,
    env: dict[str, str] | None = None,
    margin: float = 15.0,
) -> dict[str, Any]:
    """`tunegate run PLAN --store URL OPTIONS` in `cwd`, within what the clock leaves less `margin` seconds."""
    cmd = [sys.executable, "-m", "harness.cli", "run", str(plan), "--store", store_url, *options]
    log = cwd / f"{tag.replace(' ', '-').replace(':', '')}.log"
    code, seconds = run_logged(tag, cmd, cwd=cwd, env=env or child_env(), timeout=clock.left(margin), log=log)
    return {
        "command": cmd[2:],
        "exit_code": code,
        "timed_out": code is None,
        "wall_seconds": round(seconds, 2),
        "log": str(log),
    } | ({} if code == 0 else {"log_tail": tail(log)})


def tail(file: Path, lines: int = 30) -> list[str]:
    return file.read_text(errors="replace").splitlines()[-lines:] if file.exists() else []


def latest_run(store_url: str, plan_name: str) -> Any:
    runs = [r for r in Store(store_url).runs(plan_name) if r.name == plan_name]
    if not runs:
        raise RuntimeError(f"no run of plan '{plan_name}' in {store_url}: `tunegate run` did not start it")
    return max(runs, key=lambda r: r.id)


# --------------------------------------------------------------------------------------------- part: sweep


def require_two_gpus(args: argparse.Namespace) -> None:
    if not args.tiny and args.gpu_count < 2:
        raise RuntimeError(f"this part needs two GPUs and {args.gpu_count} are visible (--tiny runs it on a CPU)")


def part_sweep(args: argparse.Namespace, work: Path, clock: Clock) -> dict[str, Any]:
    require_two_gpus(args)
    ids = args.gpu_ids
    if len(ids) < 2:
        raise RuntimeError(f"the sweep part needs two GPU ids (--gpus), got {ids}")
    one_file = args.one_gpu_json
    if one_file is not None:
        workers_path(one_file)  # a file that cannot be compared fails the part before the two-GPU sweep runs
    else:
        one_file = run_sweep(ids[:1], work / "sweep-1gpu", args, clock)
    two_file = run_sweep(ids[:2], work / "sweep-2gpus", args, clock)
    one, two = workers_path(one_file), workers_path(two_file)
    two_gpus = {name: t.get("cuda_visible_devices") for name, t in two["trials"].items()}
    one_gpu = {name: t.get("cuda_visible_devices") for name, t in one["trials"].items()}
    saw_one = {name: single_gpu(v, ids[:2]) for name, v in two_gpus.items()}
    differ = sorted(k for k, v in two.get("outputs", {}).items() if one.get("outputs", {}).get(k) != v)
    plan = ran_plan(two_file, args.plan.resolve())
    result = {
        "plan": str(plan),
        "one_gpu_source": str(one_file),
        "two_gpus_source": str(two_file),
        "one_gpu": slim(one),
        "two_gpus": slim(two),
        "sweep_speedup": round(one["wall_seconds"] / two["wall_seconds"], 3),
        "verdicts_identical": one.get("verdicts") == two.get("verdicts"),
        "verdicts": {"one_gpu": one.get("verdicts"), "two_gpus": two.get("verdicts")},
        "trials_saw_one_gpu": bool(saw_one) and all(saw_one.values()),
        "trial_gpus": {"one_gpu": one_gpu, "two_gpus": two_gpus},
        "gpus_used": {
            "one_gpu": sorted({v for v in one_gpu.values() if v}),
            "two_gpus": sorted({v for v in two_gpus.values() if v}),
        },
        "trials_not_finished": {
            "one_gpu": [n for n, t in one["trials"].items() if t["status"] != "finished"],
            "two_gpus": [n for n, t in two["trials"].items() if t["status"] != "finished"],
        },
        "outputs_compared": len(two.get("outputs", {})) if one.get("outputs") else 0,
        "outputs_differing": len(differ) if one.get("outputs") else None,
        "outputs_differing_examples": differ[:10],
    }
    if not all(single_gpu(v, ids[:1]) or single_gpu(v, ids[:2]) for v in one_gpu.values()):
        result["one_gpu_problem"] = (
            f"the one-GPU run's trials did not each see one GPU ({one_gpu}): was it run "
            "with `--gpus 0` (a count: no GPU) instead of `--gpus 0,`?"
        )
    result["analysis"] = sweep_analysis(one, two, plan_parents(plan))
    say(
        f"sweep: one GPU {one['wall_seconds']}s, two GPUs {two['wall_seconds']}s -> {result['sweep_speedup']}x; "
        f"verdicts identical: {result['verdicts_identical']}; every trial saw one GPU: {result['trials_saw_one_gpu']} "
        f"(GPUs used: {result['gpus_used']['two_gpus']})\nsweep analysis: {result['analysis']['reading']}"
    )
    return result


def ran_plan(sweep_json: Path, default: Path) -> Path:
    """The plan a `sweep_throughput.py` JSON records it ran (its tiny plan in --tiny mode), where that file still
    exists; else `default`."""
    recorded = json.loads(sweep_json.read_text()).get("plan")
    return Path(recorded) if recorded and Path(recorded).is_file() else default


def run_sweep(ids: list[str], folder: Path, args: argparse.Namespace, clock: Clock) -> Path:
    out = folder / "sweep.json"
    cmd = [
        sys.executable,
        str(SWEEP_BENCH),
        "--paths",
        "workers",
        "--gpus",
        gpu_ids_arg(ids),
        "--work",
        str(folder),
        "--out",
        str(out),
    ] + (["--tiny"] if args.tiny else ["--plan", str(args.plan.resolve())])
    code, _ = run_logged(
        f"sweep {len(ids)} GPU", cmd, cwd=folder, env=child_env(), timeout=clock.left(), log=folder / "bench.log"
    )
    if not out.exists():
        raise RuntimeError(
            f"sweep_throughput.py on GPU(s) {','.join(ids)} "
            f"{'timed out' if code is None else f'exited {code}'} without a result "
            f"(log: {folder / 'bench.log'})"
        )
    return out


def workers_path(file: Path) -> dict[str, Any]:
    paths = json.loads(file.read_text()).get("paths", {})
    if "workers" not in paths:
        raise RuntimeError(
            f"{file} has no 'workers' path (it has {sorted(paths)}): run sweep_throughput.py with --paths workers"
        )
    return paths["workers"]


def single_gpu(cuda_visible_devices: str | None, allowed: list[str]) -> bool:
    return cuda_visible_devices is not None and cuda_visible_devices.strip() in allowed


def slim(path: dict[str, Any]) -> dict[str, Any]:
    """A sweep path without its per-item outputs and utilisation trace (counts and summaries kept)."""
    out = {k: v for k, v in path.items() if k != "outputs"}
    if isinstance(out.get("gpu_utilization"), dict):
        out["gpu_utilization"] = {k: v for k, v in out["gpu_utilization"].items() if k != "trace"}
    return out


# ------------------------------------------------------------------------------------ the sweep, explained


@dataclass(frozen=True)
class TrialTimes:
    """One trial's measured interval (seconds since the epoch), when a trial continuing it could start, and
    its worker's start-up before it (the manifest's 'start' phase: 0 unless it was the worker's first trial)."""

    start: float
    end: float
    trained: float
    worker_start: float
    pid: int | None

    @property
    def seconds(self) -> float:
        return self.end - self.start


def trial_times(trials: dict[str, dict[str, Any]]) -> dict[str, TrialTimes]:
    """The trials of one run that recorded both timestamps. A continuing trial may start once its parent has
    trained: at the parent's start plus its train_setup and train phases where the manifest has them, else at
    the parent's end."""
    out = {}
    for name, t in trials.items():
        if not (t.get("started_at") and t.get("finished_at")):
            continue
        start = datetime.fromisoformat(t["started_at"]).timestamp()
        end = datetime.fromisoformat(t["finished_at"]).timestamp()
        phases = t.get("phases") or {}
        trained = (
            min(end, start + phases["train_setup"] + phases["train"])
            if "train_setup" in phases and "train" in phases
            else end
        )
        out[name] = TrialTimes(start, end, trained, float(phases.get("start") or 0.0), t.get("pid"))
    return out


def most_at_once(times: list[TrialTimes]) -> int:
    """The most trials running at one instant (a trial ending at the instant another starts does not count)."""
    events = sorted([(t.start, 1) for t in times] + [(t.end, -1) for t in times])
    running = most = 0
    for _, step in events:
        running += step
        most = max(most, running)
    return most


def critical_path(times: dict[str, TrialTimes], parents: dict[str, str]) -> tuple[float, list[str]]:
    """The longest dependency chain in measured seconds: each ancestor up to the time it had trained, the last
    trial to its end. Trials without a measured parent are chains of one."""

    def chain(name: str) -> list[str]:
        names = [name]
        while parents.get(names[0]) in times and parents[names[0]] not in names:
            names.insert(0, parents[names[0]])
        return names

    def seconds(names: list[str]) -> float:
        return sum(times[n].trained - times[n].start for n in names[:-1]) + times[names[-1]].seconds

    longest = max((chain(name) for name in times), key=seconds, default=[])
    return (seconds(longest) if longest else 0.0), longest


def run_timing(run: dict[str, Any], parents: dict[str, str]) -> dict[str, Any]:
    """One sweep run's wall time split into the trials and what lies outside them, and the list-scheduling lower
    bound its measured trial durations allow: outside + max(critical path, trial seconds / slots)."""
    times = trial_times(run.get("trials") or {})
    if not times:
        return {"trials_timed": 0}
    span = max(t.end for t in times.values()) - min(t.start for t in times.values())
    total = sum(t.seconds for t in times.values())
    slots = most_at_once(list(times.values()))
    path, chain = critical_path(times, parents)
    outside = float(run["wall_seconds"]) - span
    per_slot = total / slots
    split: dict[str, float] = {}
    phases = [t.get("phases") or {} for t in (run.get("trials") or {}).values()]
    for key, name in (("start_imports", "worker_imports_seconds_max"), ("start_waiting", "worker_waiting_seconds_max")):
        values = [float(p[key]) for p in phases if key in p]  # a worker's start-up: its imports, its wait for a job
        if values:
            split[name] = round(max(values), 2)
    if run.get("started_at"):  # the command's own start (bench/sweep_throughput.py records it): before and after
        before = min(t.start for t in times.values()) - datetime.fromisoformat(run["started_at"]).timestamp()
        split |= {
            "before_first_trial_seconds": round(before, 2),
            "after_last_trial_seconds": round(outside - before, 2),
        }
    return {
        "wall_seconds": run["wall_seconds"],
        "trials_timed": len(times),
        "trials_span_seconds": round(span, 2),
        "outside_trials_seconds": round(outside, 2),
        **split,
        "worker_start_seconds_max": round(max(t.worker_start for t in times.values()), 2),
        "trial_seconds_total": round(total, 2),
        "slots": slots,
        "worker_processes": len({t.pid for t in times.values() if t.pid is not None}),
        "trial_seconds_per_slot": round(per_slot, 2),
        "critical_path_seconds": round(path, 2),
        "critical_path": chain,
        "bound_seconds": round(outside + max(path, per_slot), 2),
        "bound_by": "critical_path" if path >= per_slot else "trial_seconds_per_slot",
    }


def sweep_analysis(one_gpu: dict[str, Any], two_gpus: dict[str, Any], parents: dict[str, str]) -> dict[str, Any]:
    """Why the two-GPU sweep is as fast as it is, from the trial records both runs measured (no new run):
    per run (`{"one_gpu": .., "two_gpus": ..}` under each key) the time outside the trials, the trial seconds,
    the most trials at once, the critical path of the `from_arm` dependencies (`parents`: child -> parent) and
    the lower bound these give; `best_possible_speedup` = one-GPU wall / two-GPU bound, `bound_speedup` = the
    bounds' ratio."""
    runs = {"one_gpu": run_timing(one_gpu, parents), "two_gpus": run_timing(two_gpus, parents)}
    keys = list(dict.fromkeys(k for r in runs.values() for k in r))
    result: dict[str, Any] = {k: {label: r.get(k) for label, r in runs.items()} for k in keys}
    result["dependencies"] = parents
    one, two = runs["one_gpu"], runs["two_gpus"]
    if not (one["trials_timed"] and two["trials_timed"]):
        result["reading"] = (
            f"not analysed: timed trials one GPU {one['trials_timed']}, two GPUs "
            f"{two['trials_timed']} (a run without started_at/finished_at has nothing to analyse)"
        )
        return result
    result |= {
        "measured_speedup": round(one["wall_seconds"] / two["wall_seconds"], 3),
        "best_possible_speedup": round(one["wall_seconds"] / two["bound_seconds"], 3),
        "bound_speedup": round(one["bound_seconds"] / two["bound_seconds"], 3),
    }
    result["reading"] = sweep_reading(one, two, result)
    return result


def sweep_reading(one: dict[str, Any], two: dict[str, Any], numbers: dict[str, Any]) -> str:
    """The analysis in words, every figure from `one`, `two` (run_timing) and `numbers` (the speedups)."""

    def run_line(label: str, r: dict[str, Any]) -> str:
        term = (
            f"the critical path ({' -> '.join(r['critical_path'])}, {r['critical_path_seconds']:.1f}s)"
            if r["bound_by"] == "critical_path"
            else f"the trial seconds per slot ({r['trial_seconds_total']:.1f}s / {r['slots']} = "
            f"{r['trial_seconds_per_slot']:.1f}s)"
        )
        imports = (
            f", of which imports up to {r['worker_imports_seconds_max']:.1f}s and waiting for the driver up "
            f"to {r['worker_waiting_seconds_max']:.1f}s"
            if "worker_imports_seconds_max" in r
            else ""
        )
        split = (
            f" ({r['before_first_trial_seconds']:.1f}s before the first, {r['after_last_trial_seconds']:.1f}s "
            "after the last)"
            if "before_first_trial_seconds" in r
            else ""
        )
        return (
            f"{label}: {r['wall_seconds']:.1f}s wall = {r['outside_trials_seconds']:.1f}s outside the trials"
            f"{split} + {r['trials_span_seconds']:.1f}s from the first trial's start to the last one's end, "
            f"most trials at once: {r['slots']} (a worker's start-up before its first trial: up to "
            f"{r['worker_start_seconds_max']:.1f}s{imports}); bound {r['bound_seconds']:.1f}s, set by {term}"
        )

    share = two["outside_trials_seconds"] / two["bound_seconds"] if two["bound_seconds"] else 0.0
    growth = two["trial_seconds_total"] / one["trial_seconds_total"] - 1 if one["trial_seconds_total"] else 0.0
    return (
        f"{run_line('One GPU', one)}. {run_line('Two GPUs', two)}; the time outside the trials is {share:.0%} "
        f"of that bound, and the trials' durations sum to {growth:+.0%} against one GPU's. With these "
        f"measured trial durations no schedule on two GPUs beats {numbers['best_possible_speedup']:.2f}x over "
        f"the one-GPU wall (target {TARGET_SPEEDUP}x; the bounds' ratio is {numbers['bound_speedup']:.2f}x; "
        f"measured {numbers['measured_speedup']:.2f}x)."
    )


def plan_parents(plan: Path) -> dict[str, str]:
    """The plan's dependency edges, child trial -> parent trial: DPO arms that continue another arm's trial
    (`from_arm`; such an arm is never swept, so its trial has the arm's name)."""
    arms = (yaml.safe_load(plan.read_text()) or {}).get("arms") or []
    return {arm["name"]: arm["from_arm"] for arm in arms if isinstance(arm, dict) and arm.get("from_arm")}


# ----------------------------------------------------------------------------------------------- part: ddp


def part_ddp(args: argparse.Namespace, work: Path, clock: Clock) -> dict[str, Any]:
    require_two_gpus(args)
    settings = replace(
        DDP_TINY if args.tiny else DDP_GPU,
        **{
            k: v
            for k, v in (("steps", args.ddp_steps), ("batch", args.ddp_batch), ("accum", args.ddp_accum))
            if v is not None
        },
    )
    root = work / "ddp"
    root.mkdir(parents=True, exist_ok=True)
    from harness.model import load_tokenizer

    tok = load_tokenizer(args.tokenizer)
    model = build_model(root / "model", settings, tok, "cpu" if args.tiny else None)
    train = write_rows(
        root / "train.jsonl",
        tok,
        settings.steps * settings.batch * settings.accum * 2,
        settings.min_words,
        settings.max_words,
        settings.seed,
    )
    env = child_env(
        {"TUNEGATE_SUITES": str(write_suite(root / "suites"))}
        | ({"TUNEGATE_PROFILE": args.ddp_profile} if args.ddp_profile else {})
    )
    store_url = f"sqlite:///{root / 'store.db'}"
    trials: dict[str, dict[str, Any]] = {}
    for label, gpus, accum in (("one_gpu", 1, 2 * settings.accum), ("two_gpus", 2, settings.accum)):
        plan = write_ddp_plan(root / f"plan-{label}.yaml", label, model["folder"], train, settings, gpus, accum)
        ran = tunegate_run(
            f"ddp {label}", plan, store_url, root, clock, "--gpus", gpu_ids_arg(args.gpu_ids[:2]), env=env
        )
        try:
            trials[label] = ran | read_trial(store_url, f"multi-gpu-{label}", args.warmup_steps)
            if args.ddp_profile:
                trials[label]["profiles"] = read_profiles(Path(trials[label]["folder"]))
        except Exception as exc:  # noqa: BLE001 - no trial to read (the run did not start): the next one still runs
            trials[label] = ran | {"status": "not run", "error": f"{type(exc).__name__}: {exc}"}
    one, two = trials["one_gpu"], trials["two_gpus"]
    result: dict[str, Any] = {
        "settings": asdict(settings)
        | {"global_batch": 2 * settings.batch * settings.accum, "profiled_steps": args.ddp_profile},
        "model": model,
        "data": {"rows": settings.steps * settings.batch * settings.accum * 2, "file": str(train)},
        "trials": trials,
    }
    failed = {k: t.get("error") or t.get("status") for k, t in trials.items() if t.get("status") != "finished"}
    if failed:
        result["failed"] = failed
        raise PartFailed(f"trial(s) not finished: {failed}", result)
    a, b = one["losses"], two["losses"]
    n = min(len(a), len(b))
    rel = [abs(a[i] - b[i]) / abs(a[i]) for i in range(n) if a[i]]
    result |= {
        "ddp_speedup": round(two["tokens_per_second"] / one["tokens_per_second"], 3),
        "ddp_speedup_steady": (
            round(two["steady_tokens_per_second"] / one["steady_tokens_per_second"], 3)
            if one["steady_tokens_per_second"] and two["steady_tokens_per_second"]
            else None
        ),
        "loss_curves": {"one_gpu": a, "two_gpus": b},
        "loss_curve_rel_diff": round(sum(rel) / len(rel), 6) if rel else None,
        "loss_curve_max_rel_diff": round(max(rel), 6) if rel else None,
        "same_tokens": one["tokens_total"] == two["tokens_total"],
        "tokens_total": {"one_gpu": one["tokens_total"], "two_gpus": two["tokens_total"]},
    }
    say(
        f"ddp: one GPU {one['tokens_per_second']:,.0f} tok/s, two GPUs {two['tokens_per_second']:,.0f} tok/s -> "
        f"{result['ddp_speedup']}x (steady {result['ddp_speedup_steady']}x); loss curves differ by "
        f"{result['loss_curve_rel_diff']} on average; same tokens: {result['same_tokens']}"
    )
    return result


PROFILE_KEYS = (
    "first_step",
    "steps",
    "wall_ms_per_step",
    "kernel_ms_per_step",
    "device_busy_share",
    "nccl_ms_per_step",
    "cpu_total_ms_per_step",
    "kernel_launches_per_step",
    "graph_launches_per_step",
    "syncs_per_step",
)


def read_profiles(folder: Path, top: int = 10) -> dict[str, Any]:
    """Each rank's `TUNEGATE_PROFILE` table from a trial's folder (harness.model._profile), its top ops cut to
    `top`: rank -> table."""
    out: dict[str, Any] = {}
    for path in sorted(folder.glob("profile*.json")):
        table = json.loads(path.read_text())
        out[str(table.get("rank", 0))] = {k: table.get(k) for k in PROFILE_KEYS} | {
            "kernels": [
                {k: row[k] for k in ("name", "calls_per_step", "self_ms_per_step", "share")}
                for row in table.get("kernels", [])[:top]
            ],
            "cpu_ops": [
                {k: row[k] for k in ("name", "calls_per_step", "self_ms_per_step")}
                for row in table.get("cpu_ops", table.get("ops", []))[:top]
            ],
        }
    return out


class PartFailed(Exception):
    """A part that ran but could not produce its numbers; `partial` keeps what it measured."""

    def __init__(self, message: str, partial: dict[str, Any]) -> None:
        super().__init__(message)
        self.partial = partial


def build_model(folder: Path, settings: DdpSettings, tok: Any, device: str | None) -> dict[str, Any]:
    """A randomly initialised Llama (seeded) saved with the tokenizer: bf16 when built on a GPU, else float32."""
    import torch
    from transformers import LlamaForCausalLM

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    started = time.perf_counter()
    torch.manual_seed(settings.seed)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = LlamaForCausalLM(llama_config(settings, vocab=len(tok), tied=True, tok=tok))
    finally:
        torch.set_default_dtype(previous)
    n_params = sum(p.numel() for p in model.parameters())
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    del model
    if device == "cuda":
        torch.cuda.empty_cache()
    seconds = time.perf_counter() - started
    say(f"model: {n_params / 1e9:.3f}B-parameter random Llama ({dtype}) saved in {seconds:.0f}s")
    return {
        "folder": str(folder),
        "parameters": n_params,
        "dtype": str(dtype).removeprefix("torch."),
        "built_on": device,
        "seconds": round(seconds, 1),
    }


def write_rows(path: Path, tok: Any, count: int, min_words: int, max_words: int, seed: int) -> Path:
    """Prompt/completion rows of min..max words drawn from the tokenizer's one-token words (so a row's length in
    tokens is its word count plus the chat template's few tokens)."""
    words = [
        t[1:]
        for t, _ in sorted(tok.get_vocab().items(), key=lambda kv: kv[1])
        if t.startswith("Ġ") and t[1:].isalpha() and t[1:].islower() and 3 <= len(t) <= 9
    ][:4000]
    rng = random.Random(seed)
    with path.open("w") as out:
        for _ in range(count):
            total = rng.randint(min_words, max_words)
            n_prompt = max(1, int(total * rng.uniform(0.2, 0.4)))
            out.write(
                json.dumps(
                    {
                        "prompt": " ".join(rng.choices(words, k=n_prompt)),
                        "completion": " ".join(rng.choices(words, k=total - n_prompt)),
                    }
                )
                + "\n"
            )
    return path


def write_suite(root: Path) -> Path:
    """A two-item generation suite with 4 new tokens: every plan needs a suite, this one costs next to nothing."""
    folder = root / SUITE
    folder.mkdir(parents=True, exist_ok=True)
    items = (REPO / "suites" / "json_extract" / "items.jsonl").read_text().splitlines()[:2]
    (folder / "items.jsonl").write_text("\n".join(items) + "\n")
    (folder / "suite.yaml").write_text(
        f"name: {SUITE}\nkind: generate\ncategory: task\n"
        "generation: {max_new_tokens: 4, batch_size: 2}\nscorers: [exact_match]\n"
    )
    return root


def write_ddp_plan(path: Path, label: str, model: str, train: Path, s: DdpSettings, gpus: int, accum: int) -> Path:
    arm = {
        "name": f"lora-{label}",
        "type": "lora",
        "r": s.r,
        "alpha": s.alpha,
        "dropout": s.dropout,
        "target_modules": "all-linear",
        "lr": s.lr,
        "max_steps": s.steps,
        "batch_size": s.batch,
        "grad_accum": accum,
        "max_length": s.max_length,
        "warmup_steps": 0,
        "scheduler": "linear",
        "seed": s.seed,
        "gpus_per_trial": gpus,
    }
    plan = {
        "name": f"multi-gpu-{label}",
        "model": model,
        "data": {"train": str(train)},
        "arms": [arm],
        "suites": [SUITE],
    }
    path.write_text(yaml.safe_dump(plan, sort_keys=False))
    return path


def read_trial(store_url: str, plan_name: str, warmup: int) -> dict[str, Any]:
    """The trial's record (status, training time, tokens/s, loss per step) and its manifest and step log."""
    store = Store(store_url)
    trial = store.trials(latest_run(store_url, plan_name).id)[0]
    if not trial.folder:
        return {"trial": trial.name, "status": trial.status, "error": trial.error or "the trial never started"}
    folder = Path(trial.folder)
    manifest = json.loads((folder / "manifest.json").read_text()) if (folder / "manifest.json").exists() else {}
    log = folder / "train_log.jsonl"
    rows = [json.loads(line) for line in log.read_text().splitlines() if line.strip()] if log.exists() else []
    steady = rows[warmup:]
    steady_seconds = sum(float(r["seconds"]) for r in steady)
    return {
        "trial": trial.name,
        "status": trial.status,
        "error": trial.error,
        "train_seconds": trial.train_seconds,
        "tokens_per_second": trial.tokens_per_second,
        "peak_memory_gib": trial.peak_memory_gib,
        "final_loss": trial.final_loss,
        "losses": [s.loss for s in store.train_steps(trial.id)],
        "tokens_total": sum(int(r["tokens"]) for r in rows),
        "steady_tokens_per_second": sum(int(r["tokens"]) for r in steady) / steady_seconds if steady_seconds else None,
        "step_seconds": [round(float(r["seconds"]), 4) for r in rows],
        "step_tokens": [int(r["tokens"]) for r in rows],
        "world_size": manifest.get("world_size"),
        "cuda_visible_devices": manifest.get("cuda_visible_devices"),
        "phases": manifest.get("phases"),
        "fastpath": (manifest.get("training") or {}).get("fastpath"),
        "folder": str(folder),
    } | (
        {}
        if trial.status == "finished"
        else {"worker_log_tail": tail(folder / "worker.log"), "error_log_tail": tail(folder / "error.log")}
    )


# ----------------------------------------------------------------------------------------------- part: ray


def part_ray(args: argparse.Namespace, work: Path, clock: Clock) -> dict[str, Any]:
    if importlib.util.find_spec("ray") is None:
        return {"skipped": "ray not installed"}
    root = work / "ray"
    root.mkdir(parents=True, exist_ok=True)
    return (ray_full_plan if args.ray_plan == "full" else ray_small_plan)(args, root, clock)


def ray_small_plan(args: argparse.Namespace, root: Path, clock: Clock) -> dict[str, Any]:
    """`--ray-plan small`: baseline and two short LoRA trials by the local executor and by Ray, item outputs
    compared (all must be identical)."""
    plan = write_ray_plan(root, args)
    env = child_env({"TUNEGATE_SUITES": str(write_suite(root / "suites"))})
    local = tunegate_run(
        "ray: local executor",
        plan,
        f"sqlite:///{root / 'local.db'}",
        root / "local",
        clock,
        "--gpus",
        gpu_ids_arg(args.gpu_ids[:2]),
        env=env,
    )
    head, address, ray_run = run_by_ray(plan, root, env, clock)
    outs = {}
    for name, url in (("local", f"sqlite:///{root / 'local.db'}"), ("ray", f"sqlite:///{root / 'ray.db'}")):
        run = latest_run(url, "multi-gpu-ray")
        outs[name] = {
            "outputs": item_outputs(url, run.id),
            "trials": {t.name: t.status for t in Store(url).trials(run.id)},
        }
    differ = sorted(
        k
        for k in outs["local"]["outputs"].keys() | outs["ray"]["outputs"].keys()
        if outs["local"]["outputs"].get(k) != outs["ray"]["outputs"].get(k)
    )
    result = {
        "ray_plan": "small",
        "head_command": head,
        "address": address,
        "local": local | {"trials": outs["local"]["trials"]},
        "ray": ray_run | {"trials": outs["ray"]["trials"]},
        "outputs_compared": len(outs["local"]["outputs"]),
        "outputs_differing": len(differ),
        "outputs_differing_examples": differ[:10],
        "results_identical": not differ and outs["local"]["trials"] == outs["ray"]["trials"],
    }
    say(
        f"ray: {result['outputs_compared']} item outputs compared, {len(differ)} differ; "
        f"trial statuses local {outs['local']['trials']} vs ray {outs['ray']['trials']}"
    )
    if local["exit_code"] != 0 or ray_run["exit_code"] != 0:
        raise PartFailed(
            f"`tunegate run` exited {local['exit_code']} (local executor) and {ray_run['exit_code']} "
            "(ray executor; None: timed out)",
            result,
        )
    return result


def store_on_disk(url: str | None) -> bool:
    """Whether a SQLite store URL names a file on this machine."""
    return bool(url) and url.startswith("sqlite:///") and Path(url.removeprefix("sqlite:///")).is_file()


def ray_full_plan(args: argparse.Namespace, root: Path, clock: Clock) -> dict[str, Any]:
    """`--ray-plan full`: the sweep part's plan (--plan; --tiny: sweep_throughput.py's tiny plan) by Ray, against
    the local executor's run of the same plan with the sweep's two-GPU options: the sweep part's two-GPU run where
    that part ran in this invocation (its store is read), else a run here. Verdict identity is the headline; GPU
    runs are not bit-identical across processes, so differing item outputs are counted, not failed on."""
    bench = sweep_bench()
    sweep, source = args.ran.get("sweep") or {}, "the sweep part's two-GPU run of this invocation"
    if not sweep and store_on_disk(((args.merged.get("sweep") or {}).get("two_gpus") or {}).get("store")):
        sweep, source = args.merged["sweep"], "the two-GPU run of the merged report's sweep part (its store is here)"
    two = sweep.get("two_gpus") or {}
    reuse = "error" not in sweep and bool(two.get("store")) and two.get("run_id") is not None
    if reuse:
        plan = Path(sweep["plan"])
    elif args.tiny:
        with patch.dict(os.environ):  # tiny_plan points TUNEGATE_SUITES of this process at its suites: undone
            plan = bench.tiny_plan(root / "plan")
    else:
        plan = args.plan.resolve()
    # sweep_throughput.tiny_plan writes its suites beside the plan; the GPU plan's suites are the repository's
    env = child_env({"TUNEGATE_SUITES": str(plan.parent / "suites")} if args.tiny else None)
    name = yaml.safe_load(plan.read_text())["name"]
    if reuse:
        local = {
            "source": source,
            "command": two["command"],
            "exit_code": two["exit_code"],
            "wall_seconds": two["wall_seconds"],
            "store": two["store"],
            "run_id": two["run_id"],
        }
    else:
        url = f"sqlite:///{root / 'local.db'}"
        local = {"source": "run here", "store": url} | tunegate_run(
            "ray: local executor",
            plan,
            url,
            root / "local",
            clock,
            *bench.PATHS["workers"],
            "--gpus",
            gpu_ids_arg(args.gpu_ids[:2]),
            env=env,
        )
    head, address, ray_run = run_by_ray(plan, root, env, clock)
    ray_run["store"] = f"sqlite:///{root / 'ray.db'}"
    result: dict[str, Any] = {
        "ray_plan": "full",
        "plan": str(plan),
        "head_command": head,
        "address": address,
        "local": local,
        "ray": ray_run,
    }
    policy = sweep_bench().gate_policy(plan)
    try:
        for side in (local, ray_run):
            if side.get("run_id") is None:
                side["run_id"] = latest_run(side["store"], name).id
            side |= run_results(side["store"], side["run_id"], policy)
    except RuntimeError as exc:  # a run that never started: what the two commands said is kept
        raise PartFailed(str(exc), result) from exc
    outs = {label: side.pop("outputs") for label, side in (("local", local), ("ray", ray_run))}
    differ = sorted(k for k in outs["local"].keys() | outs["ray"].keys() if outs["local"].get(k) != outs["ray"].get(k))
    verdicts_differing = {
        t: {"local": local["verdicts"].get(t), "ray": ray_run["verdicts"].get(t)}
        for t in sorted(local["verdicts"].keys() | ray_run["verdicts"].keys())
        if local["verdicts"].get(t) != ray_run["verdicts"].get(t)
    }
    result |= {
        "wall_seconds": {"local": local["wall_seconds"], "ray": ray_run["wall_seconds"]},
        "statuses_identical": local["trials"] == ray_run["trials"],
        "verdicts_compared": len(local["verdicts"].keys() | ray_run["verdicts"].keys()),
        "verdicts_identical": not verdicts_differing,
        "verdicts_differing": verdicts_differing,
        "outputs_compared": len(outs["local"].keys() | outs["ray"].keys()),
        "outputs_differing": len(differ),
        "outputs_differing_examples": differ[:10],
        "results_identical": not differ and local["trials"] == ray_run["trials"],
    }
    say(
        f"ray (full plan {name}): verdicts identical: {result['verdicts_identical']} "
        f"({result['verdicts_compared']} compared); trial statuses identical: {result['statuses_identical']}; "
        f"{len(differ)} of {result['outputs_compared']} item outputs differ; wall local {local['wall_seconds']}s "
        f"({local['source']}), ray {ray_run['wall_seconds']}s"
    )
    if local["exit_code"] != 0 or ray_run["exit_code"] != 0:
        raise PartFailed(
            f"`tunegate run` exited {local['exit_code']} (local executor) and {ray_run['exit_code']} "
            "(ray executor; None: timed out)",
            result,
        )
    return result


def run_by_ray(plan: Path, root: Path, env: dict[str, str], clock: Clock) -> tuple[list[str], str, dict[str, Any]]:
    """`ray start --head` with two GPU resources on this machine, `tunegate run PLAN --executor ray` against it
    (store root/ray.db), then the head stopped. Returns the head's command, its address and the run's record."""
    port = free_port()
    temp = Path(tempfile.mkdtemp(prefix="raymg", dir="/tmp"))  # short: Ray's socket paths must stay short
    ray_bin = Path(sys.executable).parent / "ray"
    head = [
        str(ray_bin) if ray_bin.exists() else "ray",
        "start",
        "--head",
        "--port",
        str(port),
        "--num-gpus",
        "2",
        "--num-cpus",
        str(os.cpu_count() or 2),
        "--temp-dir",
        str(temp),
        "--include-dashboard=false",
        "--disable-usage-stats",
        "--block",
    ]
    if "RAY_AUTH_TOKEN" not in os.environ:  # Ray's token authentication: the head and the driver share this one
        env = env | {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
    say(f"[ray] $ {' '.join(head)}")
    head_log = root / "ray-head.log"
    with head_log.open("w") as log:
        cluster = subprocess.Popen(head, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        address = wait_for_head(head_log, port, timeout=min(90.0, clock.left()), cluster=cluster)
        ray_run = tunegate_run(
            "ray: ray executor",
            plan,
            f"sqlite:///{root / 'ray.db'}",
            root / "ray",
            clock,
            "--executor",
            "ray",
            "--ray-address",
            address,
            env=env,
            margin=HEAD_STOP_MARGIN,
        )
    finally:
        stop_group(cluster)
    return head, address, ray_run


def run_results(store_url: str, run_id: int, policy: str | None) -> dict[str, Any]:
    """A run's trial statuses, gate verdicts (as the sweep bench extracts them) and item outputs."""
    trials = {t.name: t.status for t in Store(store_url).trials(run_id)}
    return {
        "trials": trials,
        "verdicts": sweep_bench().verdicts(store_url, run_id, policy, list(trials)),
        "outputs": item_outputs(store_url, run_id),
    }


@cache
def sweep_bench() -> ModuleType:
    """bench/sweep_throughput.py as a module: its tiny plan, its paths' `tunegate run` options, its gate policy and
    verdicts."""
    spec = importlib.util.spec_from_file_location("sweep_throughput", SWEEP_BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_ray_plan(root: Path, args: argparse.Namespace) -> Path:
    """Baseline and two short LoRA trials of the default model (tiny: a tiny random Llama) on the tiny suite."""
    if args.tiny:
        from harness.model import load_tokenizer

        model = build_model(root / "model", DDP_TINY, load_tokenizer(args.tokenizer), "cpu")["folder"]
    else:
        model = args.ray_model
    rows = (REPO / "suites" / "json_extract" / "train.jsonl").read_text().splitlines()[:32]
    (root / "train.jsonl").write_text("\n".join(rows) + "\n")
    step = {"max_steps": 2 if args.tiny else 10, "batch_size": 4, "max_length": 256, "dropout": 0.0}
    plan = {
        "name": "multi-gpu-ray",
        "model": model,
        "data": {"train": str(root / "train.jsonl")},
        "arms": [
            {"name": "baseline", "type": "baseline"},
            {"name": "lora-r4", "type": "lora", "r": 4, **step},
            {"name": "lora-r8", "type": "lora", "r": 8, **step},
        ],
        "suites": [SUITE],
    }
    (root / "plan.yaml").write_text(yaml.safe_dump(plan, sort_keys=False))
    return root / "plan.yaml"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_head(log: Path, port: int, timeout: float, cluster: subprocess.Popen[bytes]) -> str:
    """Wait until `ray start --head` says the runtime started; the address it tells other nodes to join
    (Ray picks the node's IP itself)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cluster.poll() is not None:
            raise RuntimeError(f"`ray start --head` exited with code {cluster.returncode} (log: {log})")
        text = log.read_text(errors="replace") if log.exists() else ""
        if "Ray runtime started" in text:
            found = re.search(r"ray start --address='([^']+)'", text)
            return found.group(1) if found else f"127.0.0.1:{port}"
        time.sleep(0.5)
    raise RuntimeError(f"the Ray head did not start within {timeout:.0f}s (log: {log})")


def kill_group(proc: subprocess.Popen[Any], term_wait: float) -> None:
    """Stop a process started in its own session and everything in its group: SIGTERM, up to `term_wait` seconds
    for it to end, then SIGKILL."""
    for sig, wait in ((signal.SIGTERM, term_wait), (signal.SIGKILL, 5)):
        try:
            os.killpg(proc.pid, sig)
            proc.wait(timeout=wait)
            return
        except (ProcessLookupError, subprocess.TimeoutExpired):
            continue


def stop_group(proc: subprocess.Popen[bytes]) -> None:
    """Stop the Ray head and everything it started (its own process group; not `ray stop`, which would stop
    every Ray cluster of this machine)."""
    kill_group(proc, term_wait=35)  # on SIGTERM Ray drains for up to 30 s


# ------------------------------------------------------------------------------------------------ the JSON


def device_info() -> dict[str, Any]:
    """The GPUs by NVML (no CUDA context in this process), else torch, else the CPU."""
    try:
        import pynvml

        pynvml.nvmlInit()
        gpus = []
        for i in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(i)
            name = pynvml.nvmlDeviceGetName(handle)
            gpus.append(
                {
                    "index": i,
                    "name": name.decode() if isinstance(name, bytes) else name,
                    "memory_gib": round(pynvml.nvmlDeviceGetMemoryInfo(handle).total / 2**30, 1),
                }
            )
        driver = pynvml.nvmlSystemGetDriverVersion()
        return {
            "type": "cuda",
            "count": len(gpus),
            "names": sorted({g["name"] for g in gpus}),
            "gpus": gpus,
            "driver": driver.decode() if isinstance(driver, bytes) else driver,
            "host_cpus": os.cpu_count(),
        }
    except Exception:  # noqa: BLE001 - no NVML library or no GPU: fall back below
        pass
    import torch

    if torch.cuda.is_available():
        names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        return {"type": "cuda", "count": len(names), "names": sorted(set(names)), "host_cpus": os.cpu_count()}
    return {
        "type": "cpu",
        "count": 0,
        "names": [f"{platform.processor() or platform.machine()} CPU (no GPU)"],
        "host_cpus": os.cpu_count(),
    }


def library_versions() -> dict[str, str | None]:
    import torch

    out: dict[str, str | None] = dict(harness_versions()) | {"cuda": torch.version.cuda}
    for lib in ("triton", "nvidia-ml-py", "liger-kernel"):
        try:
            out[lib] = metadata.version(lib)
        except metadata.PackageNotFoundError:
            out[lib] = None
    return out


RESERVE = {"sweep": 200.0, "ddp": 210.0, "ray": 0.0}  # seconds kept for a part while an earlier one runs (GPU)
HEADLINES = {  # top-level key -> (part, key in the part's result)
    "sweep_speedup": ("sweep", "sweep_speedup"),
    "verdicts_identical": ("sweep", "verdicts_identical"),
    "trials_saw_one_gpu": ("sweep", "trials_saw_one_gpu"),
    "ddp_speedup": ("ddp", "ddp_speedup"),
    "ddp_speedup_steady": ("ddp", "ddp_speedup_steady"),
    "loss_curve_rel_diff": ("ddp", "loss_curve_rel_diff"),
    "loss_curves": ("ddp", "loss_curves"),
    "ray_results_identical": ("ray", "results_identical"),
    "ray_verdicts_identical": ("ray", "verdicts_identical"),
    "sweep_analysis": ("sweep", "analysis"),
}


def headline(report: dict[str, Any]) -> None:
    """Copy each part's headline numbers to the top level, with the issue's targets met or missed."""
    for key, (part, field) in HEADLINES.items():
        report[key] = (report["parts"].get(part) or {}).get(field)
    report["errors"] = {name: p["error"] for name, p in report["parts"].items() if p.get("error")}
    targets = {}
    if report["sweep_speedup"] is not None:
        targets["sweep_speedup"] = {
            "value": report["sweep_speedup"],
            "target": TARGET_SPEEDUP,
            "met": report["sweep_speedup"] >= TARGET_SPEEDUP,
        }
    if report["ddp_speedup"] is not None:
        targets["ddp_speedup"] = {
            "value": report["ddp_speedup"],
            "target": TARGET_SPEEDUP,
            "met": report["ddp_speedup"] >= TARGET_SPEEDUP,
        }
    if report["loss_curve_rel_diff"] is not None:
        targets["loss_curve_rel_diff"] = {
            "value": report["loss_curve_rel_diff"],
            "target": TARGET_LOSS_REL_DIFF,
            "met": report["loss_curve_rel_diff"] <= TARGET_LOSS_REL_DIFF,
        }
    report["targets"] = targets


def write_report(report: dict[str, Any], out: Path) -> None:
    headline(report)
    write_json(report, out)


def write_json(report: dict[str, Any], out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(out.suffix + ".tmp")
    tmp.write_text(json.dumps(report, indent=2, default=str))
    tmp.replace(out)


def estimate(part: str, args: argparse.Namespace) -> str:
    """A rough time for a part on two H200s (a CPU in --tiny mode), printed before it starts."""
    reuse = "sweep" in args.part_list[: args.part_list.index(part)] if part in args.part_list else False
    local = "the local side is the sweep part's two-GPU run" if reuse else "plus a local run of the plan"
    if args.tiny:
        if part == "ray" and args.ray_plan == "full":
            return f"~2-4 min on a 2-core CPU (the tiny sweep plan by Ray; {local})"
        return {"sweep": "~2-4 min on a 2-core CPU", "ddp": "~1-2 min", "ray": "~1-2 min"}[part]
    if part == "sweep":
        if args.one_gpu_json:
            try:
                one = json.loads(args.one_gpu_json.read_text())["paths"]["workers"]["wall_seconds"]
            except (OSError, ValueError, KeyError, TypeError):
                return "one two-GPU sweep (the one-GPU file is unreadable: the part will say why)"
            return f"~{one / TARGET_SPEEDUP + 20:.0f}s (the two-GPU run; the one-GPU run took {one}s)"
        return "a one-GPU sweep plus a two-GPU sweep (~1.5x the one-GPU wall; pass --one-gpu-json to reuse one)"
    if part == "ddp":
        return (
            "~4 min: model build ~15s, one-GPU trial ~120s (start-up, 100 steps of ~29k tokens, eval), "
            "two-GPU trial ~90s"
        )
    if importlib.util.find_spec("ray") is None:
        return "0s (ray not installed: skipped)"
    if args.ray_plan == "full":  # Ray runs one trial per GPU at a time where the workers run several
        return (
            f"~3-6 min for --plan by Ray, two trials at once ({local}{'' if reuse else ', ~2.5 min'}); "
            "the head's start and stop ~1 min"
        )
    return "~1-2 min"


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--parts", default=",".join(PARTS), help="comma-separated: sweep, ddp, ray (default: all)")
    p.add_argument("--gpus", default="0,1", help="the two GPU ids (as CUDA_VISIBLE_DEVICES names them)")
    p.add_argument("--plan", type=Path, default=GPU_PLAN, help="the plan the sweep part runs")
    p.add_argument(
        "--one-gpu-json",
        type=Path,
        help="a `sweep_throughput.py --paths workers` JSON measured on one "
        "GPU earlier: the sweep part then runs only the two-GPU sweep",
    )
    p.add_argument("--ddp-steps", type=int, help=f"optimizer steps of each ddp trial (default {DDP_GPU.steps})")
    p.add_argument("--ddp-batch", type=int, help=f"micro-batch per process B (default {DDP_GPU.batch})")
    p.add_argument(
        "--ddp-accum",
        type=int,
        help=f"accumulation G of the two-GPU trial (default {DDP_GPU.accum}; the one-GPU trial accumulates 2G)",
    )
    p.add_argument(
        "--ddp-profile",
        metavar="FIRST:COUNT",
        help="profile optimizer steps FIRST.. of both ddp trials (TUNEGATE_PROFILE; every rank) and keep "
        "the tables in the JSON; the profiled steps run slower, so the speedups are then indicative",
    )
    p.add_argument("--warmup-steps", type=int, help="steps left out of ddp_speedup_steady (default 3; tiny 1)")
    p.add_argument(
        "--ray-plan",
        choices=("small", "full"),
        default="small",
        help="what the ray part runs by Ray and by the local executor: 'small' (baseline and two short "
        "LoRA trials; every item output must match) or 'full' (the sweep part's --plan, compared "
        "with the sweep part's two-GPU run when that part runs in the same invocation)",
    )
    p.add_argument("--ray-model", default="smollm2-135m", help="the model of the ray part's small plan")
    p.add_argument("--tokenizer", default="smollm2-135m", help="tokenizer of the ddp model (alias, .gguf or folder)")
    p.add_argument("--tiny", action="store_true", help="CPU check: tiny random Llama, fake GPU ids, gloo ranks")
    p.add_argument("--work", type=Path, help="where models, stores and run folders go (default: a tmp dir)")
    p.add_argument(
        "--merge",
        type=Path,
        action="append",
        default=[],
        help="a JSON written by an earlier invocation whose parts are kept (parts run now replace them)",
    )
    p.add_argument(
        "--budget",
        type=float,
        default=480.0,
        help="seconds for the whole invocation (default 480; keep an outer `timeout` above it)",
    )
    p.add_argument(
        "--analyse",
        type=Path,
        metavar="REPORT.json",
        help="run nothing: add the sweep analysis (parts.sweep.analysis, sweep_analysis) computed from "
        "the trial records of a multi_gpu.json written earlier, and write it to --out",
    )
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    if args.warmup_steps is None:
        args.warmup_steps = 1 if args.tiny else 3
    args.gpu_ids = [g.strip() for g in args.gpus.split(",") if g.strip()]
    args.part_list = [x.strip() for x in args.parts.split(",") if x.strip()]
    unknown = [x for x in args.part_list if x not in PARTS]
    if unknown:
        p.error(f"unknown part(s) {', '.join(unknown)}: use {', '.join(PARTS)}")
    return args


def analyse_report(report_file: Path, out: Path, plan: Path) -> int:
    """`--analyse`: the sweep analysis of a report written earlier, from the trial records it holds (nothing is
    run); `parts.sweep.analysis` and its top-level copy `sweep_analysis` are replaced, nothing else changes. The
    dependencies come from the plan the report names where that file exists, else from `plan`."""
    report = json.loads(report_file.read_text())
    sweep = (report.get("parts") or {}).get("sweep") or {}
    if not all((sweep.get(run) or {}).get("trials") for run in ("one_gpu", "two_gpus")):
        raise SystemExit(f"{report_file}: no sweep part with the trials of both runs, nothing to analyse")
    recorded = sweep.get("plan")
    plan = Path(recorded) if recorded and Path(recorded).is_file() else plan
    sweep["analysis"] = sweep_analysis(sweep["one_gpu"], sweep["two_gpus"], plan_parents(plan))
    report["sweep_analysis"] = sweep["analysis"]
    write_json(report, out)
    say(f"sweep analysis (dependencies of {plan}): {sweep['analysis']['reading']}\nwrote {out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if args.analyse:
        return analyse_report(args.analyse, args.out, args.plan)
    clock = Clock(args.budget)
    work = (args.work or Path(tempfile.mkdtemp(prefix="multi-gpu-"))).resolve()
    work.mkdir(parents=True, exist_ok=True)
    for key, value in MULTICAST_OFF.items():
        os.environ.setdefault(key, value)
    report: dict[str, Any] = {
        "bench": "multi_gpu",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "tiny": args.tiny,
        "device": device_info(),
        "versions": library_versions(),
        "argv": sys.argv[1:],
        "work": str(work),
        "env": {k: os.environ.get(k) for k in (*MULTICAST_OFF, "CUDA_VISIBLE_DEVICES")},
        "parts": {},
    }
    args.gpu_count = report["device"]["count"]
    args.ran = {}  # the results of the parts run by this invocation (the ray part reuses the sweep part's run)
    for earlier in args.merge:
        report["parts"] |= json.loads(earlier.read_text()).get("parts", {})
    args.merged = dict(report["parts"])  # or a merged report's sweep run, when its store is on this machine
    say(
        f"multi_gpu on {report['device']['count']} x {', '.join(report['device']['names'])}: parts "
        f"{', '.join(args.part_list)}; GPU ids {args.gpus}; work folder {work}; budget {args.budget:.0f}s"
    )
    runners: dict[str, Callable[[argparse.Namespace, Path, Clock], dict[str, Any]]] = {
        "sweep": part_sweep,
        "ddp": part_ddp,
        "ray": part_ray,
    }
    signal.signal(signal.SIGTERM, on_sigterm)
    interrupted = False
    for i, part in enumerate(args.part_list):
        clock.reserved = sum(RESERVE[p] for p in args.part_list[i + 1 :]) * (0.2 if args.tiny else 1.0)
        say(f"== {part}: expected {estimate(part, args)}; {clock.left(0):.0f}s of the budget for it")
        started = time.perf_counter()
        try:
            result = runners[part](args, work, clock)
        except Exception as exc:  # noqa: BLE001 - a part's failure is recorded; the next part still runs
            partial = exc.partial if isinstance(exc, PartFailed) else {}
            result = partial | {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}
            interrupted = isinstance(exc, Interrupted)
            say(f"== {part}: FAILED: {result['error']}")
        result["seconds"] = round(time.perf_counter() - started, 1)
        report["parts"][part] = args.ran[part] = result
        write_report(report, args.out)
        say(f"== {part}: done in {result['seconds']}s; wrote {args.out}")
        if interrupted:
            return 143
    write_report(report, args.out)
    say(
        json.dumps(
            {
                k: report[k]
                for k in (
                    "sweep_speedup",
                    "ddp_speedup",
                    "ddp_speedup_steady",
                    "loss_curve_rel_diff",
                    "verdicts_identical",
                    "trials_saw_one_gpu",
                    "ray_results_identical",
                    "ray_verdicts_identical",
                    "targets",
                    "errors",
                )
            },
            default=str,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
