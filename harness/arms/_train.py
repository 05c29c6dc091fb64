"""Training recipes: LoRA / QLoRA / DoRA / full SFT with TRL's SFTTrainer, and DPO with DPOTrainer.

Config in, artifacts out: `train_sft(arm, base_spec, examples, out_dir)` returns the adapter (or
model) folder and a per-step log. The model's own chat template is used for training exactly as
for inference, and the loss covers the completion only.

On a CUDA GPU training takes the fast path (`harness.model._fastpath`) by default: padding-free forward
with per-sequence FlashAttention, the Liger kernels that pay (`DEFAULT_LIGER_KERNELS`), bf16 LoRA inputs, and
activation checkpointing only where the memory plan needs it. The batches, the loss and TRL's loss
code are those of the plain path; only how the forward runs changes. On CPU the plain TRL path runs
(float32, no kernels to gain from); `fast=FastPath(...)` forces the fast path anywhere.
"""

from __future__ import annotations

import logging
import math
import random
import resource
import time
import warnings
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from harness.arms._dpo_data import check_pairs, pair_lengths, pair_tokenizer, sequence_lengths, tokenize_pair
from harness.base._data import Example, Preference
from harness.model._dpo import dpo_reference, fast_dpo_trainer
from harness.model._fastpath import FastPath, FastSession, MemoryPlan
from harness.model._load import default_device, load_model
from harness.model._overlap import overlap_args, overlapped_trainer
from harness.model._profile import profile_steps, step_profiler, write_profile

# transformers 5.2x renamed gradient_checkpointing; the old name is the one earlier 5.x releases know
warnings.filterwarnings("ignore", message=".*gradient_checkpointing.*deprecated", category=FutureWarning)
# bitsandbytes logs a notice about optional CPU kernels when TRL imports it; it is noise here
logging.getLogger("bitsandbytes").setLevel(logging.ERROR)

Fast = FastPath | None | Literal["auto"]


class TrainingFailed(Exception):
    """A trial-level failure (diverging loss, out of memory): the trial is marked failed, the sweep goes on."""


@dataclass
class TrainResult:
    folder: Path
    steps: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    tokens_per_second: float = 0.0  # real (non-padding) input tokens per second of training
    peak_memory_gib: float = 0.0
    final_loss: float | None = None
    fastpath: dict[str, Any] = field(default_factory=dict)  # what the fast path applied; empty on the plain path


def peak_memory_gib() -> float:
    import torch

    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux reports KiB


def step_logger(progress: bool = True) -> Any:
    from transformers import TrainerCallback

    class StepLog(TrainerCallback):
        """Collects loss, lr, grad norm, real tokens, step time and peak memory per logged step (and DPO's rewards/*
        and logps/* metrics); stops on divergence."""

        def __init__(self) -> None:
            self.rows: list[dict[str, Any]] = []
            self.last_tokens = 0
            self.last_t = time.perf_counter()
            self.bar: Any = None

        def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            self.last_t = time.perf_counter()
            self.last_tokens = int(getattr(state, "num_input_tokens_seen", 0) or 0)
            if not progress:
                return

            self.bar = Progress(
                TextColumn("  training"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("loss {task.fields[loss]}"),
                TimeRemainingColumn(),
                transient=False,
            )
            self.task = self.bar.add_task("train", total=state.max_steps, loss="…")
            self.bar.start()

        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            self.show(state)

        def show(self, state: Any) -> None:
            """The bar at this step. The Trainer logs a step's loss after on_step_end, so on_log calls this
            again: the loss shown is always the latest step's, not the one before."""
            if self.bar is not None:
                loss = f"{self.rows[-1]['loss']:.4f}" if self.rows else "…"
                self.bar.update(self.task, completed=state.global_step, loss=loss)

        def on_train_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            if self.bar is not None:
                self.bar.stop()

        def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kw: Any) -> None:
            if not logs or "loss" not in logs:
                return
            loss = float(logs["loss"])
            t = time.perf_counter()  # logging reads the loss from the device, so the step has finished here
            tokens = int(getattr(state, "num_input_tokens_seen", 0) or 0)
            step_tokens, seconds = tokens - self.last_tokens, max(t - self.last_t, 1e-9)
            self.last_tokens, self.last_t = tokens, t
            self.rows.append(
                {
                    "step": state.global_step,
                    "loss": loss,
                    "lr": logs.get("learning_rate"),
                    "grad_norm": logs.get("grad_norm"),
                    "tokens": step_tokens,
                    "seconds": seconds,
                    "tokens_per_second": step_tokens / seconds,
                    "peak_memory_gib": peak_memory_gib(),
                }
                # DPO: TRL's reward and log-probability metrics, under TRL's names
                | {k: float(v) for k, v in logs.items() if k.startswith(("rewards/", "logps/"))}
            )
            self.show(state)
            if not math.isfinite(loss) or loss > 1e4:
                raise TrainingFailed(f"loss diverged at step {state.global_step} (loss={loss})")

    return StepLog()


def quiet_libraries() -> None:
    """Silence the per-row progress bars of dataset preprocessing."""
    import datasets

    datasets.disable_progress_bars()


def _seed(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def subset(rows: list[Any], fraction: float, seed: int) -> list[Any]:
    if fraction >= 1.0:
        return list(rows)
    picked = random.Random(seed).sample(range(len(rows)), max(1, round(len(rows) * fraction)))
    return [rows[i] for i in sorted(picked)]


def lora_config(arm: Any) -> Any:
    from peft import LoraConfig

    return LoraConfig(
        r=arm.r,
        lora_alpha=arm.alpha,
        lora_dropout=arm.dropout,
        target_modules=arm.target_modules,
        use_dora=arm.type == "dora",
        task_type="CAUSAL_LM",
        bias="none",
    )


def resolve_fast(fast: Fast, device: str) -> FastPath | None:
    return FastPath.for_device(device) if fast == "auto" else fast


def _common_args(
    arm: Any, out_dir: Path, device: str, n_rows: int, *, fold: int = 1, fast: bool = False
) -> dict[str, Any]:
    steps_per_epoch = math.ceil(n_rows / (arm.batch_size * arm.grad_accum))
    args = {
        "output_dir": str(out_dir / "checkpoints"),
        "per_device_train_batch_size": arm.batch_size * fold,
        "gradient_accumulation_steps": arm.grad_accum // fold,
        "learning_rate": arm.lr,
        "num_train_epochs": arm.epochs,
        "max_steps": arm.max_steps or -1,
        "lr_scheduler_type": arm.scheduler,
        "warmup_steps": arm.warmup_steps,
        "logging_steps": 1,
        "save_strategy": "no",
        "report_to": "none",
        "seed": arm.seed,
        "data_seed": arm.seed,
        "bf16": device == "cuda",
        "use_cpu": device == "cpu",
        "include_num_input_tokens_seen": "non_padding",
        "disable_tqdm": True,  # our own progress bar (StepLog) shows step, loss and time left
        "optim": "paged_adamw_8bit"
        if arm.type == "qlora"
        else ("adamw_torch_fused" if device == "cuda" else "adamw_torch"),
        "dataloader_num_workers": 0,
        "max_length": arm.max_length,
        "logging_first_step": True,
    } | ({"warmup_steps": 0} if steps_per_epoch < 2 else {})
    # The fast path checkpoints layers itself, per its memory plan (harness.model._memory_plan.checkpointing); the plain
    # path checkpoints only when the arm asks (TRL's own default would recompute every layer, which costs time).
    args["gradient_checkpointing"] = False if fast else bool(arm.gradient_checkpointing)
    if arm.type != "full":
        # Data parallel: the Trainer asks DDP to search every step's autograd graph for unused parameters whenever
        # the model is not a bare transformers model (a PEFT wrapper), a per-step CPU cost; every adapter weight
        # takes part in every forward here, so there is nothing to find.
        args["ddp_find_unused_parameters"] = False
    # Data parallel: DDP broadcasts rank 0's buffers before every forward by default; a causal LM's buffers (the
    # rotary tables) are the same on every rank, so the broadcast only adds a collective to each step.
    args["ddp_broadcast_buffers"] = False
    return args


def _load(arm: Any, base_spec: str, device: str, fast: FastPath | None) -> tuple[Any, Any]:
    """(model, tokenizer) for an arm type; QLoRA loads in NF4."""
    if arm.type == "qlora":
        if device != "cuda":
            raise TrainingFailed("qlora needs a CUDA GPU (bitsandbytes 4-bit); use a lora arm on CPU")
        model, tok = load_model(base_spec, device, quantization="nf4")
        if fast is None:
            from peft import prepare_model_for_kbit_training

            model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=arm.gradient_checkpointing)
        # the fast path keeps norms and embeddings in bf16 (prepare_model_for_kbit_training casts them to fp32,
        # which costs memory and speed) and needs no input gradients: its checkpointing is non-reentrant
    else:
        model, tok = load_model(base_spec, device)
    model.train()
    return model, tok


def _sft_dataset(rows: list[Example]) -> Any:
    from datasets import Dataset

    return Dataset.from_list(
        [
            {"prompt": [m.model_dump() for m in ex.prompt], "completion": [{"role": "assistant", "content": ex.answer}]}
            for ex in rows
        ]
    )


def _token_lengths(tok: Any, conversations: list[list[dict[str, str]]], max_length: int) -> list[int]:
    """Tokens per rendered conversation (an upper bound for TRL's tokenisation: +8 for template edge tokens)."""
    texts = [tok.apply_chat_template(c, tokenize=False) for c in conversations]
    ids = tok(texts, add_special_tokens=False)["input_ids"] if texts else []
    return [min(len(x) + 8, max_length) for x in ids]


def train_sft(
    arm: Any,
    base_spec: str,
    examples: list[Example],
    out_dir: Path,
    device: str | None = None,
    *,
    fast: Fast = "auto",
    progress: bool = True,
) -> TrainResult:
    """Supervised fine-tuning of one arm; returns where the adapter (or full model) was saved."""
    quiet_libraries()
    device = device or default_device()
    fast_path = resolve_fast(fast, device)
    _seed(arm.seed)
    rows = subset(examples, arm.data_fraction, arm.seed)
    model, tok = _load(arm, base_spec, device, fast_path)
    return sft_with_model(arm, model, tok, rows, out_dir, device, fast=fast_path, progress=progress)


def sft_with_model(
    arm: Any,
    model: Any,
    tok: Any,
    rows: list[Example],
    out_dir: Path,
    device: str,
    *,
    fast: FastPath | None,
    progress: bool = True,
    callbacks: tuple[Any, ...] = (),
) -> TrainResult:
    """SFT of an already loaded (or built) model: the part of `train_sft` after loading."""
    from trl import SFTConfig, SFTTrainer

    peft_config = None if arm.type == "full" else lora_config(arm)
    dataset = _sft_dataset(rows)
    log = step_logger(progress)
    eos = _eos_for_template(tok)
    if fast is None:
        args = SFTConfig(**_common_args(arm, out_dir, device, len(rows)), completion_only_loss=True, eos_token=eos)
        trainer = SFTTrainer(
            model=model,
            args=args,
            train_dataset=dataset,
            processing_class=tok,
            peft_config=peft_config,
            callbacks=[log, *callbacks],
        )
        return _run(trainer, log, tok, out_dir)

    session = FastSession(fast, device, sft=True)
    try:
        session.patch_model(model)
        if peft_config is not None:
            # what SFTTrainer does with a peft_config (same seed, so the same adapter initialisation), done here so
            # the memory plan can measure the adapters' activations before the trainer's batch size is fixed
            from peft import get_peft_model
            from transformers import set_seed

            set_seed(arm.seed)
            model = get_peft_model(model, peft_config)
        conversations = [
            [m.model_dump() for m in ex.prompt] + [{"role": "assistant", "content": ex.answer}] for ex in rows
        ]
        plan = session.plan(
            model,
            _token_lengths(tok, conversations, arm.max_length),
            arm.batch_size,
            arm.grad_accum,
            forced_checkpointing=arm.gradient_checkpointing,
        )
        # overlapped steps (harness.model._overlap): TRL's SFTTrainer, its per-step host syncs moved off the step
        overlapped = session.overlap_blocked is None
        trainer_class = overlapped_trainer(SFTTrainer) if overlapped else SFTTrainer
        args = SFTConfig(
            **_common_args(arm, out_dir, device, len(rows), fold=plan.fold, fast=True)
            | (overlap_args(device) if overlapped else {}),
            completion_only_loss=True,
            eos_token=eos,
        )
        trainer = trainer_class(
            model=model, args=args, train_dataset=dataset, processing_class=tok, callbacks=[log, *callbacks]
        )
        return _run(trainer, log, tok, out_dir, session, plan)
    finally:
        session.close()


def train_dpo(
    arm: Any,
    base_spec: str,
    pairs: list[Preference],
    out_dir: Path,
    device: str | None = None,
    init_adapter: Path | None = None,
    *,
    fast: Fast = "auto",
    progress: bool = True,
    data_file: str | Path = "preference data",
    reference: str | None = None,
) -> TrainResult:
    """Direct preference optimisation, from the base model or on top of an SFT adapter. The pairs are checked
    (`harness.arms._dpo_data`: empty or identical answers, pairs longer than max_length unless the arm truncates)
    before the model is loaded."""
    quiet_libraries()
    device = device or default_device()
    fast_path = resolve_fast(fast, device)
    _seed(arm.seed)
    rows = subset(pairs, arm.data_fraction, arm.seed)
    check_pairs(rows, data_file)
    pair_lengths(rows, pair_tokenizer(base_spec), arm.max_length, data_file, getattr(arm, "truncation", "error"))
    model, tok = _load(arm, base_spec, device, fast_path)
    return dpo_with_model(
        arm,
        model,
        tok,
        rows,
        out_dir,
        device,
        init_adapter=init_adapter,
        fast=fast_path,
        progress=progress,
        reference=reference,
    )


def _dpo_dataset(rows: list[Preference]) -> Any:
    from datasets import Dataset

    return Dataset.from_list(
        [
            {
                "prompt": [m.model_dump() for m in p.prompt],
                "chosen": [{"role": "assistant", "content": p.chosen}],
                "rejected": [{"role": "assistant", "content": p.rejected}],
            }
            for p in rows
        ]
    )


def passes_over(arm: Any, rows: int) -> float:
    """How many times training goes over `rows` examples: the arm's epochs, or its max_steps' worth of batches."""
    if arm.max_steps:
        return arm.max_steps * arm.batch_size * arm.grad_accum / max(rows, 1)
    return float(arm.epochs)


def dpo_with_model(
    arm: Any,
    model: Any,
    tok: Any,
    rows: list[Preference],
    out_dir: Path,
    device: str,
    *,
    fast: FastPath | None,
    init_adapter: Path | None = None,
    progress: bool = True,
    callbacks: tuple[Any, ...] = (),
    reference: str | None = None,
) -> TrainResult:
    """DPO of an already loaded model. The plain path is TRL's DPOTrainer as shipped; the fast path
    (`harness.model._dpo`) wraps the adapter itself so the memory plan can merge accumulation steps, packs the
    chosen and rejected sequences, computes the log-probabilities over the completion tokens only, and takes the
    reference from the same weights (`reference`: precomputed once, or the adapter switched off every step)."""
    from trl import DPOConfig, DPOTrainer

    peft_config = None if arm.type == "full" else lora_config(arm)
    if init_adapter is not None:
        from peft import PeftModel

        # continue training the SFT adapter; TRL keeps a frozen copy of it ("ref") as the reference
        model = PeftModel.from_pretrained(model, str(init_adapter), is_trainable=True)
        peft_config = None
    dataset = _dpo_dataset(rows)
    log = step_logger(progress)
    dpo_args = {"beta": arm.beta, "max_length": arm.max_length, "truncation_mode": "keep_start"}
    if fast is None:
        common = _common_args(arm, out_dir, device, len(rows))
        common.pop("max_length")
        trainer = DPOTrainer(
            model=model,
            args=DPOConfig(**common, **dpo_args),
            train_dataset=dataset,
            processing_class=tok,
            peft_config=peft_config,
            callbacks=[log, *callbacks],
        )
        return _run(trainer, log, tok, out_dir)

    session = FastSession(fast, device, dpo=True)
    try:
        session.patch_model(model)
        if peft_config is not None:
            # what DPOTrainer does with a peft_config (same seed, so the same adapter initialisation), done here so
            # the memory plan can measure the adapters' activations before the trainer's batch size is fixed
            from peft import get_peft_model
            from transformers import set_seed

            set_seed(arm.seed)
            model = get_peft_model(model, peft_config)
        lengths = sequence_lengths([tokenize_pair(tok, p) for p in rows], arm.max_length)
        plan = session.plan(
            model, lengths, arm.batch_size, arm.grad_accum, forced_checkpointing=arm.gradient_checkpointing
        )
        # the reference of full fine-tuning can only be computed before training (no adapter to switch off)
        ref = "precomputed" if arm.type == "full" else dpo_reference(reference, passes_over(arm, len(rows)))
        common = _common_args(arm, out_dir, device, len(rows), fold=plan.fold, fast=True) | overlap_args(device)
        common.pop("max_length")
        trainer = fast_dpo_trainer(DPOTrainer)(
            model=model,
            args=DPOConfig(**common, **dpo_args),
            train_dataset=dataset,
            processing_class=tok,
            callbacks=[log, *callbacks],
            fresh_adapter=init_adapter is None,
            precompute=ref == "precomputed",
            packed=session.report.padding_free,
            log_late=session.overlap_blocked is None,
        )
        reference_seconds = trainer.reference_seconds
        result = _run(trainer, log, tok, out_dir, session, plan)
    finally:
        session.close()
    # the precomputed reference is part of the training's cost: counted in its time and tokens/s
    seconds = result.seconds + reference_seconds
    tokens = result.tokens_per_second * result.seconds
    result.fastpath |= {"dpo_reference": ref, "reference_seconds": reference_seconds}
    result.seconds, result.tokens_per_second = seconds, tokens / max(seconds, 1e-9)
    return result


def _eos_for_template(tok: Any) -> str:
    """The token that ends an assistant turn in the chat template (ChatML: <|im_end|>)."""
    template = getattr(tok, "chat_template", "") or ""
    if "<|im_end|>" in template:
        return "<|im_end|>"
    if "<|eot_id|>" in template:
        return "<|eot_id|>"
    return tok.eos_token


def _run(
    trainer: Any, log: Any, tok: Any, out_dir: Path, session: FastSession | None = None, plan: MemoryPlan | None = None
) -> TrainResult:
    import torch
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    trainer.remove_callback(PrinterCallback)  # it prints every log dict; the bar and the store have them
    trainer.remove_callback(ProgressCallback)
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    steps = profile_steps()  # TUNEGATE_PROFILE=FIRST:COUNT: torch.profiler over those steps (harness.model._profile)
    profiler = step_profiler(*steps, trainer.args.device.type) if steps is not None else None
    if profiler is not None:
        trainer.add_callback(profiler)
    accelerator = getattr(trainer, "accelerator", None)
    if accelerator is not None and accelerator.num_processes > 1:
        # data parallel: the ranks finish loading at different times, and the first collective sets up NCCL;
        # meet here so the training time (and tokens/s) is the training's, not the slowest rank's loading
        accelerator.wait_for_everyone()
    started = time.perf_counter()
    try:
        with session.training(trainer.model, plan) if session is not None else nullcontext():
            trainer.train()
    except torch.OutOfMemoryError as exc:
        raise TrainingFailed(f"out of memory: {str(exc).splitlines()[0]}") from None
    finally:
        if session is not None:
            session.close()  # undo the kernels and the attention switch before the weights are saved
    seconds = time.perf_counter() - started
    write_profile(profiler, out_dir, trainer.args.process_index, trainer.args.world_size)
    folder = out_dir / "adapter"
    if trainer.is_world_process_zero():  # data parallel (accelerate launch): one rank writes the weights
        trainer.model.save_pretrained(str(folder))
        tok.save_pretrained(str(folder))
    tokens = int(getattr(trainer.state, "num_input_tokens_seen", 0) or 0)
    losses = [r["loss"] for r in log.rows]
    return TrainResult(
        folder=folder,
        steps=log.rows,
        seconds=seconds,
        tokens_per_second=tokens / max(seconds, 1e-9),
        peak_memory_gib=peak_memory_gib(),
        final_loss=losses[-1] if losses else None,
        fastpath=session.report.as_dict() if session is not None else {},
    )
