"""`tunegate run`: check a plan, expand its trials, hand them to an executor, record everything in the store.

The driver (`Runner.run`) validates everything a trial will need before any training starts
(files, data formats, suites, models, embedding models, context length, the memory estimate),
creates the run and one `pending` row per trial, then gives each unfinished trial to an executor
as a `TrialUnit`. A unit is self-contained (store URL, run id, trial name, folder): whoever runs it
(this process, a worker process pinned to a GPU, a Ray task) reads the resolved plan from the
store and writes its own results there.

A trial is marked finished only after its evaluations are committed, so a run killed at any moment
resumes (`--resume`) without losing or repeating a finished trial. A trial that diverges, runs out
of memory or breaks is marked failed with its reason and the run goes on.
"""
from __future__ import annotations

import gc
import json
import os
import platform
import shutil
import subprocess
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from harness import suites as suite_registry
from harness.errors import UserError, YamlDoc
from harness.plan import TRAINED, Plan, RagArm, arm_line, load_plan, plan_hash, trials
from harness.store import Store

LIBRARIES = ("torch", "transformers", "peft", "trl", "datasets", "accelerate", "bitsandbytes", "lm_eval", "ray")
GIB = 1024**3


@dataclass
class RunOutcome:
    run_id: int
    finished: list[str]
    failed: dict[str, str]
    skipped: list[str]


@dataclass
class TrialUnit:
    """One trial as a unit of work: everything a worker needs, JSON-serialisable."""
    store_url: str
    run_id: int
    trial: str
    folder: str
    gpus_per_trial: int = 1
    device: str | None = None  # None: the worker picks (cuda when it sees a GPU, else cpu)

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> TrialUnit:
        return cls(**json.loads(text))


@dataclass
class TrialResult:
    trial: str
    status: str  # finished | failed | worker (a non-zero rank of a data-parallel trial)
    error: str | None = None


@dataclass
class Checked:
    """What preflight learned: the model's shape and each trial's memory estimate (GiB)."""
    shape: dict[str, Any] | None
    capacity_gib: float | None
    estimates: dict[str, float | None] = field(default_factory=dict)


def stamp() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for lib in LIBRARIES:
        try:
            out[lib] = metadata.version(lib.replace("_", "-"))
        except metadata.PackageNotFoundError:
            pass
    return out


def git_sha() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                              cwd=Path(__file__).parent).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def device_name(device: str) -> str:
    if device == "cuda":
        import torch

        return torch.cuda.get_device_name(torch.cuda.current_device())
    return f"{platform.processor() or platform.machine()} CPU ({os.cpu_count()} cores)"


def absolute_store_url(url: str) -> str:
    """A SQLite URL with an absolute path, so workers in other folders open the same file."""
    prefix = "sqlite:///"
    if url.startswith(prefix) and not url.startswith(prefix + "/") and url != prefix + ":memory:":
        return prefix + str(Path(url[len(prefix):]).resolve())
    return url


# --- the model's shape, without loading it ---------------------------------------------------------
def model_shape(spec: str) -> dict[str, Any] | None:
    """The model's config (hidden_size, num_hidden_layers, ...) from config.json or GGUF metadata;
    None when it cannot be read without a download (a hub id not in the local cache)."""
    from harness.models import resolve

    resolved = resolve(spec)
    if resolved.kind == "local":
        return json.loads((Path(resolved.source) / "config.json").read_text())
    if resolved.kind in ("alias", "gguf"):
        return _gguf_shape(resolved.source)
    try:
        from transformers import AutoConfig

        return AutoConfig.from_pretrained(resolved.source).to_dict()
    except (OSError, ValueError):
        return None


def _gguf_shape(path: str) -> dict[str, Any] | None:
    from gguf import GGUFReader

    reader = GGUFReader(path)

    def field_value(key: str) -> Any:
        f = reader.fields.get(key)
        return f.contents() if f is not None else None

    arch = field_value("general.architecture")
    hidden = field_value(f"{arch}.embedding_length")
    if hidden is None:
        return None
    tokens = reader.fields.get("tokenizer.ggml.tokens")
    return {
        "model_type": arch, "hidden_size": hidden, "intermediate_size": field_value(f"{arch}.feed_forward_length"),
        "num_hidden_layers": field_value(f"{arch}.block_count"),
        "num_attention_heads": field_value(f"{arch}.attention.head_count"),
        "num_key_value_heads": field_value(f"{arch}.attention.head_count_kv"),
        "vocab_size": field_value(f"{arch}.vocab_size") or (len(tokens.data) if tokens is not None else None),
        "max_position_embeddings": field_value(f"{arch}.context_length"),
        "tie_word_embeddings": not any(t.name == "output.weight" for t in reader.tensors),
    }


_TARGET_SHORT = {"q_proj": "q", "k_proj": "k", "v_proj": "v", "o_proj": "o", "gate_proj": "gate", "up_proj": "up",
                 "down_proj": "down"}


def memory_estimate(arm: Any, shape: dict[str, Any] | None, parent: Any = None) -> Any:
    """advisor.memory's estimate of one training step on a bf16 CUDA GPU (None if the shape is unknown)."""
    from advisor.memory import ALL_LINEAR, estimate_training_memory

    if shape is None or arm.type not in TRAINED:
        return None
    method = (parent.type if parent is not None else "lora") if arm.type == "dpo" else arm.type
    targets: tuple[str, ...] = ALL_LINEAR
    if isinstance(arm.target_modules, list):
        short = tuple(_TARGET_SHORT.get(t, "") for t in arm.target_modules)
        targets = short if all(short) else ALL_LINEAR
    batch = arm.batch_size * (2 if arm.type == "dpo" else 1)  # DPO runs chosen and rejected together
    try:
        return estimate_training_memory(shape, method=method, seq_len=arm.max_length, batch_size=batch,
                                        lora_r=arm.r, dtype="bf16", grad_checkpointing=arm.gradient_checkpointing,
                                        lora_dropout=arm.dropout, lora_targets=targets)
    except (TypeError, ValueError, KeyError):
        return None  # not a Llama-shaped config


def gpu_capacity_gib(plan: Plan) -> float | None:
    """GPU memory per device to plan for: the plan's memory_gib, else the first visible GPU's; None on CPU."""
    if plan.memory_gib is not None:
        return plan.memory_gib
    import torch

    if torch.cuda.is_available():
        return torch.cuda.get_device_properties(0).total_memory / GIB
    return None


# --- preflight ------------------------------------------------------------------------------------
def preflight(plan: Plan, doc: YamlDoc | None, arms: list[Any], *, device: str, n_gpus: int | None,
              check_memory: bool = True) -> Checked:
    """Everything that would make a trial fail for a reason the user can fix, checked before any training."""
    from harness.data import load_examples, load_preferences
    from harness.models import resolve

    file = doc.path if doc else None

    def where(key: tuple[Any, ...]) -> int | None:
        return doc.line_of(key) if doc else None

    try:
        resolve(plan.model)
    except UserError as exc:
        raise UserError(exc.message, file=file, line=where(("model",)), field="model") from None
    if plan.data.train and any(a.type not in ("baseline", "dpo") for a in arms):
        load_examples(plan.data.train, plan.data.format)
    if any(a.type == "dpo" for a in arms):
        load_preferences(plan.data.preference or "")
    for i, name in enumerate(plan.suites):
        try:
            suite_registry.load(name)
        except UserError as exc:
            if exc.file is not None:
                raise
            raise UserError(exc.message, file=file, line=where(("suites", i)), field=f"suites[{i}]") from None
    for arm in arms:
        if isinstance(arm, RagArm):
            from harness.arms import embedding_folder, load_documents

            try:
                embedding_folder(arm.embedding_model)
            except UserError as exc:
                line, label = arm_line(plan, doc, arm.name, "embedding_model")
                raise UserError(exc.message, file=file, line=line, field=label) from None
            if arm.documents:
                load_documents(arm.documents)
        if arm.type == "qlora" and device != "cuda":
            line, label = arm_line(plan, doc, arm.name, "type")
            raise UserError(f"trial '{arm.name}' is qlora, which needs a CUDA GPU (bitsandbytes 4-bit); "
                            "use a lora arm on this machine", file=file, line=line, field=label)
    if n_gpus is not None:
        check_gpus_per_trial(plan, doc, arms, n_gpus)

    shape = model_shape(plan.model)
    capacity = gpu_capacity_gib(plan) if check_memory else None
    checked = Checked(shape, capacity)
    by_name = {a.name: a for a in trials(plan)}
    for arm in arms:
        if arm.type not in TRAINED:
            continue
        context = (shape or {}).get("max_position_embeddings")
        if context and arm.max_length > context:
            line, label = arm_line(plan, doc, arm.name, "max_length")
            raise UserError(f"max_length {arm.max_length} is longer than the model's context ({context} tokens)",
                            file=file, line=line, field=label)
        parent = by_name.get(getattr(arm, "from_arm", None) or "")
        est = memory_estimate(arm, shape, parent)
        checked.estimates[arm.name] = est.total_gib if est is not None else None
        if est is not None and capacity is not None and est.total_gib > capacity:
            line, label = arm_line(plan, doc, arm.name)
            raise UserError(f"trial '{arm.name}' needs about {est.total_gib:.1f} GiB of GPU memory by the estimate "
                            f"but the GPU has {capacity:.1f} GiB: lower batch_size or max_length, turn on "
                            "gradient_checkpointing, or use qlora", file=file, line=line, field=label)
    return checked


def check_gpus_per_trial(plan: Plan, doc: YamlDoc | None, arms: list[Any], n_gpus: int) -> None:
    for arm in arms:
        if arm.type in TRAINED and arm.gpus_per_trial > max(n_gpus, 1):
            line, label = arm_line(plan, doc, arm.name, "gpus_per_trial")
            raise UserError(f"trial '{arm.name}' asks for {arm.gpus_per_trial} GPUs but {n_gpus} "
                            f"{'is' if n_gpus == 1 else 'are'} available to one trial",
                            file=doc.path if doc else None, line=line, field=label)


def dry_run(plan_path: str | Path, console: Console, *, executor: str = "local",
            gpus: list[str] | None = None) -> Table:
    """The trials a run would execute, each with its memory estimate; nothing is trained."""
    from harness.arms import describe
    from harness.executors import plan_devices

    plan, doc = load_plan(plan_path)
    arms = trials(plan)
    devices = plan_devices(gpus)
    # a dry run plans for the GPU the trials will get, so device checks (qlora needs CUDA) are left out
    checked = preflight(plan, doc, arms, device="cuda", n_gpus=None if executor == "ray" else len(devices),
                        check_memory=False)
    capacity = gpu_capacity_gib(plan)
    table = Table("trial", "type", "config", "GPU memory (est.)", "fits",
                  title=f"{plan.name}: {len(arms)} trials on {plan.model} "
                        f"({executor} executor, {len(devices) or 'no'} GPU{'s' if len(devices) != 1 else ''})")
    for arm in arms:
        est = checked.estimates.get(arm.name)
        memory = "inference only" if arm.type not in TRAINED else ("unknown shape" if est is None else f"{est:.2f} GiB")
        fits = "—" if est is None or capacity is None else ("yes" if est <= capacity else f"NO (> {capacity:.1f})")
        table.add_row(arm.name, arm.type, describe(arm), memory, fits)
    return table


# --- one trial ------------------------------------------------------------------------------------
def load_trial_model(base_spec: str, trial_folder: str | Path, device: str | None = None) -> tuple[Any, Any]:
    """The model a trial produced: base + LoRA adapter, a full fine-tuned folder, or the base itself."""
    from harness.models import load_model

    folder = Path(trial_folder) / "adapter" if trial_folder else None
    if folder is None or not folder.exists():
        return load_model(base_spec, device)
    if (folder / "adapter_config.json").exists():
        from peft import PeftModel

        model, tok = load_model(trial_base(base_spec, trial_folder), device)
        return PeftModel.from_pretrained(model, str(folder)).eval(), tok
    return load_model(str(folder), device)


def trial_base(base_spec: str, trial_folder: str | Path) -> str:
    """The base an adapter was trained on: the plan's model, or (DPO after a full fine-tune) the parent's weights."""
    manifest = Path(trial_folder) / "manifest.json"
    if manifest.exists():
        return json.loads(manifest.read_text()).get("base_model") or base_spec
    return base_spec


def run_trial(unit: TrialUnit, console: Console | None = None) -> TrialResult:
    """Train (if needed) and score one trial, writing status, curves, artifacts and scores to the store."""
    return _TrialJob(unit, console or Console()).run()


class _TrialJob:
    def __init__(self, unit: TrialUnit, console: Console) -> None:
        from harness.models import default_device

        self.unit, self.console = unit, console
        self.store = Store(unit.store_url)
        self.rank = int(os.environ.get("RANK", "0"))
        local_rank = os.environ.get("LOCAL_RANK")
        self.device = unit.device or default_device()
        if local_rank is not None and self.device == "cuda":
            import torch

            torch.cuda.set_device(int(local_rank))
        run = self.store.run(unit.run_id)
        self.plan = Plan.model_validate(run.plan)
        matches = [a for a in trials(self.plan) if a.name == unit.trial]
        if not matches:
            raise UserError(f"run {unit.run_id} has no trial '{unit.trial}'")
        self.arm = matches[0]
        self.trial = self.store.trial(f"{unit.run_id}/{unit.trial}")
        self.folder = Path(unit.folder)
        self.base_model = self.plan.model
        self.training: dict[str, Any] = {}

    @property
    def main(self) -> bool:
        return self.rank == 0

    def run(self) -> TrialResult:
        arm = self.arm
        if self.main:
            self._start()
        try:
            if arm.type in TRAINED:
                self._train()
            if not self.main:
                return TrialResult(arm.name, "worker")
            self._write_manifest(finished=False)
            self._evaluate()
            self._write_manifest(finished=True)
        except Exception as exc:
            if not self.main:
                raise
            return self._fail(self._reason(exc))
        finally:
            _free_memory()
        self.store.update_trial(self.trial.id, status="finished", error=None, finished_at=stamp())
        return TrialResult(arm.name, "finished")

    def _start(self) -> None:
        # a rerun (resume after a kill, retry after a failure) starts from a clean folder
        for stale in ("adapter", "checkpoints", "train_log.jsonl", "error.log", "manifest.json"):
            path = self.folder / stale
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()
        self.folder.mkdir(parents=True, exist_ok=True)
        self.store.update_trial(self.trial.id, status="running", error=None, folder=str(self.folder),
                                started_at=stamp(), finished_at=None)
        self.console.rule(f"[bold]{self.arm.name}[/] ({self.arm.type})")

    def _reason(self, exc: Exception) -> str:
        from harness.train import TrainingFailed

        if isinstance(exc, (TrainingFailed, UserError)):
            return str(exc)
        try:
            import torch

            if isinstance(exc, torch.OutOfMemoryError):
                return f"out of memory: {str(exc).splitlines()[0]}"
        except ImportError:
            pass
        (self.folder / "error.log").write_text(traceback.format_exc())
        return f"{type(exc).__name__}: {exc} (traceback in {self.folder / 'error.log'})"

    def _fail(self, reason: str) -> TrialResult:
        self.store.update_trial(self.trial.id, status="failed", error=reason, finished_at=stamp())
        self.console.print(f"  [red]{self.arm.name}: failed[/] — {escape(reason)}", highlight=False)
        return TrialResult(self.arm.name, "failed", reason)

    def _train(self) -> None:
        from harness.data import load_examples, load_preferences
        from harness.train import TrainingFailed, train_dpo, train_sft

        arm, plan = self.arm, self.plan
        init: Path | None = None
        if arm.type == "dpo":
            if arm.from_arm:
                parent = self.store.trial(f"{self.unit.run_id}/{arm.from_arm}")
                if parent.status != "finished":
                    raise TrainingFailed(f"from_arm '{arm.from_arm}' has not finished (status {parent.status})")
                parent_weights = Path(parent.folder) / "adapter"
                if parent.arm_type == "full":
                    self.base_model = str(parent_weights)  # LoRA-DPO on top of the fully fine-tuned weights
                else:
                    self.base_model = trial_base(plan.model, parent.folder)
                    init = parent_weights
            prefs = load_preferences(plan.data.preference or "")
            result = train_dpo(arm, self.base_model, prefs, self.folder, self.device, init_adapter=init)
        else:
            examples = load_examples(plan.data.train or "", plan.data.format)
            result = train_sft(arm, plan.model, examples, self.folder, self.device)
        if not self.main:
            return
        self.training = {"seconds": result.seconds, "tokens_per_second": result.tokens_per_second,
                         "peak_memory_gib": result.peak_memory_gib, "final_loss": result.final_loss,
                         "steps": len(result.steps), "init_adapter": str(init) if init else None,
                         "fastpath": getattr(result, "fastpath", {})}
        (self.folder / "train_log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in result.steps))
        self.store.add_train_steps(self.trial.id, result.steps)
        self.store.update_trial(self.trial.id, train_seconds=result.seconds,
                                tokens_per_second=result.tokens_per_second,
                                peak_memory_gib=result.peak_memory_gib, final_loss=result.final_loss)

    def _evaluate(self) -> None:
        from harness import judge, tracing
        from harness.arms import shaper_for
        from harness.data import load_examples
        from harness.evaluation import evaluate

        arm, plan = self.arm, self.plan
        examples = load_examples(plan.data.train, plan.data.format) if arm.type in ("prompt", "rag") \
            and plan.data.train else []
        model, tok = load_trial_model(self.base_model, self.folder if arm.type in TRAINED else "", self.device)
        shaper = shaper_for(arm, examples)
        for name in plan.suites:
            suite = suite_registry.load(name)
            with _progress(self.console, f"{arm.name} · {suite.name}", len(suite.items)) as advance, \
                    tracing.attributes(run_id=self.unit.run_id, trial=arm.name), judge.using_store(self.store):
                result = evaluate(model, tok, suite, shaper=shaper, progress=advance)
            self.store.save_evaluation(self.trial.id, result)
            summary = ", ".join(f"{m}={v[0]:.3f}" for m, v in result.metrics.items())
            self.console.print(f"  {suite.name}: {summary}  ({result.seconds:.1f}s)", highlight=False)
        del model

    def _write_manifest(self, *, finished: bool) -> None:
        from harness.data import file_sha256
        from harness.models import resolve

        plan, arm = self.plan, self.arm
        data_files = {k: v for k, v in (("train", plan.data.train), ("preference", plan.data.preference)) if v}
        if isinstance(arm, RagArm) and arm.documents:
            data_files["documents"] = arm.documents
        artifacts = sorted(str(p.relative_to(self.folder)) for p in self.folder.rglob("*")
                           if p.is_file() and "checkpoints" not in p.parts and p.name != "manifest.json")
        manifest = {
            "plan": plan.name, "run_id": self.unit.run_id, "trial": arm.name,
            "arm": json.loads(arm.model_dump_json()), "resolved_plan": json.loads(plan.model_dump_json()),
            "model": plan.model, "model_source": resolve(plan.model).source, "base_model": self.base_model,
            "device": self.device, "device_name": device_name(self.device),
            "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
            "world_size": int(os.environ.get("WORLD_SIZE", "1")),
            "data": {k: {"path": v, "sha256": file_sha256(v)} for k, v in data_files.items()},
            "suites": {s: suite_registry.load(s).version for s in plan.suites},
            "seed": getattr(arm, "seed", plan.seed), "plan_seed": plan.seed,
            "versions": versions(), "git_sha": git_sha(), "created_at": stamp(),
            "training": self.training,
            "status": "finished" if finished else "running", "artifacts": artifacts + ["manifest.json"],
        }
        (self.folder / "manifest.json").write_text(json.dumps(manifest, indent=2))


def _free_memory() -> None:
    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:
        pass


def _progress(console: Console, label: str, total: int) -> Any:
    class _Bar:
        def __enter__(self) -> Callable[[int], None]:
            self.p = Progress(TextColumn("  {task.description}"), BarColumn(), MofNCompleteColumn(),
                              TimeElapsedColumn(), console=console, transient=True)
            self.p.start()
            task = self.p.add_task(label, total=total)
            return lambda n: self.p.advance(task, n)

        def __exit__(self, *exc: object) -> None:
            self.p.stop()

    return _Bar()


# --- the driver -----------------------------------------------------------------------------------
class Runner:
    def __init__(self, store: Store, console: Console | None = None, device: str | None = None,
                 runs_dir: str | Path = "runs") -> None:
        self.store, self.console = store, console or Console()
        self.device = device
        self.runs_dir = Path(runs_dir)

    def run(self, plan_path: str | Path, *, resume: bool = False, only: list[str] | None = None,
            executor: str = "local", gpus: list[str] | None = None, ray_address: str | None = None) -> RunOutcome:
        from harness.executors import make_executor, plan_devices
        from harness.models import default_device

        plan, doc = load_plan(plan_path)
        arms = trials(plan)
        if only:
            unknown = [n for n in only if n not in {a.name for a in arms}]
            if unknown:
                raise UserError(f"no trial named {', '.join(unknown)} in this plan (trials: "
                                f"{', '.join(a.name for a in arms)})", field="--only")
            arms = [a for a in arms if a.name in only]
        cpu_only = self.device == "cpu" or gpus == []
        devices = [] if cpu_only else plan_devices(gpus)
        local_device = "cpu" if cpu_only else (self.device or default_device())
        checked_gpus = None if executor == "ray" else len(devices)
        preflight(plan, doc, arms, device=local_device, n_gpus=checked_gpus)
        runner = make_executor(executor, store=self.store, console=self.console, devices=devices,
                               explicit_gpus=gpus is not None, ray_address=ray_address)
        if executor == "ray":
            check_gpus_per_trial(plan, doc, arms, runner.max_gpus_per_trial())
        run_id, folder = self._open_run(plan, resume, len(arms))

        units: list[TrialUnit] = []
        outcome = RunOutcome(run_id, [], {}, [])
        url = absolute_store_url(self.store.url)
        for arm in arms:
            trial = self.store.ensure_trial(run_id, arm.name, arm.name, arm.type, json.loads(arm.model_dump_json()))
            if trial.status == "finished":
                outcome.skipped.append(arm.name)
                self.console.print(f"  [dim]{arm.name}: finished earlier, skipped[/]")
                continue
            units.append(TrialUnit(url, run_id, arm.name, str(folder / arm.name),
                                   getattr(arm, "gpus_per_trial", 1) if arm.type in TRAINED else 1,
                                   "cpu" if cpu_only else self.device))

        def done(result: TrialResult) -> None:
            if result.status == "finished":
                outcome.finished.append(result.trial)
            else:
                outcome.failed[result.trial] = result.error or "failed"

        for phase in phases(units, plan):
            runner.run(phase, done)
        self.store.finish_run(run_id, "failed" if outcome.failed else "finished")
        return outcome

    def _open_run(self, plan: Plan, resume: bool, n_trials: int) -> tuple[int, Path]:
        from harness.store import Run

        phash = plan_hash(plan)
        existing = self.store.latest_run(plan.name, phash) if resume else None
        if resume and existing is None:
            self.console.print(f"[yellow]no earlier run of this plan ({plan.name}, same content) in the store; "
                               "starting a new run[/]")
        if existing is not None:
            run_id, folder = existing.id, Path(existing.folder)
            with self.store.session() as s:
                row = s.get(Run, run_id)
                if row is not None:
                    row.status, row.finished_at = "running", None
            self.console.print(f"[bold]Resuming run {run_id}[/] ({plan.name}) in {escape(str(folder))}")
        else:
            plan_dump = json.loads(plan.model_dump_json())
            run_id = self.store.create_run(plan.name, plan_dump, phash, plan.model, "", git_sha())
            folder = (self.runs_dir / f"{plan.name}-{run_id}").resolve()
            n = 1
            while folder.exists() and any(folder.iterdir()):  # another store's run with the same id
                n += 1
                folder = (self.runs_dir / f"{plan.name}-{run_id}.{n}").resolve()
            self.store.update_run_folder(run_id, str(folder))
            self.console.print(f"[bold]Run {run_id}[/] ({plan.name}): {n_trials} trials -> {escape(str(folder))}")
        folder.mkdir(parents=True, exist_ok=True)
        return run_id, folder


def phases(units: list[TrialUnit], plan: Plan) -> list[list[TrialUnit]]:
    """Units in dependency order: DPO trials that continue an SFT trial run after everything else."""
    dependent = {a.name for a in trials(plan) if a.type == "dpo" and getattr(a, "from_arm", None)}
    first = [u for u in units if u.trial not in dependent]
    second = [u for u in units if u.trial in dependent]
    return [p for p in (first, second) if p]

