"""The fast training path: which speed techniques a run uses (`FastPath`), what it applied (`FastReport`), and
the session that applies them to one training run and undoes them afterwards (`FastSession`).

Every technique changes speed or memory, never the loss beyond float rounding. Each lives in its own module:

* **Padding-free forward** (`padding_free`, `harness.model._packing`): a right-padded micro-batch runs as one
  packed row of its real tokens, its hidden states scattered back to `[B, L, H]` for the trainer's loss code.
* **Per-sequence attention** (`harness.model._attention`): PyTorch's FlashAttention varlen kernel on CUDA after a
  self-check against the reference, else causal SDPA once per sequence; no token attends across a boundary.
* **Liger kernels** (`harness.model._liger`), chosen one by one (`FastPath.liger`): fused RMSNorm, SwiGLU and RoPE
  Triton kernels in the decoder, and Liger's fused linear cross-entropy in place of TRL's chunked LM head (CUDA
  only). On by default (`DEFAULT_LIGER_KERNELS`) are only those the training bench (`bench/train_throughput.py`,
  section `liger`) showed to pay on the GPU. The patches Liger makes are undone when the session ends.
* **Lean LoRA** (`lean_lora`, opt-in, `harness.model._lean_lora`): each LoRA linear layer's forward and backward as
  one autograd node, meant for steps bound by the CPU that launches kernels rather than by the GPU. Off by default:
  whether it pays depends on memory, since the activations it saves can leave CUDA graphs fewer micro-batches under
  the memory budget.
* **bf16 LoRA inputs** (`lora_bf16_inputs`): PEFT casts each LoRA input to the adapter's fp32 dtype before
  dropout; under bf16 autocast the matmul runs in bf16 anyway, so the cast only costs bandwidth and memory.
* **Memory plan** (`harness.model._memory_plan`): the bytes each decoder layer saves per token are measured on the
  device, and the plan picks how many layers to checkpoint (none if memory allows) and whether gradient-
  accumulation micro-batches can be merged into one; each micro-batch then checkpoints only the layers its own
  tokens need, so shorter ones run without recomputation.
* **CUDA graphs** (`cuda_graphs`, on by default): the decoder layers of each packed micro-batch replay as one
  captured forward and backward graph per padded length (`harness.model._graphs`), so a step is no longer bound by
  the CPU launching its thousands of kernels one by one. With per-micro-batch checkpointing, the micro-batches
  short enough to need none replay as graphs and longer ones run eagerly (`graph_length_limit`). A padded length
  whose timed eager forward was bound by the device stays eager (`graphs_where_host_bound`). Off, with the reason
  in `FastReport.cuda_graphs`, where a graph cannot apply (every micro-batch checkpointed, torch.compile, model
  types other than Llama/Mistral/Qwen2/Qwen3). Under data parallel (DDP) the replay hands autograd the adapter
  gradients at once, and DDP's hooks all-reduce them as for any other backward.
* **Overlapped steps** (`overlap`, on by default; SFT): a step never waits for the GPU, so the CPU prepares the
  next step while the GPU runs this one (`harness.model._overlap`): the packing is worked out on the host by the
  data collator, TRL's loss head selects the labelled positions by host-side indices, and the metrics and the
  per-step log are read from the device a step late without waiting.
* **torch.compile** (`compile`, off by default): regional compilation of the decoder layers (`compiled_layers`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import torch

from harness.model._attention import (
    ATTENTION_NAME,
    attention_implementation,
    register_attention,
    select_attention_kernel,
    selected_kernel,
)
from harness.model._graphs import GRAPH_MODEL_TYPES, LayerGraphs
from harness.model._lean_lora import lean_lora
from harness.model._liger import (
    DEFAULT_LIGER_KERNELS,
    LAYER_KERNELS,
    LIGER_KERNELS,
    apply_liger,
    liger_loss_head,
    restoring_patches,
)
from harness.model._memory_plan import (
    GIB,
    MemoryPlan,
    activation_bytes_per_token,
    checkpointing,
    graph_length_limit,
    max_tokens_per_micro_batch,
    optimizer_bytes,
    plan_memory,
)
from harness.model._overlap import host_indexed_head
from harness.model._packing import padding_free
from harness.model._parts import backbone_of, decoder_layers, unwrap

CUDA_GRAPHS_ENV = "TUNEGATE_CUDA_GRAPHS"  # 0/false/off: without CUDA graphs; always: graphs host-bound or not
OVERLAP_ENV = "TUNEGATE_OVERLAP"  # 0/false/off: without overlapped steps (each step's row logged at once)


@dataclass(frozen=True)
class FastPath:
    """Which speed techniques a training run uses. `FastPath.for_device("cuda")` is the default on a GPU."""

    padding_free: bool = True
    attention: Literal["auto", "per_sequence"] = "auto"  # auto: the varlen kernel if its self-check passes
    liger: tuple[str, ...] | None = None  # Liger kernels by name (LIGER_KERNELS); None: DEFAULT_LIGER_KERNELS
    lora_bf16_inputs: bool = True
    # each LoRA linear layer as one autograd node (harness.model._lean_lora): off by default, its gain depends on
    # memory (the activations it saves can leave CUDA graphs fewer micro-batches under the budget)
    lean_lora: bool = False
    checkpointing: Literal["auto", "none", "full"] = "auto"
    fold_accumulation: bool = True
    memory_budget_gib: float | None = None  # None: 90% of the GPU's memory
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
        self.sft = sft  # the loss is SFT's token mean (Liger's fused cross-entropy may replace its head)
        self.dpo = dpo  # DPO hook: the trainer is harness.model._dpo's FastDPOSteps (overlapped steps of its own)
        self.report = FastReport()
        self._stack = ExitStack()
        self._liger: ExitStack | None = None  # Liger's patches, undone on close (or when its kernels fail)
        self._graphs: LayerGraphs | None = None  # while training with CUDA graphs

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

    def plan(
        self,
        model: Any,
        lengths: Sequence[int],
        micro_batch: int,
        accumulation: int,
        forced_checkpointing: bool = False,
    ) -> MemoryPlan:
        """Measure activations on the device and choose checkpointing and fold (see `plan_memory`)."""
        causal_lm = unwrap(model)
        config = causal_lm.config.get_text_config()
        layers = len(decoder_layers(backbone_of(causal_lm)))
        folds = [f for f in range(1, accumulation + 1) if accumulation % f == 0] if self.fast.fold_accumulation else [1]
        tokens = {f: max(1, max_tokens_per_micro_batch(lengths, micro_batch * f)) for f in folds}
        mode = "full" if forced_checkpointing else self.fast.checkpointing
        budget = self.budget_bytes()
        if mode == "auto" and budget <= 0:
            mode = "none"  # no device memory to plan against (CPU): keep every activation
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
        result = plan_memory(
            layers=layers,
            hidden=config.hidden_size,
            vocab=config.vocab_size,
            act_bytes=act,
            boundary_bytes=config.hidden_size * dtype_bytes,
            fixed_bytes=fixed,
            budget_bytes=budget,
            tokens_for_fold=tokens,
            mode=mode,
        )
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
                self.report.liger_loss_head = (
                    stack.enter_context(liger_loss_head(model))
                    if self.sft
                    else "off: SFT only (this loss needs per-token log-probabilities)"
                )
            self.report.overlap = self.overlap_blocked or "on"
            if self.sft and self.overlap_blocked is None and not self.report.liger_loss_head.startswith("on"):
                causal_lm = unwrap(model)
                head = stack.enter_context(host_indexed_head(causal_lm, backbone_of(causal_lm)))
                self.report.overlap = f"on (loss head by host-side indices: {head})"
            if graphs is not None:
                stack.enter_context(self._graphed(graphs))
            yield

    def _graph_plan(
        self, model: Any, plan: MemoryPlan | None, layers: Sequence[torch.nn.Module]
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
            self.report.cuda_graphs = (
                f"off: no padded length fits {plan.budget_gib:.1f} GiB beside the longest "
                f"micro-batch ({plan.tokens_per_micro_batch} tokens) checkpointed"
            )
            return None, checkpointed, per_micro_batch
        graph_tokens, beside = limit
        graphs = LayerGraphs(layers, max_bucket=graph_tokens, time_eager=self.fast.graphs_where_host_bound)

        def layers_to_checkpoint(tokens: int) -> int:  # none while a graph is captured (its micro-batch fits)
            return 0 if graphs.capturing else beside.layers_to_checkpoint(tokens)

        return graphs, beside.layers_to_checkpoint(plan.tokens_per_micro_batch), layers_to_checkpoint

    def _graphs_blocked(self, model: Any, plan: MemoryPlan | None) -> str | None:
        """Why the decoder layers cannot be replayed as CUDA graphs in this run (None: they can)."""
        causal_lm = unwrap(model)
        model_type = getattr(causal_lm.config.get_text_config(), "model_type", None)
        layers = decoder_layers(backbone_of(causal_lm))
        if self.device.type != "cuda":
            return "needs CUDA"
        if not self.report.padding_free or selected_kernel() != "varlen":
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
            self._lora_forward(stack, model)  # the activations are measured as training will save them
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
