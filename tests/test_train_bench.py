"""The training bench (bench/train_throughput.py): its pieces on real TRL objects and a tiny model, and its
tiny mode end to end (marked slow: about thirty tiny training runs)."""
from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import fields

import pytest
import torch

from tests.conftest import REPO

sys.path.insert(0, str(REPO / "bench"))
import train_throughput as bench  # noqa: E402


def tiny_llama(attn: str = "sdpa"):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=300, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                         attn_implementation=attn, pad_token_id=0)
    return LlamaForCausalLM(config)


def test_packed_probe_passes_sdpa_and_catches_attention_across_sequences():
    result = bench.packed_probe(tiny_llama(), "cpu", lengths=(9, 5, 12))
    assert result["matches_padded"] and result["max_rel_error"] < 1e-4 < result["mixing_rel_error"]

    model = tiny_llama()
    original = model.model.forward

    def drop_positions(*args, **kwargs):   # an implementation that ignores the sequence boundaries
        kwargs.pop("position_ids", None)
        return original(*args, **kwargs)

    model.model.forward = drop_positions
    with pytest.raises(bench.PackedMismatch):
        bench.packed_probe(model, "cpu", lengths=(9, 5, 12))


def test_stock_flags_follow_this_trl():
    from trl import SFTConfig

    known = {f.name for f in fields(SFTConfig)}
    out = bench.sft_config_overrides({"gradient_checkpointing": False, "group_by_length": True})
    assert out["gradient_checkpointing"] is False
    assert out.get("group_by_length") is True or out.get("train_sampling_strategy") == "group_by_length"
    assert set(out) <= known
    with pytest.raises(ValueError, match="no field 'no_such_flag'"):
        bench.sft_config_overrides({"no_such_flag": 1})


def test_batch_recorder_counts_what_trls_collator_built():
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    rows = [{"input_ids": [5, 6, 7, 8], "completion_mask": [0, 0, 1, 1]}, {"input_ids": [9, 10]}]
    padded = bench.BatchRecorder(DataCollatorForLanguageModeling(pad_token_id=0))
    padded([{"input_ids": r["input_ids"]} for r in rows])
    assert padded.batches == [{"rows": 2, "positions": 8, "real": 6, "loss": 4}]
    free = bench.BatchRecorder(DataCollatorForLanguageModeling(pad_token_id=0, padding_free=True))
    free([{"input_ids": r["input_ids"]} for r in rows])
    assert free.batches[0]["rows"] == 2 and free.batches[0]["positions"] == free.batches[0]["real"] == 6
    shares = bench.composition(padded.batches, content_tokens=3)
    assert shares["padding_share"] == pytest.approx(0.25) and shares["template_share"] == pytest.approx(0.5)


def _run(name, tps, peak, losses, order=True, error=None):
    return {"name": name, "real_tokens_per_second": tps, "peak_memory_gib": peak, "losses": losses, "tokens": 100,
            "error": error, "mfu": 0.3, "fastpath": {}, "config": {"same_order_as_peer": order}}


def test_best_stock_is_the_fastest_stock_run_that_ran():
    runs = {"peer": _run("peer", 10, 4, [2.0, 1.0]),
            "trl-no-gc": _run("trl-no-gc", 20, 15, [2.0, 1.0]),
            "trl-no-gc-liger": _run("trl-no-gc-liger", 0, 0, [], error="ImportError: no liger"),
            "trl-no-gc-group-by-length": _run("trl-no-gc-group-by-length", 25, 14, [3.0, 0.5], order=False),
            "ours": _run("ours", 40, 12, [2.02, 1.0])}
    assert bench.best_stock(runs) == "trl-no-gc-group-by-length"
    report = {"runs": runs}
    bench.finish(report, loss_steps=20)
    best = report["vs_best_stock"]
    assert best["peer"] == "trl-no-gc-group-by-length" and best["throughput_ratio"] == pytest.approx(1.6)
    assert best["peak_memory_ratio"] == pytest.approx(12 / 14) and not best["same_data_order"]
    # another data order: the loss target is judged against the fastest stock run in the peer's order
    assert best["loss_reference"] == "trl-no-gc" and best["loss_rel_diff_same_order"] == pytest.approx(0.005)
    checks = report["targets"]["ours_vs_best_stock"]
    assert all(checks[k]["met"] for k in ("throughput_ratio", "peak_memory_ratio", "loss_rel_diff", "mfu"))
    assert "ours_vs_peer" in report["comparisons"] and "N_lora" in report["mfu_formula"]


def test_liger_kernel_pays_only_when_applied_faster_and_loss_close():
    def ours(kernel, tps, layers="off: none requested", head="off"):
        run = _run(f"ours-liger-{kernel}", tps, 10, [2.0, 1.0])
        run["fastpath"] = {"liger": layers, "liger_loss_head": head}
        return run

    runs = {"ours-liger-none": ours("none", 100), "ours-liger-rms_norm": ours("rms_norm", 110, "on: rms_norm"),
            "ours-liger-swiglu": ours("swiglu", 101, "on: swiglu"),
            "ours-liger-rope": ours("rope", 130, "off: needs CUDA (Triton kernels)"),
            "ours-liger-fused_linear_cross_entropy": ours("fused_linear_cross_entropy", 120, head="on: fused")}
    table = bench.liger_per_kernel(runs, 20)
    assert table["pays"] == ["rms_norm", "fused_linear_cross_entropy"]
    assert table["kernels"]["rope"]["applied"] is False


def test_fast_path_liger_kernels_by_name():
    from harness.model import DEFAULT_LIGER_KERNELS, FastPath

    assert FastPath().liger_kernels == DEFAULT_LIGER_KERNELS
    assert FastPath(liger=["swiglu", "rope", "swiglu"]).liger == ("swiglu", "rope")
    with pytest.raises(ValueError, match="unknown kernel 'geglu'"):
        FastPath(liger=("geglu",))
    with pytest.raises(ValueError, match="list of kernel names"):
        FastPath(liger="rope")


def test_liger_loss_head_is_off_without_trls_head_or_cuda():
    from harness.model import liger_loss_head

    model = tiny_llama()
    with liger_loss_head(model) as state:
        assert state.startswith("off")
    assert "forward" not in model.__dict__


def test_merge_refuses_another_setup(tmp_path):
    out = tmp_path / "report.json"
    out.write_text(json.dumps({"settings": {"shape": "1b"}, "device": {"name": "H200"}, "runs": {}}))
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "train_throughput.py"), "--smoke", "--sections",
                           "ours", "--merge", "--out", str(out)], capture_output=True, text=True, cwd=REPO,
                          timeout=600)
    assert proc.returncode == 2 and "other settings" in proc.stderr and "Traceback" not in proc.stderr
    bad = subprocess.run([sys.executable, str(REPO / "bench" / "train_throughput.py"), "--sections", "why,speed"],
                         capture_output=True, text=True, cwd=REPO, timeout=120)
    assert bad.returncode == 2 and "unknown section 'speed'" in bad.stderr


@pytest.mark.slow
def test_bench_tiny_mode_end_to_end(tmp_path):
    out = tmp_path / "train.json"
    report = bench.main(["--smoke", "--padding-free-attn", "flash_attention_2,sdpa", "--out", str(out)])
    saved = json.loads(out.read_text())
    assert saved.keys() >= {"why_peer_is_slow", "stock", "liger_per_kernel", "vs_best_stock", "shape_8b",
                            "mfu_formula", "targets"} and report["device"]["type"] == "cpu"
    runs = saved["runs"]
    stock = [n for n in runs if bench.is_stock(n)]
    assert {"peer", "trl-no-gc", "trl-no-gc-liger"} <= set(stock) and len(stock) >= 5
    for name in stock:   # each stock peer ran, or its failure is recorded
        run = runs[name]
        assert run["error"] or (run["real_tokens_per_second"] > 0 and len(run["losses"]) == 4), name
    padding_free = saved["stock"]["padding_free_attention"]
    assert padding_free["flash_attention_2"]["error"].startswith("ImportError")
    assert padding_free["sdpa"]["ran"] and padding_free["sdpa"]["packed_probe"]["matches_padded"]
    best = saved["vs_best_stock"]
    assert best["peer"] == bench.best_stock(runs) and {"throughput_ratio", "peak_memory_ratio",
                                                        "loss_rel_diff"} <= best.keys()
    assert runs["ours"]["error"] is None and "mfu" in runs["ours"]
    why = saved["why_peer_is_slow"]
    assert len(why["variants"]) == 5 and len(why["steps"]) == 4
    assert why["variants"]["chat-full-loss"]["loss_token_share"] > why["variants"]["chat-completion-only"][
        "loss_token_share"]
    assert set(saved["liger_per_kernel"]["kernels"]) == {*bench.LIGER_KERNELS, "all"}
    for kind in ("lora", "qlora"):
        assert saved["shape_8b"][kind]["runs"].keys() >= {"peer", "ours"}
