"""Liger's fused Triton kernels, chosen one by one (`FastPath.liger`), and undoing what they patch.

The decoder kernels (RMSNorm, SwiGLU, RoPE) are patched into the model's modeling module and its module
instances (`apply_liger`, undone by `restoring_patches`); the fused linear cross-entropy replaces TRL's chunked
LM head as the loss head (`liger_loss_head`, CUDA only). On by default are only the kernels the training bench
(`bench/train_throughput.py`, section `liger`, in reports/perf/) showed to pay on the GPU.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from types import ModuleType
from typing import Any

import torch

from harness.model._overlap import forward_swapped
from harness.model._parts import backbone_of, model_device, unwrap

LIGER_KERNELS = ("rms_norm", "swiglu", "rope", "fused_linear_cross_entropy")
# The Liger kernels a FastPath uses when it names none: those the training bench's `liger` section measured to
# pay on the GPU with CUDA graphs and overlapped steps (reports/perf/train_throughput.json, `liger_per_kernel`).
# The fused linear cross-entropy is not among them: TRL's chunked LM head was faster.
DEFAULT_LIGER_KERNELS: tuple[str, ...] = ("rms_norm", "swiglu", "rope")
LAYER_KERNELS = ("rms_norm", "swiglu", "rope")


def liger_available(device: torch.device | str | None = None) -> tuple[bool, str]:
    """Can Liger's Triton kernels run (on `device`, when given: a CPU model on a GPU host cannot use them)?"""
    if not torch.cuda.is_available() or (device is not None and torch.device(device).type != "cuda"):
        return False, "needs CUDA (Triton kernels)"
    try:
        from liger_kernel.transformers.monkey_patch import MODEL_TYPE_TO_APPLY_LIGER_FN  # noqa: F401
    except Exception as exc:  # noqa: BLE001 - a broken install is a reason to run without it
        return False, f"liger-kernel not importable: {type(exc).__name__}: {exc}"
    return True, ""


@contextmanager
def restoring_namespace(module: ModuleType) -> Iterator[None]:
    """Undo what is patched into a module's namespace while the block runs: names added are removed, names
    replaced are put back (TRL's use_liger_kernel replaces modeling_llama's RMSNorm, MLP and RoPE for every later
    model of the process)."""
    saved = dict(vars(module))
    try:
        yield
    finally:
        for name in set(vars(module)) - set(saved):
            delattr(module, name)
        for name, value in saved.items():
            if vars(module).get(name) is not value:
                setattr(module, name, value)


@contextmanager
def restoring_patches(model: torch.nn.Module) -> Iterator[None]:
    """Undo what a kernel patcher does to `model`: module-level names in its modeling module, and methods
    bound onto module instances (Liger's instance patching)."""
    instance_keys = {id(m): set(m.__dict__) for m in model.modules()}
    try:
        with restoring_namespace(sys.modules[type(model).__module__]):
            yield
    finally:
        for m in model.modules():
            for key in set(m.__dict__) - instance_keys.get(id(m), set()):
                if key in ("forward", "_get_name", "extra_repr"):
                    del m.__dict__[key]


def apply_liger(model: torch.nn.Module, kernels: Sequence[str] = LAYER_KERNELS) -> str:
    """Liger's decoder kernels among `kernels` (rms_norm, swiglu, rope) on `model` (a transformers CausalLM);
    returns what happened. The fused linear cross-entropy is not applied here (`liger_loss_head` does it, in place
    of TRL's chunked LM head, which Liger's own patch of the model's forward would bypass)."""
    chosen = [k for k in LAYER_KERNELS if k in kernels]
    if not chosen:
        return "off: none requested"
    ok, why = liger_available(model_device(model))
    if not ok:
        return f"off: {why}"
    from liger_kernel.transformers.monkey_patch import MODEL_TYPE_TO_APPLY_LIGER_FN, _apply_liger_kernel_to_instance

    model_type = getattr(model.config, "model_type", None)
    if model_type not in MODEL_TYPE_TO_APPLY_LIGER_FN:
        return f"off: no Liger kernels for model type {model_type!r}"
    _apply_liger_kernel_to_instance(
        model=model, cross_entropy=False, fused_linear_cross_entropy=False, **{k: k in chosen for k in LAYER_KERNELS}
    )
    return "on: " + ", ".join(chosen)


@contextmanager
def liger_loss_head(model: Any) -> Iterator[str]:
    """Liger's fused linear cross-entropy as the loss head of a model TRL gave its fused LM head
    (`trl.trainer.utils.add_fused_lm_head`): a `fused_lm_head=True` forward runs the backbone, then one fused
    projection + cross-entropy over the positions with a label, summed (Liger computes the gradients in that
    forward; its per-token form recomputes them in backward). TRL's loss is the sum of `-log_probs` over the
    valid positions divided by their count, so each valid position carries the micro-batch mean; the entropy and
    token-accuracy metrics read 0 with this head."""
    causal_lm = unwrap(model)
    previous = causal_lm.__dict__.get("forward")
    if previous is None:
        yield "off: the model has no fused LM head (not a TRL SFT model)"
        return
    ok, why = liger_available(model_device(causal_lm))
    if not ok:
        yield f"off: {why}"
        return
    from liger_kernel.transformers.fused_linear_cross_entropy import LigerFusedLinearCrossEntropyLoss
    from trl.trainer.utils import FusedCausalLMOutput

    loss_fn = LigerFusedLinearCrossEntropyLoss(reduction="sum")

    def forward(
        *args: Any,
        fused_lm_head: bool = False,
        labels: torch.Tensor | None = None,
        shift_labels: torch.Tensor | None = None,
        num_items_in_batch: Any = None,
        **kwargs: Any,
    ) -> Any:
        if not fused_lm_head or (labels is None and shift_labels is None):
            return previous(
                *args,
                fused_lm_head=fused_lm_head,
                labels=labels,
                shift_labels=shift_labels,
                num_items_in_batch=num_items_in_batch,
                **kwargs,
            )
        kwargs["use_cache"] = False
        hidden = backbone_of(causal_lm)(*args, **kwargs).last_hidden_state
        if shift_labels is None:
            hidden, targets = hidden[:, :-1], labels[:, 1:]
        else:
            targets = shift_labels
        mask = targets != -100
        head = causal_lm.get_output_embeddings()
        total = loss_fn(head.weight, hidden[mask], targets[mask], head.bias)
        count = mask.sum()
        mean = total / count.clamp(min=1)
        log_probs = torch.where(mask, -mean, torch.zeros((), dtype=mean.dtype, device=mean.device))
        zeros = torch.zeros(mask.shape, dtype=mean.dtype, device=mean.device)
        loss = total / (count.clamp(min=1) if num_items_in_batch is None else num_items_in_batch)
        return FusedCausalLMOutput(loss=loss, log_probs=log_probs, entropy=zeros, is_top1=zeros, label_mask=mask)

    with forward_swapped(causal_lm, forward, previous):
        yield "on: fused_linear_cross_entropy (loss head)"
