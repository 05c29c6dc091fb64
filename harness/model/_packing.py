"""The padding-free forward: a right-padded micro-batch `[B, L]` runs as one row of its real tokens.

`position_ids` restart at 0 for every sequence and the sequence boundaries (`cu_seq_lens_q`, as in
FlashAttention's varlen API) are passed down to attention (`harness.model._attention`); the backbone's hidden
states are scattered back to `[B, L, H]`, so the trainer's loss code (TRL's chunked log-probability head, which
never materialises the full logits) sees exactly the tensors it would see without packing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any

import torch

from harness.model._attention import SEQ_LENGTHS_KWARG
from harness.model._graphs import LayerGraphs
from harness.model._overlap import PACK_KEY, HostPack, packed_layout, row_spans, to_device


def _unpack_candidate(backbone: torch.nn.Module, args: tuple, kwargs: dict[str, Any]) -> bool:
    mask = kwargs.get("attention_mask")
    return (
        not args
        and backbone.training
        and isinstance(mask, torch.Tensor)
        and mask.dim() == 2
        and kwargs.get("position_ids") is None
        and kwargs.get("past_key_values") is None
        and kwargs.get("cache") is None
        and not kwargs.get("use_cache")
        and not kwargs.get("output_hidden_states")
        and not kwargs.get("output_attentions")
        and (kwargs.get("input_ids") is None) != (kwargs.get("inputs_embeds") is None)
    )


@dataclass(frozen=True)
class PackedRow:
    """Where the real tokens of a padded [B, L] batch go in one packed row."""

    index: torch.Tensor  # flat positions (in B*L) of the real tokens, in order
    position_ids: torch.Tensor  # [1, T], restarting at 0 per sequence
    cu_seq_lens: torch.Tensor  # [n+1] int32
    lengths: tuple[int, ...]

    @property
    def max_length(self) -> int:
        return max(self.lengths)


def pack_from_mask(mask: torch.Tensor) -> PackedRow | None:
    """Describe the packed row for a 2D attention mask whose real tokens are contiguous in each row
    (None when the batch has no real token at all)."""
    spans = row_spans(mask)  # from a mask on the GPU: the one device->host copy per forward
    if spans is None:
        raise ValueError("padding-free forward needs the real tokens of each row to be contiguous")
    layout = packed_layout(spans, mask.shape[1])
    if layout is None:
        return None
    index, position_ids, cu, lengths = layout
    device = mask.device
    return PackedRow(
        index=index.to(device, non_blocking=True),
        position_ids=position_ids.to(device, non_blocking=True),
        cu_seq_lens=cu.to(device, non_blocking=True),
        lengths=lengths,
    )


def host_row(pack: HostPack, device: torch.device) -> PackedRow:
    """The packed row a HostPack describes, its tensors copied to `device` without waiting."""
    return PackedRow(
        index=to_device(pack.index, device),
        position_ids=to_device(pack.position_ids, device),
        cu_seq_lens=to_device(pack.cu_seq_lens, device),
        lengths=pack.lengths,
    )


def packed_kwargs(row: PackedRow) -> dict[str, Any]:
    """Keyword arguments for a backbone forward over one packed row (transformers' FlashAttention kwargs)."""
    return {
        "position_ids": row.position_ids,
        "attention_mask": None,
        "cu_seq_lens_q": row.cu_seq_lens,
        "cu_seq_lens_k": row.cu_seq_lens,
        "max_length_q": row.max_length,
        "max_length_k": row.max_length,
        SEQ_LENGTHS_KWARG: row.lengths,
    }


@contextmanager
def padding_free(backbone: torch.nn.Module, graphs: Callable[[], LayerGraphs | None] | None = None) -> Iterator[None]:
    """While active, a training-mode forward of `backbone` with a 2D attention mask runs on one packed row
    (its decoder layers replayed as CUDA graphs when `graphs` gives enabled ones). The packing comes from the
    batch's HostPack (keyword PACK_KEY, from the overlapped path's collator) when there is one, else from the mask."""
    original = backbone.forward

    def forward(*args: Any, **kwargs: Any) -> Any:
        pack = kwargs.pop(PACK_KEY, None)
        if not _unpack_candidate(backbone, args, kwargs):
            return original(*args, **kwargs)
        mask = kwargs["attention_mask"]
        if isinstance(pack, HostPack) and pack.shape == tuple(mask.shape):
            row = host_row(pack, mask.device)
        else:
            row = pack_from_mask(mask)
        if row is None:
            return original(*args, **kwargs)
        mask = kwargs.pop("attention_mask")
        batch, width = mask.shape
        ids, embeds = kwargs.pop("input_ids", None), kwargs.pop("inputs_embeds", None)
        if ids is not None:
            kwargs["input_ids"] = ids.reshape(-1)[row.index].unsqueeze(0)
        else:
            kwargs["inputs_embeds"] = embeds.reshape(batch * width, -1)[row.index].unsqueeze(0)
        kwargs.pop("position_ids", None)
        kwargs["use_cache"] = False
        layer_graphs = graphs() if graphs is not None else None
        with layer_graphs.standing_in(backbone) if layer_graphs is not None and layer_graphs.enabled else nullcontext():
            out = original(**kwargs, **packed_kwargs(row))
        hidden = out.last_hidden_state[0]
        out.last_hidden_state = (
            hidden.new_zeros(batch * width, hidden.shape[-1]).index_copy(0, row.index, hidden).view(batch, width, -1)
        )
        return out

    backbone.forward = forward
    try:
        yield
    finally:
        if backbone.__dict__.get("forward") is forward:
            del backbone.forward
