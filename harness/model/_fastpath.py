"""The fast training path: padding-free forward, per-sequence attention, fused kernels, and a memory plan.

Every technique here changes speed or memory, never the loss beyond float rounding:

* **Padding-free forward** (`padding_free`): a right-padded micro-batch `[B, L]` is flattened into one row of
  its real tokens, with `position_ids` restarting at 0 for every sequence and the sequence boundaries
  (`cu_seq_lens_q`, as in FlashAttention's varlen API) passed down to attention; the backbone's hidden states
  are scattered back to `[B, L, H]`, so the trainer's loss code (TRL's chunked log-probability head, which
  never materialises the full logits) sees exactly the tensors it would see without the fast path.
* **Per-sequence attention** (`varlen_attention_forward`, registered with transformers' `AttentionInterface`):
  PyTorch's built-in FlashAttention varlen kernel (`torch.nn.attention.varlen.varlen_attn`) on CUDA, after a
  self-check against the reference; elsewhere (CPU, or if the self-check fails) causal SDPA once per sequence.
  Either way no token attends across a sequence boundary.
* **Liger kernels** (`apply_liger`, `liger_loss_head`), chosen one by one (`FastPath.liger`): fused RMSNorm,
  SwiGLU and RoPE Triton kernels in the decoder, and Liger's fused linear cross-entropy in place of TRL's chunked
  LM head (CUDA only). On by default (`DEFAULT_LIGER_KERNELS`) are only the kernels the training bench
  (`bench/train_throughput.py`, section `liger`) measured to pay on the GPU: RMSNorm, SwiGLU and RoPE. The
  patches Liger makes to the modeling module are undone when the session ends.
* **Lean LoRA** (`lean_lora`, opt-in): each LoRA linear layer's forward and backward as one autograd node
  (`harness.model._lean_lora`), meant for steps bound by the CPU that launches kernels rather than by the GPU.
  Off by default: without graphs its Python cost what PEFT's modules did; with graphs it ran 1.07x the default
  with Liger's kernels but 0.49x without them, where the activations it saves left graphs fewer micro-batches
  under the memory budget.
* **bf16 LoRA inputs** (`lora_bf16_inputs`): PEFT casts each LoRA input to the adapter's fp32 dtype before
  dropout; under bf16 autocast the matmul runs in bf16 anyway, so the cast only costs bandwidth and memory.
* **Memory plan** (`plan_memory`): the bytes each decoder layer saves per token are measured on the device
  (`activation_bytes_per_token`), and the plan picks how many layers to checkpoint (none if memory allows) and
  whether gradient-accumulation micro-batches can be merged into one larger micro-batch. The plan is for the
  longest micro-batch the data can make; each micro-batch then checkpoints only the layers its own tokens need
  (`MemoryModel.layers_to_checkpoint`), so shorter ones run without recomputation.
* **CUDA graphs** (`cuda_graphs`, on by default): the decoder layers of each packed micro-batch replay as one
  captured forward and backward graph per padded length (`harness.model._graphs`), so a step is no longer bound by
  the CPU launching its ~4,000 kernels one by one. With per-micro-batch checkpointing, the micro-batches short
  enough to need none replay as graphs and longer ones run eagerly (`graph_length_limit`). A padded length whose
  timed eager forward was bound by the device stays eager (`graphs_where_host_bound`). Off, with the reason in
  `FastReport.cuda_graphs`, where a graph cannot apply (every micro-batch checkpointed, torch.compile, model
  types other than Llama/Mistral/Qwen2/Qwen3). Under data parallel (DDP) the replay hands autograd the adapter
  gradients at once, and DDP's hooks all-reduce them as for any other backward.
* **Overlapped steps** (`overlap`, on by default; SFT): a step never waits for the GPU, so the CPU prepares the
  next step while the GPU runs this one (`harness.model._overlap`): the packing is worked out on the host by the
  data collator, TRL's loss head selects the labelled positions by host-side indices, and the metrics and the
  per-step log are read from the device a step late without waiting.
* **torch.compile** (`compile`, off by default): regional compilation of the decoder layers.
"""
from __future__ import annotations

import functools
import inspect
import math
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager, nullcontext
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

import torch
import torch.nn.functional as F

from harness.model._graphs import GRAPH_MODEL_TYPES, LayerGraphs, bucket_tokens
from harness.model._lean_lora import lean_lora
from harness.model._overlap import (
    PACK_KEY,
    HostPack,
    forward_swapped,
    host_indexed_head,
    packed_layout,
    row_spans,
    to_device,
)

ATTENTION_NAME = "tunegate_varlen"
CUDA_GRAPHS_ENV = "TUNEGATE_CUDA_GRAPHS"   # 0/false/off: without CUDA graphs; always: graphs host-bound or not
OVERLAP_ENV = "TUNEGATE_OVERLAP"           # 0/false/off: without overlapped steps (each step's row logged at once)
SEQ_LENGTHS_KWARG = "packed_seq_lengths"  # python tuple of sequence lengths, so no device sync is needed
GIB = 2**30
LIGER_KERNELS = ("rms_norm", "swiglu", "rope", "fused_linear_cross_entropy")
# The Liger kernels a FastPath uses when it names none: those the training bench measured to pay on the GPU
# (reports/perf/train_throughput.json, `liger_per_kernel`). On an H200 at the 1.07B shape, with CUDA graphs and
# overlapped steps (the 20:01 run; each against ours without Liger, 52,215 tok/s): RMSNorm 1.14x, RoPE 1.05x,
# SwiGLU 1.02x, and the fused linear cross-entropy 0.93x (TRL's chunked head is faster), so not that one. (Before
# graphs the steps were bound by kernel launches and every kernel measured slower, 0.80-0.96x.)
DEFAULT_LIGER_KERNELS: tuple[str, ...] = ("rms_norm", "swiglu", "rope")


@dataclass(frozen=True)
class FastPath:
    """Which speed techniques a training run uses. `FastPath.for_device("cuda")` is the default on a GPU."""

    padding_free: bool = True
    attention: Literal["auto", "per_sequence"] = "auto"   # auto: the varlen kernel if its self-check passes
    liger: tuple[str, ...] | None = None   # Liger kernels by name (LIGER_KERNELS); None: DEFAULT_LIGER_KERNELS
    lora_bf16_inputs: bool = True
    # each LoRA linear layer as one autograd node (harness.model._lean_lora): off by default, its gain depends on
    # memory (the 20:01 and 20:05 runs of the training bench: 0.49x the default without Liger, 1.07x with it)
    lean_lora: bool = False
    checkpointing: Literal["auto", "none", "full"] = "auto"
    fold_accumulation: bool = True
    memory_budget_gib: float | None = None   # None: 90% of the GPU's memory
    compile: bool = False
    # the decoder layers of each packed micro-batch replayed as CUDA graphs, one per padded length
    # (harness.model._graphs): the steps are bound by the CPU that launches their kernels otherwise
    cuda_graphs: bool = True
    # ... only for the padded lengths whose timed eager forward was bound by the host (harness.model._graphs):
    # where the device was the bottleneck, a graph only adds its padding. False: every padded length
    graphs_where_host_bound: bool = True
    # SFT steps that never wait for the GPU (harness.model._overlap): the CPU queues step n+1 while the GPU runs
    # step n
    overlap: bool = True

    def __post_init__(self) -> None:
        if self.liger is None:
            return
        if isinstance(self.liger, str) or not all(isinstance(k, str) for k in self.liger):
            raise ValueError(f"FastPath.liger: expected a list of kernel names, got {self.liger!r}")
        unknown = [k for k in self.liger if k not in LIGER_KERNELS]
        if unknown:
            raise ValueError(f"FastPath.liger: unknown kernel {unknown[0]!r}; known: {', '.join(LIGER_KERNELS)}")
        object.__setattr__(self, "liger", tuple(dict.fromkeys(self.liger)))

    @property
    def liger_kernels(self) -> tuple[str, ...]:
        """The Liger kernels this path asks for (the measured default when `liger` is None)."""
        return DEFAULT_LIGER_KERNELS if self.liger is None else self.liger

    @classmethod
    def for_device(cls, device: str) -> FastPath | None:
        """The default: everything on for CUDA; the plain TRL path on CPU (float32, no kernels to gain from).
        `TUNEGATE_CUDA_GRAPHS=0` and `TUNEGATE_OVERLAP=0` (in the environment of the run, which its workers
        inherit) turn CUDA graphs and overlapped steps off; `TUNEGATE_CUDA_GRAPHS=always` replays every padded
        length as a graph, host-bound or not."""
        if device != "cuda":
            return None

        def on(name: str) -> bool:
            return os.environ.get(name, "1").strip().lower() not in ("0", "false", "off", "no")

        always = os.environ.get(CUDA_GRAPHS_ENV, "").strip().lower() == "always"
        return cls(cuda_graphs=on(CUDA_GRAPHS_ENV), graphs_where_host_bound=not always, overlap=on(OVERLAP_ENV))


@dataclass
class MemoryPlan:
    layers: int
    checkpointed_layers: int
    fold: int
    tokens_per_micro_batch: int
    activation_bytes_per_token_layer: float
    budget_gib: float | None       # None: no budget (CPU)
    estimated_peak_gib: float
    fits: bool
    per_micro_batch: bool = False   # checkpoint, per micro-batch, only the layers its tokens need (up to the above)
    memory: MemoryModel | None = field(default=None, repr=False)


@dataclass
class FastReport:
    """What a session actually applied (kept in TrainResult.fastpath and in the bench JSON)."""

    attention: str = "sdpa"
    attention_note: str = ""
    padding_free: bool = False
    liger: str = "off"
    liger_loss_head: str = "off"
    lora_bf16_inputs: str = "off"
    lean_lora: str = "off"
    compile: str = "off"
    cuda_graphs: str = "off"
    overlap: str = "off"
    plan: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class _Kernel:
    name: str = "per_sequence"          # "varlen" | "per_sequence"
    varlen: Callable[..., torch.Tensor] | None = None


_KERNEL = _Kernel()


def _varlen_caller() -> Callable[..., torch.Tensor]:
    """PyTorch's FlashAttention varlen kernel, adapted to the installed torch's signature (it changed in 2.11)."""
    from torch.nn.attention.varlen import varlen_attn

    params = inspect.signature(varlen_attn).parameters
    if "is_causal" not in params and "window_size" not in params:
        raise RuntimeError("torch varlen_attn has neither is_causal nor window_size")

    def call(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu: torch.Tensor, max_len: int,
             scale: float | None) -> torch.Tensor:
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


def _per_sequence_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, lengths: Sequence[int],
                            scaling: float | None, dropout: float) -> torch.Tensor:
    """Causal SDPA over each sequence of a packed row [1, H, T, D] -> [1, T, H, D]."""
    gqa = query.shape[1] != key.shape[1]
    if gqa and query.is_cuda:   # SDPA's flash kernel may not take enable_gqa: share the kv heads explicitly
        groups = query.shape[1] // key.shape[1]
        key, value, gqa = key.repeat_interleave(groups, dim=1), value.repeat_interleave(groups, dim=1), False
    outs, start = [], 0
    for n in lengths:
        end = start + n
        outs.append(F.scaled_dot_product_attention(query[:, :, start:end], key[:, :, start:end],
                                                   value[:, :, start:end], is_causal=True, dropout_p=dropout,
                                                   scale=scaling, enable_gqa=gqa))
        start = end
    return torch.cat(outs, dim=2).transpose(1, 2).contiguous()


def varlen_attention_forward(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                             attention_mask: torch.Tensor | None, dropout: float = 0.0,
                             scaling: float | None = None, **kwargs: Any) -> tuple[torch.Tensor, None]:
    """transformers attention function for packed rows (`cu_seq_lens_q` given); plain causal SDPA otherwise."""
    cu = kwargs.get("cu_seq_lens_q")
    if cu is None:
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      **kwargs)
    if query.shape[0] != 1:
        raise ValueError(f"packed attention expects one row, got a batch of {query.shape[0]}")
    if _KERNEL.name == "varlen" and _KERNEL.varlen is not None and dropout == 0.0 and query.is_cuda \
            and query.dtype in (torch.bfloat16, torch.float16):
        out = _KERNEL.varlen(query[0].transpose(0, 1), key[0].transpose(0, 1), value[0].transpose(0, 1), cu,
                             int(kwargs["max_length_q"]), scaling)
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

    def error(a: torch.Tensor, b: torch.Tensor) -> float:   # relative to the reference's scale
        return float(((a.float() - b).abs().max() / b.abs().max().clamp(min=1e-6)).detach())

    return max(error(out, ref), error(gq, gq_ref))


def _unpack_candidate(backbone: torch.nn.Module, args: tuple, kwargs: dict[str, Any]) -> bool:
    mask = kwargs.get("attention_mask")
    return (not args and backbone.training and isinstance(mask, torch.Tensor) and mask.dim() == 2
            and kwargs.get("position_ids") is None and kwargs.get("past_key_values") is None
            and kwargs.get("cache") is None and not kwargs.get("use_cache")
            and not kwargs.get("output_hidden_states") and not kwargs.get("output_attentions")
            and (kwargs.get("input_ids") is None) != (kwargs.get("inputs_embeds") is None))


@dataclass(frozen=True)
class PackedRow:
    """Where the real tokens of a padded [B, L] batch go in one packed row."""

    index: torch.Tensor          # flat positions (in B*L) of the real tokens, in order
    position_ids: torch.Tensor   # [1, T], restarting at 0 per sequence
    cu_seq_lens: torch.Tensor    # [n+1] int32
    lengths: tuple[int, ...]

    @property
    def max_length(self) -> int:
        return max(self.lengths)


def pack_from_mask(mask: torch.Tensor) -> PackedRow | None:
    """Describe the packed row for a 2D attention mask whose real tokens are contiguous in each row
    (None when the batch has no real token at all)."""
    spans = row_spans(mask)   # from a mask on the GPU: the one device->host copy per forward
    if spans is None:
        raise ValueError("padding-free forward needs the real tokens of each row to be contiguous")
    layout = packed_layout(spans, mask.shape[1])
    if layout is None:
        return None
    index, position_ids, cu, lengths = layout
    device = mask.device
    return PackedRow(index=index.to(device, non_blocking=True), position_ids=position_ids.to(device, non_blocking=True),
                     cu_seq_lens=cu.to(device, non_blocking=True), lengths=lengths)


def host_row(pack: HostPack, device: torch.device) -> PackedRow:
    """The packed row a HostPack describes, its tensors copied to `device` without waiting."""
    return PackedRow(index=to_device(pack.index, device), position_ids=to_device(pack.position_ids, device),
                     cu_seq_lens=to_device(pack.cu_seq_lens, device), lengths=pack.lengths)


def packed_kwargs(row: PackedRow) -> dict[str, Any]:
    """Keyword arguments for a backbone forward over one packed row (transformers' FlashAttention kwargs)."""
    return {"position_ids": row.position_ids, "attention_mask": None, "cu_seq_lens_q": row.cu_seq_lens,
            "cu_seq_lens_k": row.cu_seq_lens, "max_length_q": row.max_length, "max_length_k": row.max_length,
            SEQ_LENGTHS_KWARG: row.lengths}


@contextmanager
def padding_free(backbone: torch.nn.Module,
                 graphs: Callable[[], LayerGraphs | None] | None = None) -> Iterator[None]:
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
        with layer_graphs.standing_in(backbone) if layer_graphs is not None and layer_graphs.enabled \
                else nullcontext():
            out = original(**kwargs, **packed_kwargs(row))
        hidden = out.last_hidden_state[0]
        out.last_hidden_state = hidden.new_zeros(batch * width, hidden.shape[-1]).index_copy(
            0, row.index, hidden).view(batch, width, -1)
        return out

    backbone.forward = forward
    try:
        yield
    finally:
        if backbone.__dict__.get("forward") is forward:
            del backbone.forward


@contextmanager
def attention_implementation(model: Any, name: str) -> Iterator[None]:
    """Switch a transformers model's attention implementation for the duration."""
    before = model.config._attn_implementation
    model.set_attn_implementation(name)
    try:
        yield
    finally:
        model.set_attn_implementation(before)


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
def restoring_patches(model: torch.nn.Module) -> Iterator[None]:
    """Undo what a kernel patcher does to `model`: module-level names in its modeling module, and methods
    bound onto module instances (Liger's instance patching)."""
    modeling = sys.modules[type(model).__module__]
    saved = dict(vars(modeling))
    instance_keys = {id(m): set(m.__dict__) for m in model.modules()}
    try:
        yield
    finally:
        for name in set(vars(modeling)) - set(saved):
            delattr(modeling, name)
        for name, value in saved.items():
            if vars(modeling).get(name) is not value:
                setattr(modeling, name, value)
        for m in model.modules():
            for key in set(m.__dict__) - instance_keys.get(id(m), set()):
                if key in ("forward", "_get_name", "extra_repr"):
                    del m.__dict__[key]


LAYER_KERNELS = ("rms_norm", "swiglu", "rope")


def model_device(model: torch.nn.Module) -> torch.device:
    """Where a model's weights are (its first parameter's device)."""
    return next(model.parameters()).device


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
    _apply_liger_kernel_to_instance(model=model, cross_entropy=False, fused_linear_cross_entropy=False,
                                    **{k: k in chosen for k in LAYER_KERNELS})
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

    def forward(*args: Any, fused_lm_head: bool = False, labels: torch.Tensor | None = None,
                shift_labels: torch.Tensor | None = None, num_items_in_batch: Any = None, **kwargs: Any) -> Any:
        if not fused_lm_head or (labels is None and shift_labels is None):
            return previous(*args, fused_lm_head=fused_lm_head, labels=labels, shift_labels=shift_labels,
                            num_items_in_batch=num_items_in_batch, **kwargs)
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


@contextmanager
def lora_bf16_inputs(model: torch.nn.Module) -> Iterator[str]:
    """PEFT's switch that keeps LoRA inputs in the activations' dtype (autocast does the matmul in bf16)."""
    try:
        from peft.helpers import disable_input_dtype_casting
    except ImportError:
        yield "off: this peft has no disable_input_dtype_casting"
        return
    with disable_input_dtype_casting(model):
        yield "on"


@contextmanager
def compiled_layers(layers: Sequence[torch.nn.Module]) -> Iterator[str]:
    """Regional torch.compile: every decoder layer runs one compiled graph (the same code, reused across
    layers); attention stays eager between the compiled regions. Undone afterwards."""
    register_attention(compiled=True)
    for layer in layers:
        layer.compile(dynamic=True)
    try:
        yield f"on: {len(layers)} decoder layers"
    finally:
        for layer in layers:
            layer._compiled_call_impl = None
        register_attention(compiled=False)


def unwrap(model: Any) -> Any:
    """The transformers CausalLM inside a PEFT wrapper (or the model itself)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def backbone_of(causal_lm: Any) -> torch.nn.Module:
    return getattr(causal_lm, causal_lm.base_model_prefix)


def decoder_layers(backbone: torch.nn.Module) -> list[torch.nn.Module]:
    layers = getattr(backbone, "layers", None)
    if layers is None:
        raise ValueError(f"{type(backbone).__name__} has no `layers`: the fast path needs a decoder-only model")
    return list(layers)


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
        with torch.random.fork_rng(devices=devices), autocast, \
                torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
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
    act_bytes: float        # bytes a decoder layer keeps per token for its backward
    boundary_bytes: int     # bytes a checkpointed layer keeps per token (its input)
    fixed_bytes: int        # weights, gradients, optimizer state
    budget_bytes: int       # 0: no budget (CPU)

    def activations(self, tokens: int, checkpointed: int) -> float:
        """Bytes the decoder layers keep for backward (a checkpointed layer keeps its input, and one layer's
        worth is recomputed at a time)."""
        kept = self.layers - checkpointed
        return tokens * (kept * self.act_bytes + checkpointed * self.boundary_bytes +
                         (self.act_bytes if checkpointed else 0))

    def peak(self, tokens: int, checkpointed: int) -> float:
        head = min(tokens, 4096) * min(self.vocab, 32768) * 2 + tokens * self.hidden * 16  # chunked LM head, repad
        return (self.fixed_bytes + self.activations(tokens, checkpointed) + head + 0.05 * self.budget_bytes
                + 128 * 2**20)

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


def plan_memory(*, layers: int, hidden: int, vocab: int, act_bytes: float, boundary_bytes: int, fixed_bytes: int,
                budget_bytes: int, tokens_for_fold: dict[int, int], mode: str = "auto") -> MemoryPlan:
    """Pick (checkpointed layers, fold) for the largest micro-batch the data can make: no checkpointing and the
    largest fold that fit the budget; else fold 1 and as few checkpointed layers as fit; else everything
    checkpointed (the run may still not fit). mode "none" never checkpoints (fold 1 unless a larger one fits),
    "full" checkpoints every layer. In "auto" mode training then checkpoints per micro-batch only the layers
    that micro-batch needs (`MemoryModel.layers_to_checkpoint`): most are shorter than the worst case."""
    memory = MemoryModel(layers, hidden, vocab, act_bytes, boundary_bytes, fixed_bytes, budget_bytes)

    def made(fold: int, checkpointed: int) -> MemoryPlan:
        estimate = memory.peak(tokens_for_fold[fold], checkpointed)
        return MemoryPlan(layers=layers, checkpointed_layers=checkpointed, fold=fold,
                          tokens_per_micro_batch=tokens_for_fold[fold], activation_bytes_per_token_layer=act_bytes,
                          budget_gib=budget_bytes / GIB if budget_bytes else None, estimated_peak_gib=estimate / GIB,
                          fits=not budget_bytes or estimate <= budget_bytes, per_micro_batch=mode == "auto",
                          memory=memory)

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
def checkpointing(layers: Sequence[torch.nn.Module], count: int,
                  per_micro_batch: Callable[[int], int] | None = None) -> Iterator[None]:
    """Activation checkpointing (non-reentrant) of the first `count` layers; with `per_micro_batch` (tokens ->
    layers), of only as many of them as the micro-batch at hand needs. Wraps the layer's forward rather than
    setting transformers' flag, so trainers that toggle the flag (TRL's reference forward) leave it be."""
    from torch.utils.checkpoint import checkpoint

    wrapped = []
    for index, layer in enumerate(list(layers)[:count]):
        original = layer.forward

        def forward(*args: Any, _original: Callable[..., Any] = original, _layer: torch.nn.Module = layer,
                    _index: int = index, **kwargs: Any) -> Any:
            needed = per_micro_batch is None or _index < per_micro_batch(_tokens_in(args, kwargs))
            if _layer.training and torch.is_grad_enabled() and needed:
                # the recompute would update a KV cache a second time: no cache under checkpointing (as transformers)
                kwargs.update({k: None for k in ("cache", "past_key_values", "layer_past") if kwargs.get(k) is not None})
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


class FastSession:
    """Applies a FastPath to one training run and undoes it afterwards.

        session = FastSession(fast, device)
        session.patch_model(causal_lm)          # attention, padding-free, kernels (before PEFT or after)
        plan = session.plan(peft_model, lengths, micro_batch, accumulation)
        ... build the trainer with plan.fold ...
        with session.training(trainer.model, plan):
            trainer.train()
        session.close()
    """

    def __init__(self, fast: FastPath, device: str, *, sft: bool = False, dpo: bool = False) -> None:
        self.fast = fast
        self.device = torch.device(device)
        self.sft = sft   # the loss is SFT's token mean (Liger's fused cross-entropy may replace its head)
        self.dpo = dpo   # DPO hook: the trainer is harness.model._dpo's FastDPOSteps (overlapped steps of its own)
        self.report = FastReport()
        self._stack = ExitStack()
        self._liger: ExitStack | None = None   # Liger's patches, undone on close (or when its kernels fail)
        self._graphs: LayerGraphs | None = None   # while training with CUDA graphs

    @property
    def overlap_blocked(self) -> str | None:
        """Why this session's SFT steps cannot be overlapped (None: they can, `OverlappedSteps` trains them)."""
        if not self.fast.overlap:
            return "off"
        if not self.sft and not self.dpo:
            return "off: SFT and DPO only"
        if not self.fast.padding_free:
            return "off: needs the padding-free forward"
        return None

    def patch_model(self, model: Any) -> None:
        causal_lm = unwrap(model)
        backbone = backbone_of(causal_lm)
        fast = self.fast
        if fast.padding_free:
            register_attention()
            kernel, note = select_attention_kernel(self.device, fast.attention)
            self.report.attention, self.report.attention_note = kernel, note
            self._stack.enter_context(attention_implementation(causal_lm, ATTENTION_NAME))
            self._stack.enter_context(padding_free(backbone, lambda: self._graphs))
            self.report.padding_free = True
        layer_kernels = [k for k in fast.liger_kernels if k in LAYER_KERNELS]
        if layer_kernels and not fast.compile:
            liger = ExitStack()
            liger.enter_context(restoring_patches(causal_lm))
            try:
                self.report.liger = apply_liger(causal_lm, layer_kernels)
            except Exception as exc:  # noqa: BLE001 - an incompatible Liger build must not stop training
                liger.close()
                self.report.liger = f"off: failed to apply: {type(exc).__name__}: {str(exc)[:160]}"
            else:
                self._liger = liger
        elif layer_kernels:
            self.report.liger = "off: torch.compile fuses these ops instead"
        else:
            self.report.liger = "off: none requested"

    def budget_bytes(self) -> int:
        if self.fast.memory_budget_gib is not None:
            return int(self.fast.memory_budget_gib * GIB)
        if self.device.type == "cuda":
            return int(0.9 * torch.cuda.get_device_properties(self.device).total_memory)
        return 0

    def plan(self, model: Any, lengths: Sequence[int], micro_batch: int, accumulation: int,
             forced_checkpointing: bool = False) -> MemoryPlan:
        """Measure activations on the device and choose checkpointing and fold (see `plan_memory`)."""
        causal_lm = unwrap(model)
        config = causal_lm.config.get_text_config()
        layers = len(decoder_layers(backbone_of(causal_lm)))
        folds = [f for f in range(1, accumulation + 1) if accumulation % f == 0] if self.fast.fold_accumulation else [1]
        tokens = {f: max(1, max_tokens_per_micro_batch(lengths, micro_batch * f)) for f in folds}
        mode = "full" if forced_checkpointing else self.fast.checkpointing
        budget = self.budget_bytes()
        if mode == "auto" and budget <= 0:
            mode = "none"   # no device memory to plan against (CPU): keep every activation
        try:
            act = self._probe(model)
        except Exception as exc:  # re-raised unless Liger's kernels are the suspects
            if self._liger is None:
                raise
            # the probe is the first forward through the kernels: if Liger's fail here, train without them
            self._liger.close()
            self._liger = None
            self.report.liger = f"off: failed at runtime: {type(exc).__name__}: {str(exc)[:160]}"
            act = self._probe(model)
        if self.device.type == "cuda":
            fixed = torch.cuda.memory_allocated(self.device) + optimizer_bytes(model)
        else:
            fixed = sum(p.numel() * p.element_size() for p in model.parameters()) + optimizer_bytes(model)
        dtype_bytes = 2 if self.device.type == "cuda" else 4
        result = plan_memory(layers=layers, hidden=config.hidden_size, vocab=config.vocab_size, act_bytes=act,
                             boundary_bytes=config.hidden_size * dtype_bytes, fixed_bytes=fixed,
                             budget_bytes=budget, tokens_for_fold=tokens, mode=mode)
        self.report.plan = {k: v for k, v in asdict(result).items() if k != "memory"} | {"mode": mode}
        return result

    @contextmanager
    def training(self, model: Any, plan: MemoryPlan | None) -> Iterator[None]:
        layers = decoder_layers(backbone_of(unwrap(model)))
        with ExitStack() as stack:
            self._lora_forward(stack, model)
            graphs, checkpointed, per_micro_batch = self._graph_plan(model, plan, layers)
            if checkpointed:
                stack.enter_context(checkpointing(layers, checkpointed, per_micro_batch))
            if self.fast.compile:
                self.report.compile = stack.enter_context(compiled_layers(layers))
            if "fused_linear_cross_entropy" in self.fast.liger_kernels:
                self.report.liger_loss_head = (stack.enter_context(liger_loss_head(model)) if self.sft
                                               else "off: SFT only (this loss needs per-token log-probabilities)")
            self.report.overlap = self.overlap_blocked or "on"
            if self.sft and self.overlap_blocked is None and not self.report.liger_loss_head.startswith("on"):
                causal_lm = unwrap(model)
                head = stack.enter_context(host_indexed_head(causal_lm, backbone_of(causal_lm)))
                self.report.overlap = f"on (loss head by host-side indices: {head})"
            if graphs is not None:
                stack.enter_context(self._graphed(graphs))
            yield

    def _graph_plan(self, model: Any, plan: MemoryPlan | None, layers: Sequence[torch.nn.Module]
                    ) -> tuple[LayerGraphs | None, int, Callable[[int], int] | None]:
        """The CUDA graphs of this run (None: off, the reason reported), and the checkpointing beside them: how
        many layers to wrap and, per micro-batch, how many of them to checkpoint. With per-micro-batch
        checkpointing the micro-batches up to `graph_length_limit` replay as graphs (no layer checkpointed) and
        the longer ones run eagerly, checkpointed as the graphs' memory pool beside them requires."""
        checkpointed = plan.checkpointed_layers if plan is not None else 0
        per_micro_batch = plan.memory.layers_to_checkpoint if plan and plan.per_micro_batch and plan.memory else None
        if not self.fast.cuda_graphs:
            return None, checkpointed, per_micro_batch
        blocked = self._graphs_blocked(model, plan)
        if blocked:
            self.report.cuda_graphs = f"off: {blocked}"
            return None, checkpointed, per_micro_batch
        if not checkpointed:
            return LayerGraphs(layers, time_eager=self.fast.graphs_where_host_bound), 0, None
        limit = graph_length_limit(plan.memory, plan.tokens_per_micro_batch)
        if limit is None:
            self.report.cuda_graphs = (f"off: no padded length fits {plan.budget_gib:.1f} GiB beside the longest "
                                       f"micro-batch ({plan.tokens_per_micro_batch} tokens) checkpointed")
            return None, checkpointed, per_micro_batch
        graph_tokens, beside = limit
        graphs = LayerGraphs(layers, max_bucket=graph_tokens, time_eager=self.fast.graphs_where_host_bound)

        def layers_to_checkpoint(tokens: int) -> int:   # none while a graph is captured (its micro-batch fits)
            return 0 if graphs.capturing else beside.layers_to_checkpoint(tokens)

        return graphs, beside.layers_to_checkpoint(plan.tokens_per_micro_batch), layers_to_checkpoint

    def _graphs_blocked(self, model: Any, plan: MemoryPlan | None) -> str | None:
        """Why the decoder layers cannot be replayed as CUDA graphs in this run (None: they can)."""
        causal_lm = unwrap(model)
        model_type = getattr(causal_lm.config.get_text_config(), "model_type", None)
        layers = decoder_layers(backbone_of(causal_lm))
        if self.device.type != "cuda":
            return "needs CUDA"
        if not self.report.padding_free or _KERNEL.name != "varlen":
            return "needs the padding-free forward with the varlen attention kernel"
        if self.fast.compile:
            return "torch.compile is on"
        if plan is not None and plan.checkpointed_layers and not (plan.per_micro_batch and plan.memory):
            return f"the memory plan checkpoints {plan.checkpointed_layers} layer(s) of every micro-batch"
        if any(getattr(layer, "gradient_checkpointing", False) for layer in layers):
            return "the model's gradient checkpointing is on"
        if model_type not in GRAPH_MODEL_TYPES:
            return f"model type {model_type!r} is not one of {', '.join(sorted(GRAPH_MODEL_TYPES))}"
        return None

    @contextmanager
    def _graphed(self, graphs: LayerGraphs) -> Iterator[None]:
        graphs.enabled = True
        self._graphs = graphs
        try:
            yield
        finally:
            self.report.cuda_graphs = graphs.summary()
            graphs.enabled = False
            self._graphs = None

    def _probe(self, model: Any) -> float:
        with ExitStack() as stack:
            self._lora_forward(stack, model)   # the activations are measured as training will save them
            return activation_bytes_per_token(model)

    def _lora_forward(self, stack: ExitStack, model: Any) -> None:
        """The changes to the LoRA layers' forward this path asks for, entered on `stack` and reported."""
        # without autocast (CUDA) an uncast input would meet fp32 adapter weights in a plain matmul
        if self.fast.lora_bf16_inputs and self.device.type == "cuda":
            self.report.lora_bf16_inputs = stack.enter_context(lora_bf16_inputs(model))
        elif self.fast.lora_bf16_inputs:
            self.report.lora_bf16_inputs = "off: needs bf16 autocast (CUDA)"
        if self.fast.lean_lora:
            self.report.lean_lora = stack.enter_context(lean_lora(model))

    def close(self) -> None:
        if self._liger is not None:
            self._liger.close()
            self._liger = None
        self._stack.close()
