"""Peak GPU memory of one training step, estimated from the model's shape.

The estimate follows what PyTorch actually keeps alive in a Hugging Face Llama-style decoder
trained the way tunegate trains (and `bench/memory_probe.py` measures):

* weights: bf16 = 2 B/param, fp32 = 4 B/param; QLoRA stores the decoder's linear layers in NF4
  (0.5 B/param plus the double-quantised absmax constants, 1 byte per 64-block + 4 bytes per 256
  blocks) and keeps embeddings, norms and the output head in bf16.
* LoRA/QLoRA/DoRA adapters are float32 (PEFT's default adapter dtype): weight + grad + AdamW
  m and v = 16 B per adapter parameter. Full fine-tuning trains the weights in their own dtype:
  a grad and two AdamW states of the same dtype per parameter (torch's fused AdamW).
* activations saved for backward, per token and layer, derived from the hidden size h,
  intermediate size i, key/value width kv and vocabulary V (bytes, bf16):
    - full:  RMSNorm keeps an fp32 copy of its input (4h) and its bf16 output for the weight grad
      (2h) twice per layer; q/k/v, o and the MLP inputs are saved (2h each group); SDPA keeps
      q, k, v and its output (2h + 4kv + 2h); the MLP keeps gate, up, SiLU(gate) and their
      product (8i)  -> 22h + 4kv + 8i
    - LoRA:  frozen linears keep no input, but every adapted linear casts its input to fp32 and
      keeps the dropout output (4 B) and mask (1 B) -> base 12h + 4kv + 6i plus 5 B x in_features
      per adapted module (4 B without dropout) and the fp32 rank-r intermediate.
  Attention is assumed memory-efficient (SDPA/flash: no seq x seq matrix); `attention="eager"`
  adds the heads x seq fp32 softmax and its bf16 copy. With gradient checkpointing only each
  layer's bf16 input is kept, plus one layer recomputed during backward.
* logits: the loss upcasts the (tokens x V) logits to fp32 and log_softmax keeps its fp32
  output; backward holds that plus the incoming and outgoing fp32 gradients: 12 B x V per token.
* CUDA context (~0.5 GiB) and caching-allocator slack (~5%) are added to `total_gib`; they are
  not part of `allocated_gib`, which is what `torch.cuda.max_memory_allocated` measures.

`bench/memory_probe.py` checks the estimate against the peak of real training steps (135M and 1.2B Llama
shapes, LoRA / QLoRA / full, with and without gradient checkpointing; reports/gpu/memory_table.json, and
tests/advisor/test_advisor_memory.py holds today's estimate to within 20% of every committed row).

The model is given either as `ModelDims` (or any Hugging Face config with the usual attribute
names) or as a parameter count, which picks the nearest of the reference Llama-family shapes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel

from harness.base._kinds import SFT, SftKind

Method = SftKind  # what the estimate covers: the supervised fine-tuning kinds
DType = Literal["bf16", "fp16", "fp32"]
Attention = Literal["sdpa", "eager"]

GIB = 1024**3
ALL_LINEAR: tuple[str, ...] = ("q", "k", "v", "o", "gate", "up", "down")
DTYPE_BYTES: dict[str, int] = {"bf16": 2, "fp16": 2, "fp32": 4}
NF4_BYTES_PER_PARAM = 0.5 + 1 / 64 + 4 / (64 * 256)  # 4-bit codes + 8-bit absmax + fp32 2nd-level absmax
CUDA_CONTEXT_GIB = 0.5
ALLOCATOR_SLACK = 0.05
LOGITS_BYTES_PER_VOCAB = 12  # fp32 log-probs kept + fp32 grad in + fp32 grad out


@dataclass(frozen=True)
class ModelDims:
    """The shape of a Llama-style decoder (GQA attention, SwiGLU MLP, RMSNorm)."""

    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    vocab: int
    tied_embeddings: bool = True

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    @property
    def kv_dim(self) -> int:
        return self.kv_heads * self.head_dim

    def module_shapes(self) -> dict[str, tuple[int, int]]:
        """(in_features, out_features) of each linear layer in one decoder layer."""
        h, i, kv = self.hidden, self.intermediate, self.kv_dim
        return {"q": (h, h), "k": (h, kv), "v": (h, kv), "o": (h, h), "gate": (h, i), "up": (h, i), "down": (i, h)}

    @property
    def linear_params(self) -> int:
        """Parameters in the decoder layers' linear layers (what QLoRA quantises)."""
        return self.layers * sum(a * b for a, b in self.module_shapes().values())

    @property
    def other_params(self) -> int:
        """Embeddings, output head and norms (kept in 16-bit by QLoRA)."""
        embeddings = self.vocab * self.hidden * (1 if self.tied_embeddings else 2)
        return embeddings + (2 * self.layers + 1) * self.hidden

    @property
    def n_params(self) -> int:
        return self.linear_params + self.other_params

    @classmethod
    def from_config(cls, config: Any) -> ModelDims:
        """From a transformers `LlamaConfig`-like object (or a dict with the same keys)."""

        def get(key: str, default: Any = None) -> Any:
            value = config.get(key, default) if isinstance(config, dict) else getattr(config, key, default)
            if value is None and default is None:
                raise ValueError(f"model config has no {key}")
            return value

        heads = int(get("num_attention_heads"))
        return cls(
            hidden=int(get("hidden_size")),
            intermediate=int(get("intermediate_size")),
            layers=int(get("num_hidden_layers")),
            heads=heads,
            kv_heads=int(get("num_key_value_heads", heads) or heads),
            vocab=int(get("vocab_size")),
            tied_embeddings=bool(get("tie_word_embeddings", False)),
        )


REFERENCE_SHAPES: dict[str, ModelDims] = {
    "smollm2-135m": ModelDims(576, 1536, 30, 9, 3, 49152, True),
    "smollm2-360m": ModelDims(960, 2560, 32, 15, 5, 49152, True),
    "llama-3.2-1b": ModelDims(2048, 8192, 16, 32, 8, 128256, True),
    "smollm2-1.7b": ModelDims(2048, 8192, 24, 32, 32, 49152, True),
    "llama-3.2-3b": ModelDims(3072, 8192, 28, 24, 8, 128256, True),
    "llama-3.1-8b": ModelDims(4096, 14336, 32, 32, 8, 128256, False),
    "llama-2-13b": ModelDims(5120, 13824, 40, 40, 40, 32000, False),
    "qwen2.5-32b": ModelDims(5120, 27648, 64, 40, 8, 152064, False),
    "llama-3.1-70b": ModelDims(8192, 28672, 80, 64, 8, 128256, False),
}


def dims_for_params(n_params: float) -> tuple[str, ModelDims]:
    """The reference shape whose parameter count is nearest (in ratio) to `n_params`."""
    if n_params <= 0:
        raise ValueError("n_params must be positive")
    return min(REFERENCE_SHAPES.items(), key=lambda kv: abs(math.log(kv[1].n_params / n_params)))


class MemoryEstimate(BaseModel):
    method: str
    n_params: int
    trainable_params: int
    allocated_gib: float  # comparable to torch.cuda.max_memory_allocated
    total_gib: float  # + CUDA context and allocator slack: what the GPU must have free
    breakdown: dict[str, float]  # GiB per component; sums to total_gib
    shape: str  # which dims were used

    def fits(self, vram_gib: float) -> bool:
        return self.total_gib <= vram_gib


def _lora_params(dims: ModelDims, r: int, targets: tuple[str, ...]) -> int:
    shapes = dims.module_shapes()
    return dims.layers * sum(r * (shapes[t][0] + shapes[t][1]) for t in targets)


def _activation_bytes_per_token_layer(
    dims: ModelDims, method: str, r: int, dropout: float, targets: tuple[str, ...], act: int
) -> float:
    h, i, kv = dims.hidden, dims.intermediate, dims.kv_dim
    scale = act / 2  # coefficients below are for 2-byte activations
    if method == "full":
        return scale * (22 * h + 4 * kv + 8 * i)
    base = scale * (12 * h + 4 * kv + 6 * i)
    shapes = dims.module_shapes()
    per_in = 5 if dropout > 0 else 4  # fp32 input to lora_A (+ bool dropout mask)
    adapters = sum(per_in * shapes[t][0] + 4 * r for t in targets)
    if method == "dora":  # DoRA also keeps the base output and its rescaled copy
        adapters += sum(2 * act * shapes[t][1] for t in targets)
    return base + adapters


def estimate_training_memory(
    model: int | float | ModelDims | Any,
    method: Method = "lora",
    seq_len: int = 1024,
    batch_size: int = 4,
    lora_r: int = 16,
    dtype: DType = "bf16",
    grad_checkpointing: bool = False,
    lora_dropout: float = 0.05,
    lora_targets: tuple[str, ...] = ALL_LINEAR,
    attention: Attention = "sdpa",
) -> MemoryEstimate:
    """Peak memory of a training step for a Llama-shaped model; see the module docstring."""
    if method not in SFT:
        raise ValueError(f"method must be one of {', '.join(SFT)}, not {method!r}")
    if seq_len <= 0 or batch_size <= 0 or lora_r <= 0:
        raise ValueError("seq_len, batch_size and lora_r must be positive")
    if isinstance(model, ModelDims):
        shape, dims, n_params = "given dims", model, model.n_params
    elif isinstance(model, (int, float)):
        shape, dims = dims_for_params(float(model))
        n_params = int(model)
    else:
        dims = ModelDims.from_config(model)
        shape, n_params = "config", dims.n_params
    unknown = set(lora_targets) - set(ALL_LINEAR)
    if unknown:
        raise ValueError(f"unknown LoRA target modules {sorted(unknown)}; use {ALL_LINEAR}")

    w = DTYPE_BYTES[dtype]
    linear_share = dims.linear_params / dims.n_params
    tokens = seq_len * batch_size
    b: dict[str, float] = {}

    if method == "qlora":
        b["weights"] = n_params * (linear_share * NF4_BYTES_PER_PARAM + (1 - linear_share) * 2)
    else:
        b["weights"] = n_params * w
    if method == "full":
        trainable = n_params
        b["gradients"] = n_params * w
        b["optimizer_states"] = 2 * n_params * w
    else:
        trainable = int(_lora_params(dims, lora_r, lora_targets) * n_params / dims.n_params)
        b["adapters"] = trainable * 4
        b["gradients"] = trainable * 4
        b["optimizer_states"] = trainable * 8
        if method == "dora":  # magnitude vectors + one transient fp32 copy of the largest weight
            b["adapters"] += dims.layers * sum(dims.module_shapes()[t][1] for t in lora_targets) * 4
            b["optimizer_states"] += max(a * c for a, c in dims.module_shapes().values()) * 4

    per_layer = _activation_bytes_per_token_layer(dims, method, lora_r, lora_dropout, lora_targets, w)
    if attention == "eager":
        per_layer += dims.heads * seq_len * (4 + w)
    if grad_checkpointing:
        layers_kept = dims.layers * w * dims.hidden + per_layer
    else:
        layers_kept = dims.layers * per_layer
    final_norm = (4 + 2 * w if method == "full" else 4) * dims.hidden
    b["activations"] = tokens * (layers_kept + final_norm)
    b["logits"] = tokens * dims.vocab * LOGITS_BYTES_PER_VOCAB

    if method == "full":
        # Backward frees activations as it creates gradients; at the start of backward only the
        # output head's gradient exists, so the peak is the larger of the two phases.
        head_grad = dims.vocab * dims.hidden * w
        during_backward = b["activations"] + b["logits"] + head_grad
        if b["gradients"] > during_backward:
            b["activations"] = 0.0
            b["logits"] = 0.0
        else:
            b["gradients"] = head_grad

    allocated = sum(b.values())
    b["allocator_slack"] = allocated * ALLOCATOR_SLACK
    b["cuda_context"] = CUDA_CONTEXT_GIB * GIB
    breakdown = {k: round(v / GIB, 4) for k, v in b.items()}
    return MemoryEstimate(
        method=method,
        n_params=int(n_params),
        trainable_params=int(trainable),
        allocated_gib=round(allocated / GIB, 4),
        total_gib=round(sum(b.values()) / GIB, 4),
        breakdown=breakdown,
        shape=shape,
    )
