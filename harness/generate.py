"""Batched inference: greedy generation with left padding and KV cache, and log-likelihood scoring.

Prompts are sorted by length so each batch pads little; outputs come back in the input order.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

Progress = Callable[[int], None]


def chat_prompt(tok: Any, messages: list[dict[str, str]]) -> str:
    return tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


@torch.inference_mode()
def generate(model: Any, tok: Any, prompts: Sequence[str], *, max_new_tokens: int = 64, batch_size: int = 16,
             progress: Progress | None = None) -> list[str]:
    """Greedy completions of already-templated prompt strings, batched with left padding."""
    device = next(model.parameters()).device
    encoded = [tok(p, add_special_tokens=False)["input_ids"] for p in prompts]
    order = sorted(range(len(prompts)), key=lambda i: len(encoded[i]), reverse=True)
    outputs: list[str] = [""] * len(prompts)
    stop_ids = _stop_ids(tok, model)
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        width = max(len(encoded[i]) for i in idx)
        ids = torch.full((len(idx), width), tok.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(idx), width), dtype=torch.long)
        for row, i in enumerate(idx):
            seq = encoded[i]
            ids[row, width - len(seq):] = torch.tensor(seq)
            mask[row, width - len(seq):] = 1
        out = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), do_sample=False,
                             max_new_tokens=max_new_tokens, eos_token_id=stop_ids, pad_token_id=tok.pad_token_id)
        for row, i in enumerate(idx):
            new = out[row, width:].tolist()
            cut = next((k for k, t in enumerate(new) if t in stop_ids), len(new))
            outputs[i] = tok.decode(new[:cut], skip_special_tokens=True)
        if progress:
            progress(len(idx))
    return outputs


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


@torch.inference_mode()
def loglikelihood(model: Any, tok: Any, pairs: Sequence[tuple[str, str]], *, batch_size: int = 16,
                  progress: Progress | None = None) -> list[float]:
    """Sum of log-probabilities of each continuation given its context (lm-eval's convention:
    the continuation's tokens are those past the context's tokens in the joint encoding)."""
    device = next(model.parameters()).device
    seqs: list[tuple[list[int], int]] = []
    for context, continuation in pairs:
        ctx = tok(context, add_special_tokens=False)["input_ids"]
        whole = tok(context + continuation, add_special_tokens=False)["input_ids"]
        n_ctx = len(ctx) if whole[:len(ctx)] == ctx else len(ctx) - 1
        if tok.bos_token_id is not None and getattr(tok, "add_bos_token", False):
            whole, n_ctx = [tok.bos_token_id] + whole, n_ctx + 1
        seqs.append((whole, max(n_ctx, 1)))
    order = sorted(range(len(seqs)), key=lambda i: len(seqs[i][0]), reverse=True)
    scores = [0.0] * len(seqs)
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        width = max(len(seqs[i][0]) for i in idx)
        ids = torch.full((len(idx), width), tok.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(idx), width), dtype=torch.long)
        for row, i in enumerate(idx):
            seq = seqs[i][0]
            ids[row, :len(seq)] = torch.tensor(seq)
            mask[row, :len(seq)] = 1
        logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.float()
        logprobs = torch.log_softmax(logits[:, :-1], dim=-1)
        targets = ids[:, 1:].to(device)
        token_lp = logprobs.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
        for row, i in enumerate(idx):
            seq, n_ctx = seqs[i]
            scores[i] = float(token_lp[row, n_ctx - 1:len(seq) - 1].sum())
        if progress:
            progress(len(idx))
    return scores
