"""Attention over packed rows: each sequence of a padding-free row attends only to itself.

`varlen_attention_forward` is registered with transformers' `AttentionInterface` as `tunegate_varlen`. On CUDA
it runs PyTorch's built-in FlashAttention varlen kernel (`torch.nn.attention.varlen.varlen_attn`) once that
kernel has matched the reference on the device (`select_attention_kernel`, forward and backward); elsewhere (CPU,
or when the self-check fails) it runs causal SDPA once per sequence. Either way no token attends across a
sequence boundary.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

ATTENTION_NAME = "tunegate_varlen"
SEQ_LENGTHS_KWARG = "packed_seq_lengths"  # python tuple of sequence lengths, so no device sync is needed


@dataclass
class _Kernel:
    name: str = "per_sequence"  # "varlen" | "per_sequence"
    varlen: Callable[..., torch.Tensor] | None = None


_KERNEL = _Kernel()


def selected_kernel() -> str:
    """The kernel packed rows use now ("varlen" or "per_sequence"), as `select_attention_kernel` last chose it."""
    return _KERNEL.name


def _varlen_caller() -> Callable[..., torch.Tensor]:
    """PyTorch's FlashAttention varlen kernel, adapted to the installed torch's signature (it changed in 2.11)."""
    from torch.nn.attention.varlen import varlen_attn

    params = inspect.signature(varlen_attn).parameters
    if "is_causal" not in params and "window_size" not in params:
        raise RuntimeError("torch varlen_attn has neither is_causal nor window_size")

    def call(
        q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu: torch.Tensor, max_len: int, scale: float | None
    ) -> torch.Tensor:
        kwargs: dict[str, Any] = {"is_causal": True} if "is_causal" in params else {"window_size": (-1, 0)}
        default_scale = q.shape[-1] ** -0.5
        if scale is not None and not math.isclose(scale, default_scale, rel_tol=1e-6):
            if "scale" not in params:
                raise RuntimeError("torch varlen_attn takes no scale; this model needs a non-default one")
            kwargs["scale"] = scale
        groups = q.shape[1] // k.shape[1]
        if groups > 1:
            if "enable_gqa" in params:
                kwargs["enable_gqa"] = True
            else:
                k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)
        return varlen_attn(q, k, v, cu, cu, max_len, max_len, **kwargs)

    return call


def _per_sequence_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    lengths: Sequence[int],
    scaling: float | None,
    dropout: float,
) -> torch.Tensor:
    """Causal SDPA over each sequence of a packed row [1, H, T, D] -> [1, T, H, D]."""
    gqa = query.shape[1] != key.shape[1]
    if gqa and query.is_cuda:  # SDPA's flash kernel may not take enable_gqa: share the kv heads explicitly
        groups = query.shape[1] // key.shape[1]
        key, value, gqa = key.repeat_interleave(groups, dim=1), value.repeat_interleave(groups, dim=1), False
    outs, start = [], 0
    for n in lengths:
        end = start + n
        outs.append(
            F.scaled_dot_product_attention(
                query[:, :, start:end],
                key[:, :, start:end],
                value[:, :, start:end],
                is_causal=True,
                dropout_p=dropout,
                scale=scaling,
                enable_gqa=gqa,
            )
        )
        start = end
    return torch.cat(outs, dim=2).transpose(1, 2).contiguous()


def varlen_attention_forward(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """transformers attention function for packed rows (`cu_seq_lens_q` given); plain causal SDPA otherwise."""
    cu = kwargs.get("cu_seq_lens_q")
    if cu is None:
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
        )
    if query.shape[0] != 1:
        raise ValueError(f"packed attention expects one row, got a batch of {query.shape[0]}")
    if (
        _KERNEL.name == "varlen"
        and _KERNEL.varlen is not None
        and dropout == 0.0
        and query.is_cuda
        and query.dtype in (torch.bfloat16, torch.float16)
    ):
        out = _KERNEL.varlen(
            query[0].transpose(0, 1),
            key[0].transpose(0, 1),
            value[0].transpose(0, 1),
            cu,
            int(kwargs["max_length_q"]),
            scaling,
        )
        return out.unsqueeze(0), None
    lengths = kwargs.get(SEQ_LENGTHS_KWARG) or cu.diff().tolist()
    return _per_sequence_attention(query, key, value, lengths, scaling, dropout), None


def register_attention(compiled: bool = False) -> None:
    """Make `attn_implementation="tunegate_varlen"` known to transformers (idempotent)."""
    from transformers import AttentionInterface

    fn = torch.compiler.disable(varlen_attention_forward) if compiled else varlen_attention_forward
    AttentionInterface.register(ATTENTION_NAME, fn)


_SELECTED: dict[tuple[str, str], tuple[str, str, Callable[..., torch.Tensor] | None]] = {}


def select_attention_kernel(device: torch.device | str, requested: str = "auto") -> tuple[str, str]:
    """Choose the kernel for packed rows (once per device); the varlen kernel must first match the reference
    on this device, forward and backward. Returns (kernel, why)."""
    device = torch.device(device)
    key = (str(device), requested)
    if key not in _SELECTED:
        _SELECTED[key] = _choose_kernel(device, requested)
    name, note, call = _SELECTED[key]
    _KERNEL.name, _KERNEL.varlen = name, call
    return name, note


def _choose_kernel(device: torch.device, requested: str) -> tuple[str, str, Callable[..., torch.Tensor] | None]:
    if requested == "per_sequence":
        return "per_sequence", "requested", None
    if device.type != "cuda":
        return "per_sequence", "varlen_attn needs CUDA", None
    try:
        call = _varlen_caller()
        error = _self_check(call, device)
    except Exception as exc:  # noqa: BLE001 - any failure means: use the always-correct path
        return "per_sequence", f"varlen_attn unavailable: {type(exc).__name__}: {str(exc).splitlines()[0][:160]}", None
    if error > 2e-2:
        return "per_sequence", f"varlen_attn disagreed with SDPA (max relative error {error:.3g})", None
    return "varlen", f"self-check max relative error {error:.2g}", call


def _self_check(call: Callable[..., torch.Tensor], device: torch.device) -> float:
    """Max difference (outputs and query gradients, relative to their largest value) between the varlen kernel
    in bf16 and per-sequence SDPA in fp32."""
    g = torch.Generator(device=device).manual_seed(0)
    lengths = (77, 160, 19)
    total, heads, kv_heads, dim = sum(lengths), 8, 2, 64
    q = torch.randn(1, heads, total, dim, device=device, dtype=torch.bfloat16, generator=g).requires_grad_()
    k = torch.randn(1, kv_heads, total, dim, device=device, dtype=torch.bfloat16, generator=g).requires_grad_()
    v = torch.randn(1, kv_heads, total, dim, device=device, dtype=torch.bfloat16, generator=g)
    cu = torch.tensor([0, 77, 237, 256], dtype=torch.int32, device=device)
    out = call(q[0].transpose(0, 1), k[0].transpose(0, 1), v[0].transpose(0, 1), cu, max(lengths), None)
    ref = _per_sequence_attention(q.float(), k.float(), v.float(), lengths, None, 0.0)[0]
    grad_out = torch.randn_like(out)
    (gq,) = torch.autograd.grad(out, q, grad_out)
    (gq_ref,) = torch.autograd.grad(ref, q, grad_out.float())

    def error(a: torch.Tensor, b: torch.Tensor) -> float:  # relative to the reference's scale
        return float(((a.float() - b).abs().max() / b.abs().max().clamp(min=1e-6)).detach())

    return max(error(out, ref), error(gq, gq_ref))


@contextmanager
def attention_implementation(model: Any, name: str) -> Iterator[None]:
    """Switch a transformers model's attention implementation for the duration."""
    before = model.config._attn_implementation
    model.set_attn_implementation(name)
    try:
        yield
    finally:
        model.set_attn_implementation(before)
