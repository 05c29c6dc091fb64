"""CUDA graphs over the decoder layers of a packed training forward.

The fast path's training steps are bound by the CPU that launches ~4,000 small kernels per step (the training
bench's profile: the GPU is busy for a quarter of the step). A CUDA graph replays a captured forward (and its
backward) with one launch each, so the step is bound by the GPU instead.

A graph needs fixed shapes and fixed addresses, and a packed row's length changes with every micro-batch. So:

* **Buckets.** A packed row of T real tokens is replayed at a padded length `bucket_tokens(T)` (a few sizes per
  power of two, so at most ~1/4 of a row is padding), and the padding is split into extra *sequences* of its
  own: with per-sequence (varlen) attention no real token attends to a padding token, and the padding's output
  and gradient are dropped. The sequence boundaries (`cu_seq_lens`) always have `slots + 2` entries (`slots`: a
  power of two >= the micro-batch's sequences), so one graph serves every micro-batch of that bucket.
* **Capture once per bucket**, lazily, the first time a micro-batch needs it: one eager warm-up forward and
  backward on a side stream, then the forward and the backward (`torch.autograd.grad` for the trainable
  parameters, and the input when it needs a gradient) are captured into one memory pool that all buckets
  share (they never run at the same time).
* **Replay** inside one autograd node (`_Replay`): the inputs are copied into the graph's static buffers, the
  forward graph replays; in backward the incoming gradient is copied in, the backward graph replays, and fresh
  copies of the parameter gradients are handed to autograd (the graph's own buffers are overwritten by its next
  replay, so autograd must not keep them as `.grad` when micro-batches accumulate).

* **Only where the host is the bottleneck** (`time_eager`, the default): the first micro-batch of each padded
  length runs eagerly, timed (the host's seconds launching its layers' forward against the device's seconds
  running it, read back a micro-batch later without waiting). A graph saves the host's launches but computes
  the padding too, so a padded length whose eager forward kept the device busy GRAPH_GPU_BOUND times longer than
  the host took to launch it stays eager (and so do longer ones, untimed; shorter ones than a host-bound length are
  captured untimed; and a length whose ratio, scaled from a timed one by its tokens, is 1.5x past the threshold
  either way is not timed: each timing costs an eager micro-batch). Large micro-batches (a data-parallel trial of a
  1B model, tens of thousands of tokens per GPU) are device-bound: replaying them as graphs would only add padding
  for launches already hidden behind the device's work.

Everything outside the decoder layers (embedding, rotary tables, final norm, loss head, optimizer) runs eagerly as
before. Where a graph cannot be used for a forward (no gradient, not CUDA, an argument it was not captured with,
more sequences than slots...) the layers run eagerly, which is always correct; `LayerGraphs.summary` says how
often each happened. The padding and the layer calls are plain code (`PaddedRow`, `run_layers`) that the CPU
tests check against the unpadded forward.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch

# model types whose decoder layers take (hidden, position_embeddings=(cos, sin), attention kwargs) and nothing else
GRAPH_MODEL_TYPES = frozenset({"llama", "mistral", "qwen2", "qwen3"})
MIN_SLOTS = 8
BUCKET_BITS = 3  # 2**(BUCKET_BITS-1) buckets per power of two: at most 1/2**(BUCKET_BITS-1) padding
MIN_BUCKET = 512
# eager forward: device seconds / host launch seconds at or above which no graph is made. With overlapped steps
# an eager step takes max(host, device) and a graph's takes the device's time plus the padding's (up to 1/4), so
# eager wins once the device is the bottleneck; the margin covers the backward, whose host side is lighter.
GRAPH_GPU_BOUND = 1.25
# a padded length's device time grows with its tokens while its launches do not: a timed length with ratio r
# predicts r * L / L0 at length L; lengths predicted this many times past GRAPH_GPU_BOUND, either way, are not timed
EXTRAPOLATION_MARGIN = 1.5
# kwargs the backbone passes its layers that the graph supplies itself (from the packed row)
_OWN_KWARGS = frozenset(
    {
        "attention_mask",
        "position_embeddings",
        "position_ids",
        "cu_seq_lens_q",
        "cu_seq_lens_k",
        "max_length_q",
        "max_length_k",
        "cache_position",
        "use_cache",
        "packed_seq_lengths",
    }
)


def bucket_tokens(tokens: int) -> int:
    """The padded length a packed row of `tokens` tokens is replayed at: a multiple of MIN_BUCKET, then of an
    eighth of the power of two at or above it (4097..8192 -> multiples of 1024; 8193..16384 -> of 2048)."""
    if tokens <= MIN_BUCKET:
        return MIN_BUCKET
    step = max(MIN_BUCKET, 1 << max(0, tokens.bit_length() - BUCKET_BITS))
    return -(-tokens // step) * step


def sequence_slots(sequences: int) -> int:
    """Sequences a graph makes room for: a power of two >= `sequences`, at least MIN_SLOTS."""
    return max(MIN_SLOTS, 1 << max(0, (sequences - 1).bit_length()))


@dataclass(frozen=True)
class PaddedRow:
    """Where a packed row of real sequences sits in a bucket: the real tokens first, then padding sequences."""

    lengths: tuple[int, ...]  # the real sequences
    bucket: int  # padded length
    slots: int  # real sequences + padding sequences == slots + 1

    @classmethod
    def of(cls, lengths: Sequence[int]) -> PaddedRow:
        lengths = tuple(int(n) for n in lengths)
        slots = sequence_slots(len(lengths))
        pads = slots + 1 - len(lengths)
        return cls(lengths, bucket_tokens(sum(lengths) + pads), slots)

    @property
    def tokens(self) -> int:
        return sum(self.lengths)

    def cu_seq_lens(self) -> list[int]:
        """slots + 2 boundaries: the real sequences, then padding sequences of one token each but the last,
        which takes the rest of the bucket (none is empty)."""
        pads = self.slots + 1 - len(self.lengths)
        rest = self.bucket - self.tokens - (pads - 1)
        if pads < 1 or rest < 1:
            raise ValueError(
                f"{len(self.lengths)} sequences of {self.tokens} tokens do not fit bucket {self.bucket} "
                f"with {self.slots} slots"
            )
        bounds, total = [0], 0
        for n in (*self.lengths, *([1] * (pads - 1)), rest):
            total += n
            bounds.append(total)
        return bounds


def run_layers(
    layers: Sequence[torch.nn.Module],
    hidden: torch.Tensor,
    cos: torch.Tensor,
    sin: torch.Tensor,
    cu: torch.Tensor,
    max_length: int,
    extra: dict[str, Any],
) -> torch.Tensor:
    """The decoder layers over one packed row, as the backbone calls them in packed mode."""
    for layer in layers:
        out = layer(
            hidden,
            attention_mask=None,
            position_embeddings=(cos, sin),
            position_ids=None,
            use_cache=False,
            cu_seq_lens_q=cu,
            cu_seq_lens_k=cu,
            max_length_q=max_length,
            max_length_k=max_length,
            **extra,
        )
        hidden = out[0] if isinstance(out, tuple) else out
    return hidden


def fill_padded(static: torch.Tensor, real: torch.Tensor) -> None:
    """Copy a packed row's [1, T, ...] into the first T positions of a bucket's [1, bucket, ...] buffer, and
    zeros after them."""
    t = real.shape[1]
    static[:, :t].copy_(real)
    static[:, t:].zero_()


DEVICE_BOUND = "device-bound (eager hides the launches; a graph adds padding)"
TIMING = "timing the eager forward"


def gpu_bound(host_seconds: float, device_seconds: float, ratio: float = GRAPH_GPU_BOUND) -> bool:
    """Did an eager forward keep the device busy `ratio` times longer than the host took to launch it? Then the
    launches were hidden behind the device's work, and a graph would only add its padding."""
    return device_seconds >= ratio * max(host_seconds, 1e-6)


@dataclass
class _EagerTiming:
    """One timed eager forward of a padded length: the host's launch seconds and the device's events."""

    host_seconds: float
    start: Any  # torch.cuda.Event
    end: Any
    first: bool = False  # the first forward timed in this run: lazy initialisation slowed its host side

    def device_seconds(self) -> float | None:
        """The device's seconds, or None while it is still running (never waits)."""
        return self.start.elapsed_time(self.end) / 1000 if self.end.query() else None


def release_cache_for(needed: int, device: torch.device) -> bool:
    """Give the caching allocator's unused blocks back to the device when fewer than ~2x `needed` bytes are free
    there: a capture allocates from its own pool, which cannot use blocks cached for other streams (the warm-up's,
    earlier eager steps'), so a trial whose large eager micro-batches left most of the device's memory cached would
    otherwise run out of memory in the capture. Returns whether it emptied the cache."""
    free, _ = torch.cuda.mem_get_info(device)
    if free >= 2 * needed:
        return False
    torch.cuda.empty_cache()
    return True


@contextmanager
def _refusing_syncs() -> Iterator[None]:
    """PyTorch raises on any operation that synchronises with the GPU (`.item()`, `nonzero`, copies to the host)."""
    before = torch.cuda.get_sync_debug_mode()
    torch.cuda.set_sync_debug_mode("error")
    try:
        yield
    finally:
        torch.cuda.set_sync_debug_mode(before)


@contextmanager
def _capturing(graph: torch.cuda.CUDAGraph, pool: Any, stream: torch.cuda.Stream) -> Iterator[None]:
    """Capture into `graph` on `stream` (torch.cuda.graph without its garbage collection and cache emptying,
    which cost ~0.1 s per capture in a trainer's process)."""
    with torch.cuda.stream(stream):
        graph.capture_begin(pool=pool)
        try:
            yield
        except BaseException:
            try:  # end the broken capture; the error worth reporting is the one that broke it
                graph.capture_end()
            except Exception:  # noqa: BLE001, S110
                pass
            raise
        graph.capture_end()


class _Stack(torch.nn.Module):
    """The decoder layers as one module (for `torch.func.functional_call`); the layers stay in the model too."""

    def __init__(self, layers: Sequence[torch.nn.Module]) -> None:
        super().__init__()
        self.layers = torch.nn.ModuleList(layers)

    def forward(
        self,
        hidden: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        cu: torch.Tensor,
        max_length: int,
        extra: dict[str, Any],
    ) -> torch.Tensor:
        return run_layers(self.layers, hidden, cos, sin, cu, max_length, extra)


class _StackGraph:
    """The captured forward and backward of the decoder layers at one bucket.

    The graphs differentiate with respect to *views* of the trainable parameters (and of the input) made inside
    the capture, not the parameters themselves: a parameter's gradient accumulator belongs to the stream it was
    made on (the default stream, in a trainer), and a capture must not touch the default stream."""

    def __init__(
        self,
        stack: _Stack,
        trainable: list[tuple[str, torch.nn.Parameter]],
        row: PaddedRow,
        hidden: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        extra: dict[str, Any],
        pool: Any,
        stream: torch.cuda.Stream,
    ) -> None:
        b = row.bucket
        self.hidden = torch.zeros((1, b, hidden.shape[-1]), dtype=hidden.dtype, device=hidden.device)
        self.cos = torch.zeros((1, b, cos.shape[-1]), dtype=cos.dtype, device=cos.device)
        self.sin = torch.zeros((1, b, sin.shape[-1]), dtype=sin.dtype, device=sin.device)
        self.cu = torch.tensor(
            PaddedRow((b - row.slots,), b, row.slots).cu_seq_lens(), dtype=torch.int32, device=hidden.device
        )
        wants_input_grad = hidden.requires_grad

        def forward() -> tuple[torch.Tensor, list[torch.Tensor]]:
            views = {name: p.view_as(p) for name, p in trainable}
            x = self.hidden.requires_grad_(wants_input_grad).view_as(self.hidden) if wants_input_grad else self.hidden
            out = torch.func.functional_call(stack, views, (x, self.cos, self.sin, self.cu, b, extra), strict=False)
            return out, ([x] if wants_input_grad else []) + list(views.values())

        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream), _refusing_syncs():
            # eager warm-up: lazy initialisation (cuBLAS workspaces, kernel choices) happens outside the capture, and
            # an operation that waits for the GPU (which a capture cannot hold) raises here, before any capture
            # starts: a capture that fails half-way leaves the CUDA random generator unusable for the process
            before = torch.cuda.memory_allocated(hidden.device)
            out, wrt = forward()
            needed = torch.cuda.memory_allocated(hidden.device) - before  # what the capture will keep
            torch.autograd.grad(out, wrt, torch.zeros_like(out))
            del out, wrt
        torch.cuda.current_stream().wait_stream(stream)
        torch.cuda.synchronize()
        release_cache_for(needed, hidden.device)
        self.fwd, self.bwd = torch.cuda.CUDAGraph(), torch.cuda.CUDAGraph()
        with _capturing(self.fwd, pool, stream):
            self.out, wrt = forward()
            self.grad_out = torch.zeros_like(self.out)
        with _capturing(self.bwd, pool, stream):
            grads = torch.autograd.grad(self.out, wrt, self.grad_out)
        self.hidden_grad = grads[0] if wants_input_grad else None
        self.param_grads = list(grads[1:] if wants_input_grad else grads)

    def load(self, row: PaddedRow, hidden: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> None:
        for static, real in ((self.hidden.detach(), hidden), (self.cos, cos), (self.sin, sin)):
            fill_padded(static, real)
        bounds = torch.tensor(row.cu_seq_lens(), dtype=torch.int32)
        # from pinned memory: a copy from pageable memory would make the host wait for the GPU
        self.cu.copy_(bounds.pin_memory() if self.cu.is_cuda else bounds, non_blocking=True)


class _Replay(torch.autograd.Function):
    """One autograd node that replays a bucket's forward graph, and its backward graph in backward."""

    @staticmethod
    def forward(
        ctx: Any,
        graph: _StackGraph,
        row: PaddedRow,
        hidden: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        *params: torch.Tensor,
    ) -> torch.Tensor:
        # `params` (the trainable parameters, which the graph reads in place) are inputs so that autograd hands
        # the gradients backward returns to their accumulators
        graph.load(row, hidden, cos, sin)
        graph.fwd.replay()
        ctx.graph, ctx.tokens = graph, row.tokens
        return graph.out[:, : row.tokens].clone()

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[Any, ...]:
        graph, t = ctx.graph, ctx.tokens
        graph.grad_out[:, :t].copy_(grad)
        graph.grad_out[:, t:].zero_()
        graph.bwd.replay()
        hidden_grad = graph.hidden_grad[:, :t].clone() if graph.hidden_grad is not None else None
        # fresh tensors: the graph's gradient buffers are overwritten by its next replay
        param_grads = torch._foreach_mul(graph.param_grads, 1.0) if graph.param_grads else []
        return (None, None, hidden_grad, None, None, *param_grads)


class _StandIn(torch.nn.Module):
    """Takes the place of the backbone's layer list during a packed forward: one 'layer' that runs them all."""

    def __init__(self, graphs: LayerGraphs) -> None:
        super().__init__()
        self.__dict__["_graphs"] = graphs  # not a submodule: the real layers stay where they are
        attention_type = getattr(graphs.layers[0], "attention_type", None)
        if attention_type is not None:
            self.attention_type = attention_type

    def forward(self, hidden_states: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        return self._graphs.run(hidden_states, kwargs)


class LayerGraphs:
    """CUDA graphs for the decoder layers of one model, per bucket; `enabled` is switched on for training."""

    def __init__(
        self, layers: Sequence[torch.nn.Module], max_bucket: int | None = None, time_eager: bool = True
    ) -> None:
        self.layers = list(layers)
        self.max_bucket = max_bucket  # longer micro-batches run eagerly (checkpointed, say)
        self.time_eager = time_eager  # graph a padded length only where its timed eager forward was host-bound
        self.timings: dict[tuple[Any, ...], _EagerTiming] = {}
        self.device_bound: dict[tuple[Any, ...], float] = {}  # padded lengths left eager: device/host ratio
        self.host_bound: dict[int, float] = {}  # timed padded lengths captured: device/host ratio
        self.timed_any = False  # the first timing (lazy initialisation: cuBLAS, the allocator) is not trusted
        # a row's launches do not grow with its length, its device work does: a padded length longer than one that
        # was device-bound is device-bound too, one shorter than a host-bound one host-bound (neither is timed), and
        # so is one whose ratio, scaled by its length, is EXTRAPOLATION_MARGIN times past the threshold
        self.device_bound_from = math.inf
        self.host_bound_upto = 0
        self.capturing = False
        self.stack = _Stack(self.layers)
        self.trainable = [(name, p) for name, p in self.stack.named_parameters() if p.requires_grad]
        self.params = [p for _, p in self.trainable]
        self.adapters = [m for layer in self.layers for m in layer.modules() if hasattr(m, "disable_adapters")]
        self.adapter_state = self._adapter_state() if self.adapters else ()
        self.enabled = False
        self.graphs: dict[tuple[Any, ...], _StackGraph] = {}
        self.pool: Any = None
        self.stream: torch.cuda.Stream | None = None
        self.failure: str | None = None
        self.replays = 0
        self.eager: dict[str, int] = {}
        self.capture_seconds = 0.0

    @contextmanager
    def standing_in(self, backbone: torch.nn.Module) -> Iterator[None]:
        """Swap the backbone's layer list for the stand-in while a packed forward runs."""
        original = backbone.layers
        backbone.layers = torch.nn.ModuleList([_StandIn(self)])
        try:
            yield
        finally:
            backbone.layers = original

    def run(self, hidden: torch.Tensor, kwargs: dict[str, Any]) -> torch.Tensor:
        why = self._why_eager(hidden, kwargs)
        row = PaddedRow.of(kwargs["packed_seq_lengths"]) if why is None else None
        if row is not None and self.max_bucket is not None and row.bucket > self.max_bucket:
            why = f"longer than {self.max_bucket} tokens (checkpointed)"
        key = self._key(row, hidden, kwargs) if why is None else None
        if key is not None and self.time_eager and key not in self.graphs:
            why = self._eager_verdict(key)
            if why == TIMING:
                return self._timed_eager(key, hidden, kwargs)
        if why is None:
            try:
                return self._replay(row, key, hidden, kwargs)
            except Exception as exc:  # noqa: BLE001 - a graph that cannot be captured leaves the eager path
                self.failure = f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}"
                self.enabled = False
                torch.cuda.synchronize()
                why = "capture failed"
        return self._eager(why, hidden, kwargs)

    def _eager(self, why: str, hidden: torch.Tensor, kwargs: dict[str, Any]) -> torch.Tensor:
        """The real layers, one by one, counted under `why`."""
        self.eager[why] = self.eager.get(why, 0) + 1
        for layer in self.layers:
            out = layer(hidden, **kwargs)
            hidden = out[0] if isinstance(out, tuple) else out
        return hidden

    def _eager_verdict(self, key: tuple[Any, ...]) -> str | None:
        """For a padded length with no graph yet: time it eagerly (no timing yet), wait for the timing (still
        running on the device), stay eager (device-bound), or None: capture it. Every timing the device has
        finished is read first, so a length first seen after another was timed may be decided without a timing."""
        self._settle_timings()
        bucket = key[0]
        if key in self.device_bound or bucket >= self.device_bound_from:
            return DEVICE_BOUND
        if bucket <= self.host_bound_upto:  # shorter than a host-bound length (or predicted host-bound)
            return None
        return "eager timing still on the device" if key in self.timings else TIMING

    def _settle_timings(self) -> None:
        """Read back the timings the device has finished (never waits) and move the bounds they give."""
        for key, timing in list(self.timings.items()):
            device = timing.device_seconds()
            if device is None:
                continue
            del self.timings[key]
            if timing.first:  # lazy initialisation slowed the host side of this one: the length is timed again
                continue
            bucket, ratio = key[0], device / max(timing.host_seconds, 1e-6)
            if gpu_bound(timing.host_seconds, device):
                self.device_bound[key] = ratio
                self.device_bound_from = min(
                    self.device_bound_from, bucket, math.ceil(bucket * GRAPH_GPU_BOUND * EXTRAPOLATION_MARGIN / ratio)
                )
            else:
                self.host_bound[bucket] = ratio
                self.host_bound_upto = max(
                    self.host_bound_upto, bucket, math.floor(bucket * GRAPH_GPU_BOUND / (EXTRAPOLATION_MARGIN * ratio))
                )

    def _timed_eager(self, key: tuple[Any, ...], hidden: torch.Tensor, kwargs: dict[str, Any]) -> torch.Tensor:
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        began = time.perf_counter()
        hidden = self._eager(TIMING, hidden, kwargs)
        host = time.perf_counter() - began
        end.record()
        self.timings[key] = _EagerTiming(host, start, end, first=not self.timed_any)
        self.timed_any = True
        return hidden

    def _key(self, row: PaddedRow, hidden: torch.Tensor, kwargs: dict[str, Any]) -> tuple[Any, ...]:
        """What a graph is captured for: the padded length and everything the capture bakes in."""
        cos, _ = kwargs["position_embeddings"]
        extra = {k: v for k, v in kwargs.items() if k not in _OWN_KWARGS}
        return (
            row.bucket,
            row.slots,
            hidden.dtype,
            cos.dtype,
            hidden.requires_grad,
            self.layers[0].training,
            torch.is_autocast_enabled("cuda"),
            torch.get_autocast_dtype("cuda"),
            tuple(sorted(extra.items())),
        )

    def _why_eager(self, hidden: torch.Tensor, kwargs: dict[str, Any]) -> str | None:
        if not self.enabled:
            return "disabled" if self.failure is None else "capture failed"
        if not (hidden.is_cuda and torch.is_grad_enabled()):
            return "no gradient or not CUDA"
        if kwargs.get("cu_seq_lens_q") is None or not kwargs.get("packed_seq_lengths"):
            return "not a packed row"
        embeddings = kwargs.get("position_embeddings")
        if not (
            isinstance(embeddings, tuple)
            and len(embeddings) == 2
            and all(
                isinstance(e, torch.Tensor) and e.dim() == 3 and e.shape[:2] == hidden.shape[:2] for e in embeddings
            )
        ):
            return "unexpected rotary tables"
        if any(isinstance(v, torch.Tensor) for k, v in kwargs.items() if k not in _OWN_KWARGS):
            return "extra tensor argument"
        if self.adapters and self._adapter_state() != self.adapter_state:
            return "adapters switched"
        return None

    def _adapter_state(self) -> tuple[Any, ...]:
        """What a captured graph bakes in about the PEFT adapters (the first adapter layer speaks for all)."""
        first = self.adapters[0]
        return (
            bool(getattr(first, "disable_adapters", False)),
            bool(getattr(first, "merged", False)),
            tuple(getattr(first, "active_adapters", ()) or ()),
        )

    def _replay(
        self, row: PaddedRow, key: tuple[Any, ...], hidden: torch.Tensor, kwargs: dict[str, Any]
    ) -> torch.Tensor:
        cos, sin = kwargs["position_embeddings"]
        extra = {k: v for k, v in kwargs.items() if k not in _OWN_KWARGS}
        graph = self.graphs.get(key)
        if graph is None:
            start = time.perf_counter()
            if self.pool is None:
                self.pool, self.stream = torch.cuda.graph_pool_handle(), torch.cuda.Stream()
            # autocast's cast cache would keep bf16 copies of the adapters made before the capture: off inside
            self.capturing = True
            try:
                with torch.autocast(
                    "cuda",
                    dtype=torch.get_autocast_dtype("cuda"),
                    enabled=torch.is_autocast_enabled("cuda"),
                    cache_enabled=False,
                ):
                    graph = _StackGraph(
                        self.stack, self.trainable, row, hidden, cos, sin, extra, self.pool, self.stream
                    )
            finally:
                self.capturing = False
            self.graphs[key] = graph
            self.capture_seconds += time.perf_counter() - start
        self.replays += 1
        return _Replay.apply(graph, row, hidden, cos, sin, *self.params)

    def summary(self) -> str:
        if self.failure is not None and not self.graphs:
            return f"off: capture failed: {self.failure}"
        text = f"on: {len(self.graphs)} bucket(s) captured in {self.capture_seconds:.1f} s, {self.replays} replays"
        if self.max_bucket is not None:
            text += f" (micro-batches up to {self.max_bucket} tokens)"
        if self.device_bound:
            ratios = ", ".join(f"{r:.1f}x" for r in self.device_bound.values())
            text += (
                f", {len(self.device_bound)} padded length(s) left eager: the device was busy {ratios} the "
                "host's launch time"
            )
        if self.host_bound:
            timed = sorted(self.host_bound.items())
            text += ", timed host-bound: " + ", ".join(f"{b} tokens {r:.2f}x" for b, r in timed)
        if self.eager:
            text += ", eager: " + ", ".join(f"{why} x{n}" for why, n in sorted(self.eager.items()))
        if self.failure is not None:
            text += f"; capture failed later: {self.failure}"
        return text
