"""Batched inference gives what one-request-at-a-time inference gives: greedy generation is identical for
every batch size and to a per-item `model.generate` loop; log-likelihoods equal a plain forward per request
and lm-eval's HF backend, whichever scoring path (packed, padded, full) runs."""

from __future__ import annotations

import json

import pytest
import torch

from harness.model import _generate as gen
from tests.support.bench import run_bench
from tests.support.texts import PAIRS, PROMPTS


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    from harness.model import load_model

    return load_model(str(tiny_model_dir), "cpu")


def naive_generate(model, tok, prompts, max_new_tokens):
    stops = gen._stop_ids(tok, model)
    out = []
    for prompt in prompts:
        ids = torch.tensor([tok(prompt, add_special_tokens=False)["input_ids"]])
        new = model.generate(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            do_sample=False,
            max_new_tokens=max_new_tokens,
            eos_token_id=stops,
            pad_token_id=tok.pad_token_id,
        )[0, ids.shape[1] :].tolist()
        cut = next((k for k, t in enumerate(new) if t in stops), len(new))
        out.append(tok.decode(new[:cut], skip_special_tokens=True))
    return out


def reference_loglikelihood(model, tok, pairs):
    """One plain forward per request, summing the continuation's log-probabilities."""
    out = []
    with torch.no_grad():
        for whole, n_ctx in gen.encode_pairs(tok, pairs):
            logp = torch.log_softmax(model(input_ids=torch.tensor([whole])).logits[0].float(), dim=-1)
            out.append(sum(float(logp[p, whole[p + 1]]) for p in range(n_ctx - 1, len(whole) - 1)))
    return out


def test_generation_is_identical_for_every_batch_size_and_to_one_at_a_time(tiny):
    model, tok = tiny
    prompts = [gen.chat_prompt(tok, [{"role": "user", "content": p}]) for p in PROMPTS]
    expected = naive_generate(model, tok, prompts, 10)
    assert any(expected)
    for batch_size in (1, 3, 16):
        seen = []
        assert (
            gen.generate(model, tok, prompts, max_new_tokens=10, batch_size=batch_size, progress=seen.append)
            == expected
        )
        assert sum(seen) == len(prompts)
    assert gen.generate(model, tok, [], max_new_tokens=4) == []


@pytest.mark.parametrize("mode", ["packed", "padded", "full"])
def test_loglikelihood_equals_one_forward_per_request(tiny, monkeypatch, mode):
    model, tok = tiny
    expected = reference_loglikelihood(model, tok, PAIRS)
    assert expected[7] == 0.0  # empty continuation
    monkeypatch.setattr(gen, "scoring_mode", lambda m: mode)
    for batch_size in (1, 4, 32):
        seen = []
        got = gen.loglikelihood(model, tok, PAIRS, batch_size=batch_size, progress=seen.append)
        assert got == pytest.approx(expected, abs=2e-4, rel=1e-5)
        assert sum(seen) == len(PAIRS)


def test_requests_with_the_same_input_share_one_forward(tiny, monkeypatch):
    """Four one-token answers to one question read the same hidden states: one sequence in the forward."""
    model, tok = tiny
    pairs = [("Pick a letter:", f" {c}") for c in "ABCD"] + [("Something else entirely", " here")]
    seen_batches = []
    packed = gen._SCORERS["packed"]

    def counting(model, batch, rows, targets):
        seen_batches.append(len(batch))
        return packed(model, batch, rows, targets)

    monkeypatch.setitem(gen._SCORERS, "packed", counting)
    got = gen.loglikelihood(model, tok, pairs, batch_size=8)
    assert seen_batches == [2]
    assert got == pytest.approx(reference_loglikelihood(model, tok, pairs), abs=2e-4, rel=1e-5)


def test_packed_scoring_only_for_plain_decoders(tiny):
    from transformers import Gemma2Config, Gemma2ForCausalLM, Qwen2Config, Qwen2ForCausalLM

    model, tok = tiny
    assert gen.packable(model) and gen.scoring_mode(model) == "packed"
    small = {
        "vocab_size": len(tok),
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 8,
        "max_position_embeddings": 128,
    }
    gemma = Gemma2ForCausalLM(Gemma2Config(**small, sliding_window=4, final_logit_softcapping=30.0)).eval()
    assert not gen.packable(gemma) and gen.scoring_mode(gemma) == "full"
    ids = [(" ".join("abcdefgh"[: k + 2]), " z y x") for k in range(5)]
    got = gen.loglikelihood(gemma, tok, ids, batch_size=3)
    assert got == pytest.approx(reference_loglikelihood(gemma, tok, ids), abs=2e-4, rel=1e-5)
    qwen = Qwen2ForCausalLM(Qwen2Config(**small, use_sliding_window=False)).eval()
    assert gen.packable(qwen)


def test_loglikelihood_agrees_with_lm_eval(tiny):
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    model, tok = tiny
    pairs = [p for p in PAIRS if p[1]]  # lm-eval needs a continuation
    lm = HFLM(pretrained=model, tokenizer=tok, batch_size=4)
    theirs = [
        ll
        for ll, _ in lm.loglikelihood(
            [Instance(request_type="loglikelihood", doc={}, arguments=p, idx=i) for i, p in enumerate(pairs)],
            disable_tqdm=True,
        )
    ]
    assert gen.loglikelihood(model, tok, pairs, batch_size=4) == pytest.approx(theirs, abs=2e-4, rel=1e-5)


@pytest.mark.slow
def test_eval_throughput_bench_smoke(tmp_path):
    out = tmp_path / "eval.json"
    run_bench("eval_throughput.py", "--smoke", "--profile", "--out", str(out))
    saved = json.loads(out.read_text())
    assert saved["dtypes"].keys() == {"float32"} and saved["device"]["type"] == "cpu"
    result = saved["dtypes"]["float32"]
    assert result["generation"]["identical"] == result["generation"]["items"] == 6
    assert result["loglikelihood"]["within_tolerance"] == result["loglikelihood"]["requests"] == 24
    assert all(c["passed"] for c in saved["checks"] if c["asserted"])
    assert len(result["profile"]["loglikelihood"]["ops"]) == 20
