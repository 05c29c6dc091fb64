"""The lean LoRA node computes what PEFT's LoRA layer computes: outputs and every gradient, with and without
dropout, under bf16 autocast, and it steps aside (PEFT's own forward) where it does not apply."""

from __future__ import annotations

import pytest
import torch

from harness.model._lean_lora import LoraLinear, lean_lora, lean_modules
from tests.model.test_fastpath import padded_batch, tiny_llama, with_lora


def lora_layer(dropout: float = 0.0, seed: int = 0, use_dora: bool = False):
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    base = torch.nn.Sequential(torch.nn.Linear(32, 48))
    model = get_peft_model(
        base, LoraConfig(r=4, lora_alpha=12, lora_dropout=dropout, target_modules=["0"], use_dora=use_dora)
    )
    for name, p in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.1)
    return model


def run(model, x: torch.Tensor, seed: int = 7, autocast: bool = False):
    model.zero_grad()
    x = x.clone().requires_grad_(True)
    torch.manual_seed(seed)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        out = model(x)
    (out.float() * torch.linspace(-1, 1, out.shape[-1])).pow(2).sum().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad and p.grad is not None}
    return out.detach(), x.grad.clone(), grads


@pytest.mark.parametrize("dropout", [0.0, 0.3])
def test_lean_node_equals_peft_in_float32(dropout):
    model = lora_layer(dropout).train()
    x = torch.randn(3, 5, 32)
    peft_out, peft_gx, peft_grads = run(model, x)
    with lean_lora(model) as state:
        assert state == "on: 1 LoRA layers"
        lean_out, lean_gx, lean_grads = run(model, x)
    torch.testing.assert_close(lean_out, peft_out, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(lean_gx, peft_gx, atol=1e-5, rtol=1e-5)
    assert lean_grads.keys() == peft_grads.keys() and len(lean_grads) == 2
    for name in peft_grads:
        torch.testing.assert_close(lean_grads[name], peft_grads[name], atol=1e-5, rtol=1e-5)
    if dropout:  # the dropout really dropped something (same mask as PEFT's, from the same generator state)
        no_dropout, _, _ = run(lora_layer(0.0).train(), x)
        assert not torch.allclose(peft_out, no_dropout)


def test_lean_node_under_bf16_autocast_matches_peft_and_keeps_fp32_adapter_gradients():
    model = lora_layer().train()
    model.get_base_model().to(torch.bfloat16)
    for name, p in model.named_parameters():
        if "lora_" in name:
            p.data = p.data.float()
    x = torch.randn(4, 6, 32, dtype=torch.bfloat16)
    peft_out, peft_gx, peft_grads = run(model, x, autocast=True)
    with lean_lora(model):
        lean_out, lean_gx, lean_grads = run(model, x, autocast=True)
    assert lean_out.dtype == peft_out.dtype == torch.bfloat16 and lean_gx.dtype == torch.bfloat16

    def rel(a: torch.Tensor, b: torch.Tensor) -> float:  # bf16 rounds each element; compare as a whole
        return float((a.float() - b.float()).norm() / b.float().norm())

    assert rel(lean_out, peft_out) < 1e-2 and rel(lean_gx, peft_gx) < 1e-2
    for name, grad in lean_grads.items():
        assert grad.dtype == torch.float32 and rel(grad, peft_grads[name]) < 2e-2, name


def test_whole_model_loss_and_gradients_equal_with_and_without_the_lean_node():
    model = with_lora(tiny_llama(), dropout=0.1).train()
    ids, mask = padded_batch()

    def step():
        model.zero_grad()
        torch.manual_seed(3)
        loss = model(input_ids=ids, attention_mask=mask, labels=ids.masked_fill(mask == 0, -100)).loss
        loss.backward()
        return loss.detach(), [p.grad.clone() for p in model.parameters() if p.requires_grad]

    plain_loss, plain_grads = step()
    with lean_lora(model) as state:
        assert state == f"on: {len(lean_modules(model))} LoRA layers" and len(lean_modules(model)) == 14
        lean_loss, lean_grads = step()
    torch.testing.assert_close(lean_loss, plain_loss, atol=1e-6, rtol=1e-6)
    for a, b in zip(lean_grads, plain_grads, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
    assert all("forward" not in m.__dict__ for m in lean_modules(model))


def test_peft_runs_the_calls_the_lean_node_does_not_cover():
    x = torch.randn(2, 3, 32)
    dora = lora_layer(use_dora=True).train()
    assert lean_modules(dora)  # a LoRA layer over nn.Linear, but its DoRA variant is left to PEFT
    reference, _, _ = run(dora, x)
    calls = []
    original = LoraLinear.apply

    def counting(*args):
        calls.append(1)
        return original(*args)

    LoraLinear.apply = counting
    try:
        with lean_lora(dora):
            torch.testing.assert_close(run(dora, x)[0], reference)
        model = lora_layer().train()
        with lean_lora(model):
            run(model, x)
            assert len(calls) == 1
            with model.disable_adapter():
                out, _, _ = run(model, x)
            torch.testing.assert_close(out, model.get_base_model()[0].base_layer(x).detach())
            model.merge_adapter()
            merged, _, _ = run(model, x)
            model.unmerge_adapter()
            assert len(calls) == 1  # disabled and merged adapters went through PEFT
        torch.testing.assert_close(merged, run(model, x)[0], atol=1e-5, rtol=1e-5)
    finally:
        LoraLinear.apply = original


def test_a_model_without_lora_layers_is_left_alone():
    with lean_lora(tiny_llama()) as state:
        assert state.startswith("off:")


def test_fast_session_applies_the_lean_node_only_when_asked():
    from harness.model import _fastpath as fp

    assert fp.FastPath().lean_lora is False  # not consistently faster in the training bench: opt-in
    model = with_lora(tiny_llama()).train()
    for lean in (False, True):
        session = fp.FastSession(fp.FastPath(checkpointing="none", lean_lora=lean), "cpu")
        session.patch_model(model)
        with session.training(model, None):
            patched = [("forward" in m.__dict__) for m in lean_modules(model)]
            assert patched == [lean] * 14
        session.close()
        assert session.report.lean_lora == ("on: 14 LoRA layers" if lean else "off")
        assert not any("forward" in m.__dict__ for m in lean_modules(model))
