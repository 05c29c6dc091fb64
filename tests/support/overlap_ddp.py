"""One rank of tests/model/test_overlap.py's data-parallel check (run by `accelerate launch`, two processes on
the CPU over gloo): trains a tiny LoRA with the fast path, overlapped or not, and rank 0 writes its logs as JSON."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from transformers import TrainerCallback

from harness.arms._train import sft_with_model
from harness.model._fastpath import FastPath
from harness.model._load import load_model
from harness.plan import LoraArm
from tests.model.test_fastpath import _examples


class Logs(TrainerCallback):
    def __init__(self) -> None:
        self.rows: list[dict] = []

    def on_log(self, args, state, control, logs=None, **kw):  # noqa: ANN001, ANN201
        self.rows.append({"step": state.global_step, **(logs or {})})


def main(model_dir: str, out: str, overlap: str) -> None:
    arm = LoraArm(name="l", type="lora", max_steps=3, batch_size=2, dropout=0.0, lr=5e-3, max_length=64)
    logs = Logs()
    model, tok = load_model(model_dir, "cpu")
    model.train()
    result = sft_with_model(
        arm,
        model,
        tok,
        _examples(12, seed=5),
        Path(out).parent / f"run-{overlap}",
        "cpu",
        fast=FastPath(checkpointing="none", fold_accumulation=False, overlap=overlap == "1"),
        progress=False,
        callbacks=(logs,),
    )
    import torch.distributed as dist

    if not dist.is_initialized() or dist.get_rank() == 0:
        Path(out).write_text(json.dumps({"logs": logs.rows, "steps": result.steps, "fastpath": result.fastpath}))


if __name__ == "__main__":
    main(*sys.argv[1:])
