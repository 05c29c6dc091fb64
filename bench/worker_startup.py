"""A persistent worker's start-up on this host, in stages, one process alone and N at once.

    python bench/worker_startup.py --processes 8 --model smollm2-135m --out reports/gpu/worker_startup.json

Each process is a fresh interpreter (as `python -m harness.run --serve` is) that times, one after another:
`imports` (what a worker imports before it says it is ready: harness.run._trial and _shared_eval, so torch,
transformers, PEFT, bitsandbytes), `trl` (what the first training trial adds: TRL and the training module),
`cuda` (the CUDA context: a first tensor on the device) and `model` (the base model's first load to the
device). The peer is the same process run alone: `ratio` = the slowest of N at once / alone, per stage (1.0:
starting N workers costs no more than one). `-X importtime` of one process gives the modules that dominate.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

CHILD = r"""
import json, sys, time
t0 = time.perf_counter(); out = {}
def mark(name):
    global t0
    now = time.perf_counter(); out[name] = round(now - t0, 3); t0 = now
import harness.run._trial, harness.run._shared_eval
mark("imports")
import trl, harness.arms._train
mark("trl")
import torch
if torch.cuda.is_available():
    torch.zeros(1, device="cuda"); torch.cuda.synchronize()
mark("cuda")
if sys.argv[1]:
    from harness.model._load import load_model
    load_model(sys.argv[1], "cuda" if torch.cuda.is_available() else "cpu")
mark("model")
print("STAGES " + json.dumps(out))
"""

STAGES = ("imports", "trl", "cuda", "model")


def start(model: str, env: dict[str, str], importtime: bool = False) -> subprocess.Popen[str]:
    flags = ["-X", "importtime"] if importtime else []
    return subprocess.Popen(
        [sys.executable, *flags, "-c", CHILD, model], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )


def finish(proc: subprocess.Popen[str], started: float) -> dict[str, Any]:
    out, err = proc.communicate()
    wall = time.perf_counter() - started
    lines = [ln for ln in out.splitlines() if ln.startswith("STAGES ")]
    if proc.returncode != 0 or not lines:
        raise SystemExit(f"worker start-up probe failed (exit {proc.returncode}):\n{err[-3000:]}")
    return {"wall": round(wall, 3), **json.loads(lines[-1][len("STAGES ") :]), "stderr": err}


def top_imports(stderr: str, n: int = 15) -> list[dict[str, Any]]:
    """The modules with the most cumulative import time (seconds), outermost first among equals."""
    rows = []
    for line in stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            _, cumulative, name = line[len("import time:") :].split("|", 2)
            if cumulative.strip().isdigit():
                rows.append(
                    {
                        "module": name.strip(),
                        "depth": (len(name) - len(name.lstrip())) // 2,
                        "seconds": int(cumulative) / 1e6,
                    }
                )
    return sorted(rows, key=lambda r: -r["seconds"])[:n]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--processes", type=int, default=8, help="how many start at once (a two-GPU sweep's slots)")
    ap.add_argument("--model", default="smollm2-135m", help="base model to load ('' skips the stage)")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": os.environ.get("CUDA_VISIBLE_DEVICES", "0")}

    started = time.perf_counter()
    traced = finish(start(args.model, env, importtime=True), started)
    imports = top_imports(traced.pop("stderr"))
    print(f"one process, -X importtime: {traced}")
    started = time.perf_counter()
    alone = finish(start(args.model, env), started)
    alone.pop("stderr")
    print(f"one process alone: {alone}")
    started = time.perf_counter()
    procs = [start(args.model, env) for _ in range(args.processes)]
    together = [finish(p, started) for p in procs]
    for t in together:
        t.pop("stderr")
    slowest = {k: max(t[k] for t in together) for k in ("wall", *STAGES)}
    print(f"{args.processes} at once, slowest per stage: {slowest}")
    ratio = {k: round(slowest[k] / alone[k], 2) if alone[k] > 0 else None for k in slowest}
    print(f"ratio (slowest of {args.processes} / alone): {ratio}")
    from harness._nvml import visible_nvml_gpus
    from harness.run._provenance import device_name, stamp, versions

    device = device_name("cuda" if visible_nvml_gpus() else "cpu")
    report = {
        "bench": "worker_startup",
        "date": stamp(),
        "device": device,
        "versions": versions(),
        "cpus": os.cpu_count(),
        "processes": args.processes,
        "model": args.model,
        "alone": alone,
        "together": together,
        "slowest_together": slowest,
        "ratio": ratio,
        "top_imports": imports,
    }
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2))
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
