"""Overlapped SFT steps (harness.model._overlap) change when values are read from the device, never the values:
the host-side packing equals the one read from the mask, the host-indexed loss head equals TRL's, and a run
logs the same rows (loss, grad norm, learning rate, tokens, entropy, token accuracy) as TRL's own trainer."""

from __future__ import annotations

import pytest
import torch

from harness.model import _fastpath as fp
from harness.model import _packing as packing
from harness.model import _parts as parts
from harness.model._overlap import PACK_KEY, HostPack, HostPacking, host_indexed_head, pack_on_host
from tests.model.test_fastpath import _examples, padded_batch, tiny_llama, with_lora
from tests.support import two_cpu_ranks


def _labels(ids: torch.Tensor, mask: torch.Tensor, prompt: int = 3) -> torch.Tensor:
    """Completion-only labels: -100 on padding and on each row's first `prompt` real tokens."""
    labels = ids.masked_fill(mask == 0, -100)
    for row in range(ids.shape[0]):
        real = mask[row].nonzero().flatten()
        labels[row, real[:prompt]] = -100
    return labels


@pytest.mark.parametrize("side", ["right", "left"])
def test_host_packing_equals_the_packing_read_from_the_mask(side):
    ids, mask = padded_batch(lengths=(24, 17, 6, 1))
    if side == "left":
        ids, mask = ids.flip(1), mask.flip(1)
    pack = pack_on_host(mask, _labels(ids, mask))
    row = packing.pack_from_mask(mask)
    assert pack is not None and pack.shape == tuple(mask.shape) and pack.lengths == row.lengths
    assert pack.tokens == int(mask.sum())
    for name in ("index", "position_ids", "cu_seq_lens"):
        assert torch.equal(getattr(pack, name), getattr(row, name)), name
    labels = _labels(ids, mask)
    want = (labels[:, 1:] != -100).reshape(-1).nonzero().flatten()  # TRL's hidden[:, :-1][mask] order
    assert torch.equal(pack.predicting_shifted, want)
    rows, cols = want // (mask.shape[1] - 1), want % (mask.shape[1] - 1)
    assert torch.equal(pack.predicting, rows * mask.shape[1] + cols)


def test_default_fast_path_overlaps_unless_the_environment_turns_it_off(monkeypatch):
    monkeypatch.delenv(fp.OVERLAP_ENV, raising=False)
    monkeypatch.delenv(fp.CUDA_GRAPHS_ENV, raising=False)
    assert fp.FastPath.for_device("cuda").overlap
    monkeypatch.setenv(fp.OVERLAP_ENV, "off")
    assert fp.FastPath.for_device("cuda") == fp.FastPath(overlap=False)


def test_host_packing_refuses_holes_and_empty_batches_and_keeps_the_collators_settings():
    mask = torch.tensor([[1, 0, 1, 0], [1, 1, 0, 0]])
    assert pack_on_host(mask) is None and pack_on_host(torch.zeros(2, 3, dtype=torch.long)) is None

    class Collator:
        padding_side = "right"

        def __call__(self, features):
            return {"input_ids": torch.tensor(features), "attention_mask": (torch.tensor(features) > 0).long()}

    collate = HostPacking(Collator())
    batch = collate([[5, 6, 0], [7, 0, 0]])
    assert isinstance(batch[PACK_KEY], HostPack) and batch[PACK_KEY].lengths == (2, 1)
    assert batch[PACK_KEY].predicting is None and collate.padding_side == "right"


def test_host_indexed_head_equals_trls_head_in_loss_metrics_and_gradients():
    from trl.trainer.utils import add_fused_lm_head

    model = tiny_llama(vocab=1000)
    add_fused_lm_head(model, outputs=("log_probs", "entropy", "is_top1"))
    model = with_lora(model).train()
    ids, mask = padded_batch(vocab=1000, lengths=(24, 17, 6))
    labels = _labels(ids, mask)
    session = fp.FastSession(fp.FastPath(checkpointing="none"), "cpu", sft=True)
    session.patch_model(model)
    try:

        def run(**extra):
            model.zero_grad()
            out = model(input_ids=ids, attention_mask=mask, labels=labels, fused_lm_head=True, **extra)
            out.loss.backward()
            grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
            return out, grads

        trl_out, trl_grads = run()
        causal_lm = parts.unwrap(model)
        with host_indexed_head(causal_lm, parts.backbone_of(causal_lm)) as state:
            assert state == "on"
            ours, our_grads = run(**{PACK_KEY: pack_on_host(mask, labels)})
    finally:
        session.close()
    assert ours.loss.item() == pytest.approx(trl_out.loss.item(), rel=1e-6)
    for name in ("log_probs", "entropy"):
        torch.testing.assert_close(getattr(ours, name), getattr(trl_out, name), atol=1e-6, rtol=1e-5)
    assert torch.equal(ours.is_top1, trl_out.is_top1) and torch.equal(ours.label_mask, trl_out.label_mask)
    assert our_grads.keys() == trl_grads.keys() and len(our_grads) > 0
    for name, grad in trl_grads.items():
        torch.testing.assert_close(our_grads[name], grad, atol=1e-6, rtol=1e-4)


def test_overlapped_run_logs_what_trls_trainer_logs(tiny_model_dir, tmp_path, monkeypatch):
    """The same per-step rows and TRL metrics with and without overlap (the rows of a step are written a step
    late; the values are that step's), and when the overlapped trainer falls back to TRL's code (a loss or a TRL
    it does not know: the tokens are then counted from the mask)."""
    from transformers import TrainerCallback

    from harness.arms._train import sft_with_model
    from harness.model._load import load_model
    from harness.model._overlap import OverlappedSteps
    from harness.plan import LoraArm

    class Logs(TrainerCallback):
        def __init__(self):
            self.rows = []

        def on_log(self, args, state, control, logs=None, **kw):
            self.rows.append({"step": state.global_step, **(logs or {})})

    arm = LoraArm(name="l", type="lora", max_steps=4, batch_size=3, grad_accum=2, dropout=0.0, lr=5e-3, max_length=64)
    examples = _examples(12, seed=3)

    def run(overlap: bool):
        logs = Logs()
        model, tok = load_model(str(tiny_model_dir), "cpu")
        model.train()
        result = sft_with_model(
            arm,
            model,
            tok,
            examples,
            tmp_path / str(len(runs)),
            "cpu",
            fast=fp.FastPath(checkpointing="none", fold_accumulation=False, overlap=overlap),
            progress=False,
            callbacks=(logs,),
        )
        return result, logs.rows

    runs = {}
    runs[False] = run(False)
    runs[True] = run(True)
    monkeypatch.setattr(OverlappedSteps, "_overlap_applies", lambda self: False)
    fallback, fallback_logs = run(True)
    (plain, plain_logs), (over, over_logs) = runs[False], runs[True]
    assert [s["tokens"] for s in fallback.steps] == [s["tokens"] for s in plain.steps]
    assert [s["loss"] for s in fallback.steps] == pytest.approx([s["loss"] for s in plain.steps], rel=1e-5)
    assert [r.get("num_input_tokens_seen") for r in fallback_logs if "loss" in r] == [
        r.get("num_input_tokens_seen") for r in plain_logs if "loss" in r
    ]
    assert plain.fastpath["overlap"] == "off" and over.fastpath["overlap"].startswith("on (loss head by host")
    assert [s["step"] for s in over.steps] == [s["step"] for s in plain.steps] == [1, 2, 3, 4]
    assert [s["tokens"] for s in over.steps] == [s["tokens"] for s in plain.steps]
    for key in ("loss", "grad_norm", "lr"):
        assert [s[key] for s in over.steps] == pytest.approx([s[key] for s in plain.steps], rel=1e-5), key
    step_logs = {False: [r for r in plain_logs if "loss" in r], True: [r for r in over_logs if "loss" in r]}
    assert [r["step"] for r in step_logs[True]] == [r["step"] for r in step_logs[False]]
    assert [set(r) for r in step_logs[True]] == [set(r) for r in step_logs[False]]
    for key in ("entropy", "mean_token_accuracy", "num_tokens", "epoch", "num_input_tokens_seen"):
        assert [r[key] for r in step_logs[True]] == pytest.approx([r[key] for r in step_logs[False]], rel=1e-5), key
    final = {
        k: [r for r in rows if "train_loss" in r][0]["train_loss"] for k, rows in (("p", plain_logs), ("o", over_logs))
    }
    assert final["o"] == pytest.approx(final["p"], rel=1e-6)
    assert plain.tokens_per_second > 0 and over.tokens_per_second > 0


@pytest.mark.slow
def test_overlapped_data_parallel_run_logs_the_sums_over_processes(tiny_model_dir):
    """Two processes (gloo on the CPU): the overlapped run gathers its metrics, tokens and loss over the processes
    as TRL and the Trainer do every step."""
    runs = {overlap: two_cpu_ranks("tests.support.overlap_ddp", tiny_model_dir, overlap) for overlap in ("0", "1")}
    plain, over = runs["0"], runs["1"]
    assert over["fastpath"]["overlap"].startswith("on") and plain["fastpath"]["overlap"] == "off"
    rows = {k: [r for r in v["logs"] if "loss" in r] for k, v in runs.items()}
    assert [r["step"] for r in rows["1"]] == [r["step"] for r in rows["0"]] == [1, 2, 3]
    for key in ("loss", "grad_norm", "entropy", "mean_token_accuracy", "num_tokens", "num_input_tokens_seen"):
        assert [r[key] for r in rows["1"]] == pytest.approx([r[key] for r in rows["0"]], rel=1e-5), key
    assert [s["tokens"] for s in over["steps"]] == [s["tokens"] for s in plain["steps"]]
    # the Trainer's floating-point operations, summed over the processes a step late instead of with a host sync
    flos = {k: [r["total_flos"] for r in v["logs"] if "total_flos" in r] for k, v in runs.items()}
    assert flos["1"] == pytest.approx(flos["0"]) and flos["1"] and flos["1"][0] > 0


def test_overlapped_evaluation_logs_what_trls_evaluation_logs(tiny_model_dir, tmp_path):
    """`trainer.evaluate()` mid-training (not something tunegate's trials do, but a Trainer the overlapped class
    is mixed into can): the eval loss, entropy and token accuracy equal TRL's own trainer's, and training after it
    logs the same rows."""
    from peft import get_peft_model
    from transformers import set_seed
    from trl import SFTConfig, SFTTrainer

    from harness.arms._train import _common_args, _eos_for_template, _sft_dataset, lora_config
    from harness.model._load import load_model
    from harness.model._overlap import overlap_args, overlapped_trainer
    from harness.plan import LoraArm

    arm = LoraArm(name="l", type="lora", max_steps=2, batch_size=3, dropout=0.0, lr=5e-3, max_length=64)
    train, held_out = _examples(9, seed=5), _examples(7, seed=6)

    def run(overlap: bool) -> tuple[dict[str, float], dict[str, float], list[float]]:
        model, tok = load_model(str(tiny_model_dir), "cpu")
        model.train()
        session = fp.FastSession(fp.FastPath(checkpointing="none", fold_accumulation=False, overlap=overlap), "cpu")
        session.patch_model(model)
        set_seed(arm.seed)
        model = get_peft_model(model, lora_config(arm))
        args = SFTConfig(
            **_common_args(arm, tmp_path / str(overlap), "cpu", len(train), fast=True)
            | (overlap_args("cpu") if overlap else {}),
            completion_only_loss=True,
            eos_token=_eos_for_template(tok),
            per_device_eval_batch_size=3,
        )
        trainer_class = overlapped_trainer(SFTTrainer) if overlap else SFTTrainer
        trainer = trainer_class(
            model=model,
            args=args,
            train_dataset=_sft_dataset(train),
            eval_dataset=_sft_dataset(held_out),
            processing_class=tok,
        )
        try:
            with session.training(trainer.model, None):
                before = trainer.evaluate()
                trainer.train()
                after = trainer.evaluate()
        finally:
            session.close()
        losses = [r["loss"] for r in trainer.state.log_history if "loss" in r]
        return before, after, losses

    plain, over = run(False), run(True)
    for p, o in zip(plain[:2], over[:2], strict=True):
        for key in ("eval_loss", "eval_entropy", "eval_mean_token_accuracy"):
            assert o[key] == pytest.approx(p[key], rel=1e-5), key
    assert over[2] == pytest.approx(plain[2], rel=1e-5) and len(over[2]) == 2
