"""A LoRA linear layer's forward and backward as one autograd node (the fast path's `lean_lora`).

PEFT computes `base(x) + lora_B(lora_A(dropout(x))) * scaling` as six modules and ops, which under bf16 autocast
become about eight kernels forward and ten backward, and as many autograd nodes. At the sizes the fast path
trains (a 1B model on a few thousand tokens a step) a step can be bound by the CPU that launches them, not by the
GPU (the profiles in reports/perf/train_profile.json count the launches). `LoraLinear` computes the
same thing with one node and fewer ops: the scaled low-rank product is added into the base output by one
`addmm_`, dropout's mask is kept for the backward (as PEFT's does), and the adapter gradients come back in
the adapters' dtype (fp32). Same arithmetic as PEFT up to float rounding; the weights stay PEFT's, so saving
and loading the adapter is unchanged. The Python of its forward and backward costs about what PEFT's modules and
autograd nodes do, and its larger saved activations leave less memory for CUDA graphs, so it is not consistently
faster in the training bench (`ours-lean-lora` in reports/PERFORMANCE.md) and `FastPath.lean_lora` is off by
default.

It applies to a plain `nn.Linear` base with one active vanilla LoRA adapter (no DoRA or other variant, no
adapter bias, not merged, base weights frozen) under autocast or with every tensor in one dtype; any other call
runs PEFT's own forward.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F


class LoraLinear(torch.autograd.Function):
    """y = x W^T (+ bias) + scaling * dropout(x) A^T B^T, in `dtype`; W and bias frozen."""

    @staticmethod
    def forward(
        ctx: Any,
        x: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        lora_a: torch.Tensor,
        lora_b: torch.Tensor,
        scaling: float,
        p: float,
        dtype: torch.dtype,
    ) -> torch.Tensor:
        with torch.autocast(x.device.type, enabled=False):
            xc = x.to(dtype)
            w, a, b = weight.to(dtype), lora_a.to(dtype), lora_b.to(dtype)
            y = F.linear(xc, w, None if bias is None else bias.to(dtype))
            if p > 0.0:
                xd, mask = torch.native_dropout(xc, p, True)
            else:
                xd, mask = xc, None
            xd2 = xd.reshape(-1, xd.shape[-1])
            xa = xd2 @ a.t()
            y.view(-1, y.shape[-1]).addmm_(xa, b.t(), alpha=scaling)
        ctx.save_for_backward(xd2, mask, xa, w, a, b)
        ctx.scaling, ctx.p = scaling, p
        ctx.x_meta = (x.shape, x.dtype)
        ctx.adapter_dtypes = (lora_a.dtype, lora_b.dtype)
        return y

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        xd2, mask, xa, w, a, b = ctx.saved_tensors
        needs_x, needs_a, needs_b = ctx.needs_input_grad[0], ctx.needs_input_grad[3], ctx.needs_input_grad[4]
        gx = ga = gb = None
        with torch.autocast(grad.device.type, enabled=False):
            g2 = grad.reshape(-1, grad.shape[-1]).to(w.dtype)
            gxa = (g2 @ b).mul_(ctx.scaling)
            if needs_b:
                gb = (g2.t() @ xa).mul_(ctx.scaling).to(ctx.adapter_dtypes[1])
            if needs_a:
                ga = (gxa.t() @ xd2).to(ctx.adapter_dtypes[0])
            if needs_x:
                gx = g2 @ w
                if mask is None:
                    gx.addmm_(gxa, a)
                else:
                    dropped = torch.ops.aten.native_dropout_backward(gxa @ a, mask.reshape(gx.shape), 1 / (1 - ctx.p))
                    gx.add_(dropped)
                shape, dtype = ctx.x_meta
                gx = gx.view(shape).to(dtype)
        return gx, None, None, ga, gb, None, None, None


def _lean_call(module: Any, x: torch.Tensor) -> torch.Tensor | None:
    """The lean computation for this call, or None when PEFT's own forward must run it."""
    if module.disable_adapters or module.merged:
        return None
    active = module.active_adapters
    if len(active) != 1:
        return None
    name = active[0]
    if name not in module.lora_A or name in module.lora_variant:
        return None
    base, lora_a, lora_b = module.base_layer, module.lora_A[name], module.lora_B[name]
    if (
        base.weight.requires_grad
        or (base.bias is not None and base.bias.requires_grad)
        or lora_a.bias is not None
        or lora_b.bias is not None
    ):
        return None
    if torch.is_autocast_enabled(x.device.type):
        dtype = torch.get_autocast_dtype(x.device.type)
    elif x.dtype == base.weight.dtype == lora_a.weight.dtype == lora_b.weight.dtype:
        dtype = x.dtype
    else:
        return None  # PEFT would compute the adapter in its own dtype: leave it to PEFT
    dropout = module.lora_dropout[name]
    p = float(dropout.p) if isinstance(dropout, torch.nn.Dropout) and dropout.training else 0.0
    return LoraLinear.apply(
        x, base.weight, base.bias, lora_a.weight, lora_b.weight, float(module.scaling[name]), p, dtype
    )


def lean_modules(model: torch.nn.Module) -> list[torch.nn.Module]:
    """PEFT LoRA linear layers over a plain nn.Linear: the ones `lean_lora` can run."""
    try:
        from peft.tuners.lora.layer import Linear as PeftLoraLinear
    except ImportError:
        return []
    return [m for m in model.modules() if isinstance(m, PeftLoraLinear) and type(m.base_layer) is torch.nn.Linear]


@contextmanager
def lean_lora(model: torch.nn.Module) -> Iterator[str]:
    """While active, every eligible LoRA linear layer of `model` runs as one `LoraLinear` node. Undone after."""
    modules = lean_modules(model)
    if not modules:
        yield "off: no PEFT LoRA linear layer over nn.Linear"
        return
    for module in modules:
        original = module.forward

        def forward(
            x: torch.Tensor, *args: Any, _module: Any = module, _original: Any = original, **kwargs: Any
        ) -> torch.Tensor:
            out = None if args or kwargs else _lean_call(_module, x)
            return _original(x, *args, **kwargs) if out is None else out

        module.forward = forward
    try:
        yield f"on: {len(modules)} LoRA layers"
    finally:
        for module in modules:
            module.__dict__.pop("forward", None)
