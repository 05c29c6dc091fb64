"""Batched inference: greedy generation with left padding and KV cache, and log-likelihood scoring.

Generation: prompts are tokenized in one call and sorted by length, so each batch pads little;
outputs come back in the input order. Decoding is greedy, so an item's output does not depend on
which other items share its batch (up to float rounding, which in float32 never flips a greedy
choice in practice; the tests check that every batch size gives the same outputs).

Log-likelihood: requests that feed the model the same tokens (e.g. one-token answers to one
question) share one forward pass; each batch runs padding-free as one packed row with
per-sequence attention (`harness.model._fastpath`), and the vocabulary projection and log-softmax run
only at the continuation's positions instead of over every position of every sequence.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from harness.model._attention import (
    ATTENTION_NAME,
    attention_implementation,
    register_attention,
    select_attention_kernel,
)
from harness.model._packing import PackedRow, packed_kwargs
from harness.model._parts import backbone_of, model_device, unwrap

Progress = Callable[[int], None]


def chat_prompt(tok: Any, messages: list[dict[str, str]]) -> str:
    return tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


MAX_DEVICE_BATCH = 512  # a larger batch decodes no faster once the GPU is busy, and pads more
MEMORY_SHARE = 0.5  # of the free device memory at the time of the call (other trials may share the GPU)


def device_batch_size(model: Any, n_prompts: int, longest_prompt: int, max_new_tokens: int, cpu_default: int) -> int:
    """The generation batch for this device: on CPU the suite's `batch_size`; on a CUDA GPU as many sequences
    as the KV cache and the last step's logits fit in half the free memory (capped at MAX_DEVICE_BATCH)."""
    device = model_device(model)
    if device.type != "cuda" or n_prompts == 0:
        return cpu_default
    free, _total = torch.cuda.mem_get_info(device)
    config = getattr(model, "config", None)
    text = getattr(config, "get_text_config", lambda: config)()
    layers = getattr(text, "num_hidden_layers", 32)
    heads = getattr(text, "num_attention_heads", 32)
    kv_heads = getattr(text, "num_key_value_heads", None) or heads
    head_dim = getattr(text, "head_dim", None) or getattr(text, "hidden_size", 4096) // heads
    vocab = getattr(text, "vocab_size", 32000)
    width = next(model.parameters()).element_size()
    per_token = 2 * layers * kv_heads * head_dim * width  # keys and values, every layer
    per_sequence = per_token * (longest_prompt + max_new_tokens) + vocab * 4 * 2  # + float32 logits and scores
    fits = int(free * MEMORY_SHARE // max(per_sequence, 1))
    return max(1, min(n_prompts, MAX_DEVICE_BATCH, fits))


@torch.inference_mode()
def generate(
    model: Any,
    tok: Any,
    prompts: Sequence[str],
    *,
    max_new_tokens: int = 64,
    batch_size: int = 16,
    progress: Progress | None = None,
    adapter_names: Sequence[str] | None = None,
    device_batch: bool = False,
) -> list[str]:
    """Greedy completions of already-templated prompt strings, batched with left padding.

    `adapter_names` (one per prompt) runs each prompt through its own LoRA adapter of a PEFT model holding
    several, in the same batches (PEFT mixed-adapter inference). `device_batch` sizes the batch for the device
    (`device_batch_size`) instead of using `batch_size`."""
    device = model_device(model)
    encoded = tok(list(prompts), add_special_tokens=False)["input_ids"] if prompts else []
    if device_batch and encoded:
        batch_size = device_batch_size(model, len(encoded), max(map(len, encoded)), max_new_tokens, batch_size)
    order = sorted(range(len(prompts)), key=lambda i: len(encoded[i]), reverse=True)
    outputs: list[str] = [""] * len(prompts)
    stop_ids = _stop_ids(tok, model)
    stops = set(stop_ids)
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        ids, mask = _left_padded([encoded[i] for i in idx], tok.pad_token_id)
        width = ids.shape[1]
        extra = {"adapter_names": [adapter_names[i] for i in idx]} if adapter_names is not None else {}
        out = model.generate(
            input_ids=ids.to(device),
            attention_mask=mask.to(device),
            do_sample=False,
            max_new_tokens=max_new_tokens,
            eos_token_id=stop_ids,
            pad_token_id=tok.pad_token_id,
            **extra,
        )
        for row, new in zip(idx, out[:, width:].tolist(), strict=True):
            cut = next((k for k, t in enumerate(new) if t in stops), len(new))
            outputs[row] = tok.decode(new[:cut], skip_special_tokens=True)
        if progress:
            progress(len(idx))
    return outputs


def _left_padded(seqs: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for row, seq in enumerate(seqs):
        if seq:
            ids[row, width - len(seq) :] = torch.tensor(seq)
            mask[row, width - len(seq) :] = 1
    return ids, mask


def _stop_ids(tok: Any, model: Any) -> list[int]:
    ids = model.generation_config.eos_token_id
    stops = set(ids if isinstance(ids, list) else [ids] if ids is not None else [])
    if tok.eos_token_id is not None:
        stops.add(tok.eos_token_id)
    for special in ("<|im_end|>", "<|eot_id|>", "<|end|>"):
        tid = tok.convert_tokens_to_ids(special)
        if isinstance(tid, int) and tid != tok.unk_token_id and tid is not None:
            stops.add(tid)
    return sorted(stops)


def encode_pairs(tok: Any, pairs: Sequence[tuple[str, str]]) -> list[tuple[list[int], int]]:
    """(context tokens + continuation tokens, number of context tokens) per pair, by lm-eval's convention:
    trailing whitespace of the context moves to the continuation; the context is encoded on its own and the
    continuation's tokens are those of the joint encoding past the context's token count (so a token that
    straddles the boundary in the joint encoding belongs to the context). A BOS token is prepended when the
    tokenizer adds one."""
    if not pairs:
        return []
    split = []
    for context, continuation in pairs:
        stripped = context.rstrip()
        split.append((stripped, context[len(stripped) :] + continuation))
    contexts = tok([c for c, _ in split], add_special_tokens=False)["input_ids"]
    wholes = tok([c + x for c, x in split], add_special_tokens=False)["input_ids"]
    bos = tok.bos_token_id if tok.bos_token_id is not None and getattr(tok, "add_bos_token", False) else None
    out = []
    for ctx, joint in zip(contexts, wholes, strict=True):
        whole, n_ctx = ctx + joint[len(ctx) :], len(ctx)
        if bos is not None:
            whole, n_ctx = [bos, *whole], n_ctx + 1
        out.append((whole, max(n_ctx, 1)))
    return out


@torch.inference_mode()
def loglikelihood(
    model: Any, tok: Any, pairs: Sequence[tuple[str, str]], *, batch_size: int = 16, progress: Progress | None = None
) -> list[float]:
    """Sum of log-probabilities of each continuation given its context (see `encode_pairs`)."""
    seqs = encode_pairs(tok, pairs)
    scores = [0.0] * len(seqs)
    # one forward per distinct input (a sequence's tokens but its last): answers that differ only in their
    # last token read the same hidden states
    inputs: dict[tuple[int, ...], list[int]] = {}
    for i, (whole, n_ctx) in enumerate(seqs):
        if n_ctx < len(whole):
            inputs.setdefault(tuple(whole[:-1]), []).append(i)
    unique = sorted(inputs, key=len, reverse=True)
    mode = scoring_mode(model)
    done = len(seqs) - sum(len(m) for m in inputs.values())
    if progress and done:
        progress(done)
    for start in range(0, len(unique), batch_size):
        batch = unique[start : start + batch_size]
        members = [i for key in batch for i in inputs[key]]
        rows, targets, owner = _continuation_positions(batch, inputs, seqs, _row_offsets(batch, mode == "packed"))
        logprobs = _SCORERS[mode](model, batch, rows, targets)
        sums = torch.zeros(len(members), dtype=torch.float64, device=logprobs.device).index_add_(
            0, torch.tensor(owner, device=logprobs.device), logprobs.double()
        )
        for i, value in zip(members, sums.tolist(), strict=True):
            scores[i] = value
        if progress:
            progress(len(members))
    return scores


def scoring_mode(model: Any) -> str:
    """How `loglikelihood` runs the model: "packed" (one padding-free row per batch: CPU, or CUDA in bf16/fp16
    where the FlashAttention varlen kernel runs), "padded" (right-padded backbone forward, LM head only at
    continuation tokens: CUDA in float32), or "full" (the model's own forward, for architectures whose logits
    need more than backbone + LM head; see `packable`)."""
    if not packable(model):
        return "full"
    device = model_device(model)
    if device.type == "cpu":
        return "packed"

    dtype = next(p.dtype for p in model.parameters() if p.is_floating_point())
    if (
        device.type == "cuda"
        and dtype in (torch.bfloat16, torch.float16)
        and select_attention_kernel(device)[0] == "varlen"
    ):
        return "packed"
    return "padded"


def _row_offsets(batch: list[tuple[int, ...]], packed: bool) -> list[int]:
    """Where each input's first token sits in the flattened hidden states of its batch."""
    if packed:
        offsets, total = [], 0
        for key in batch:
            offsets.append(total)
            total += len(key)
        return offsets
    width = max(len(k) for k in batch)
    return [b * width for b in range(len(batch))]


def _continuation_positions(
    batch: list[tuple[int, ...]],
    inputs: dict[tuple[int, ...], list[int]],
    seqs: list[tuple[list[int], int]],
    offsets: list[int],
) -> tuple[list[int], list[int], list[int]]:
    """(hidden row, target token, index of the request in this batch) for every continuation token."""
    rows, targets, owner = [], [], []
    k = 0
    for key, offset in zip(batch, offsets, strict=True):
        for i in inputs[key]:
            whole, n_ctx = seqs[i]
            for p in range(n_ctx - 1, len(whole) - 1):  # the logits at position p predict token p + 1
                rows.append(offset + p)
                targets.append(whole[p + 1])
                owner.append(k)
            k += 1
    return rows, targets, owner


def _target_logprobs(
    hidden_or_logits: torch.Tensor,
    rows: torch.Tensor,
    targets: torch.Tensor,
    head: Callable[[torch.Tensor], torch.Tensor] | None = None,
    chunk: int = 2048,
) -> torch.Tensor:
    """log p(target) at each of `rows`; each distinct row is projected (if `head`) and log-softmaxed once,
    `chunk` rows at a time, so memory stays at chunk x vocab whatever the number of continuation tokens."""
    distinct, inverse = rows.unique(return_inverse=True)
    out = torch.empty(len(rows), dtype=torch.float32, device=rows.device)
    for start in range(0, len(distinct), chunk):
        picked = hidden_or_logits.index_select(0, distinct[start : start + chunk])
        logp = torch.log_softmax((head(picked) if head is not None else picked).float(), dim=-1)
        here = (inverse >= start) & (inverse < start + chunk)
        out[here] = logp[inverse[here] - start, targets[here]]
    return out


def _right_padded(batch: list[tuple[int, ...]], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(k) for k in batch)
    ids = torch.zeros((len(batch), width), dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for row, key in enumerate(batch):
        ids[row, : len(key)] = torch.tensor(key)
        mask[row, : len(key)] = 1
    return ids.to(device), mask.to(device)


def _full_logprobs(model: Any, batch: list[tuple[int, ...]], rows: list[int], targets: list[int]) -> torch.Tensor:
    """Right-padded forward of the whole model (any architecture); log-softmax only at the needed rows."""
    ids, mask = _right_padded(batch, model_device(model))
    logits = model(input_ids=ids, attention_mask=mask).logits
    return _target_logprobs(
        logits.reshape(-1, logits.shape[-1]),
        torch.tensor(rows, device=logits.device),
        torch.tensor(targets, device=logits.device),
    )


def _padded_logprobs(model: Any, batch: list[tuple[int, ...]], rows: list[int], targets: list[int]) -> torch.Tensor:
    """Right-padded backbone forward; the LM head and log-softmax only at the needed rows."""

    causal_lm = unwrap(model)
    ids, mask = _right_padded(batch, model_device(model))
    hidden = backbone_of(causal_lm)(input_ids=ids, attention_mask=mask, use_cache=False).last_hidden_state
    return _target_logprobs(
        hidden.reshape(-1, hidden.shape[-1]),
        torch.tensor(rows, device=ids.device),
        torch.tensor(targets, device=ids.device),
        head=causal_lm.get_output_embeddings(),
    )


def _packed_logprobs(model: Any, batch: list[tuple[int, ...]], rows: list[int], targets: list[int]) -> torch.Tensor:
    """The batch as one packed row through the backbone; the LM head only at the needed rows."""

    causal_lm = unwrap(model)
    device = model_device(model)
    lengths = [len(k) for k in batch]
    row = PackedRow(
        index=torch.arange(sum(lengths)),
        lengths=tuple(lengths),
        position_ids=torch.cat([torch.arange(n) for n in lengths]).unsqueeze(0).to(device),
        cu_seq_lens=torch.tensor([0, *_cumsum(lengths)], dtype=torch.int32, device=device),
    )
    ids = torch.tensor([t for key in batch for t in key], device=device).unsqueeze(0)
    register_attention()
    select_attention_kernel(device)
    with attention_implementation(causal_lm, ATTENTION_NAME):
        hidden = backbone_of(causal_lm)(input_ids=ids, use_cache=False, **packed_kwargs(row)).last_hidden_state[0]
    return _target_logprobs(
        hidden,
        torch.tensor(rows, device=device),
        torch.tensor(targets, device=device),
        head=causal_lm.get_output_embeddings(),
    )


_SCORERS = {"packed": _packed_logprobs, "padded": _padded_logprobs, "full": _full_logprobs}


def _cumsum(values: list[int]) -> list[int]:
    out, total = [], 0
    for v in values:
        total += v
        out.append(total)
    return out


def packable(model: Any) -> bool:
    """Whether the padding-free scoring path computes exactly what the model's own forward computes: a
    decoder whose attention goes through transformers' AttentionInterface, without sliding windows, logit
    soft-capping or logit scaling (those take the padded path)."""

    causal_lm = unwrap(model)
    config = getattr(causal_lm, "config", None)
    if config is None or not hasattr(causal_lm, "base_model_prefix") or causal_lm.get_output_embeddings() is None:
        return False
    text = config.get_text_config()
    for name in (
        "final_logit_softcapping",
        "attn_logit_softcapping",
        "logit_scale",
        "logits_scaling",
        "output_multiplier",
        "lm_head_multiplier",
    ):
        if getattr(text, name, None) not in (None, 1, 1.0):
            return False
    if getattr(text, "sliding_window", None) is not None and getattr(text, "use_sliding_window", True):
        return False
    if getattr(text, "layer_types", None) and any(t != "full_attention" for t in text.layer_types):
        return False
    can_set = getattr(causal_lm, "_can_set_attn_implementation", None)
    if can_set is None or not can_set():
        return False
    backbone = getattr(causal_lm, causal_lm.base_model_prefix, None)
    return backbone is not None and hasattr(backbone, "layers")
