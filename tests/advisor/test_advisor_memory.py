from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.plan import REFERENCE_SHAPES, Method, ModelDims, dims_for_params, estimate_training_memory

ROOT = Path(__file__).resolve().parents[2]
REPORT_TABLE = ROOT / "reports" / "gpu" / "memory_table.json"  # bench/memory_probe.py, run on an H100
B8 = 8.03e9


def test_reference_shapes_have_the_published_parameter_counts() -> None:
    counts = {name: dims.n_params for name, dims in REFERENCE_SHAPES.items()}
    assert counts["smollm2-135m"] == pytest.approx(134.5e6, rel=0.01)
    assert counts["llama-3.2-1b"] == pytest.approx(1.236e9, rel=0.01)
    assert counts["llama-3.1-8b"] == pytest.approx(8.03e9, rel=0.01)
    assert counts["llama-3.1-70b"] == pytest.approx(70.6e9, rel=0.01)


def test_dims_match_a_real_transformers_model() -> None:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        hidden_size=96,
        intermediate_size=256,
        num_hidden_layers=3,
        num_attention_heads=6,
        num_key_value_heads=2,
        vocab_size=500,
        tie_word_embeddings=False,
    )
    with torch.device("meta"):
        model = LlamaForCausalLM(config)
    dims = ModelDims.from_config(config)
    assert dims.n_params == sum(p.numel() for p in model.parameters())
    linear = sum(
        m.weight.numel()
        for n, m in model.named_modules()
        if isinstance(m, torch.nn.Linear) and n.startswith("model.layers")
    )
    assert dims.linear_params == linear


def test_method_order_at_8b() -> None:
    methods: tuple[Method, ...] = ("qlora", "lora", "full")
    est = {m: estimate_training_memory(B8, m, seq_len=1024, batch_size=4) for m in methods}
    assert est["qlora"].total_gib < est["lora"].total_gib < est["full"].total_gib
    assert est["lora"].breakdown["weights"] == pytest.approx(B8 * 2 / 2**30, rel=1e-3)
    assert est["qlora"].breakdown["weights"] < 0.4 * est["lora"].breakdown["weights"]
    assert est["full"].breakdown["optimizer_states"] == pytest.approx(2 * est["full"].breakdown["weights"], rel=1e-3)
    assert est["lora"].trainable_params < 0.01 * B8 and est["full"].trainable_params == int(B8)


@pytest.mark.parametrize("method", ["lora", "qlora", "full", "dora"])
def test_monotone_in_sequence_batch_and_rank(method: Method) -> None:
    base = estimate_training_memory(1.2e9, method, seq_len=512, batch_size=4)
    assert estimate_training_memory(1.2e9, method, seq_len=1024, batch_size=4).allocated_gib > base.allocated_gib
    assert estimate_training_memory(1.2e9, method, seq_len=512, batch_size=8).allocated_gib > base.allocated_gib
    assert estimate_training_memory(3e9, method, seq_len=512, batch_size=4).allocated_gib > base.allocated_gib
    ckpt = estimate_training_memory(1.2e9, method, seq_len=512, batch_size=4, grad_checkpointing=True)
    assert ckpt.allocated_gib < base.allocated_gib
    if method != "full":
        assert (
            estimate_training_memory(1.2e9, method, lora_r=64).trainable_params
            > estimate_training_memory(1.2e9, method, lora_r=8).trainable_params
        )


def test_total_adds_context_and_breakdown_sums() -> None:
    est = estimate_training_memory(REFERENCE_SHAPES["smollm2-135m"], "lora", seq_len=512, batch_size=4)
    assert sum(est.breakdown.values()) == pytest.approx(est.total_gib, abs=0.01)
    assert est.total_gib > est.allocated_gib + 0.5
    assert est.fits(80) and not est.fits(1)


def test_nearest_shape_and_bad_input() -> None:
    assert dims_for_params(7.5e9)[0] == "llama-3.1-8b"
    assert dims_for_params(1.1e9)[0] == "llama-3.2-1b"
    with pytest.raises(ValueError):
        estimate_training_memory(1e9, "prefix")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        estimate_training_memory(1e9, "lora", lora_targets=("q", "mlp"))


def _check_table(table: dict) -> list[str]:
    """Re-estimate every measured row with today's estimator; return the rows outside +-20%."""
    bad = []
    for row in table["rows"]:
        if row["measured_gib"] is None:
            continue
        est = estimate_training_memory(
            ModelDims(**row["dims"]),
            row["method"],
            seq_len=row["seq_len"],
            batch_size=row["batch_size"],
            lora_r=row["lora_r"],
            dtype=row["dtype"],
            grad_checkpointing=row["grad_checkpointing"],
            lora_dropout=row["lora_dropout"],
        )
        ratio = est.allocated_gib / row["measured_gib"]
        if not 0.8 <= ratio <= 1.2:
            bad.append(f"{row['model']} {row['method']} seq {row['seq_len']} bs {row['batch_size']}: {ratio:.2f}")
    return bad


def test_estimator_within_20_percent_of_h100_measurements() -> None:
    table = json.loads(REPORT_TABLE.read_text())
    assert "H100" in table["device"] and len([r for r in table["rows"] if r["measured_gib"]]) >= 24
    assert {r["method"] for r in table["rows"]} == {"lora", "full", "qlora"}
    assert _check_table(table) == []


def test_memory_probe_smoke_on_cpu(tmp_path: Path) -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("memory_probe", ROOT / "bench" / "memory_probe.py")
    assert spec and spec.loader
    probe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(probe)
    out = tmp_path / "table.json"
    assert probe.main(["--smoke", "--out", str(out)]) == 0
    table = json.loads(out.read_text())
    assert table["smoke"] is True and {"device", "torch", "transformers", "date", "rows"} <= set(table)
    assert [r["method"] for r in table["rows"]] == ["lora", "full"]
    import torch

    for row in table["rows"]:
        assert row["estimated_gib"] > 0 and len(row["losses"]) == 1
        if not torch.cuda.is_available():
            assert row["measured_gib"] is None and row["ratio"] is None
