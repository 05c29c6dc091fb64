"""The memory plan: how many decoder layers to checkpoint and how many micro-batches to fold into one.

The bytes each decoder layer saves per token are measured on the device (`activation_bytes_per_token`), and the
plan (`plan_memory`) picks how many layers to checkpoint (none if memory allows) and whether gradient-accumulation
micro-batches can be merged into one larger micro-batch. The plan is for the longest micro-batch the data can
make; each micro-batch then checkpoints only the layers its own tokens need (`MemoryModel.layers_to_checkpoint`),
so shorter ones run without recomputation.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from harness.model._graphs import bucket_tokens
from harness.model._parts import backbone_of, decoder_layers, unwrap

GIB = 2**30


@dataclass
class MemoryPlan:
    layers: int
    checkpointed_layers: int
    fold: int
    tokens_per_micro_batch: int
    activation_bytes_per_token_layer: float
    budget_gib: float | None  # None: no budget (CPU)
    estimated_peak_gib: float
    fits: bool
    per_micro_batch: bool = False  # checkpoint, per micro-batch, only the layers its tokens need (up to the above)
    memory: MemoryModel | None = field(default=None, repr=False)


def activation_bytes_per_token(model: Any, tokens: int = 256) -> float:
    """Bytes autograd keeps per token for one decoder layer in a training forward, measured on the model's
    device with the current patches (kernels, attention, LoRA) by counting the tensors saved for backward."""
    causal_lm = unwrap(model)
    backbone = backbone_of(causal_lm)
    first = decoder_layers(backbone)[0]
    device = next(p.device for p in model.parameters())
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    saved: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        try:
            storage = t.untyped_storage()
        except (RuntimeError, NotImplementedError):
            return t
        if storage.data_ptr() not in params:
            saved[storage.data_ptr()] = storage.nbytes()
        return t

    class _Stop(Exception):
        pass

    def stop(*_: Any) -> None:
        raise _Stop

    half = max(tokens // 2, 8)
    vocab = causal_lm.config.get_text_config().vocab_size
    ids = torch.randint(0, vocab, (2, half), device=device, generator=torch.Generator(device).manual_seed(0))
    mask = torch.ones_like(ids)
    was_training = model.training
    model.train()
    handle = first.register_forward_hook(stop)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
    devices = [device.index or 0] if device.type == "cuda" else []
    try:
        with (
            torch.random.fork_rng(devices=devices),
            autocast,
            torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t),
        ):
            try:
                backbone(input_ids=ids, attention_mask=mask, use_cache=False)
            except _Stop:
                pass
    finally:
        handle.remove()
        model.train(was_training)
    return sum(saved.values()) / (2 * half)


def max_tokens_per_micro_batch(lengths: Sequence[int], micro_batch: int) -> int:
    """Upper bound of the real tokens in one micro-batch: the longest `micro_batch` sequences together."""
    return int(sum(sorted(lengths, reverse=True)[:micro_batch]))


def optimizer_bytes(model: torch.nn.Module) -> int:
    """Gradients plus AdamW's two moments for every trainable parameter."""
    return sum(3 * p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)


@dataclass(frozen=True)
class MemoryModel:
    """The peak memory of one micro-batch as a function of its tokens and of the layers checkpointed."""

    layers: int
    hidden: int
    vocab: int
    act_bytes: float  # bytes a decoder layer keeps per token for its backward
    boundary_bytes: int  # bytes a checkpointed layer keeps per token (its input)
    fixed_bytes: int  # weights, gradients, optimizer state
    budget_bytes: int  # 0: no budget (CPU)

    def activations(self, tokens: int, checkpointed: int) -> float:
        """Bytes the decoder layers keep for backward (a checkpointed layer keeps its input, and one layer's
        worth is recomputed at a time)."""
        kept = self.layers - checkpointed
        return tokens * (
            kept * self.act_bytes + checkpointed * self.boundary_bytes + (self.act_bytes if checkpointed else 0)
        )

    def peak(self, tokens: int, checkpointed: int) -> float:
        head = min(tokens, 4096) * min(self.vocab, 32768) * 2 + tokens * self.hidden * 16  # chunked LM head, repad
        return self.fixed_bytes + self.activations(tokens, checkpointed) + head + 0.05 * self.budget_bytes + 128 * 2**20

    def layers_to_checkpoint(self, tokens: int) -> int:
        """The fewest layers to checkpoint for a micro-batch of `tokens` tokens to fit (all when none fits)."""
        if not self.budget_bytes:
            return 0
        return next((k for k in range(self.layers + 1) if self.peak(tokens, k) <= self.budget_bytes), self.layers)


def graph_length_limit(memory: MemoryModel, longest: int) -> tuple[int, MemoryModel] | None:
    """With per-micro-batch checkpointing: the longest padded length whose micro-batches replay as CUDA graphs
    (none checkpointed), and the memory model of the others, which run eagerly beside the graphs' memory pool
    (the activations of that length, kept for the run). The longest length that fits without checkpointing and
    still leaves the longest micro-batch room with every layer checkpointed; None when none does."""
    sizes, b = [], bucket_tokens(1)
    while b <= bucket_tokens(longest):
        sizes.append(b)
        b = bucket_tokens(b + 1)
    for b in reversed(sizes):
        if memory.peak(b, 0) > memory.budget_bytes:
            continue
        beside = replace(memory, fixed_bytes=memory.fixed_bytes + int(memory.activations(b, 0)))
        if longest <= b or beside.peak(longest, memory.layers) <= memory.budget_bytes:
            return b, beside
    return None


def plan_memory(
    *,
    layers: int,
    hidden: int,
    vocab: int,
    act_bytes: float,
    boundary_bytes: int,
    fixed_bytes: int,
    budget_bytes: int,
    tokens_for_fold: dict[int, int],
    mode: str = "auto",
) -> MemoryPlan:
    """Pick (checkpointed layers, fold) for the largest micro-batch the data can make: no checkpointing and the
    largest fold that fit the budget; else fold 1 and as few checkpointed layers as fit; else everything
    checkpointed (the run may still not fit). mode "none" never checkpoints (fold 1 unless a larger one fits),
    "full" checkpoints every layer. In "auto" mode training then checkpoints per micro-batch only the layers
    that micro-batch needs (`MemoryModel.layers_to_checkpoint`): most are shorter than the worst case."""
    memory = MemoryModel(layers, hidden, vocab, act_bytes, boundary_bytes, fixed_bytes, budget_bytes)

    def made(fold: int, checkpointed: int) -> MemoryPlan:
        estimate = memory.peak(tokens_for_fold[fold], checkpointed)
        return MemoryPlan(
            layers=layers,
            checkpointed_layers=checkpointed,
            fold=fold,
            tokens_per_micro_batch=tokens_for_fold[fold],
            activation_bytes_per_token_layer=act_bytes,
            budget_gib=budget_bytes / GIB if budget_bytes else None,
            estimated_peak_gib=estimate / GIB,
            fits=not budget_bytes or estimate <= budget_bytes,
            per_micro_batch=mode == "auto",
            memory=memory,
        )

    if mode == "full":
        return made(1, layers)
    for fold in sorted(tokens_for_fold, reverse=True):
        if budget_bytes and memory.peak(tokens_for_fold[fold], 0) <= budget_bytes:
            return made(fold, 0)
    if mode == "none":
        return made(1, 0)
    return made(1, memory.layers_to_checkpoint(tokens_for_fold[1]))


def _tokens_in(args: tuple, kwargs: dict[str, Any]) -> int:
    """Token positions in a decoder layer's input (hidden states [..., hidden])."""
    hidden = args[0] if args else kwargs.get("hidden_states")
    return hidden.numel() // hidden.shape[-1] if isinstance(hidden, torch.Tensor) and hidden.dim() else 0


@contextmanager
def checkpointing(
    layers: Sequence[torch.nn.Module], count: int, per_micro_batch: Callable[[int], int] | None = None
) -> Iterator[None]:
    """Activation checkpointing (non-reentrant) of the first `count` layers; with `per_micro_batch` (tokens ->
    layers), of only as many of them as the micro-batch at hand needs. Wraps the layer's forward rather than
    setting transformers' flag, so trainers that toggle the flag (TRL's reference forward) leave it be."""
    from torch.utils.checkpoint import checkpoint

    wrapped = []
    for index, layer in enumerate(list(layers)[:count]):
        original = layer.forward

        def forward(
            *args: Any,
            _original: Callable[..., Any] = original,
            _layer: torch.nn.Module = layer,
            _index: int = index,
            **kwargs: Any,
        ) -> Any:
            needed = per_micro_batch is None or _index < per_micro_batch(_tokens_in(args, kwargs))
            if _layer.training and torch.is_grad_enabled() and needed:
                # the recompute would update a KV cache a second time: no cache under checkpointing (as transformers)
                kwargs.update(
                    {k: None for k in ("cache", "past_key_values", "layer_past") if kwargs.get(k) is not None}
                )
                if kwargs.get("use_cache"):
                    kwargs["use_cache"] = False
                return checkpoint(functools.partial(_original, **kwargs), *args, use_reentrant=False)
            return _original(*args, **kwargs)

        layer.forward = forward
        wrapped.append((layer, forward))
    try:
        yield
    finally:
        for layer, forward in wrapped:
            if layer.__dict__.get("forward") is forward:
                del layer.forward
