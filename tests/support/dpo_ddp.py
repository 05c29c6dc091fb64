"""One rank of tests/model/test_dpo.py's data-parallel check (run by `accelerate launch`, two processes on the
CPU over gloo): DPO of a tiny LoRA, TRL's DPOTrainer as shipped or the fast path with a given reference, and rank 0
writes its logged rows as JSON."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from transformers import TrainerCallback

from harness.arms._train import _seed, dpo_with_model
from harness.model._fastpath import FastPath
from harness.model._load import load_model
from harness.plan import DpoArm
from tests.model.test_dpo import _pairs


class Logs(TrainerCallback):
    def __init__(self) -> None:
        self.rows: list[dict] = []

    def on_log(self, args, state, control, logs=None, **kw):
        self.rows.append({"step": state.global_step, **(logs or {})})


def main(model_dir: str, out: str, reference: str) -> None:
    arm = DpoArm(name="d", type="dpo", max_steps=3, batch_size=2, dropout=0.0, lr=5e-3, max_length=64, beta=0.2)
    logs = Logs()
    _seed(arm.seed)
    model, tok = load_model(model_dir, "cpu")
    model.train()
    fast = None if reference == "plain" else FastPath(checkpointing="none", fold_accumulation=False)
    result = dpo_with_model(
        arm,
        model,
        tok,
        _pairs(12, seed=4),
        Path(out).parent / f"run-{reference}",
        "cpu",
        fast=fast,
        progress=False,
        callbacks=(logs,),
        reference=None if reference == "plain" else reference,
    )
    import torch.distributed as dist

    if not dist.is_initialized() or dist.get_rank() == 0:
        Path(out).write_text(json.dumps({"logs": logs.rows, "steps": result.steps, "fastpath": result.fastpath}))


if __name__ == "__main__":
    main(*sys.argv[1:])
