"""Sweep throughput: the whole GPU plan run by the per-trial-process path (the peer) and by the default path
(persistent workers, several trials per GPU, longest trials first, device-sized eval batches), measured in the
same invocation on the same GPU.

    python bench/sweep_throughput.py --out reports/perf/sweep_throughput.json            # both paths, GPU 0
    python bench/sweep_throughput.py --paths peer --gpus 0 --out /root/peer.json          # one path only ...
    python bench/sweep_throughput.py --paths workers --gpus 1 --merge /root/peer.json ... # ... merged later
    python bench/sweep_throughput.py --together --out reports/perf/sweep_throughput.json # both at once, GPU 0
    python bench/sweep_throughput.py --tiny --out /tmp/sweep.json                         # CPU check, tiny model

The plan's model is converted into the cache first (`model_prepared`; a one-time cost of a model's first use),
then each path runs `tunegate run PLAN` as a user would (a fresh driver process, its own store and run folder).
While it runs, NVML samples the GPU's utilisation at 4 Hz. Written: device, versions, date, each path's wall
time, GPU utilisation (mean and the fraction of samples above 0), and per trial the phases its manifest
recorded (start-up/imports, model load, train, each suite's eval, store writes); then `speedup` (peer wall /
default wall), `gpu_utilization_mean` (default path, 0-1), the gate verdicts of both paths (identical?), and how
many per-item outputs differ between the two. Both paths score under `--eval-numerics` (default invariant, the
default of `tunegate run`: every output bit-identical whatever shares its batch, so none should differ; with
`fast`, batch composition can flip a near-tie token in bf16); the JSON records it as `eval_numerics`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml

sys.path.append(str(Path(__file__).resolve().parents[1]))  # bench._common from this checkout, PYTHONPATH or not
from bench._common import GPU_PLAN, REPO, item_outputs
from harness.gate import decide
from harness.store import Store

PATHS = {  # name -> `tunegate run` options
    "peer": ["--executor", "process", "--eval-batch", "suite"],  # one fresh process per trial, suite batches
    "workers": ["--executor", "workers", "--trials-per-gpu", "auto"],  # what `local` picks on a GPU
    "workers-spare": ["--executor", "workers", "--trials-per-gpu", "auto", "--spare-workers", "auto"],  # opt-in
}
TOGETHER_NOTE = (
    "bench/sweep_throughput.py --together on one GPU: the paths started a second apart and ran at the same time on "
    "the same GPU. Each path's wall time is its own, slowed by the other while both ran; NVML utilisation is of "
    "the shared GPU."
)
LIBRARIES = ("torch", "transformers", "peft", "trl", "accelerate", "bitsandbytes", "nvidia-ml-py", "liger-kernel")


class GpuSampler:
    """NVML utilisation samples of one GPU (percent), taken every `period` seconds on a thread."""

    def __init__(self, index: int | None, period: float = 0.25) -> None:
        self.index, self.period = index, period
        self.samples: list[tuple[float, int, float]] = []  # (t, utilisation %, memory used GiB)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.handle: Any = None
        if index is not None:
            try:
                import pynvml

                pynvml.nvmlInit()
                self.handle = pynvml.nvmlDeviceGetHandleByIndex(index)
                self.nvml = pynvml
            except Exception as exc:  # noqa: BLE001 - no NVML (a CPU box): no samples, said in the JSON
                self.error = f"{type(exc).__name__}: {exc}"

    def __enter__(self) -> GpuSampler:
        if self.handle is not None:
            self._thread = threading.Thread(target=self._run, daemon=True)
            self._thread.start()
        return self

    def _run(self) -> None:
        start = time.perf_counter()
        while not self._stop.is_set():
            util = self.nvml.nvmlDeviceGetUtilizationRates(self.handle)
            mem = self.nvml.nvmlDeviceGetMemoryInfo(self.handle)
            self.samples.append((round(time.perf_counter() - start, 2), int(util.gpu), round(mem.used / 2**30, 2)))
            self._stop.wait(self.period)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def summary(self) -> dict[str, Any]:
        if not self.samples:
            return {"samples": 0, "mean": None, "busy_fraction": None, "note": getattr(self, "error", "no GPU sampled")}
        utils = [u for _, u, _ in self.samples]
        return {
            "samples": len(utils),
            "hz": round(1 / self.period, 1),
            "mean": round(sum(utils) / len(utils) / 100, 4),
            "busy_fraction": round(sum(u > 0 for u in utils) / len(utils), 4),
            "peak_memory_used_gib": max(m for _, _, m in self.samples),
            "trace": self.samples[:: max(1, len(self.samples) // 400)],
        }  # at most ~400 points kept


def tiny_plan(root: Path) -> Path:
    """A CPU-sized version of the GPU plan: a tiny random Llama, three items per suite, one-step trials."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from harness.model import load_tokenizer

    tok = load_tokenizer("smollm2-135m")
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        pad_token_id=tok.pad_token_id,
        eos_token_id=tok.convert_tokens_to_ids("<|im_end|>"),
    )
    model_dir = root / "tiny-llama"
    torch.manual_seed(0)  # the same weights in every invocation, so runs of separate invocations compare
    LlamaForCausalLM(config).save_pretrained(model_dir)
    tok.save_pretrained(model_dir)
    suites = root / "suites"
    for name, source, spec in (
        (
            "tiny_json",
            "json_extract",
            "kind: generate\ngeneration: {max_new_tokens: 6, batch_size: 2}\nscorers: [exact_match, json_valid]\n",
        ),
        ("tiny_mc", "general_knowledge", "kind: multiple_choice\n"),
    ):
        (suites / name).mkdir(parents=True, exist_ok=True)
        lines = (REPO / "suites" / source / "items.jsonl").read_text().splitlines()[:3]
        (suites / name / "items.jsonl").write_text("\n".join(lines) + "\n")
        (suites / name / "suite.yaml").write_text(f"name: {name}\ncategory: task\n{spec}")
    os.environ["TUNEGATE_SUITES"] = str(suites)
    rows = (REPO / "suites" / "json_extract" / "train.jsonl").read_text().splitlines()[:4]
    (root / "train.jsonl").write_text("\n".join(rows) + "\n")
    prefs = [
        {
            "prompt": json.loads(r)["prompt"],
            "chosen": json.loads(r)["completion"],
            "rejected": json.dumps(json.loads(json.loads(r)["completion"]), indent=2),
        }
        for r in rows
    ]
    (root / "prefs.jsonl").write_text("".join(json.dumps(p) + "\n" for p in prefs))
    step = {"max_steps": 1, "batch_size": 2, "max_length": 128}
    plan = {
        "name": "sweep-tiny",
        "model": str(model_dir),
        "data": {"train": str(root / "train.jsonl"), "preference": str(root / "prefs.jsonl")},
        "arms": [
            {"name": "baseline", "type": "baseline"},
            {"name": "prompt", "type": "prompt", "k_shot": 1},
            {"name": "lora-a", "type": "lora", "r": 4, **step},
            {"name": "lora-b", "type": "lora", "r": 8, **step},
            {"name": "dpo", "type": "dpo", **step},
            {"name": "dpo-sft", "type": "dpo", "from_arm": "lora-a", **step},
        ],
        "suites": ["tiny_json", "tiny_mc"],
        "gate": str(root / "gate.yaml"),
    }
    (root / "gate.yaml").write_text(
        yaml.safe_dump(
            {
                "name": "tiny-gate",
                "baseline": "baseline",
                "rules": [
                    {"suite": "tiny_json", "metric": "json_valid", "max_drop": 0.5, "min_items": 3},
                    {"suite": "tiny_mc", "metric": "choice_accuracy", "max_drop": 0.5, "min_items": 3},
                ],
            },
            sort_keys=False,
        )
    )
    (root / "plan.yaml").write_text(yaml.safe_dump(plan, sort_keys=False))
    return root / "plan.yaml"


def convert_model_once(plan: Path, gpu_index: int | None) -> dict[str, Any]:
    """The plan's model made ready (a GGUF dequantized into the cache, as `tunegate run` does on first use) before
    any path is timed, so neither path's wall time holds that one-time conversion."""
    from harness.model._load import local_folder
    from harness.plan import load_plan

    spec = load_plan(plan)[0].model
    start = time.perf_counter()
    folder = local_folder(spec, "cuda" if gpu_index is not None else "cpu")
    return {"model": spec, "folder": folder, "seconds": round(time.perf_counter() - start, 2)}


def run_path(
    name: str, plan: Path, root: Path, gpus: str | None, gpu_index: int | None, eval_numerics: str = "invariant"
) -> dict[str, Any]:
    store_url = f"sqlite:///{root / name / 'store.db'}"
    (root / name).mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable,
        "-m",
        "harness.cli",
        "run",
        str(plan),
        "--store",
        store_url,
        *PATHS[name],
        "--eval-numerics",
        eval_numerics,
    ]
    if gpus is not None:  # `tunegate run --gpus 1` is a count (the first GPU): one GPU id is written "1,"
        cmd += ["--gpus", f"{gpus}," if gpus.isdigit() else gpus]
    print(f"[{name}] $ {' '.join(cmd)}", flush=True)
    log = root / name / "run.log"
    started_at = datetime.now(UTC).isoformat()  # the sweep analysis splits the time outside the trials with it
    started = time.perf_counter()
    with GpuSampler(gpu_index) as sampler, log.open("w") as out:
        proc = subprocess.run(cmd, cwd=root / name, stdout=out, stderr=subprocess.STDOUT)
    wall = time.perf_counter() - started
    print(f"[{name}] exit {proc.returncode} after {wall:.1f}s", flush=True)
    store = Store(store_url)
    run = store.runs()[0]
    trials = {}
    for t in store.trials(run.id):
        manifest_file = Path(t.folder or "") / "manifest.json"
        manifest = json.loads(manifest_file.read_text()) if t.folder and manifest_file.exists() else {}
        trials[t.name] = {
            "status": t.status,
            "error": t.error,
            "phases": manifest.get("phases"),
            "train_seconds": t.train_seconds,
            "started_at": t.started_at,
            "finished_at": t.finished_at,
            "pid": (manifest.get("process") or {}).get("pid"),
            "cuda_visible_devices": manifest.get("cuda_visible_devices"),
        }
    return {
        "wall_seconds": round(wall, 2),
        "started_at": started_at,
        "exit_code": proc.returncode,
        "command": cmd[2:],
        "gpu_utilization": sampler.summary(),
        "run_id": run.id,
        "store": store_url,
        "trials": trials,
        "log_tail": log.read_text(errors="replace").splitlines()[-15:],
    }


def gate_policy(plan: Path) -> str | None:
    """The plan's gate policy file, a relative path taken from the plan's folder."""
    policy = (yaml.safe_load(plan.read_text()) or {}).get("gate")
    return str((plan.parent / policy).resolve()) if policy and not Path(policy).is_absolute() else policy


def verdicts(store_url: str, run_id: int, policy: str | None, trials: list[str]) -> dict[str, Any]:
    store = Store(store_url)
    out = {}
    for name in trials:
        if name == "baseline" or policy is None:
            continue
        try:
            d = decide(store, policy, f"{run_id}/{name}", record=False)
            out[name] = d.verdict
        except Exception as exc:  # noqa: BLE001 - a missing trial is a verdict of its own here
            out[name] = f"error: {exc}"
    return out


def metrics(store_url: str, run_id: int) -> dict[str, dict[str, float]]:
    store = Store(store_url)
    out: dict[str, dict[str, float]] = {}
    for t in store.trials(run_id):
        for ev, suite in store.evaluations(t.id):
            for name, m in store.metrics(ev.id).items():
                out.setdefault(t.name, {})[f"{suite.name}.{name}"] = round(m.value, 6)
    return out


def differing_by_trial(keys: list[str]) -> dict[str, int]:
    """How many of the differing outputs (keys `trial/suite/item`) each trial has: where the difference comes from."""
    counts: dict[str, int] = {}
    for key in keys:
        trial = key.split("/", 1)[0]
        counts[trial] = counts.get(trial, 0) + 1
    return counts


def device_info() -> dict[str, Any]:
    info: dict[str, Any] = {"python": platform.python_version(), "host_cpus": os.cpu_count()}
    try:
        import torch

        if torch.cuda.is_available():
            info |= {
                "name": torch.cuda.get_device_name(0),
                "count": torch.cuda.device_count(),
                "memory_gib": round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1),
            }
        else:
            info["name"] = f"{platform.processor() or platform.machine()} CPU (no GPU)"
    except ImportError:
        pass
    versions = {}
    for lib in LIBRARIES:
        try:
            versions[lib] = metadata.version(lib)
        except metadata.PackageNotFoundError:
            pass
    return {"device": info, "versions": versions}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--plan", type=Path, default=GPU_PLAN)
    ap.add_argument(
        "--paths", default="peer,workers", help="which paths to run (comma-separated: peer, workers, workers-spare)"
    )
    ap.add_argument("--gpus", default="0", help="the GPU the run uses (--gpus of tunegate run); 'none' on a CPU")
    ap.add_argument(
        "--merge",
        type=Path,
        action="append",
        default=[],
        help="a JSON written by an earlier invocation whose paths are merged into this one's",
    )
    ap.add_argument("--tiny", action="store_true", help="CPU check: a tiny random model and one-step trials")
    ap.add_argument(
        "--together",
        action="store_true",
        help="run the paths at the same time on the same GPU (each slows the other: an upper bound on each wall time)",
    )
    ap.add_argument(
        "--eval-numerics",
        default="invariant",
        choices=("invariant", "fast"),
        help="the evaluation numerics both paths score under (tunegate run --eval-numerics)",
    )
    ap.add_argument("--work", type=Path, default=None, help="where stores and run folders go (default: a tmp dir)")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument(
        "--note",
        default=None,
        help="how the paths were measured (recorded as `how_measured`), e.g. "
        "when they ran at the same time on two GPUs of one host",
    )
    args = ap.parse_args()
    root = args.work or Path(tempfile.mkdtemp(prefix="sweep-"))
    root.mkdir(parents=True, exist_ok=True)
    plan = tiny_plan(root) if args.tiny else args.plan.resolve()
    gpus = None if args.gpus in ("", "auto") else args.gpus
    gpu_index = int(gpus.split(",")[0]) if gpus and gpus.split(",")[0].isdigit() else None
    policy = gate_policy(plan)
    converted = convert_model_once(plan, gpu_index)
    result: dict[str, Any] = {
        "plan": str(plan),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "eval_numerics": args.eval_numerics,
        **device_info(),
        "paths": {},
        "model_prepared": converted,
    }
    if args.note:
        result["how_measured"] = args.note
    for earlier in args.merge:
        result["paths"] |= json.loads(earlier.read_text())["paths"]
    names = [p.strip() for p in args.paths.split(",") if p.strip()]
    if args.together:  # every path at once on the same GPU(s), each started a second after the one before
        with ThreadPoolExecutor(max_workers=max(len(names), 1)) as pool:
            futures = {}
            for name in names:
                futures[name] = pool.submit(run_path, name, plan, root, gpus, gpu_index, args.eval_numerics)
                time.sleep(1.0)
            runs = {name: f.result() for name, f in futures.items()}
        result.setdefault("how_measured", TOGETHER_NOTE)
    else:
        runs = {name: run_path(name, plan, root, gpus, gpu_index, args.eval_numerics) for name in names}
    for name, measured in runs.items():
        measured["verdicts"] = verdicts(measured["store"], measured["run_id"], policy, list(measured["trials"]))
        measured["metrics"] = metrics(measured["store"], measured["run_id"])
        measured["outputs"] = item_outputs(measured["store"], measured["run_id"])
        result["paths"][name] = measured
    paths = result["paths"]
    if "peer" in paths and "workers" in paths:
        peer, ours = paths["peer"], paths["workers"]
        differ = [k for k, v in ours["outputs"].items() if peer["outputs"].get(k) != v]
        result |= {
            "speedup": round(peer["wall_seconds"] / ours["wall_seconds"], 3),
            "gpu_utilization_mean": ours["gpu_utilization"]["mean"],
            "peer_gpu_utilization_mean": peer["gpu_utilization"]["mean"],
            "verdicts_identical": peer["verdicts"] == ours["verdicts"],
            "outputs_compared": len(ours["outputs"]),
            "outputs_differing": len(differ),
            "outputs_differing_by_trial": differing_by_trial(differ),
            "outputs_differing_examples": differ[:10],
            "metrics_differing": {
                t: {
                    k: (peer["metrics"].get(t, {}).get(k), v)
                    for k, v in m.items()
                    if peer["metrics"].get(t, {}).get(k) != v
                }
                for t, m in ours["metrics"].items()
            },
        }
        print(
            f"speedup {result['speedup']}x (peer {peer['wall_seconds']}s, workers {ours['wall_seconds']}s); "
            f"GPU utilisation {result['gpu_utilization_mean']} vs peer {result['peer_gpu_utilization_mean']}; "
            f"verdicts identical: {result['verdicts_identical']}; outputs differing "
            f"{len(differ)}/{len(ours['outputs'])}",
            flush=True,
        )
    if "speedup" in result:  # per-item outputs were for the comparison; the final JSON keeps the counts
        for measured in paths.values():
            measured.pop("outputs", None)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}", flush=True)


if __name__ == "__main__":
    main()
