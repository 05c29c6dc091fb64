"""Batch-invariant scoring: an item's output and log-likelihood depend only on the model and the item.

Why the fast path is not invariant. A GEMM's result for one row depends on the kernel its shape selects (tile
sizes, split-K, the reduction order), and the shape is the batch: how many items the scheduler put together,
how long the longest of them is, which adapters share the batch. SDPA picks another kernel when no row of the
batch has padding (transformers passes `is_causal` instead of a mask), decode kernels split the keys by the
cache length, and PEFT runs a mixed-adapter batch's LoRA on sub-batches of whatever size the mix gives. So the
same item, greedy-decoded, can come out different at batch 1 and batch 32 (the last bit of a logit flips an
argmax), and a log-likelihood moves at its last bits.

Technique: fixed shapes per item. Within one forward rows never interact (attention, norms and the
log-softmax reduce within a row; a GEMM's row is its own dot products), so if every forward that touches an
item has a shape that the item alone determines, the kernels, their reduction orders and so the item's bits
are the same whatever shares the batch. That needs no custom kernels (vLLM's batch-invariant mode and
Thinking Machines' `batch_invariant_ops` replace matmul, RMSNorm and attention with fixed-reduction-order
kernels, which are H100/H200-only and Triton-bound); it works with stock PyTorch and transformers on CPU and
on any CUDA GPU, and fixed shapes are exactly what a CUDA graph needs, which is where the speed comes from:

* **Lanes.** Every forward runs exactly `lanes` rows (a constant of the device: LANES_CUDA, LANES_CPU). A
  group with fewer real items is filled with copies of one of them, whose outputs are dropped. The suite's
  `batch_size` and device-sized batching do not change any shape in this mode.
* **Buckets.** An item's prompt is left-padded to its bucket (its length rounded up to a multiple of
  `bucket`); only items of one bucket share a forward, so an item's padding depends on itself alone.
* **Generation.** Greedy decoding over a fixed key/value cache of `span`-rounded length (bucket +
  max_new_tokens, rounded up): a prefill of (lanes, bucket) tokens, then decode steps of (lanes, 1) that
  attend over the whole cache through an explicit additive mask built here (never `is_causal`, never a mask
  transformers derives from the batch: a 4D mask is used as given). All lanes decode until every lane has
  stopped or max_new_tokens; an item's tokens past its own stop are discarded. On CUDA the decode step (the
  forward, the argmax, the bookkeeping of positions, mask and stops) is captured once per cache length into a
  `torch.cuda.CUDAGraph` and replayed: a small model's decode step is a few hundred kernel launches, which
  eager PyTorch issues slower than the GPU runs them. The decoders (state, cache, graph) stay on the model for
  later calls, keyed by the weights' addresses and the active adapters. `TUNEGATE_EVAL_GRAPHS=0` decodes
  eagerly (the same step function).
* **Attention** is `fixed_attention`, registered with transformers for the duration: the 4D mask as given, and
  grouped-query heads read in place (transformers' SDPA path copies every key and value once per query head
  whenever a mask is given, which over a whole fixed cache was most of a small model's decode step). Its
  reductions are per (row, head), so the split-KV choice of fused decode kernels does not arise.
* **Log-likelihood** (choice ranking, lm-eval loglikelihood requests): each distinct input (a sequence but its
  last token) is right-padded to its bucket, `lanes` inputs a forward through the backbone with an explicit
  causal mask (eager on CUDA too: one forward per group has few launches to save); the hidden states at
  continuation positions are gathered and projected `head_chunk` rows at a time (the last chunk zero-filled),
  then a float32 log-softmax per row; sums in float64, in token order.
* **Adapters.** PEFT's mixed-adapter batches run LoRA on sub-batches of varying size, so in this mode every
  forward is single-adapter: `evaluate_adapters` scores one adapter after another.

What it costs: padding to lanes and buckets computes rows nobody reads (a suite of 5 items still runs
`lanes` rows), and every lane decodes until the slowest one stops. What it does not cover: the bits depend on
the kernels, so a different GPU model, PyTorch/CUDA/transformers version, dtype, attention implementation, or
CPU against GPU can give other outputs; the numerics record (`harness.model._numerics`) stores all of these
next to each score. Architectures the fixed-shape path cannot drive (see `supported`) fall back to the fast path,
and the record says so.
"""

from __future__ import annotations

import inspect
import math
import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from harness.model import _attention as attention
from harness.model import _generate as gen
from harness.model import _parts as model_parts

Progress = Callable[[int], None]

# A graphed decode step of a small model costs about the same at 8 or 64 lanes (it is a few hundred tiny kernels),
# so the CUDA lanes are many and the prompt buckets coarse (fewer, fuller groups); $TUNEGATE_EVAL_LANES overrides
# the lanes (e.g. fewer for a large model's KV cache; the numerics record keeps the value: scores made with other
# lanes are other numerics).
LANES_CUDA, BUCKET_CUDA, SPAN_CUDA, HEAD_CHUNK_CUDA = 64, 128, 128, 64
LANES_CPU, BUCKET_CPU, SPAN_CPU, HEAD_CHUNK_CPU = 8, 16, 64, 16
ENV_LANES = "TUNEGATE_EVAL_LANES"
CHECK_EVERY = 8  # decode steps between looks at whether every lane has stopped (each look syncs the device)
ENV_GRAPHS = "TUNEGATE_EVAL_GRAPHS"
ATTENTION_NAME = "tunegate_fixed"


@dataclass(frozen=True)
class Shapes:
    """The fixed shapes of the invariant mode on one device type (part of the numerics record)."""

    lanes: int
    bucket: int
    span: int
    head_chunk: int
    graphs: bool

    def describe(self) -> str:
        return (
            f"fixed-shape lanes={self.lanes} bucket={self.bucket} span={self.span} head_chunk={self.head_chunk} "
            f"graphs={'on' if self.graphs else 'off'}"
        )


def shapes_for(device: torch.device) -> Shapes:
    lanes = os.environ.get(ENV_LANES, "")
    if device.type == "cuda":
        return Shapes(
            int(lanes) if lanes.isdigit() and int(lanes) > 0 else LANES_CUDA,
            BUCKET_CUDA,
            SPAN_CUDA,
            HEAD_CHUNK_CUDA,
            os.environ.get(ENV_GRAPHS, "1") != "0",
        )
    return Shapes(
        int(lanes) if lanes.isdigit() and int(lanes) > 0 else LANES_CPU, BUCKET_CPU, SPAN_CPU, HEAD_CHUNK_CPU, False
    )


def supported(model: Any) -> str | None:
    """None when the fixed-shape path can drive `model`, else why not (then the fast path scores it)."""
    if not gen.packable(model):
        return "not a plain decoder (sliding windows, soft-capping, logit scaling or no attention interface)"
    return None


def _round_up(n: int, step: int) -> int:
    return max(step, -(-n // step) * step)


def _cache_kwarg(backbone: torch.nn.Module) -> str:
    """The name the backbone's forward takes its KV cache by (`cache` in newer transformers)."""
    return "cache" if "cache" in inspect.signature(backbone.forward).parameters else "past_key_values"


class _FixedCache:
    """A key/value cache of fixed shape (lanes, kv heads, length, head dim) per layer; `write` holds the cache
    positions the next forward's tokens go to (a device tensor, so a captured graph reads the current value).
    Duck-typed to what transformers' attention layers call (`update`, `get_seq_length`)."""

    def __init__(self) -> None:
        self.keys: dict[int, torch.Tensor] = {}
        self.values: dict[int, torch.Tensor] = {}
        self.length = 0
        self.write: torch.Tensor | None = None

    def update(
        self, key: torch.Tensor, value: torch.Tensor, layer_idx: int, *args: Any, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if layer_idx not in self.keys:
            lanes, heads, _, dim = key.shape
            self.keys[layer_idx] = key.new_zeros((lanes, heads, self.length, dim))
            self.values[layer_idx] = value.new_zeros((lanes, value.shape[1], self.length, value.shape[-1]))
        self.keys[layer_idx].index_copy_(2, self.write, key)
        self.values[layer_idx].index_copy_(2, self.write, value)
        return self.keys[layer_idx], self.values[layer_idx]

    def get_seq_length(self, *args: Any) -> int:
        return 0

    def clear(self) -> None:
        for t in (*self.keys.values(), *self.values.values()):
            t.zero_()


class _Decoder:
    """Greedy decoding of `lanes` rows over a cache of `length` positions: the state tensors every step reads and
    writes in place (so one captured graph serves every group of this length)."""

    def __init__(
        self, causal_lm: Any, shapes: Shapes, length: int, stops: list[int], device: torch.device, dtype: torch.dtype
    ) -> None:
        self.causal_lm, self.backbone = causal_lm, model_parts.backbone_of(causal_lm)
        self.head = causal_lm.get_output_embeddings()
        self.cache_kw = _cache_kwarg(self.backbone)
        self.lanes, self.length, self.dtype = shapes.lanes, length, dtype
        self.cache = _FixedCache()
        self.cache.length = length
        lanes = shapes.lanes
        self.ids = torch.zeros((lanes, 1), dtype=torch.long, device=device)
        self.pos = torch.zeros((lanes, 1), dtype=torch.long, device=device)
        self.step_no = torch.zeros((1,), dtype=torch.long, device=device)
        self.base = torch.zeros((1,), dtype=torch.long, device=device)
        self.valid = torch.zeros((lanes, length), dtype=torch.bool, device=device)
        self.out = torch.zeros((lanes, length + 2), dtype=torch.long, device=device)  # + the warm-up's writes
        self.done = torch.zeros((lanes,), dtype=torch.bool, device=device)
        self.stops = torch.tensor(stops or [-1], dtype=torch.long, device=device)
        self.arange = torch.arange(length, device=device)
        self.graph: torch.cuda.CUDAGraph | None = None

    def _forward(self, ids: torch.Tensor, mask: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        hidden = self.backbone(
            input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True, **{self.cache_kw: self.cache}
        ).last_hidden_state
        return self.head(hidden[:, -1, :]).argmax(-1)

    def _additive(self, allowed: torch.Tensor) -> torch.Tensor:
        zero = torch.zeros((), dtype=self.dtype, device=allowed.device)
        return torch.where(allowed, zero, torch.finfo(self.dtype).min)

    def prefill(self, rows: list[list[int]], bucket: int, pad_id: int) -> None:
        """Load a group (exactly `lanes` rows, each at most `bucket` tokens), left-padded to `bucket`, and run
        its prompt: the first generated token of each lane lands in `out[:, 0]`."""
        device = self.ids.device
        ids = torch.full((self.lanes, bucket), pad_id, dtype=torch.long)
        valid = torch.zeros((self.lanes, self.length), dtype=torch.bool)
        for r, seq in enumerate(rows):
            if seq:
                ids[r, bucket - len(seq) :] = torch.tensor(seq)
                valid[r, bucket - len(seq) : bucket] = True
        self.valid.copy_(valid.to(device))
        self.cache.clear()
        q = torch.arange(bucket, device=device)
        causal = self.arange[None, :] <= q[:, None]  # (bucket, length)
        allowed = (causal[None] & self.valid[:, None, :]) | (self.arange[None, None, :] == q[None, :, None])
        pos = (self.valid[:, :bucket].long().cumsum(-1) - 1).clamp(min=0)
        self.cache.write = q
        first = self._forward(ids.to(device), self._additive(allowed)[:, None], pos)
        self.out.zero_()
        self.out[:, 0] = first
        self.ids.copy_(first[:, None])
        self.pos.copy_(self.valid.sum(-1, keepdim=True))
        self.step_no.zero_()
        self.base.fill_(bucket)
        self.done.copy_((first[:, None] == self.stops[None, :]).any(-1))

    def step(self) -> None:
        """One decode step for every lane, all in place: the token at `out[:, step]` is fed, the next one
        is written to `out[:, step + 1]`."""
        write = self.base + self.step_no
        self.cache.write = write
        allowed = self.valid | ((self.arange >= self.base) & (self.arange <= write))[None, :]
        nxt = self._forward(self.ids, self._additive(allowed)[:, None, None, :], self.pos)
        self.out.index_copy_(1, self.step_no + 1, nxt[:, None])
        self.done.logical_or_((nxt[:, None] == self.stops[None, :]).any(-1))
        self.ids.copy_(nxt[:, None])
        self.pos.add_(1)
        self.step_no.add_(1)

    def capture(self, pool: Any) -> None:
        """Warm up on a side stream, then capture `step` (the state is reset by the next `prefill`)."""
        self.base.fill_(0)
        stream = torch.cuda.Stream(self.ids.device)
        stream.wait_stream(torch.cuda.current_stream(self.ids.device))
        with torch.cuda.stream(stream):
            self.cache.write = torch.zeros((1,), dtype=torch.long, device=self.ids.device)
            for _ in range(2):
                self.step()
        torch.cuda.current_stream(self.ids.device).wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=pool):
            self.step()
        self.graph = graph

    def decode(self, max_new: int) -> torch.Tensor:
        """Every lane's first `max_new` tokens after `prefill`."""
        for k in range(max_new - 1):
            if k % CHECK_EVERY == 0 and bool(self.done.all()):
                break
            if self.graph is not None:
                self.graph.replay()
            else:
                self.step()
        return self.out[:, :max_new].cpu()


KEPT_DECODERS = 2  # per model: the graphs and KV caches of the last cache lengths, reused by later calls


def _decoder(
    causal_lm: Any, shapes: Shapes, length: int, stops: list[int], device: torch.device, dtype: torch.dtype
) -> _Decoder:
    """The decoder (state, cache and captured graph) for this shape, kept on the model between calls, so each
    suite of a trial does not capture its graphs again. The key holds every parameter's address and the LoRA
    layers' active/disabled adapters: a graph replays the kernels and tensors it was captured with, so loading or
    switching an adapter must give a fresh one (a weight updated in place is read as it is at replay)."""
    kept: dict[Any, Any] = causal_lm.__dict__.setdefault("_tunegate_decoders", {})
    adapters = tuple(
        (tuple(getattr(m, "active_adapters", ())), bool(getattr(m, "disable_adapters", False)))
        for m in causal_lm.modules()
        if hasattr(m, "lora_A")
    )
    key = (shapes, length, tuple(stops), device, dtype, adapters, tuple(p.data_ptr() for p in causal_lm.parameters()))
    decoder = kept.get(key)
    if decoder is None:
        while len(kept) >= KEPT_DECODERS + 1:  # + the graph pool
            kept.pop(next(k for k in kept if k != "pool"))
        decoder = _Decoder(causal_lm, shapes, length, stops, device, dtype)
        if shapes.graphs:
            try:
                decoder.capture(kept.setdefault("pool", torch.cuda.graph_pool_handle()))
            except RuntimeError as exc:  # an op that cannot be captured (a kernel library's host sync...)
                decoder.graph = None  # the same step, eagerly
                warnings.warn(
                    f"tunegate: decode step not captured in a CUDA graph, decoding eagerly: {exc}",
                    RuntimeWarning,
                    stacklevel=2,
                )
        kept[key] = decoder
    return decoder


def fixed_attention(
    module: Any,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """Attention with a 4D additive mask, grouped-query heads read in place: transformers' SDPA path copies the
    keys and values once per query head whenever a mask is given (`repeat_kv`), which over a whole fixed cache is
    most of a small model's decode step. Two batched matmuls and a float32 softmax per (row, key/value head): each
    row's result depends on that row alone. The same arithmetic as transformers' eager attention."""
    b, heads, t, d = query.shape
    kv_heads = key.shape[1]
    group = heads // kv_heads  # repeat_kv's order: query head i reads key/value head i // group
    q = query.reshape(b, kv_heads, group * t, d)
    scores = torch.matmul(q, key.transpose(-1, -2)) * (scaling if scaling is not None else d**-0.5)
    if attention_mask is not None:
        mask = attention_mask[:, :, :, : key.shape[-2]]
        scores = (scores.view(b, kv_heads, group, t, -1) + mask[:, :, None]).view(b, kv_heads, group * t, -1)
    probs = torch.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)
    out = torch.matmul(probs, value).view(b, heads, t, d)
    return out.transpose(1, 2).contiguous(), None


def attention_used(model: Any) -> str:
    """The attention implementation the fixed-shape path runs `model` with (whatever the model's own is)."""
    return ATTENTION_NAME


def _attention_ready(causal_lm: Any) -> Any:
    """A context in which the model's attention is `fixed_attention` (registered with transformers once)."""
    from transformers import AttentionInterface

    AttentionInterface.register(ATTENTION_NAME, fixed_attention)
    return attention.attention_implementation(causal_lm, ATTENTION_NAME)


@torch.inference_mode()
def generate(
    model: Any,
    tok: Any,
    prompts: Sequence[str],
    *,
    max_new_tokens: int = 64,
    progress: Progress | None = None,
    stats: dict[str, Any] | None = None,
) -> list[str]:
    """Greedy completions of already-templated prompts, each bit-identical whatever else is being scored
    (see the module docstring). `stats`, when given, receives the output tokens and the groups run."""
    device = model_parts.model_device(model)
    shapes = shapes_for(device)
    causal_lm = model_parts.unwrap(model)
    dtype = next(p.dtype for p in causal_lm.parameters() if p.is_floating_point())
    encoded = tok(list(prompts), add_special_tokens=False)["input_ids"] if prompts else []
    stop_ids = gen._stop_ids(tok, model)
    stops = set(stop_ids)
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else 0
    outputs = [""] * len(prompts)
    by_bucket: dict[int, list[int]] = {}
    for i, seq in enumerate(encoded):
        by_bucket.setdefault(_round_up(len(seq), shapes.bucket), []).append(i)
    tokens = groups = 0
    with _attention_ready(causal_lm):
        for bucket in sorted(by_bucket):
            length = _round_up(bucket + max_new_tokens, shapes.span)
            decoder = _decoder(causal_lm, shapes, length, stop_ids, device, dtype)
            members = by_bucket[bucket]
            for start in range(0, len(members), shapes.lanes):
                idx = members[start : start + shapes.lanes]
                rows = [encoded[i] for i in idx]
                rows += [rows[-1]] * (shapes.lanes - len(rows))
                decoder.prefill(rows, bucket, pad_id)
                out = decoder.decode(max_new_tokens).tolist()
                for row, new in zip(idx, out, strict=False):
                    new = new[:max_new_tokens]
                    cut = next((k for k, t in enumerate(new) if t in stops), len(new))
                    outputs[row] = tok.decode(new[:cut], skip_special_tokens=True)
                    tokens += cut
                groups += 1
                if progress:
                    progress(len(idx))
    if stats is not None:
        stats.update(output_tokens=stats.get("output_tokens", 0) + tokens, groups=stats.get("groups", 0) + groups)
    return outputs


def _causal_mask(lanes: int, width: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    allowed = torch.ones((width, width), dtype=torch.bool, device=device).tril()
    mask = torch.where(allowed, torch.zeros((), dtype=dtype, device=device), torch.finfo(dtype).min)
    return mask[None, None].expand(lanes, 1, width, width)


@torch.inference_mode()
def loglikelihood_tokens(
    model: Any, seqs: Sequence[tuple[list[int], int]], *, progress: Progress | None = None
) -> list[tuple[float, bool]]:
    """(sum of log p(continuation token), whether every continuation token is the argmax) per (tokens,
    number of context tokens), each bit-identical whatever else is scored with it (see the module docstring)."""
    device = model_parts.model_device(model)
    shapes = shapes_for(device)
    causal_lm = model_parts.unwrap(model)
    dtype = next(p.dtype for p in causal_lm.parameters() if p.is_floating_point())
    backbone, head = model_parts.backbone_of(causal_lm), causal_lm.get_output_embeddings()
    results: list[tuple[float, bool]] = [(0.0, True)] * len(seqs)
    inputs: dict[tuple[int, ...], list[int]] = {}
    for i, (whole, n_ctx) in enumerate(seqs):
        if n_ctx < len(whole):
            inputs.setdefault(tuple(whole[:-1]), []).append(i)
    done = len(seqs) - sum(len(m) for m in inputs.values())
    if progress and done:
        progress(done)
    by_bucket: dict[int, list[tuple[int, ...]]] = {}
    for key in inputs:
        by_bucket.setdefault(_round_up(len(key), shapes.bucket), []).append(key)
    with _attention_ready(causal_lm):
        for bucket in sorted(by_bucket):
            keys = by_bucket[bucket]
            mask = _causal_mask(shapes.lanes, bucket, dtype, device)
            positions = torch.arange(bucket, device=device)[None].expand(shapes.lanes, bucket)
            for start in range(0, len(keys), shapes.lanes):
                batch = keys[start : start + shapes.lanes]
                ids = torch.zeros((shapes.lanes, bucket), dtype=torch.long)
                for r, key in enumerate(batch + [batch[-1]] * (shapes.lanes - len(batch))):
                    ids[r, : len(key)] = torch.tensor(key)
                hidden = backbone(
                    input_ids=ids.to(device), attention_mask=mask, position_ids=positions, use_cache=False
                ).last_hidden_state
                hidden = hidden.reshape(-1, hidden.shape[-1])
                rows, targets, owners = [], [], []
                for r, key in enumerate(batch):
                    for i in inputs[key]:
                        whole, n_ctx = seqs[i]
                        for p in range(n_ctx - 1, len(whole) - 1):
                            rows.append(r * bucket + p)
                            targets.append(whole[p + 1])
                            owners.append(i)
                logp, greedy = _head_logprobs(hidden, rows, targets, head, shapes.head_chunk)
                per: dict[int, list[tuple[float, bool]]] = {}
                for i, lp, g in zip(owners, logp, greedy, strict=True):
                    per.setdefault(i, []).append((lp, g))
                for i, parts in per.items():
                    results[i] = (math.fsum(lp for lp, _ in parts), all(g for _, g in parts))
                if progress:
                    progress(len(per))
    return results


def _head_logprobs(
    hidden: torch.Tensor, rows: list[int], targets: list[int], head: torch.nn.Module, chunk: int
) -> tuple[list[float], list[bool]]:
    """log p(target) and whether the target is the argmax at each of `rows`, through the LM head and a float32
    log-softmax `chunk` rows at a time (the last chunk zero-filled, so every head GEMM has `chunk` rows)."""
    logps: list[float] = []
    greedy: list[bool] = []
    device = hidden.device
    for start in range(0, len(rows), chunk):
        picked = hidden.index_select(0, torch.tensor(rows[start : start + chunk], device=device))
        n = picked.shape[0]
        if n < chunk:
            picked = torch.cat([picked, picked.new_zeros((chunk - n, picked.shape[1]))])
        logp = torch.log_softmax(head(picked).float(), dim=-1)[:n]
        want = torch.tensor(targets[start : start + chunk], device=device)
        logps += logp.gather(1, want[:, None])[:, 0].double().tolist()
        greedy += (logp.argmax(-1) == want).tolist()
    return logps, greedy


def loglikelihood(
    model: Any, tok: Any, pairs: Sequence[tuple[str, str]], *, progress: Progress | None = None
) -> list[float]:
    """Sum of log-probabilities of each continuation given its context (`generate.encode_pairs` tokens)."""
    return [lp for lp, _ in loglikelihood_tokens(model, gen.encode_pairs(tok, pairs), progress=progress)]
