"""Report on a finished run of examples/gpu/plan.yaml (or any plan), read from the store.

    python bench/gpu_plan_report.py --run gpu-json-extract                 # after `tunegate run examples/gpu/plan.yaml`
    python bench/gpu_plan_report.py --smoke --out runs/gpu_plan_smoke      # CPU check: tiny random model, 1-step trials
    python bench/gpu_plan_report.py --smoke-plan runs/gpu_plan_smoke_plan  # only write that shrunk plan and its suites

Writes OUT/plan_run.json and OUT/plan_run.md (default OUT: reports/gpu): the device and library
versions the trials ran with, the date, every trial's status, metrics, train time and peak memory,
each arm against the baseline (paired bootstrap 95% interval, McNemar p for 0/1 metrics), and an
explicit line for every arm that did NOT beat the baseline. "Beat" means: on every task suite the
primary metric's 95% interval of the gain lies above zero. A failed trial did not beat it either.
The report itself is built by harness.analysis.run_report; this script picks the run and the folder.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.append(str(Path(__file__).resolve().parents[1]))  # bench._common from this checkout, PYTHONPATH or not
from bench._common import GPU_PLAN, REPO, TINY_SHAPE, llama_config
from harness.analysis import write_run_report
from harness.store import Store

TITLE = "GPU plan run"


# --- smoke mode: the same plan on a tiny random model, on a CPU -----------------------------------
def tiny_model(folder: Path) -> Path:
    """A 2-layer random Llama with the default model's tokenizer (seconds to build, no download)."""
    import torch
    from transformers import LlamaForCausalLM

    from harness.model import load_tokenizer

    tok = load_tokenizer("smollm2-135m")
    torch.manual_seed(0)
    config = llama_config(TINY_SHAPE, vocab=len(tok), tied=True, tok=tok, max_positions=512)
    LlamaForCausalLM(config).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def smoke_plan(work: Path, plan_path: Path = GPU_PLAN, items: int = 4) -> Path:
    """The GPU plan shrunk for a CPU: tiny model, 1 optimiser step per trial, `items` items per suite,
    qlora run as lora when there is no CUDA (bitsandbytes 4-bit needs a GPU)."""
    import shutil

    import torch
    import yaml

    from harness.evaluation import _suite as registry
    from harness.plan import load_plan

    plan, _ = load_plan(plan_path)  # resolves the data paths against the plan's folder
    data = yaml.safe_load(plan_path.read_text())
    data["name"] = data["name"] + "-smoke"
    data["model"] = str(tiny_model(work / "tiny-model"))
    data["data"] = {k: v for k, v in plan.data.model_dump().items() if v is not None}
    data.pop("gate", None)
    suites_dir = work / "suites"
    for name in data["suites"]:
        suite = registry.load(name)
        target = suites_dir / f"{name}"
        target.mkdir(parents=True, exist_ok=True)
        shutil.copy(suite.path, target / "suite.yaml")
        lines = (suite.path.parent / suite.spec.items).read_text().splitlines()[:items]
        (target / suite.spec.items).write_text("\n".join(lines) + "\n")
    for arm in data["arms"]:
        if arm["type"] in ("lora", "qlora", "dora", "full", "dpo"):
            arm |= {"max_steps": 1, "batch_size": 2, "max_length": 128, "warmup_steps": 0}
        if arm["type"] == "qlora" and not torch.cuda.is_available():
            arm["type"] = "lora"
    path = work / "plan.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def run_smoke(out_dir: Path, work: Path | None = None) -> tuple[Path, Path]:
    import os

    from rich.console import Console

    from harness.run import Runner

    work = work or Path(tempfile.mkdtemp(prefix="gpu-plan-smoke-"))
    plan = smoke_plan(work)
    os.environ["TUNEGATE_SUITES"] = os.pathsep.join([str(work / "suites"), os.environ.get("TUNEGATE_SUITES", "")])
    store = Store(str(work / "store.db"))
    outcome = Runner(store, Console(stderr=True), runs_dir=work / "runs").run(plan)
    return write_run_report(store, str(outcome.run_id), out_dir, title=TITLE)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--store", default=None, help="store path or URL (default: $TUNEGATE_STORE or runs/tunegate.db)"
    )
    parser.add_argument(
        "--run", default="gpu-json-extract", help="run id or name (default: the latest gpu-json-extract)"
    )
    parser.add_argument("--out", type=Path, help="folder (default: reports/gpu; with --smoke: runs/gpu_plan_smoke)")
    parser.add_argument(
        "--smoke", action="store_true", help="run the plan on a tiny random model on this machine first"
    )
    parser.add_argument(
        "--smoke-plan",
        type=Path,
        metavar="FOLDER",
        help="only write the smoke plan (FOLDER/plan.yaml), its model and suites; print its path",
    )
    args = parser.parse_args(argv)
    from harness.base import UserError

    try:
        if args.smoke_plan:
            args.smoke_plan.mkdir(parents=True, exist_ok=True)
            print(smoke_plan(args.smoke_plan))
            return 0
        if args.smoke:  # a check, not a measurement: its report goes under runs/, never into reports/
            json_path, md_path = run_smoke(args.out or REPO / "runs" / "gpu_plan_smoke")
        else:
            json_path, md_path = write_run_report(
                Store(args.store), args.run, args.out or REPO / "reports" / "gpu", title=TITLE
            )
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {json_path} and {md_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
