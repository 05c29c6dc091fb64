"""The fast training path changes speed and memory, never the loss: each technique is checked against the
plain computation on a tiny Llama on CPU (float32), and the whole path against the plain TRL path."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from harness.model import _attention as attn
from harness.model import _fastpath as fp
from harness.model import _liger as liger
from harness.model import _memory_plan as memplan
from harness.model import _packing as packing
from harness.model import _parts as parts

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def tiny_llama(vocab: int = 300, layers: int = 2, seed: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        attn_implementation="sdpa",
        pad_token_id=0,
    )
    return LlamaForCausalLM(config)


def padded_batch(vocab: int = 300, lengths: tuple[int, ...] = (24, 17, 6), seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    width = max(lengths)
    ids = torch.randint(1, vocab, (len(lengths), width), generator=g)
    mask = torch.zeros_like(ids)
    for row, n in enumerate(lengths):
        mask[row, :n] = 1
    return ids.masked_fill(mask == 0, 0), mask


def with_lora(model, dropout: float = 0.0):
    from peft import LoraConfig, get_peft_model

    peft = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, lora_dropout=dropout, target_modules="all-linear"))
    for name, p in peft.named_parameters():
        if "lora_B" in name:  # non-zero B so every adapter matrix gets a gradient
            torch.nn.init.normal_(p, std=0.05)
    return peft


def fast_session(model):
    session = fp.FastSession(fp.FastPath(checkpointing="none"), "cpu")
    session.patch_model(model)
    return session


# ---------------------------------------------------------------------------- padding-free + attention


def test_packed_forward_equals_padded_forward():
    model = tiny_llama().train()
    ids, mask = padded_batch()
    reference = model.model(input_ids=ids, attention_mask=mask).last_hidden_state
    session = fast_session(model)
    try:
        packed = model.model(input_ids=ids, attention_mask=mask).last_hidden_state
    finally:
        session.close()
    real = mask.bool()
    assert session.report.padding_free and session.report.attention == "per_sequence"
    torch.testing.assert_close(packed[real], reference[real], atol=2e-5, rtol=1e-4)
    assert packed[~real].abs().max() == 0  # padding positions get no hidden state at all
    # everything is undone
    assert model.config._attn_implementation == "sdpa" and "forward" not in model.model.__dict__


def test_packed_sequences_cannot_see_each_other_and_positions_restart():
    model = tiny_llama().train()
    ids, mask = padded_batch()
    session = fast_session(model)
    try:
        before = model.model(input_ids=ids, attention_mask=mask).last_hidden_state
        changed = ids.clone()
        changed[1, :17] = torch.randint(1, 300, (17,), generator=torch.Generator().manual_seed(9))
        after = model.model(input_ids=changed, attention_mask=mask).last_hidden_state
    finally:
        session.close()
    assert not torch.allclose(before[1, :17], after[1, :17])
    torch.testing.assert_close(after[0], before[0], atol=1e-6, rtol=0)  # no cross-contamination
    torch.testing.assert_close(after[2, :6], before[2, :6], atol=1e-6, rtol=0)
    alone = model.model(input_ids=ids[2:3, :6]).last_hidden_state[0]  # third sequence on its own,
    torch.testing.assert_close(before[2, :6], alone, atol=2e-5, rtol=1e-4)  # positions starting at 0


def test_varlen_attention_function_is_block_diagonal_causal_attention():
    g = torch.Generator().manual_seed(3)
    lengths = (5, 9, 3)
    total = sum(lengths)
    q = torch.randn(1, 4, total, 16, generator=g)
    k = torch.randn(1, 2, total, 16, generator=g)
    v = torch.randn(1, 2, total, 16, generator=g)
    cu = torch.tensor([0, 5, 14, 17], dtype=torch.int32)
    attn.select_attention_kernel("cpu")
    out, _ = attn.varlen_attention_forward(
        torch.nn.Module(),
        q,
        k,
        v,
        None,
        scaling=0.25,
        cu_seq_lens_q=cu,
        max_length_q=9,
        **{attn.SEQ_LENGTHS_KWARG: lengths},
    )
    # reference: explicit masked softmax in float64, each query head reading kv head h // 2
    doc = torch.repeat_interleave(torch.arange(3), torch.tensor(lengths))
    pos = torch.arange(total)
    allowed = (doc[:, None] == doc[None, :]) & (pos[None, :] <= pos[:, None])
    kk, vv = k.double().repeat_interleave(2, dim=1), v.double().repeat_interleave(2, dim=1)
    scores = (q.double() @ kk.transpose(-1, -2)) * 0.25
    expected = torch.softmax(scores.masked_fill(~allowed, -math.inf), dim=-1) @ vv
    torch.testing.assert_close(out.double(), expected.transpose(1, 2), atol=1e-5, rtol=1e-5)


def _fake_varlen(signature: str):
    """Stand-ins for torch.nn.attention.varlen.varlen_attn with the two public signatures (torch 2.10: is_causal;
    2.11+: window_size, scale, enable_gqa), computing exact attention so the adapter's glue can be checked."""
    seen = {}

    def attend(query, key, value, cu_seq_q, cu_seq_k, max_q, max_k, causal, scale):
        assert key.shape[1] == query.shape[1], "kv heads must have been expanded"
        out = torch.empty_like(query)
        bounds = cu_seq_q.tolist()
        for start, end in itertools.pairwise(bounds):
            q, k, v = (t[start:end].transpose(0, 1).float() for t in (query, key, value))
            out[start:end] = (
                torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=causal, scale=scale)
                .transpose(0, 1)
                .to(query.dtype)
            )
        return out

    if signature == "2.10":

        def varlen_attn(query, key, value, cu_seq_q, cu_seq_k, max_q, max_k, is_causal=False, return_aux=None):
            seen["causal"] = is_causal
            return attend(query, key, value, cu_seq_q, cu_seq_k, max_q, max_k, is_causal, None)
    else:

        def varlen_attn(
            query,
            key,
            value,
            cu_seq_q,
            cu_seq_k,
            max_q,
            max_k,
            *,
            return_aux=None,
            scale=None,
            window_size=(-1, -1),
            enable_gqa=False,
        ):
            seen["window"] = window_size
            if enable_gqa:
                groups = query.shape[1] // key.shape[1]
                key, value = key.repeat_interleave(groups, dim=1), value.repeat_interleave(groups, dim=1)
            return attend(query, key, value, cu_seq_q, cu_seq_k, max_q, max_k, window_size == (-1, 0), scale)

    return varlen_attn, seen


@pytest.mark.parametrize("signature", ["2.10", "2.11"])
def test_varlen_kernel_adapter_speaks_both_torch_signatures(monkeypatch, signature):
    from torch.nn.attention import varlen

    fake, seen = _fake_varlen(signature)
    monkeypatch.setattr(varlen, "varlen_attn", fake)
    call = attn._varlen_caller()
    assert attn._self_check(call, torch.device("cpu")) < 2e-2  # the start-up check accepts a correct kernel
    assert seen == ({"causal": True} if signature == "2.10" else {"window": (-1, 0)})
    if signature == "2.10":  # no scale argument there: a non-default scale cannot be honoured
        q = torch.randn(10, 4, 16, dtype=torch.bfloat16)
        with pytest.raises(RuntimeError, match="scale"):
            call(q, q[:, :2], q[:, :2], torch.tensor([0, 10], dtype=torch.int32), 10, 0.5)

    def wrong(query, key, value, cu_seq_q, cu_seq_k, max_q, max_k, *, window_size=(-1, -1)):
        return query * 0.5  # a kernel that computes something else is refused

    monkeypatch.setattr(varlen, "varlen_attn", wrong)
    assert attn._self_check(attn._varlen_caller(), torch.device("cpu")) > 0.5


def test_rows_with_holes_in_the_mask_are_refused():
    mask = torch.tensor([[1, 0, 1, 0], [1, 1, 0, 0]])
    with pytest.raises(ValueError, match="contiguous"):
        packing.pack_from_mask(mask)
    row = packing.pack_from_mask(torch.tensor([[0, 1, 1, 0], [1, 1, 1, 1], [0, 0, 0, 0]]))
    assert row.lengths == (2, 4) and row.index.tolist() == [1, 2, 4, 5, 6, 7]
    assert row.position_ids.tolist() == [[0, 1, 0, 1, 2, 3]] and row.cu_seq_lens.tolist() == [0, 2, 6]


def test_lora_loss_and_gradients_equal_on_packed_and_padded_batches():
    from trl.trainer.utils import add_fused_lm_head

    model = with_lora(tiny_llama()).train()
    add_fused_lm_head(model.get_base_model())
    ids, mask = padded_batch()
    labels = ids.masked_fill(mask == 0, -100)
    labels[:, :3] = -100  # a prompt: no loss on the first tokens

    def loss_and_grads():
        model.zero_grad()
        out = model(input_ids=ids, attention_mask=mask, labels=labels, fused_lm_head=True)
        out.loss.backward()
        return out.loss.item(), {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}

    loss, grads = loss_and_grads()
    session = fast_session(model)
    try:
        packed_loss, packed_grads = loss_and_grads()
    finally:
        session.close()
    assert packed_loss == pytest.approx(loss, rel=1e-6)
    assert grads.keys() == packed_grads.keys() and len(grads) == 2 * 7 * 2
    for name, g in grads.items():
        torch.testing.assert_close(packed_grads[name], g, atol=1e-6, rtol=1e-4, msg=name)


def test_chunked_lm_head_loss_equals_full_cross_entropy(monkeypatch):
    """TRL's fused head (what both the plain and the fast path train with) tiles tokens and vocabulary; with
    small tiles forced, its loss and gradients equal cross-entropy over the full logits."""
    import trl.kernels.chunked_logprob as chunked
    import trl.trainer.utils as trl_utils
    from trl.trainer.utils import add_fused_lm_head

    monkeypatch.setattr(trl_utils, "_CHUNKED_LOGPROB_CHUNK_SIZE", 128)  # 1000-word vocabulary in 8 tiles
    monkeypatch.setattr(chunked, "TOKEN_CHUNK_SIZE", 16)  # 42 tokens in 3 tiles
    model = tiny_llama(vocab=1000).train()
    ids, mask = padded_batch(vocab=1000)
    labels = ids.masked_fill(mask == 0, -100)

    def loss_and_grad(**kw):
        model.zero_grad()
        loss = model(input_ids=ids, attention_mask=mask, labels=labels, **kw).loss
        loss.backward()
        return loss.item(), model.model.embed_tokens.weight.grad.clone()

    full_loss, full_grad = loss_and_grad()  # transformers: logits [B, L, V], then cross-entropy
    add_fused_lm_head(model)
    chunked_loss, chunked_grad = loss_and_grad(fused_lm_head=True)
    assert chunked_loss == pytest.approx(full_loss, rel=1e-6)
    torch.testing.assert_close(chunked_grad, full_grad, atol=1e-6, rtol=1e-4)


def test_bf16_lora_inputs_change_nothing_under_autocast():
    """bf16 base weights, fp32 adapters, bf16 autocast (the GPU recipe, here on CPU's autocast): skipping PEFT's
    fp32 cast of the adapter input gives the same outputs and gradients (the matmul runs in bf16 anyway)."""
    model = with_lora(tiny_llama())
    model.get_base_model().to(torch.bfloat16)
    for name, p in model.named_parameters():
        if "lora_" in name:
            p.data = p.data.float()
    ids, mask = padded_batch()

    def run():
        model.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(input_ids=ids, attention_mask=mask).logits.float()
        out.pow(2).mean().backward()
        return out.detach(), [p.grad.clone() for p in model.parameters() if p.requires_grad]

    cast_out, cast_grads = run()
    with fp.lora_bf16_inputs(model) as state:
        assert state == "on"
        assert all(not m.cast_input_dtype_enabled for m in model.modules() if hasattr(m, "cast_input_dtype_enabled"))
        plain_out, plain_grads = run()
    torch.testing.assert_close(plain_out, cast_out, atol=0, rtol=0)
    for a, b in zip(plain_grads, cast_grads, strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-3)


@pytest.mark.slow
def test_compiled_layers_give_the_same_loss_and_gradients():
    model = with_lora(tiny_llama()).train()
    ids, mask = padded_batch()
    layers = parts.decoder_layers(parts.backbone_of(parts.unwrap(model)))

    def run():
        model.zero_grad()
        loss = model(input_ids=ids, attention_mask=mask).logits.float().pow(2).mean()
        loss.backward()
        return loss.item(), [p.grad.clone() for p in model.parameters() if p.requires_grad]

    loss, grads = run()
    with fp.compiled_layers(layers) as state:
        assert state.startswith("on")
        compiled_loss, compiled_grads = run()
    assert all(layer._compiled_call_impl is None for layer in layers)
    assert compiled_loss == pytest.approx(loss, rel=1e-5)
    for a, b in zip(compiled_grads, grads, strict=True):
        torch.testing.assert_close(a, b, atol=1e-7, rtol=1e-4)


# ------------------------------------------------------------------------------- checkpointing, memory


def test_checkpointed_layers_recompute_and_give_the_same_gradients():
    model = with_lora(tiny_llama()).train()
    ids, mask = padded_batch()
    layers = parts.decoder_layers(parts.backbone_of(parts.unwrap(model)))
    calls = []
    hook = layers[0].mlp.register_forward_pre_hook(lambda *_: calls.append(1))  # runs inside the layer

    def grads():
        model.zero_grad()
        model(input_ids=ids, attention_mask=mask).logits.float().pow(2).mean().backward()
        return [p.grad.clone() for p in model.parameters() if p.requires_grad]

    plain = grads()
    plain_calls = len(calls)
    with memplan.checkpointing(layers, 1):
        checkpointed = grads()
    hook.remove()
    assert plain_calls == 1 and len(calls) - plain_calls == 2  # forward, then the recompute in backward
    for a, b in zip(plain, checkpointed, strict=True):
        torch.testing.assert_close(a, b, atol=1e-7, rtol=1e-5)
    assert all("forward" not in layer.__dict__ for layer in layers)


def test_checkpointing_per_micro_batch_only_where_its_tokens_need_it():
    model = with_lora(tiny_llama()).train()
    layers = parts.decoder_layers(parts.backbone_of(parts.unwrap(model)))
    calls = []
    hook = layers[0].mlp.register_forward_pre_hook(lambda *_: calls.append(1))
    seen = []

    def need(tokens: int) -> int:  # a budget that only the longer batch exceeds
        seen.append(tokens)
        return 1 if tokens > 40 else 0

    with memplan.checkpointing(layers, 1, per_micro_batch=need):
        for width in (8, 32):  # 2 x 8 = 16 tokens: kept; 2 x 32 = 64 tokens: recomputed in backward
            ids, mask = padded_batch(lengths=(width, width))
            calls.clear()
            model(input_ids=ids, attention_mask=mask).logits.float().pow(2).mean().backward()
            assert len(calls) == (2 if width == 32 else 1)
    hook.remove()
    assert seen[0] == 16 and 64 in seen


def test_memory_model_checkpoints_per_micro_batch_what_its_tokens_need():
    memory = memplan.MemoryModel(
        layers=16,
        hidden=2048,
        vocab=49152,
        act_bytes=150_000,
        boundary_bytes=4096,
        fixed_bytes=3 * memplan.GIB,
        budget_bytes=8 * memplan.GIB,
    )
    worst = memplan.plan_memory(
        budget_bytes=8 * memplan.GIB,
        tokens_for_fold={1: 4000},
        layers=16,
        hidden=2048,
        vocab=49152,
        act_bytes=150_000,
        boundary_bytes=4096,
        fixed_bytes=3 * memplan.GIB,
    )
    assert worst.per_micro_batch and worst.checkpointed_layers == memory.layers_to_checkpoint(4000) > 0
    assert memory.layers_to_checkpoint(500) == 0  # a short micro-batch keeps everything
    assert 0 < memory.layers_to_checkpoint(2000) < worst.checkpointed_layers
    assert memory.peak(2000, memory.layers_to_checkpoint(2000)) <= 8 * memplan.GIB
    assert memory.layers_to_checkpoint(10**7) == 16  # nothing fits: all of them
    assert memplan.MemoryModel(16, 2048, 49152, 150_000, 4096, 0, 0).layers_to_checkpoint(10**7) == 0  # no budget


def test_memory_plan_prefers_no_checkpointing_then_larger_micro_batches():
    common = {
        "layers": 16,
        "hidden": 2048,
        "vocab": 49152,
        "act_bytes": 150_000,
        "boundary_bytes": 4096,
        "fixed_bytes": 3 * memplan.GIB,
    }
    tokens = {1: 4000, 2: 8000, 4: 16000}
    roomy = memplan.plan_memory(budget_bytes=72 * memplan.GIB, tokens_for_fold=tokens, **common)
    assert (roomy.checkpointed_layers, roomy.fold, roomy.fits) == (0, 4, True)
    middle = memplan.plan_memory(budget_bytes=28 * memplan.GIB, tokens_for_fold=tokens, **common)
    assert (middle.checkpointed_layers, middle.fold) == (0, 2)
    tight = memplan.plan_memory(budget_bytes=8 * memplan.GIB, tokens_for_fold=tokens, **common)
    assert tight.fold == 1 and 0 < tight.checkpointed_layers < 16 and tight.fits
    # one layer fewer checkpointed would not fit
    fewer = memplan.plan_memory(budget_bytes=8 * memplan.GIB, tokens_for_fold={1: 4000}, mode="none", **common)
    assert fewer.estimated_peak_gib > 8 and tight.estimated_peak_gib <= 8
    hopeless = memplan.plan_memory(budget_bytes=3 * memplan.GIB, tokens_for_fold=tokens, **common)
    assert (hopeless.checkpointed_layers, hopeless.fits) == (16, False)
    forced = memplan.plan_memory(budget_bytes=72 * memplan.GIB, tokens_for_fold=tokens, mode="full", **common)
    assert (forced.checkpointed_layers, forced.fold) == (16, 1)


def test_activation_probe_measures_bytes_saved_per_token():
    model = with_lora(tiny_llama(), dropout=0.1)
    small, large = memplan.activation_bytes_per_token(model, 64), memplan.activation_bytes_per_token(model, 256)
    assert large == pytest.approx(small, rel=0.1)  # linear in tokens
    # at least the MLP's gate and up outputs (2 x 128 floats) and the LoRA dropout masks/outputs are kept
    assert large > 2 * 128 * 4 + 7 * 64
    model.eval()
    rng = torch.get_rng_state()
    memplan.activation_bytes_per_token(model, 32)
    assert torch.equal(rng, torch.get_rng_state())  # the probe's dropout leaves the RNG as it was
    assert not model.training  # and the model's mode too


def test_token_bound_of_a_micro_batch():
    assert memplan.max_tokens_per_micro_batch([5, 100, 7, 60, 3], 2) == 160
    assert memplan.max_tokens_per_micro_batch([5], 4) == 5


# ------------------------------------------------------------------------------------ kernels, session


def test_restoring_patches_undoes_module_and_instance_patches():
    """What Liger does to a model (module-level names and methods bound on instances) is undone."""
    from transformers.models.llama import modeling_llama

    model = tiny_llama()
    rope, norm_cls = modeling_llama.apply_rotary_pos_emb, modeling_llama.LlamaRMSNorm
    with liger.restoring_patches(model):
        modeling_llama.apply_rotary_pos_emb = lambda *a, **k: None
        modeling_llama.LlamaRMSNorm = torch.nn.Identity
        modeling_llama.added_by_patch = True
        norm = model.model.norm
        norm.forward = lambda x: x
        norm.__dict__["_get_name"] = lambda: "Patched"
    assert modeling_llama.apply_rotary_pos_emb is rope and modeling_llama.LlamaRMSNorm is norm_cls
    assert not hasattr(modeling_llama, "added_by_patch")
    assert "forward" not in norm.__dict__ and "_get_name" not in norm.__dict__


def test_kernels_off_on_cpu_say_why():
    model = tiny_llama()
    assert liger.apply_liger(model).startswith("off: needs CUDA")
    assert attn.select_attention_kernel("cpu") == ("per_sequence", "varlen_attn needs CUDA")
    assert fp.FastPath.for_device("cpu") is None and fp.FastPath.for_device("cuda") == fp.FastPath()


def test_session_restores_the_model():
    model = with_lora(tiny_llama()).train()
    session = fp.FastSession(fp.FastPath(checkpointing="full"), "cpu")
    session.patch_model(model)
    plan = session.plan(model, [20, 30, 40], micro_batch=2, accumulation=1)
    assert plan.checkpointed_layers == 2 and session.report.plan["mode"] == "full"
    layers = parts.decoder_layers(parts.backbone_of(parts.unwrap(model)))
    with session.training(model, plan):
        assert all("forward" in layer.__dict__ for layer in layers)
        assert parts.unwrap(model).config._attn_implementation == attn.ATTENTION_NAME
    session.close()
    assert all("forward" not in layer.__dict__ for layer in layers)
    assert parts.unwrap(model).config._attn_implementation == "sdpa"
    assert "forward" not in parts.backbone_of(parts.unwrap(model)).__dict__


@CUDA
def test_varlen_kernel_and_liger_on_cuda():
    name, note = attn.select_attention_kernel("cuda")
    assert name == "varlen", note
    model = tiny_llama().to("cuda", torch.bfloat16).train()
    ids, mask = (t.cuda() for t in padded_batch())
    reference = model.model(input_ids=ids, attention_mask=mask).last_hidden_state.float()
    session = fp.FastSession(fp.FastPath(checkpointing="none"), "cuda")
    session.patch_model(model)
    try:
        packed = model.model(input_ids=ids, attention_mask=mask).last_hidden_state.float()
    finally:
        session.close()
    real = mask.bool()
    torch.testing.assert_close(packed[real], reference[real], atol=5e-2, rtol=5e-2)


# ------------------------------------------------------------------------------------------ end to end


def _examples(n: int, seed: int = 0):
    import random

    from harness.base import Example, Message

    rng = random.Random(seed)
    words = [
        "alpha",
        "beta",
        "gamma",
        "delta",
        "apple",
        "river",
        "stone",
        "cloud",
        "green",
        "quick",
        "lazy",
        "fox",
        "dog",
        "house",
        "tree",
    ]
    return [
        Example(
            prompt=[Message(role="user", content=" ".join(rng.choices(words, k=rng.randint(2, 12))))],
            answer=" ".join(rng.choices(words, k=rng.randint(1, 14))),
        )
        for _ in range(n)
    ]


def test_train_sft_fast_path_matches_the_plain_path(tiny_model_dir, tmp_path):
    from harness.arms import train_sft
    from harness.plan import LoraArm

    arm = LoraArm(name="l", type="lora", max_steps=2, batch_size=3, dropout=0.0, lr=5e-3, max_length=64)
    examples = _examples(6)
    plain = train_sft(arm, str(tiny_model_dir), examples, tmp_path / "plain", "cpu", fast=None, progress=False)
    fast = train_sft(
        arm,
        str(tiny_model_dir),
        examples,
        tmp_path / "fast",
        "cpu",
        fast=fp.FastPath(checkpointing="none"),
        progress=False,
    )
    assert [s["tokens"] for s in fast.steps] == [s["tokens"] for s in plain.steps]
    assert [s["loss"] for s in fast.steps] == pytest.approx([s["loss"] for s in plain.steps], rel=1e-5)
    assert fast.fastpath["padding_free"] and fast.fastpath["plan"]["checkpointed_layers"] == 0
    assert plain.fastpath == {} and (fast.folder / "adapter_config.json").exists()


@pytest.mark.slow
def test_folded_accumulation_and_dpo_match_the_plain_path(tiny_model_dir, tmp_path):
    from harness.arms import train_dpo, train_sft
    from harness.base import Message, Preference
    from harness.plan import DpoArm, LoraArm

    examples = _examples(8, seed=1)
    arm = LoraArm(name="l", type="lora", max_steps=2, batch_size=2, grad_accum=2, dropout=0.0, lr=5e-3, max_length=64)
    plain = train_sft(arm, str(tiny_model_dir), examples, tmp_path / "p", "cpu", fast=None, progress=False)
    folded = train_sft(
        arm,
        str(tiny_model_dir),
        examples,
        tmp_path / "f",
        "cpu",
        fast=fp.FastPath(checkpointing="none", memory_budget_gib=64),
        progress=False,
    )
    assert folded.fastpath["plan"]["fold"] == 2
    assert [s["loss"] for s in folded.steps] == pytest.approx([s["loss"] for s in plain.steps], rel=1e-5)

    pairs = [
        Preference(
            prompt=[Message(role="user", content=e.prompt[0].content)], chosen=e.answer, rejected=e.answer[::-1] or "no"
        )
        for e in examples
    ]
    dpo = DpoArm(
        name="d", type="dpo", max_steps=2, batch_size=2, dropout=0.0, lr=1e-3, max_length=64, truncation="keep_start"
    )
    plain = train_dpo(dpo, str(tiny_model_dir), pairs, tmp_path / "dp", "cpu", fast=None, progress=False)
    fast = train_dpo(
        dpo, str(tiny_model_dir), pairs, tmp_path / "df", "cpu", fast=fp.FastPath(checkpointing="full"), progress=False
    )
    assert [s["loss"] for s in fast.steps] == pytest.approx([s["loss"] for s in plain.steps], rel=1e-5)
    assert fast.fastpath["plan"]["checkpointed_layers"] == 2
