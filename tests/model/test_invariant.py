"""Issue 30: in the invariant numerics mode an item's output and log-likelihood depend only on the model and the
item: bit-identical at every batch size, with device-sized batching on or off, in mixed-adapter evaluation and
through lm-eval, on a bf16 model (where the fast path's last bits do move with the batch, checked too)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from harness.evaluation import _suite as suites
from harness.evaluation._evaluate import evaluate, evaluate_adapters
from harness.model import _generate as gen
from harness.model import _invariant as inv
from harness.model._numerics import resolve_mode
from tests.support.storekit import tunegate
from tests.support.texts import PAIRS as BASE_PAIRS
from tests.support.texts import PROMPTS as BASE_PROMPTS

PROMPTS = [*BASE_PROMPTS, *[f"Item {k}: say something about {k * 7}" for k in range(9)]]
PAIRS = [*BASE_PAIRS, ("Name a colour:", " red"), ("Name a colour:", " dark blue, like the sea at night")]

BATCHES = (1, 3, 7, 16)


@pytest.fixture(scope="module")
def bf16(tiny_model_dir: Path) -> tuple[Any, Any]:
    """A bf16 2-layer Llama 256 wide (wide enough that the fast path's sums change with the batch shape on CPU)."""
    from transformers import AutoTokenizer, LlamaForCausalLM

    from tests.support import tiny_llama_config

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    torch.manual_seed(0)
    config = tiny_llama_config(tok, hidden=256, intermediate=1024)
    return LlamaForCausalLM(config).to(torch.bfloat16).eval(), tok


def chunked(fn: Any, items: list[Any], size: int) -> list[Any]:
    """`fn` over `items` `size` at a time: each item scored with other companions at each size."""
    return [x for k in range(0, len(items), size) for x in fn(items[k : k + size])]


def templated(tok: Any) -> list[str]:
    return [gen.chat_prompt(tok, [{"role": "user", "content": p}]) for p in PROMPTS]


def write_suite(folder: Path, kind: str, batch_size: int) -> suites.Suite:
    folder.mkdir(parents=True, exist_ok=True)
    scorer = "" if kind == "multiple_choice" else "scorers: [exact_match]\n"
    (folder / "suite.yaml").write_text(
        f"name: inv_{kind.replace('_', '')}\nkind: {kind}\n{scorer}"
        f"generation: {{max_new_tokens: 12, batch_size: {batch_size}}}\n"
    )
    if kind == "multiple_choice":
        rows = [
            {"id": str(k), "prompt": c, "choices": [x for cc, x in PAIRS if cc == c], "answer": 0}
            for k, c in enumerate(dict.fromkeys(c for c, _ in PAIRS))
            if sum(cc == c for cc, _ in PAIRS) > 1
        ]
    else:
        rows = [{"id": str(k), "prompt": p, "reference": "Paris"} for k, p in enumerate(PROMPTS)]
    (folder / "items.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return suites.load(str(folder))


def test_generation_is_bit_identical_whatever_shares_the_batch(bf16: tuple[Any, Any]) -> None:
    model, tok = bf16
    prompts = templated(tok)
    expected = inv.generate(model, tok, prompts, max_new_tokens=12)
    assert any(expected) and len(set(expected)) > 1
    for size in BATCHES:
        seen: list[int] = []
        got = chunked(
            lambda part, seen=seen: inv.generate(model, tok, part, max_new_tokens=12, progress=seen.append),
            prompts,
            size,
        )
        assert got == expected, size
        assert sum(seen) == len(prompts)
    reordered = inv.generate(model, tok, prompts[::-1], max_new_tokens=12)
    assert reordered[::-1] == expected
    assert inv.generate(model, tok, [], max_new_tokens=4) == []


def test_loglikelihoods_are_bit_identical_whatever_shares_the_batch(bf16: tuple[Any, Any]) -> None:
    model, tok = bf16
    expected = inv.loglikelihood(model, tok, PAIRS)
    assert expected[7] == 0.0  # the empty continuation
    for size in BATCHES:
        assert chunked(lambda part: inv.loglikelihood(model, tok, part), PAIRS, size) == expected, size
    # the same numbers as the fast path up to bf16 rounding: it is the same model
    assert expected == pytest.approx(gen.loglikelihood(model, tok, PAIRS), rel=0.02, abs=0.05)


def test_the_fast_path_moves_with_the_batch_on_this_model(bf16: tuple[Any, Any], monkeypatch) -> None:
    """The invariance checks above have teeth: on the same model and requests the fast path's (padded) scores
    differ in their last bits between batch sizes."""
    model, tok = bf16
    monkeypatch.setattr(gen, "scoring_mode", lambda m: "padded")
    alone = chunked(lambda part: gen.loglikelihood(model, tok, part, batch_size=1), PAIRS, 1)
    together = gen.loglikelihood(model, tok, PAIRS, batch_size=16)
    assert alone != together
    assert together == pytest.approx(alone, rel=0.02, abs=0.05)


@pytest.mark.parametrize("kind", ["generate", "multiple_choice"])
def test_evaluate_ignores_batch_size_and_device_batching(bf16: tuple[Any, Any], tmp_path: Path, kind: str) -> None:
    model, tok = bf16
    seen = set()
    for size in BATCHES:
        for device_batch in (True, False):
            result = evaluate(model, tok, write_suite(tmp_path / f"{size}", kind, size), device_batch=device_batch)
            seen.add(tuple((r.item_id, r.output, tuple(sorted(r.scores.items()))) for r in result.items))
            assert result.numerics is not None and result.numerics["mode"] == "invariant"
            assert result.numerics["engine"] == "fixed-shape lanes=8 bucket=16 span=64 head_chunk=16 graphs=off"
            assert result.numerics["dtype"] == "bfloat16" and result.numerics["gpu"] == "cpu"
    assert len(seen) == 1
    fast = evaluate(model, tok, write_suite(tmp_path / "fast", kind, 4), numerics="fast")
    assert fast.numerics is not None and fast.numerics["mode"] == "fast"
    assert fast.numerics["engine"].startswith("hf-generate")


def test_mixed_adapter_evaluation_equals_each_adapter_alone(bf16: tuple[Any, Any], tmp_path: Path) -> None:
    from peft import LoraConfig, PeftModel, get_peft_model

    model, tok = bf16
    folders = []
    for k in range(2):
        torch.manual_seed(k + 1)
        peft_model = get_peft_model(
            model, LoraConfig(r=4, lora_alpha=64, target_modules="all-linear", init_lora_weights=False)
        )
        peft_model.save_pretrained(str(tmp_path / f"a{k}"))
        peft_model.unload()
        folders.append(tmp_path / f"a{k}")
    suite = write_suite(tmp_path / "gen", "generate", 16)
    alone = []
    for folder in folders:
        one = PeftModel.from_pretrained(model, str(folder)).eval()
        alone.append([r.output for r in evaluate(one, tok, suite).items])
        one.unload()
    shared = PeftModel.from_pretrained(model, str(folders[0]), adapter_name="a0")
    shared.load_adapter(str(folders[1]), adapter_name="a1")
    shared.eval()
    together = evaluate_adapters(shared, tok, suite, ["a0", "a1"])
    shared.unload()
    assert [r.output for r in together["a0"].items] == alone[0]
    assert [r.output for r in together["a1"].items] == alone[1]
    assert alone[0] != alone[1]  # the adapters really differ
    assert together["a0"].numerics is not None and together["a0"].numerics["mode"] == "invariant"


def test_lm_eval_loglikelihood_requests_go_through_the_invariant_scorer(bf16: tuple[Any, Any]) -> None:
    from lm_eval.models.huggingface import HFLM

    from harness.evaluation._lmeval import _invariant_hflm

    model, tok = bf16
    lm = _invariant_hflm(HFLM)(pretrained=model, tokenizer=tok, batch_size=1)
    requests = []
    for context, continuation in PAIRS[:7] + PAIRS[8:]:
        ctx = tok(context, add_special_tokens=False)["input_ids"]
        requests.append(
            (
                (context, continuation),
                ctx,
                tok(context + continuation, add_special_tokens=False)["input_ids"][len(ctx) :],
            )
        )
    together = lm._loglikelihood_tokens(requests)
    assert [lm._loglikelihood_tokens([r])[0] for r in requests] == together
    reference = HFLM(pretrained=model, tokenizer=tok, batch_size=4)._loglikelihood_tokens(requests)
    assert [lp for lp, _ in together] == pytest.approx([lp for lp, _ in reference], rel=0.02, abs=0.05)


def test_numerics_mode_from_option_environment_and_default(monkeypatch) -> None:
    from harness.base._errors import UserError

    monkeypatch.delenv("TUNEGATE_EVAL_NUMERICS", raising=False)
    assert resolve_mode() == "invariant" and resolve_mode("fast") == "fast"
    monkeypatch.setenv("TUNEGATE_EVAL_NUMERICS", "fast")
    assert resolve_mode() == "fast" and resolve_mode("invariant") == "invariant"
    monkeypatch.setenv("TUNEGATE_EVAL_NUMERICS", "quick")
    with pytest.raises(UserError, match="TUNEGATE_EVAL_NUMERICS"):
        resolve_mode()
    with pytest.raises(UserError, match="--eval-numerics"):
        resolve_mode("exact")


def test_cli_eval_numerics_option(tmp_path: Path) -> None:
    plan = tmp_path / "plan.yaml"
    plan.write_text(
        "name: p\nmodel: smollm2-135m\narms:\n  - {name: baseline, type: baseline}\nsuites: [json_extract]\n"
    )
    store = ["--store", str(tmp_path / "s.db")]
    ok = tunegate("run", str(plan), "--dry-run", "--eval-numerics", "fast", *store)
    assert ok.returncode == 0, ok.stderr
    for args, env in (
        (["run", str(plan), "--eval-numerics", "exact"], None),
        (["eval", "smollm2-135m", "-s", "json_extract", "--eval-numerics", "exact"], None),
        (["run", str(plan)], {"TUNEGATE_EVAL_NUMERICS": "exact"}),
    ):
        bad = tunegate(*args, *store, env=env)
        lines = [line for line in bad.stderr.splitlines() if line.strip()]
        assert bad.returncode == 2 and len(lines) == 1 and "Traceback" not in bad.stderr, bad.stderr
        assert "'exact' is not an eval numerics mode" in lines[0]


def test_fixed_attention_equals_transformers_eager_attention_with_grouped_heads() -> None:
    from transformers.models.llama.modeling_llama import eager_attention_forward

    torch.manual_seed(0)
    b, heads, kv_heads, t, length, d = 3, 6, 2, 5, 9, 8
    query = torch.randn(b, heads, t, d)
    key, value = torch.randn(b, kv_heads, length, d), torch.randn(b, kv_heads, length, d)
    allowed = torch.rand(b, 1, t, length) > 0.3
    allowed[..., 0] = True
    mask = torch.where(allowed, 0.0, torch.finfo(torch.float32).min)
    module = torch.nn.Module()
    module.num_key_value_groups, module.training = heads // kv_heads, False
    ours, _ = inv.fixed_attention(module, query, key, value, mask, scaling=d**-0.5)
    theirs, _ = eager_attention_forward(module, query, key, value, mask, scaling=d**-0.5)
    assert ours.shape == theirs.shape == (b, t, heads, d)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)
