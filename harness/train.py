"""Training recipes: LoRA / QLoRA / DoRA / full SFT with TRL's SFTTrainer, and DPO with DPOTrainer.

Config in, artifacts out: `train_sft(arm, base_spec, examples, out_dir)` returns the adapter (or
model) folder and a per-step log. The model's own chat template is used for training exactly as
for inference, and the loss covers the completion only.
"""
from __future__ import annotations

import logging
import math
import random
import resource
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.data import Example, Preference
from harness.models import default_device, load_model

# bitsandbytes logs a notice about optional CPU kernels when TRL imports it; it is noise here
logging.getLogger("bitsandbytes").setLevel(logging.ERROR)


class TrainingFailed(Exception):
    """A trial-level failure (diverging loss, out of memory): the trial is marked failed, the sweep goes on."""


@dataclass
class TrainResult:
    folder: Path
    steps: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    tokens_per_second: float = 0.0
    peak_memory_gib: float = 0.0
    final_loss: float | None = None


def peak_memory_gib() -> float:
    import torch

    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux reports KiB


def _step_logger() -> Any:
    from transformers import TrainerCallback

    class StepLog(TrainerCallback):
        """Collects loss, lr, grad norm, tokens/s and peak memory per logged step; stops on divergence."""

        def __init__(self) -> None:
            self.rows: list[dict[str, Any]] = []
            self.t0 = time.perf_counter()
            self.last_tokens = 0
            self.last_t = self.t0
            self.bar: Any = None

        def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.bar = Progress(TextColumn("  training"), BarColumn(), MofNCompleteColumn(),
                                TextColumn("loss {task.fields[loss]}"), TimeRemainingColumn(), transient=False)
            self.task = self.bar.add_task("train", total=state.max_steps, loss="…")
            self.bar.start()

        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            loss = f"{self.rows[-1]['loss']:.4f}" if self.rows else "…"
            self.bar.update(self.task, completed=state.global_step, loss=loss)

        def on_train_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            if self.bar is not None:
                self.bar.stop()

        def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kw: Any) -> None:
            if not logs or "loss" not in logs:
                return
            loss = float(logs["loss"])
            t = time.perf_counter()
            tokens = int(getattr(state, "num_input_tokens_seen", 0) or 0)
            tps = (tokens - self.last_tokens) / max(t - self.last_t, 1e-9)
            self.last_tokens, self.last_t = tokens, t
            self.rows.append({"step": state.global_step, "loss": loss, "lr": logs.get("learning_rate"),
                              "grad_norm": logs.get("grad_norm"), "tokens_per_second": tps,
                              "peak_memory_gib": peak_memory_gib()})
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

    return LoraConfig(r=arm.r, lora_alpha=arm.alpha, lora_dropout=arm.dropout, target_modules=arm.target_modules,
                      use_dora=arm.type == "dora", task_type="CAUSAL_LM", bias="none")


def _common_args(arm: Any, out_dir: Path, device: str, n_rows: int) -> dict[str, Any]:
    steps_per_epoch = math.ceil(n_rows / (arm.batch_size * arm.grad_accum))
    return dict(
        output_dir=str(out_dir / "checkpoints"), per_device_train_batch_size=arm.batch_size,
        gradient_accumulation_steps=arm.grad_accum, learning_rate=arm.lr, num_train_epochs=arm.epochs,
        max_steps=arm.max_steps or -1, lr_scheduler_type=arm.scheduler, warmup_steps=arm.warmup_steps,
        logging_steps=1, save_strategy="no", report_to="none", seed=arm.seed, data_seed=arm.seed,
        bf16=device == "cuda", use_cpu=device == "cpu", include_num_input_tokens_seen=True,
        disable_tqdm=True,  # our own progress bar (StepLog) shows step, loss and time left
        optim="paged_adamw_8bit" if arm.type == "qlora" else ("adamw_torch_fused" if device == "cuda" else "adamw_torch"),
        dataloader_num_workers=0,
        max_length=arm.max_length, logging_first_step=True,
    ) | ({"warmup_steps": 0} if steps_per_epoch < 2 else {}) | (
        {"activation_checkpointing": True} if arm.gradient_checkpointing else {})


def _model_for(arm: Any, base_spec: str, device: str) -> tuple[Any, Any, Any]:
    """(model, tokenizer, peft config or None) for an arm type."""
    if arm.type == "qlora":
        if device != "cuda":
            raise TrainingFailed("qlora needs a CUDA GPU (bitsandbytes 4-bit); use a lora arm on CPU")
        from peft import prepare_model_for_kbit_training

        model, tok = load_model(base_spec, device, quantization="nf4")
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=arm.gradient_checkpointing)
    else:
        model, tok = load_model(base_spec, device)
    model.train()
    return model, tok, None if arm.type == "full" else lora_config(arm)


def train_sft(arm: Any, base_spec: str, examples: list[Example], out_dir: Path, device: str | None = None) -> TrainResult:
    """Supervised fine-tuning of one arm; returns where the adapter (or full model) was saved."""
    import torch
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    quiet_libraries()
    device = device or default_device()
    _seed(arm.seed)
    rows = subset(examples, arm.data_fraction, arm.seed)
    model, tok, peft_config = _model_for(arm, base_spec, device)
    dataset = Dataset.from_list([{"prompt": [m.model_dump() for m in ex.prompt],
                                  "completion": [{"role": "assistant", "content": ex.answer}]} for ex in rows])
    args = SFTConfig(**_common_args(arm, out_dir, device, len(rows)), completion_only_loss=True,
                     eos_token=_eos_for_template(tok))
    log = _step_logger()
    trainer = SFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=tok,
                         peft_config=peft_config, callbacks=[log])
    return _run(trainer, log, tok, out_dir, torch)


def train_dpo(arm: Any, base_spec: str, pairs: list[Preference], out_dir: Path, device: str | None = None,
              init_adapter: Path | None = None) -> TrainResult:
    """Direct preference optimisation, from the base model or on top of an SFT adapter."""
    import torch
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    quiet_libraries()
    device = device or default_device()
    _seed(arm.seed)
    rows = subset(pairs, arm.data_fraction, arm.seed)
    model, tok, peft_config = _model_for(arm, base_spec, device)
    if init_adapter is not None:
        from peft import PeftModel

        # continue training the SFT adapter; the frozen base (adapter disabled) is the reference model
        model = PeftModel.from_pretrained(model, str(init_adapter), is_trainable=True)
        peft_config = None
    dataset = Dataset.from_list([{"prompt": [m.model_dump() for m in p.prompt],
                                  "chosen": [{"role": "assistant", "content": p.chosen}],
                                  "rejected": [{"role": "assistant", "content": p.rejected}]} for p in rows])
    common = _common_args(arm, out_dir, device, len(rows))
    common.pop("max_length")
    args = DPOConfig(**common, beta=arm.beta, max_length=arm.max_length)
    log = _step_logger()
    trainer = DPOTrainer(model=model, args=args, train_dataset=dataset, processing_class=tok,
                         peft_config=peft_config, callbacks=[log])
    return _run(trainer, log, tok, out_dir, torch)


def _eos_for_template(tok: Any) -> str:
    """The token that ends an assistant turn in the chat template (ChatML: <|im_end|>)."""
    template = getattr(tok, "chat_template", "") or ""
    if "<|im_end|>" in template:
        return "<|im_end|>"
    if "<|eot_id|>" in template:
        return "<|eot_id|>"
    return tok.eos_token


def _run(trainer: Any, log: Any, tok: Any, out_dir: Path, torch: Any) -> TrainResult:
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    trainer.remove_callback(PrinterCallback)  # it prints every log dict; the bar and the store have them
    trainer.remove_callback(ProgressCallback)
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    try:
        trainer.train()
    except torch.OutOfMemoryError as exc:
        raise TrainingFailed(f"out of memory: {str(exc).splitlines()[0]}") from None
    seconds = time.perf_counter() - started
    folder = out_dir / "adapter"
    trainer.model.save_pretrained(str(folder))
    tok.save_pretrained(str(folder))
    tokens = int(getattr(trainer.state, "num_input_tokens_seen", 0) or 0)
    losses = [r["loss"] for r in log.rows]
    return TrainResult(folder=folder, steps=log.rows, seconds=seconds, tokens_per_second=tokens / max(seconds, 1e-9),
                       peak_memory_gib=peak_memory_gib(), final_loss=losses[-1] if losses else None)
