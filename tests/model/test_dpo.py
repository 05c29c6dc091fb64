"""DPO on the fast path (harness.model._dpo) against TRL's DPOTrainer as shipped, on a tiny random-init model:
the same pairs, weights, order, seed and steps give the same losses and the same rewards/* and logps/* metrics."""

from __future__ import annotations

import random

import pytest
import torch

from harness.model import _fastpath as fp
from harness.model._dpo import (
    DPO_COLUMNS,
    PreferencePacking,
    chosen_positions,
    dpo_reference,
    preference_pack,
    sequence_sums,
)
from harness.model._overlap import PACK_KEY
from tests.support import two_cpu_ranks

pytestmark = pytest.mark.usefixtures("one_torch_thread")

WORDS = ["alpha", "beta", "gamma", "delta", "apple", "river", "stone", "cloud", "green", "quick", "lazy", "fox"]
LOGGED = (
    "loss",
    "rewards/chosen",
    "rewards/rejected",
    "rewards/accuracies",
    "rewards/margins",
    "logps/chosen",
    "logps/rejected",
)


def _pairs(n: int, seed: int = 0) -> list:
    from harness.base import Message, Preference

    rng = random.Random(seed)
    out = []
    for i in range(n):
        chosen = " ".join(rng.choices(WORDS, k=rng.randint(1, 10)))
        rejected = " ".join(rng.choices(WORDS, k=rng.randint(1, 10)))
        if rejected == chosen:
            rejected += " no"
        out.append(
            Preference(
                prompt=[Message(role="user", content=" ".join(rng.choices(WORDS, k=rng.randint(2, 9))))],
                chosen=chosen,
                rejected=rejected,
                line=i + 1,
            )
        )
    return out


class _Logged:
    """Every log row TRL's trainer writes (the metrics beside the loss), in order."""

    def __init__(self) -> None:
        from transformers import TrainerCallback

        rows = self.rows = []

        class Callback(TrainerCallback):
            def on_log(self, args, state, control, logs=None, **kw):
                if logs and "loss" in logs:
                    rows.append(dict(logs))

        self.callback = Callback()


def _train(tiny_model_dir, tmp_path, name, arm, pairs, fast, init=None, reference=None):
    from harness.arms._train import _load, _seed, dpo_with_model

    _seed(arm.seed)
    model, tok = _load(arm, str(tiny_model_dir), "cpu", fast)
    logged = _Logged()
    result = dpo_with_model(
        arm,
        model,
        tok,
        pairs,
        tmp_path / name,
        "cpu",
        fast=fast,
        init_adapter=init,
        progress=False,
        callbacks=(logged.callback,),
        reference=reference,
    )
    return result, logged.rows


def _assert_same_rows(fast_rows, plain_rows):
    assert len(fast_rows) == len(plain_rows) > 0
    for fast, plain in zip(fast_rows, plain_rows, strict=True):
        for key in LOGGED:
            # the rewards are differences of log-probabilities (~ -90 here) summed in another order: float32
            # rounding of those sums, times beta, is ~1e-6
            tolerance = 2e-5 if key.startswith("rewards/") else 1e-6
            assert fast[key] == pytest.approx(plain[key], rel=1e-5, abs=tolerance), key
        assert fast["num_tokens"] == plain["num_tokens"]


@pytest.mark.parametrize(
    ("reference", "padding_free"), [("precomputed", True), ("adapter_off", True), ("precomputed", False)]
)
def test_fast_dpo_matches_trl_from_the_base_model(tiny_model_dir, tmp_path, reference, padding_free):
    from harness.plan import DpoArm

    arm = DpoArm(
        name="d", type="dpo", max_steps=3, batch_size=2, grad_accum=2, dropout=0.0, lr=5e-3, max_length=64, beta=0.2
    )
    pairs = _pairs(12, seed=1)
    plain, plain_rows = _train(tiny_model_dir, tmp_path, "plain", arm, pairs, None)
    fast_path = fp.FastPath(checkpointing="none", memory_budget_gib=64, padding_free=padding_free)
    fast, fast_rows = _train(tiny_model_dir, tmp_path, "fast", arm, pairs, fast_path, reference=reference)
    _assert_same_rows(fast_rows, plain_rows)
    # after the first step the adapter has moved: the rewards are not zero, so the reference is really compared
    assert any(abs(r["rewards/margins"]) > 1e-6 for r in plain_rows[1:])
    assert fast.fastpath["padding_free"] == padding_free and fast.fastpath["plan"]["fold"] == 2
    assert fast.fastpath["dpo_reference"] == reference
    assert fast.fastpath["overlap"] == ("on" if padding_free else "off: needs the padding-free forward")
    assert [s["tokens"] for s in fast.steps] == [s["tokens"] for s in plain.steps]
    assert [s["rewards/accuracies"] for s in fast.steps] == [r["rewards/accuracies"] for r in plain_rows]
    assert (fast.folder / "adapter_config.json").exists()


def test_fast_dpo_matches_trl_continuing_an_sft_adapter(tiny_model_dir, tmp_path):
    from harness.arms import train_sft
    from harness.arms._train import _seed
    from harness.plan import DpoArm, LoraArm

    pairs = _pairs(8, seed=2)
    sft = LoraArm(name="s", type="lora", max_steps=2, batch_size=4, dropout=0.0, lr=2e-2, max_length=64)
    from harness.base import Example, Message

    examples = [Example(prompt=[Message(role="user", content=p.prompt[0].content)], answer=p.chosen) for p in pairs]
    _seed(0)
    adapter = train_sft(sft, str(tiny_model_dir), examples, tmp_path / "sft", "cpu", fast=None, progress=False).folder
    arm = DpoArm(name="d", type="dpo", max_steps=3, batch_size=2, dropout=0.0, lr=5e-3, max_length=64)
    _, plain_rows = _train(tiny_model_dir, tmp_path, "plain", arm, pairs, None, init=adapter)
    for reference in ("precomputed", "adapter_off"):
        fast, fast_rows = _train(
            tiny_model_dir,
            tmp_path,
            f"fast-{reference}",
            arm,
            pairs,
            fp.FastPath(checkpointing="none"),
            init=adapter,
            reference=reference,
        )
        _assert_same_rows(fast_rows, plain_rows)
        assert fast.fastpath["dpo_reference"] == reference
    # the reference is the SFT adapter: at the first step the policy is the reference, so every reward is 0
    assert plain_rows[0]["rewards/margins"] == pytest.approx(0.0, abs=1e-6)


def test_preference_pack_selects_the_completion_positions():
    from trl.trainer.dpo_trainer import DataCollatorForPreference

    collate = PreferencePacking(DataCollatorForPreference(pad_token_id=0))
    batch = collate(
        [
            {"prompt_ids": [1, 2, 3], "chosen_ids": [4, 5], "rejected_ids": [6]},
            {"prompt_ids": [7, 8], "chosen_ids": [9], "rejected_ids": [10, 11]},
        ]
    )
    pack = batch[PACK_KEY]
    assert pack.shape == (4, 5) and pack.lengths == (5, 3, 4, 4)
    # positions whose next token is a completion token: row 0 predicts 4, 5 from columns 2, 3; ...
    assert pack.predicting.tolist() == [2, 3, 5 + 1, 10 + 2, 15 + 1, 15 + 2]
    assert chosen_positions(pack) == 3
    per_token = torch.tensor([1.0, 2.0, 4.0, 8.0, 16.0, 32.0])
    assert sequence_sums(per_token, pack).tolist() == [3.0, 4.0, 8.0, 48.0]
    assert preference_pack({"attention_mask": batch["attention_mask"]}) is None


def test_sequence_sums_are_per_row_sums_that_ignore_the_other_rows():
    """Each sequence's sum is its own row's: equal to a float64 sum to float32 rounding, and bit-identical whatever
    the other rows of the batch hold."""
    from harness.model._overlap import pack_on_host

    gen = torch.Generator().manual_seed(0)
    mask = torch.ones(6, 40, dtype=torch.long)
    for row, length in enumerate((40, 33, 17, 40, 25, 9)):
        mask[row, length:] = 0
    labels = torch.randint(1, 50, (6, 40), generator=gen).masked_fill(torch.rand(6, 40, generator=gen) < 0.3, -100)
    pack = pack_on_host(mask, labels.masked_fill(mask == 0, -100))
    assert pack is not None and pack.predicting is not None
    n = len(pack.predicting)
    per_token = torch.randn(n, generator=gen) * 10.0 ** torch.randint(-3, 4, (n,), generator=gen)
    rows = torch.div(pack.predicting, 40, rounding_mode="floor")
    exact = torch.zeros(6, dtype=torch.float64).index_add(0, rows, per_token.double())
    sums = sequence_sums(per_token, pack)
    assert torch.allclose(sums.double(), exact, rtol=1e-6, atol=1e-4)
    others = per_token.clone()
    others[rows != 2] = torch.randn(int((rows != 2).sum()), generator=gen) * 1e3
    assert torch.equal(sequence_sums(others, pack)[2], sums[2])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_sequence_sums_are_the_same_on_every_cuda_run():
    from harness.model._overlap import pack_on_host

    mask = torch.ones(16, 256, dtype=torch.long)
    labels = torch.randint(1, 50, (16, 256))
    pack = pack_on_host(mask, labels)
    per_token = torch.randn(len(pack.predicting), device="cuda") * 100
    first = sequence_sums(per_token, pack)
    assert all(torch.equal(first, sequence_sums(per_token, pack)) for _ in range(50))


def test_reference_setting(monkeypatch):
    monkeypatch.delenv("TUNEGATE_DPO_REFERENCE", raising=False)
    assert dpo_reference() == "adapter_off" and dpo_reference(passes=3) == "precomputed"
    assert dpo_reference("precomputed") == "precomputed" and dpo_reference("adapter_off", passes=3) == "adapter_off"
    monkeypatch.setenv("TUNEGATE_DPO_REFERENCE", "adapter_off")
    assert dpo_reference(passes=3) == "adapter_off"
    with pytest.raises(ValueError, match="expected one of"):
        dpo_reference("twice")
    assert len(DPO_COLUMNS) == len(set(DPO_COLUMNS))


@pytest.mark.slow
def test_data_parallel_fast_dpo_logs_what_trl_logs(tiny_model_dir):
    """Two processes (gloo on the CPU): the fast path's losses and rewards/* metrics, summed over the processes a
    step late, equal TRL's DPOTrainer's gathered every step; with each reference."""
    runs = {
        reference: two_cpu_ranks("tests.support.dpo_ddp", tiny_model_dir, reference)
        for reference in ("plain", "precomputed", "adapter_off")
    }
    rows = {k: [r for r in v["logs"] if "loss" in r] for k, v in runs.items()}
    for reference in ("precomputed", "adapter_off"):
        assert runs[reference]["fastpath"]["overlap"] == "on"
        _assert_same_rows(rows[reference], rows["plain"])


def test_passes_over_the_pairs_come_from_epochs_or_max_steps():
    from harness.arms._train import passes_over
    from harness.plan import DpoArm

    assert passes_over(DpoArm(name="d", type="dpo", epochs=3), 100) == 3.0
    assert passes_over(DpoArm(name="d", type="dpo", max_steps=10, batch_size=4, grad_accum=2), 40) == 2.0
    assert passes_over(DpoArm(name="d", type="dpo", max_steps=5, batch_size=4), 40) == 0.5
