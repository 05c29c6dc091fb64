"""Checks before any training: files, formats, suites, models, context length and each trial's memory estimate."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from harness._nvml import visible_nvml_gpus
from harness.arms._dpo_data import load_pairs, pair_lengths, pair_tokenizer
from harness.arms._prompting import describe, embedding_folder, load_documents
from harness.base._data import load_examples
from harness.base._errors import UserError, YamlDoc
from harness.evaluation import _suite as suite_registry
from harness.model._load import cache_root, resolve
from harness.plan._load import arm_line, load_plan
from harness.plan._memory import ALL_LINEAR, estimate_training_memory
from harness.plan._parts import TRAINED, RagArm
from harness.plan._schema import Plan
from harness.plan._sweep import trial_arms
from harness.run._devices import plan_devices

GIB = 1024**3


@dataclass
class Checked:
    """What preflight learned: the model's shape and each trial's memory estimate (GiB)."""

    shape: dict[str, Any] | None
    capacity_gib: float | None
    estimates: dict[str, float | None] = field(default_factory=dict)
    rows: dict[str, int] = field(default_factory=dict)  # examples in the plan's data files: train, preference


def model_shape(spec: str) -> dict[str, Any] | None:
    """The model's config (hidden_size, num_hidden_layers, ...) from config.json or GGUF metadata;
    None when it cannot be read without a download (a hub id not in the local cache)."""

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
    """The GGUF file's shape, read once and cached beside the converted models (reading a GGUF's metadata parses
    its whole vocabulary: seconds, before every run)."""
    stat = Path(path).stat()  # keyed by size and mtime: hashing a multi-GB GGUF would cost more than the read
    cached = cache_root() / "shapes" / f"{Path(path).stem}-{stat.st_size}-{stat.st_mtime_ns}.json"
    if cached.exists():
        return json.loads(cached.read_text())
    shape = _read_gguf_shape(path)
    if shape is not None:
        try:
            cached.parent.mkdir(parents=True, exist_ok=True)
            tmp = cached.with_name(f"{cached.name}.tmp{os.getpid()}")
            tmp.write_text(json.dumps(shape))
            tmp.replace(cached)
        except OSError:
            pass  # a read-only cache only costs the next run the same read
    return shape


def _read_gguf_shape(path: str) -> dict[str, Any] | None:
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
        "model_type": arch,
        "hidden_size": hidden,
        "intermediate_size": field_value(f"{arch}.feed_forward_length"),
        "num_hidden_layers": field_value(f"{arch}.block_count"),
        "num_attention_heads": field_value(f"{arch}.attention.head_count"),
        "num_key_value_heads": field_value(f"{arch}.attention.head_count_kv"),
        "vocab_size": field_value(f"{arch}.vocab_size") or (len(tokens.data) if tokens is not None else None),
        "max_position_embeddings": field_value(f"{arch}.context_length"),
        "tie_word_embeddings": not any(t.name == "output.weight" for t in reader.tensors),
    }


_TARGET_SHORT = {
    "q_proj": "q",
    "k_proj": "k",
    "v_proj": "v",
    "o_proj": "o",
    "gate_proj": "gate",
    "up_proj": "up",
    "down_proj": "down",
}


def memory_estimate(arm: Any, shape: dict[str, Any] | None, parent: Any = None) -> Any:
    """The training-memory estimate of one training step on a bf16 CUDA GPU (None if the shape is unknown)."""

    if shape is None or arm.type not in TRAINED:
        return None
    method = (parent.type if parent is not None else "lora") if arm.type == "dpo" else arm.type
    targets: tuple[str, ...] = ALL_LINEAR
    if isinstance(arm.target_modules, list):
        short = tuple(_TARGET_SHORT.get(t, "") for t in arm.target_modules)
        targets = short if all(short) else ALL_LINEAR
    batch = arm.batch_size * (2 if arm.type == "dpo" else 1)  # DPO runs chosen and rejected together
    try:
        return estimate_training_memory(
            shape,
            method=method,
            seq_len=arm.max_length,
            batch_size=batch,
            lora_r=arm.r,
            dtype="bf16",
            grad_checkpointing=arm.gradient_checkpointing,
            lora_dropout=arm.dropout,
            lora_targets=targets,
        )
    except (TypeError, ValueError, KeyError):
        return None  # not a Llama-shaped config


def gpu_capacity_gib(plan: Plan) -> float | None:
    """GPU memory per device to plan for: the plan's memory_gib, else the first visible GPU's; None on CPU."""
    if plan.memory_gib is not None:
        return plan.memory_gib
    nvml = visible_nvml_gpus()  # NVML where it can answer: the driver then need not import torch and start CUDA
    if nvml is not None:
        return next(iter(nvml.values())).total / GIB if nvml else None
    import torch

    if torch.cuda.is_available():
        return torch.cuda.get_device_properties(0).total_memory / GIB
    return None


def preflight(
    plan: Plan, doc: YamlDoc | None, arms: list[Any], *, device: str, n_gpus: int | None, check_memory: bool = True
) -> Checked:
    """Everything that would make a trial fail for a reason the user can fix, checked before any training."""

    file = doc.path if doc else None

    def where(key: tuple[Any, ...]) -> int | None:
        return doc.line_of(key) if doc else None

    try:
        resolve(plan.model)
    except UserError as exc:
        raise UserError(exc.message, file=file, line=where(("model",)), field="model") from None
    rows: dict[str, int] = {}
    if plan.data.train and any(a.type not in ("baseline", "dpo") for a in arms):
        rows["train"] = len(load_examples(plan.data.train, plan.data.format))
    if any(a.type == "dpo" for a in arms):
        pairs = load_pairs(plan.data.preference or "")
        rows["preference"] = len(pairs)
        tok, counted = pair_tokenizer(plan.model), None
        for arm in arms:
            if arm.type == "dpo":  # over-long pairs are refused here, before any trial starts
                counted = pair_lengths(pairs, tok, arm.max_length, plan.data.preference or "", arm.truncation, counted)
    for i, name in enumerate(plan.suites):
        try:
            suite_registry.load(name)
        except UserError as exc:
            if exc.file is not None:
                raise
            raise UserError(exc.message, file=file, line=where(("suites", i)), field=f"suites[{i}]") from None
    for arm in arms:
        if isinstance(arm, RagArm):
            try:
                embedding_folder(arm.embedding_model)
            except UserError as exc:
                line, label = arm_line(plan, doc, arm.name, "embedding_model")
                raise UserError(exc.message, file=file, line=line, field=label) from None
            if arm.documents:
                load_documents(arm.documents)
        if arm.type == "qlora" and device != "cuda":
            line, label = arm_line(plan, doc, arm.name, "type")
            raise UserError(
                f"trial '{arm.name}' is qlora, which needs a CUDA GPU (bitsandbytes 4-bit); "
                "use a lora arm on this machine",
                file=file,
                line=line,
                field=label,
            )
    if n_gpus is not None:
        check_gpus_per_trial(plan, doc, arms, n_gpus)

    shape = model_shape(plan.model)
    capacity = gpu_capacity_gib(plan) if check_memory else None
    checked = Checked(shape, capacity, rows=rows)
    by_name = {a.name: a for a in trial_arms(plan)}
    for arm in arms:
        if arm.type not in TRAINED:
            continue
        context = (shape or {}).get("max_position_embeddings")
        if context and arm.max_length > context:
            line, label = arm_line(plan, doc, arm.name, "max_length")
            raise UserError(
                f"max_length {arm.max_length} is longer than the model's context ({context} tokens)",
                file=file,
                line=line,
                field=label,
            )
        parent = by_name.get(getattr(arm, "from_arm", None) or "")
        est = memory_estimate(arm, shape, parent)
        checked.estimates[arm.name] = est.total_gib if est is not None else None
        if est is not None and capacity is not None and est.total_gib > capacity:
            line, label = arm_line(plan, doc, arm.name)
            raise UserError(
                f"trial '{arm.name}' needs about {est.total_gib:.1f} GiB of GPU memory by the estimate "
                f"but the GPU has {capacity:.1f} GiB: lower batch_size or max_length, turn on "
                "gradient_checkpointing, or use qlora",
                file=file,
                line=line,
                field=label,
            )
    return checked


def check_gpus_per_trial(plan: Plan, doc: YamlDoc | None, arms: list[Any], n_gpus: int) -> None:
    for arm in arms:
        if arm.type in TRAINED and arm.gpus_per_trial > max(n_gpus, 1):
            line, label = arm_line(plan, doc, arm.name, "gpus_per_trial")
            raise UserError(
                f"trial '{arm.name}' asks for {arm.gpus_per_trial} GPUs but {n_gpus} "
                f"{'is' if n_gpus == 1 else 'are'} available to one trial",
                file=doc.path if doc else None,
                line=line,
                field=label,
            )


def dry_run(
    plan_path: str | Path, console: Console, *, executor: str = "local", gpus: list[str] | None = None
) -> Table:
    """The trials a run would execute, each with its memory estimate; nothing is trained."""

    plan, doc = load_plan(plan_path)
    arms = trial_arms(plan)
    devices = plan_devices(gpus)
    # a dry run plans for the GPU the trials will get, so device checks (qlora needs CUDA) are left out
    checked = preflight(
        plan, doc, arms, device="cuda", n_gpus=None if executor == "ray" else len(devices), check_memory=False
    )
    capacity = gpu_capacity_gib(plan)
    table = Table(
        "trial",
        "type",
        "config",
        "GPU memory (est.)",
        "fits",
        title=f"{plan.name}: {len(arms)} trials on {plan.model} "
        f"({executor} executor, {len(devices) or 'no'} GPU{'s' if len(devices) != 1 else ''})",
    )
    for arm in arms:
        est = checked.estimates.get(arm.name)
        memory = "inference only" if arm.type not in TRAINED else ("unknown shape" if est is None else f"{est:.2f} GiB")
        fits = "—" if est is None or capacity is None else ("yes" if est <= capacity else f"NO (> {capacity:.1f})")
        table.add_row(arm.name, arm.type, describe(arm), memory, fits)
    return table
