"""Training throughput: tunegate's training path against TRL's SFTTrainer, at its defaults and at the best
stock flags a user turns on first, on the same data, model weights, LoRA, schedule, seed and data order.

    python bench/train_throughput.py --out reports/perf/train_throughput.json      # every default section
    python bench/train_throughput.py --sections why,stock --out F.json             # some sections
    python bench/train_throughput.py --sections 8b --merge --out F.json            # add sections to F.json
    python bench/train_throughput.py --smoke                                       # CPU, tiny shape (tests)

Sections, run in this order (`--sections`, default why,stock,liger,ours,8b):

  why        Why TRL's defaults run slower on the bench's chat data than on plain text rows: TRL's defaults on
             the bench data as-is (chat prompt/completion, completion-only loss), with full-sequence loss, as
             chat-templated plain text, as plain text of the same words, and as plain text rows of 40-900 words
             drawn from the whole vocabulary; per variant the padding, chat-template and loss-token shares of
             the batches TRL actually built, and real and padded tokens/s (`why_peer_is_slow`).
  stock      Stock TRL peers on the bench data: `peer` (TRL defaults: gradient checkpointing on, padded
             batches), `gradient_checkpointing=False`, + `use_liger_kernel=True`, + `padding_free=True` with
             each attention implementation of `--padding-free-attn` (each first checked: a packed forward must
             match the padded one), + group-by-length sampling. A flag that fails is recorded and left out of
             the configurations built on it.
  liger      Our path with no Liger kernel, each kernel alone, and all of them (`liger_per_kernel`): a kernel
             pays when it is >=2% faster than none with the loss within 1%.
  ours       Our path (`harness.arms.train_sft`) with the best stock peer's peak memory as its memory budget
             (`ours`), with the default budget (`ours-unbounded`), and with the lean LoRA node switched the
             other way from the default (`ours-lean-lora` while it is off by default); knobs: --ours-*.
  8b         Llama-3-8B shape, random weights: LoRA (bf16) and QLoRA (NF4): TRL defaults, the best stock
             configuration of the `stock` section, and ours within that peer's memory.
  ablations  (opt-in) ours without padding-free, with full checkpointing, the plain harness path.
  profile    (opt-in) torch.profiler of TRL without checkpointing and of ours: top ops by GPU and by CPU time,
             GPU busy share of the step, kernel launches and host-device synchronisations per step.
  scaling    (opt-in) step time against tokens per step (batches of --scaling-batches), ours and TRL without
             checkpointing: the per-step cost that does not shrink with fewer tokens, and the cost per token.
  dpo        (opt-in) DPO on preference pairs at the 1.07B and 8B (LoRA) shapes (`--dpo-shapes`): TRL's
             DPOTrainer at its defaults, then flag by flag (gradient_checkpointing=False, precompute_ref_log_probs,
             use_liger_kernel, Liger's fused loss, padding_free; a flag that fails is recorded), then ours with the
             precomputed and the adapter-off reference within the best stock peer's peak memory; per shape
             `vs_best_stock` (tokens/s and pairs/s, peak memory, loss and reward-accuracy differences), `targets`,
             and with --dpo-profile torch.profiler tables of the best stock peer and ours (`dpo.1b`, `dpo.8b`).

Per run: real (non-padding) tokens/s over the steps after warm-up, MFU, peak allocated memory (reset before
each run, memory freed between runs), the loss per step, the configuration, or the failure. Top level:
`vs_best_stock` (ours against the fastest stock peer that ran), `comparisons`, `targets`. MFU counts
(4 * N_frozen + 6 * N_lora) FLOPs per real token (forward 2N; backward to the activations 2N; weight
gradients only for the LoRA adapters), no attention-score FLOPs and no recompute, over the GPU's dense bf16
peak. The model: a randomly initialised Llama saved once to a folder every run loads; the data: prompt/answer
pairs of 40-900 one-token words.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import time
import traceback
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from itertools import accumulate
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch

sys.path.append(str(Path(__file__).resolve().parents[1]))  # bench._common from this checkout, PYTHONPATH or not
from bench._common import REPO, llama_config, say
from harness.model import LIGER_KERNELS, FastPath
from harness.model._dpo import default_reference
from harness.model._liger import restoring_namespace
from harness.model._profile import step_profiler

# dense bf16 tensor-core peak, FLOP/s, by device name fragment (NVIDIA data sheets)
PEAK_BF16 = {
    "H200": 989.4e12,
    "H100 PCIe": 756.0e12,
    "H100 NVL": 835.0e12,
    "H100": 989.4e12,
    "A100": 312.0e12,
    "L40S": 362.1e12,
    "A10G": 70.0e12,
    "L4": 121.0e12,
}
SECTIONS = ("why", "stock", "liger", "ours", "8b", "ablations", "profile", "scaling", "dpo")
DEFAULT_SECTIONS = ("why", "stock", "liger", "ours", "8b")
# attention implementations tried for TRL's padding_free, in order: FlashAttention 2 (the flash-attn package),
# the Hub kernel (the `kernels` package, downloads on first use), SDPA and flex attention (transformers turns
# the restarting position ids of a packed row into a block-diagonal mask for both)
PADDING_FREE_ATTN = ("flash_attention_2", "kernels-community/flash-attn2", "sdpa", "flex_attention")
MFU_FORMULA = (
    "(4 * N_frozen + 6 * N_lora) * real_tokens_per_second / peak_bf16_flops: forward 2N, backward to "
    "the activations 2N, weight gradients for the LoRA adapters only; N counts a tied embedding once "
    "(as the LM head); no attention-score FLOPs, no activation recompute"
)
PAYS = 1.02  # a Liger kernel pays when it is at least this much faster than none ...
LOSS_CLOSE = 0.01  # ... with its loss curve within this mean relative difference


@dataclass(frozen=True)
class Shape:
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    vocab: int | None  # None: the tokenizer's vocabulary
    tied: bool


SHAPES = {
    "1b": Shape(2048, 8192, 16, 32, 8, 49152, True),  # the issue's 1.07B Llama shape
    "8b": Shape(4096, 14336, 32, 32, 8, 128256, False),  # Llama-3-8B
    "smoke": Shape(64, 128, 2, 4, 2, None, True),
}


@dataclass
class Settings:
    """Everything that defines one comparison (written to the JSON)."""

    shape: str
    steps: int
    warmup: int
    batch: int
    max_length: int
    min_words: int
    max_words: int
    lr: float
    seed: int = 0
    r: int = 16
    alpha: int = 32
    dropout: float = 0.05


@dataclass
class RunStats:
    name: str
    real_tokens_per_second: float = 0.0
    padded_tokens_per_second: float | None = None  # positions computed per second (stock peers)
    mfu: float | None = None
    peak_memory_gib: float = 0.0
    tokens: int = 0
    measured_tokens: int = 0
    measured_seconds: float = 0.0
    wall_seconds: float = 0.0
    losses: list[float] = field(default_factory=list)
    step_seconds: list[float] = field(default_factory=list)
    step_tokens: list[int] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)  # what this run was (flags, attention, data)
    composition: dict[str, Any] = field(default_factory=dict)  # padding / template / loss-token shares
    fastpath: dict[str, Any] = field(default_factory=dict)
    profile: dict[str, Any] | None = None
    error: str | None = None
    metrics: dict[str, list[float]] = field(default_factory=dict)  # DPO: TRL's logged rewards/logps per step


# ------------------------------------------------------------------------------------------------ data


def word_list(tok: Any, n: int = 4000) -> list[str]:
    """Whole-word tokens of the tokenizer ('Ġword'), so one word is one token and lengths are predictable."""
    words = []
    for token, _ in sorted(tok.get_vocab().items(), key=lambda kv: kv[1]):
        if token.startswith("Ġ") and token[1:].isalpha() and token[1:].islower() and 3 <= len(token) <= 9:
            words.append(token[1:])
            if len(words) == n:
                break
    return words


def synthetic_examples(tok: Any, count: int, min_words: int, max_words: int, seed: int) -> list[Any]:
    """Prompt/answer pairs whose total length is uniform in [min_words, max_words] words."""
    from harness.base import Example, Message

    rng = random.Random(seed)
    words = word_list(tok)
    out = []
    for _ in range(count):
        total = rng.randint(min_words, max_words)
        n_prompt = max(1, int(total * rng.uniform(0.2, 0.5)))
        prompt = " ".join(rng.choices(words, k=n_prompt))
        answer = " ".join(rng.choices(words, k=max(1, total - n_prompt)))
        out.append(Example(prompt=[Message(role="user", content=prompt)], answer=answer))
    return out


def vocabulary_rows(tok: Any, count: int, min_words: int, max_words: int, seed: int) -> list[str]:
    """Plain text rows of [min_words, max_words] 'words' drawn from the whole vocabulary (each a decoded
    random token), as a user's quick script would make them; they tokenise to more than a token a word."""
    rng = random.Random(seed)
    special = set(tok.all_special_ids)
    pool = [t for t in range(len(tok)) if t not in special]
    rows = []
    for _ in range(count):
        words: list[str] = []
        target = rng.randint(min_words, max_words)
        while len(words) < target:
            word = tok.decode([rng.choice(pool)]).strip()
            if word:
                words.append(word)
        rows.append(" ".join(words))
    return rows


def n_tokens(tok: Any, text: str) -> int:
    return len(tok(text, add_special_tokens=False)["input_ids"])


@dataclass
class DataVariant:
    """One dataset for the `why` section: rows in a TRL dataset format, SFTConfig flags it needs, and how many
    content tokens (the words themselves, no chat template) its rows hold."""

    name: str
    what: str
    rows: list[dict[str, Any]]
    content_tokens: int
    flags: dict[str, Any] = field(default_factory=dict)


def data_variants(tok: Any, examples: list[Any], settings: Settings) -> list[DataVariant]:
    from harness.arms._train import _sft_dataset

    chat = _sft_dataset(examples).to_list()
    content = sum(n_tokens(tok, ex.prompt[0].content) + n_tokens(tok, ex.answer) for ex in examples)
    as_text = [{"text": tok.apply_chat_template(r["prompt"] + r["completion"], tokenize=False)} for r in chat]
    words = [{"text": f"{ex.prompt[0].content} {ex.answer}"} for ex in examples]
    vocab = vocabulary_rows(tok, len(examples), settings.min_words, settings.max_words, settings.seed + 7)
    return [
        DataVariant(
            "chat-completion-only",
            "the bench's data as-is: chat prompt/completion, loss on the completion",
            chat,
            content,
        ),
        DataVariant(
            "chat-full-loss",
            "the same rows, loss on every token (completion_only_loss=False)",
            chat,
            content,
            {"completion_only_loss": False},
        ),
        DataVariant(
            "chat-as-text", "the same conversations rendered by the chat template, as plain text rows", as_text, content
        ),
        DataVariant(
            "text-same-words", "the same words as plain text (prompt then answer), no chat template", words, content
        ),
        DataVariant(
            "text-vocabulary-words",
            f"plain text rows of {settings.min_words}-{settings.max_words} words drawn from the whole vocabulary",
            [{"text": t} for t in vocab],
            sum(n_tokens(tok, t) for t in vocab),
        ),
    ]


class BatchRecorder:
    """Wraps a trainer's data collator and keeps, for every batch it builds, the counts that explain throughput:
    rows, positions computed (padded), real tokens, tokens with a loss."""

    def __init__(self, collator: Any) -> None:
        self.collator = collator
        self.batches: list[dict[str, int]] = []

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        batch = self.collator(examples)
        ids = batch["input_ids"]
        if "attention_mask" in batch:
            real, rows = int(batch["attention_mask"].sum()), int(ids.shape[0])
        else:  # padding-free: one row, sequence boundaries in cu_seq_lens_q
            cu = batch.get("cu_seq_lens_q")
            real, rows = int(ids.numel()), (int(cu.numel()) - 1 if cu is not None else int(ids.shape[0]))
        labels = batch.get("labels")
        loss = int((labels[:, 1:] != -100).sum()) if labels is not None else 0
        self.batches.append({"rows": rows, "positions": int(ids.numel()), "real": real, "loss": loss})
        return batch


def composition(batches: list[dict[str, int]], content_tokens: int | None) -> dict[str, Any]:
    if not batches:
        return {}
    rows, positions, real, loss = (sum(b[k] for b in batches) for k in ("rows", "positions", "real", "loss"))
    return {
        "batches": len(batches),
        "real_tokens_per_row": real / max(rows, 1),
        "positions_per_batch": positions / len(batches),
        "real_tokens_per_batch": real / len(batches),
        "padding_share": 1 - real / max(positions, 1),
        "loss_token_share": loss / max(real, 1),
        "template_share": (1 - content_tokens / real) if content_tokens and real else None,
    }


# ----------------------------------------------------------------------------------------------- models


def shape_config(shape: Shape, tok: Any) -> Any:
    """The bench model's config: `shape` with the tokenizer's ids (its vocabulary when the shape names none)."""
    return llama_config(shape, vocab=shape.vocab or len(tok), tied=shape.tied, tok=tok, attn_implementation="sdpa")


def build_random_llama(config: Any, device: str, dtype: torch.dtype, nf4: bool = False, seed: int = 0) -> Any:
    """A randomly initialised Llama built directly on `device` (no full-size host copy): every decoder linear
    layer is drawn N(0, 0.02) and, with `nf4`, quantised at once to NF4 with double quantisation (QLoRA's
    format, bitsandbytes Linear4bit), one matrix at a time, so the bf16 weights never exist all together."""
    from torch import nn
    from transformers import LlamaForCausalLM

    gen = torch.Generator(device=device).manual_seed(seed)
    std = config.initializer_range
    with torch.device("meta"):
        model = LlamaForCausalLM(config)
    if nf4:
        import bitsandbytes as bnb

        for layer in model.model.layers:
            for parent in (layer.self_attn, layer.mlp):
                for name, linear in list(parent.named_children()):
                    if not isinstance(linear, nn.Linear):
                        continue
                    quantised = bnb.nn.Linear4bit(
                        linear.in_features,
                        linear.out_features,
                        bias=False,
                        compute_dtype=dtype,
                        compress_statistics=True,
                        quant_type="nf4",
                        device="meta",
                    )
                    weight = torch.empty(linear.out_features, linear.in_features, dtype=dtype, device=device)
                    weight.normal_(0.0, std, generator=gen)
                    quantised.weight = bnb.nn.Params4bit(
                        weight, requires_grad=False, compress_statistics=True, quant_type="nf4", module=quantised
                    ).to(device)
                    del weight
                    setattr(parent, name, quantised)
    for module in model.modules():
        for name, param in list(module.named_parameters(recurse=False)):
            if not param.is_meta:
                continue
            data = torch.empty(param.shape, dtype=dtype, device=device)
            if "norm" in type(module).__name__.lower():
                data.fill_(1.0)
            else:
                data.normal_(0.0, std, generator=gen)
            setattr(module, name, nn.Parameter(data, requires_grad=False))
    with torch.device(device):
        model.model.rotary_emb = type(model.model.rotary_emb)(config=config)
    if config.tie_word_embeddings:
        model.lm_head.weight = model.model.embed_tokens.weight
    if nf4:  # what from_pretrained(quantization_config=...) marks: PEFT and TRL treat the model as QLoRA's,
        model.is_loaded_in_4bit = True  # and the Trainer leaves its placement alone
        model.quantization_method = "bitsandbytes"
    return model


def parameter_count(config: Any) -> int:
    """N of the FLOP count (embedding included once when tied)."""
    h, i, layers, v = config.hidden_size, config.intermediate_size, config.num_hidden_layers, config.vocab_size
    kv = config.num_key_value_heads * (h // config.num_attention_heads)
    per_layer = 2 * h * h + 2 * h * kv + 3 * h * i + 2 * h
    return layers * per_layer + v * h * (1 if config.tie_word_embeddings else 2) + h


def lora_parameter_count(config: Any, r: int) -> int:
    """LoRA's trainable parameters on every linear layer of the decoder (PEFT's all-linear leaves the LM head)."""
    h, i = config.hidden_size, config.intermediate_size
    kv = config.num_key_value_heads * (h // config.num_attention_heads)
    per_layer = r * ((h + h) * 2 + (h + kv) * 2 + (h + i) * 2 + (i + h))
    return config.num_hidden_layers * per_layer


def flops_per_token(config: Any, r: int) -> float:
    return 4.0 * parameter_count(config) + 6.0 * lora_parameter_count(config, r)


def save_random_model(config: Any, tok: Any, device: str, dtype: torch.dtype, folder: Path) -> Path:
    model = build_random_llama(config, device, dtype)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    del model
    free_memory()
    return folder


def free_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


class PackedMismatch(RuntimeError):
    pass


def packed_probe(model: Any, device: str, lengths: tuple[int, ...] = (37, 19, 64)) -> dict[str, Any]:
    """Does this attention implementation keep the sequences of a padding-free row apart? The logits of a packed
    row (position ids restarting per sequence, TRL's cu_seq_lens) are compared with those of the right-padded
    batch, and so are the logits of the same row with an all-ones mask (attention across the boundaries),
    whose error is the scale a mixing implementation would show. Raises PackedMismatch when they mix."""
    g = torch.Generator().manual_seed(0)
    seqs = [torch.randint(0, model.config.vocab_size, (n,), generator=g) for n in lengths]
    ids = torch.zeros(len(lengths), max(lengths), dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, seq in enumerate(seqs):
        ids[row, : len(seq)], mask[row, : len(seq)] = seq, 1
    packed = torch.cat(seqs)[None].to(device)
    positions = torch.cat([torch.arange(n) for n in lengths])[None].to(device)
    cu = torch.tensor([0, *accumulate(lengths)], dtype=torch.int32, device=device)
    was_training = model.training
    model.eval()
    autocast = torch.autocast(device, dtype=torch.bfloat16, enabled=device == "cuda")
    try:
        with torch.no_grad(), autocast:
            # use_cache=False as in training: with a cache transformers does not look for packed sequences
            ref = model(input_ids=ids.to(device), attention_mask=mask.to(device), use_cache=False).logits.float()[
                mask.bool().to(device)
            ]
            out = model(
                input_ids=packed,
                position_ids=positions,
                cu_seq_lens_q=cu,
                cu_seq_lens_k=cu,
                max_length_q=max(lengths),
                max_length_k=max(lengths),
                use_cache=False,
            ).logits.float()[0]
            mixed = model(
                input_ids=packed, position_ids=positions, attention_mask=torch.ones_like(packed), use_cache=False
            ).logits.float()[0]
    finally:
        model.train(was_training)
    scale = ref.abs().max().clamp(min=1e-6)
    error, mixing = float((out - ref).abs().max() / scale), float((mixed - ref).abs().max() / scale)
    result = {
        "lengths": list(lengths),
        "max_rel_error": error,
        "mixing_rel_error": mixing,
        "matches_padded": error <= max(0.25 * mixing, 1e-3),
    }
    if not result["matches_padded"]:
        raise PackedMismatch(
            f"packed forward disagrees with the padded one (max relative error {error:.3g}; "
            f"attention across sequences gives {mixing:.3g})"
        )
    return result


# ------------------------------------------------------------------------------------------------ runs


def arm_for(
    settings: Settings, kind: str = "lora", batch: int | None = None, grad_accum: int = 1, checkpointing: bool = False
) -> Any:
    from harness.plan import LoraArm, QloraArm

    cls = QloraArm if kind == "qlora" else LoraArm
    return cls(
        name=f"bench-{kind}",
        type=kind,
        r=settings.r,
        alpha=settings.alpha,
        dropout=settings.dropout,
        target_modules="all-linear",
        lr=settings.lr,
        max_steps=settings.steps,
        batch_size=batch or settings.batch,
        grad_accum=grad_accum,
        max_length=settings.max_length,
        warmup_steps=0,
        scheduler="linear",
        seed=settings.seed,
        gradient_checkpointing=checkpointing,
    )


def peak_flops(device: str) -> float | None:
    if device != "cuda":
        return None
    name = torch.cuda.get_device_name()
    return next((v for k, v in PEAK_BF16.items() if k in name), None)


def stats_from_rows(
    name: str,
    rows: list[dict[str, Any]],
    warmup: int,
    flops: float,
    device: str,
    peak: float,
    fastpath: dict[str, Any],
    wall: float,
) -> RunStats:
    measured = rows[warmup:] or rows
    tokens = sum(int(r["tokens"]) for r in measured)
    seconds = sum(float(r["seconds"]) for r in measured)
    tps = tokens / max(seconds, 1e-9)
    device_peak = peak_flops(device)
    positions = [r["positions"] for r in measured if "positions" in r]
    return RunStats(
        name=name,
        real_tokens_per_second=tps,
        mfu=flops * tps / device_peak if device_peak else None,
        padded_tokens_per_second=sum(positions) / max(seconds, 1e-9) if positions else None,
        peak_memory_gib=peak,
        tokens=sum(int(r["tokens"]) for r in rows),
        measured_tokens=tokens,
        measured_seconds=seconds,
        wall_seconds=wall,
        losses=[float(r["loss"]) for r in rows],
        step_seconds=[float(r["seconds"]) for r in rows],
        step_tokens=[int(r["tokens"]) for r in rows],
        fastpath=fastpath,
    )


def sft_config_overrides(flags: dict[str, Any]) -> dict[str, Any]:
    """Stock flags as this TRL/transformers spells them: group-by-length sampling is `group_by_length=True` up to
    transformers 5.2x and `train_sampling_strategy="group_by_length"` after. Raises on a flag SFTConfig lacks."""
    from trl import SFTConfig

    known = {f.name for f in fields(SFTConfig)}
    out = dict(flags)
    if out.pop("group_by_length", False):
        if "group_by_length" in known:
            out["group_by_length"] = True
        elif "train_sampling_strategy" in known:
            out["train_sampling_strategy"] = "group_by_length"
        else:
            raise ValueError("SFTConfig has neither group_by_length nor train_sampling_strategy")
    unknown = sorted(set(out) - known)
    if unknown:
        raise ValueError(f"SFTConfig has no field {unknown[0]!r} in this TRL")
    return out


def peer_lora(settings: Settings) -> Any:
    """The LoRA adapter the stock TRL peers train (SFT and DPO): the settings' rank, alpha and dropout on every
    linear layer."""
    from peft import LoraConfig

    return LoraConfig(
        r=settings.r,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules="all-linear",
        task_type="CAUSAL_LM",
        bias="none",
    )


def run_trl(
    name: str,
    load: Callable[[str], Any],
    tok: Any,
    dataset: Any,
    settings: Settings,
    device: str,
    flops: float,
    *,
    flags: dict[str, Any] | None = None,
    attn: str = "sdpa",
    probe: bool = False,
    content_tokens: int | None = None,
    callbacks: tuple[Any, ...] = (),
) -> RunStats:
    """Stock TRL: SFTTrainer + PEFT LoRA, TRL's defaults plus `flags` (SFTConfig fields), the model loaded with
    `attn` as its attention implementation. Tokens per step are the real tokens of the batches TRL built."""
    from transformers.models.llama import modeling_llama
    from transformers.trainer_callback import PrinterCallback, ProgressCallback
    from trl import SFTConfig, SFTTrainer

    from harness.arms import peak_memory_gib, quiet_libraries, step_logger
    from harness.arms._train import _eos_for_template

    quiet_libraries()
    started = time.perf_counter()
    flags = dict(flags or {})
    config: dict[str, Any] = {
        "stock_flags": flags,
        "attn_implementation": attn,
        "same_order_as_peer": not flags.get("group_by_length", False),
    }
    overrides = sft_config_overrides(flags)
    config["sft_config_overrides"] = overrides
    log = step_logger(progress=False)
    recorder: BatchRecorder | None = None
    model = trainer = None
    with restoring_namespace(modeling_llama), tempfile.TemporaryDirectory() as out:
        try:
            model = load(attn)
            if probe:
                config["packed_probe"] = packed_probe(model, device)
            base = dict(
                output_dir=out,
                per_device_train_batch_size=settings.batch,
                max_length=settings.max_length,
                max_steps=settings.steps,
                learning_rate=settings.lr,
                lr_scheduler_type="linear",
                warmup_steps=0,
                logging_steps=1,
                save_strategy="no",
                report_to="none",
                seed=settings.seed,
                data_seed=settings.seed,
                bf16=device == "cuda",
                use_cpu=device == "cpu",
                include_num_input_tokens_seen="non_padding",
                disable_tqdm=True,
                eos_token=_eos_for_template(tok),
            )
            args = SFTConfig(**(base | overrides))
            config["gradient_checkpointing"] = bool(
                getattr(args, "gradient_checkpointing", None) or getattr(args, "activation_checkpointing", None)
            )
            trainer = SFTTrainer(
                model=model,
                args=args,
                train_dataset=dataset,
                processing_class=tok,
                peft_config=peer_lora(settings),
                callbacks=[log, *callbacks],
            )
            trainer.remove_callback(PrinterCallback)
            trainer.remove_callback(ProgressCallback)
            recorder = BatchRecorder(trainer.data_collator)
            trainer.data_collator = recorder
            if device == "cuda":
                torch.cuda.reset_peak_memory_stats()
            trainer.train()
            peak = peak_memory_gib()
        finally:  # a failed configuration must leave the GPU empty for the next one
            model = trainer = None
            free_memory()
    rows, batches = log.rows, (recorder.batches if recorder else [])
    for row, batch in zip(rows, batches, strict=False):  # step i trained batch i (no accumulation)
        row["tokens"], row["positions"] = batch["real"], batch["positions"]
    stats = stats_from_rows(name, rows, settings.warmup, flops, device, peak, {}, time.perf_counter() - started)
    stats.config = config
    stats.composition = composition(batches[: len(rows)], content_tokens)
    return stats


def run_ours(
    name: str,
    folder: Path,
    examples: list[Any],
    settings: Settings,
    device: str,
    flops: float,
    fast: FastPath | None,
    micro_batch: int | None = None,
) -> RunStats:
    """tunegate's own path, end to end: harness.arms.train_sft (loads the folder, trains, saves the adapter).
    `micro_batch` splits each optimizer batch into micro-batches with gradient accumulation (the memory plan may
    merge them back)."""
    from harness.arms import train_sft

    started = time.perf_counter()
    micro = micro_batch or settings.batch
    with tempfile.TemporaryDirectory() as out:
        result = train_sft(
            arm_for(settings, batch=micro, grad_accum=settings.batch // micro),
            str(folder),
            examples,
            Path(out),
            device,
            fast=fast,
            progress=False,
        )
    free_memory()
    stats = stats_from_rows(
        name,
        result.steps,
        settings.warmup,
        flops,
        device,
        result.peak_memory_gib,
        result.fastpath,
        time.perf_counter() - started,
    )
    stats.config = {"fast_path": asdict(fast) if fast else None, "micro_batch": micro}
    return stats


def run_built(
    name: str,
    build: Callable[[], Any],
    tok: Any,
    examples: list[Any],
    settings: Settings,
    device: str,
    flops: float,
    kind: str,
    fast: FastPath,
    callbacks: tuple[Any, ...] = (),
) -> RunStats:
    """Our path on a model built in memory (the 8B section): harness.arms.sft_with_model."""
    from harness.arms import sft_with_model

    started = time.perf_counter()
    model = build()
    say(
        f"  built {name} in {time.perf_counter() - started:.1f}s "
        f"({torch.cuda.memory_allocated() / 2**30:.2f} GiB allocated)"
        if device == "cuda"
        else f"  built {name}"
    )
    try:
        with tempfile.TemporaryDirectory() as out:
            result = sft_with_model(
                arm_for(settings, kind),
                model,
                tok,
                examples,
                Path(out),
                device,
                fast=fast,
                progress=False,
                callbacks=callbacks,
            )
    finally:
        del model
        free_memory()
    stats = stats_from_rows(
        name,
        result.steps,
        settings.warmup,
        flops,
        device,
        result.peak_memory_gib,
        result.fastpath,
        time.perf_counter() - started,
    )
    stats.config = {"fast_path": asdict(fast), "kind": kind}
    return stats


def guarded(name: str, fn: Callable[[], RunStats], config: dict[str, Any] | None = None) -> RunStats:
    """One run; a failure is recorded (type, first line of the message) instead of ending the bench."""
    say(f"[{time.strftime('%H:%M:%S')}] {name} ...")
    started = time.perf_counter()
    try:
        stats = fn()
    except Exception as exc:  # noqa: BLE001 - a failing configuration is a result too
        traceback.print_exc()
        free_memory()
        message = str(exc).strip().splitlines()[0][:400] if str(exc).strip() else ""
        say(f"    FAILED: {type(exc).__name__}: {message}")
        return RunStats(
            name=name,
            error=f"{type(exc).__name__}: {message}",
            config=dict(config or {}),
            wall_seconds=time.perf_counter() - started,
        )
    mfu = f", MFU {stats.mfu:.1%}" if stats.mfu is not None else ""
    losses = f"loss {stats.losses[0]:.4f} -> {stats.losses[-1]:.4f}" if stats.losses else "no loss logged"
    say(
        f"    {stats.real_tokens_per_second:,.0f} real tok/s{mfu}, peak {stats.peak_memory_gib:.2f} GiB, "
        f"{losses}, {stats.wall_seconds:.0f}s wall"
    )
    return stats


# --------------------------------------------------------------------------------------------- profile


# ---------------------------------------------------------------------------------------------- report


def loss_gap(a: dict[str, Any], b: dict[str, Any], first: int) -> dict[str, float]:
    n = min(first, len(a["losses"]), len(b["losses"]))
    if n == 0:
        return {}
    pairs = list(zip(a["losses"][:n], b["losses"][:n], strict=True))
    return {
        "steps": n,
        "mean_abs_diff": sum(abs(x - y) for x, y in pairs) / n,
        "mean_rel_diff": sum(abs(x - y) / max(abs(y), 1e-9) for x, y in pairs) / n,
    }


def compare(ours: dict[str, Any], peer: dict[str, Any], first: int) -> dict[str, Any]:
    """Ours against a peer, both as the JSON holds runs."""
    if ours.get("error") or peer.get("error") or not peer.get("real_tokens_per_second"):
        return {"error": ours.get("error") or peer.get("error") or "peer measured no tokens"}
    return {
        "throughput_ratio": ours["real_tokens_per_second"] / peer["real_tokens_per_second"],
        "peak_memory_ratio": ours["peak_memory_gib"] / peer["peak_memory_gib"] if peer["peak_memory_gib"] else None,
        "same_tokens": ours["tokens"] == peer["tokens"],
        "tokens": [ours["tokens"], peer["tokens"]],
        "same_data_order": peer.get("config", {}).get("same_order_as_peer", True),
        "loss": loss_gap(ours, peer, first),
    }


def is_stock(name: str) -> bool:
    return name == "peer" or name.startswith("trl-")


def best_stock(runs: dict[str, dict[str, Any]]) -> str | None:
    """The stock TRL configuration with the highest real tokens/s that did not fail."""
    ran = {n: r for n, r in runs.items() if is_stock(n) and not r.get("error") and r.get("real_tokens_per_second")}
    return max(ran, key=lambda n: ran[n]["real_tokens_per_second"]) if ran else None


def vs_best_stock(runs: dict[str, dict[str, Any]], ours: str, first: int) -> dict[str, Any] | None:
    best = best_stock(runs)
    if best is None or ours not in runs:
        return None
    comp = compare(runs[ours], runs[best], first)
    if "error" in comp:
        return {"peer": best, "ours": ours, "error": comp["error"]}
    out = {
        "peer": best,
        "ours": ours,
        "throughput_ratio": comp["throughput_ratio"],
        "peak_memory_ratio": comp["peak_memory_ratio"],
        "loss_rel_diff": comp["loss"].get("mean_rel_diff"),
        "same_tokens": comp["same_tokens"],
        "same_data_order": comp["same_data_order"],
        "peer_config": runs[best].get("config", {}),
    }
    if not comp["same_data_order"]:  # group-by-length reorders the batches: compare losses with a same-order peer
        same = {n: r for n, r in runs.items() if r.get("config", {}).get("same_order_as_peer", True)}
        reference = best_stock(same)
        if reference is not None:
            out["loss_reference"] = reference
            out["loss_rel_diff_same_order"] = loss_gap(runs[ours], runs[reference], first).get("mean_rel_diff")
    return out


def targets(report: dict[str, Any]) -> dict[str, Any]:
    """Issue 16's targets against the best stock peer (meaningful on the GPU run only)."""
    best = report.get("vs_best_stock") or {}
    if "throughput_ratio" not in best:
        return {}
    mfu = report["runs"].get(best["ours"], {}).get("mfu")
    loss = best.get("loss_rel_diff") if best.get("same_data_order", True) else best.get("loss_rel_diff_same_order")
    return {
        "ours_vs_best_stock": {
            "throughput_ratio": {
                "value": best["throughput_ratio"],
                "target": 1.5,
                "met": best["throughput_ratio"] >= 1.5,
            },
            "peak_memory_ratio": {
                "value": best["peak_memory_ratio"],
                "target": 1.0,
                "met": best["peak_memory_ratio"] is not None and best["peak_memory_ratio"] <= 1.0,
            },
            "loss_rel_diff": {"value": loss, "target": LOSS_CLOSE, "met": loss is not None and loss <= LOSS_CLOSE},
            "mfu": {"value": mfu, "target": 0.25, "met": mfu is not None and mfu >= 0.25},
        }
    }


def liger_per_kernel(runs: dict[str, dict[str, Any]], first: int) -> dict[str, Any]:
    """Each Liger kernel alone against none: a kernel pays when it was applied, is >= PAYS x faster and keeps
    the loss within LOSS_CLOSE."""
    none = runs.get("ours-liger-none")
    if not none or none.get("error"):
        return {"error": "the run without Liger kernels failed or did not run"}
    out: dict[str, Any] = {"baseline": "ours-liger-none", "threshold": PAYS, "kernels": {}}
    for kernel in (*LIGER_KERNELS, "all"):
        name = f"ours-liger-{kernel}"
        run = runs.get(name)
        if run is None:
            continue
        comp = compare(run, none, first)
        fastpath = run.get("fastpath", {})
        layers, head = str(fastpath.get("liger", "")), str(fastpath.get("liger_loss_head", ""))
        wanted = LIGER_KERNELS if kernel == "all" else (kernel,)
        applied = all((head if k == "fused_linear_cross_entropy" else layers).startswith("on") for k in wanted)
        entry = {
            "run": name,
            "applied": applied,
            "decoder_kernels": layers,
            "loss_head": head,
            "error": comp.get("error"),
        }
        if "throughput_ratio" in comp:
            rel = comp["loss"].get("mean_rel_diff")
            entry |= {
                "throughput_ratio_vs_none": comp["throughput_ratio"],
                "peak_memory_ratio_vs_none": comp["peak_memory_ratio"],
                "loss_rel_diff_vs_none": rel,
                "pays": applied and comp["throughput_ratio"] >= PAYS and rel is not None and rel <= LOSS_CLOSE,
            }
        out["kernels"][kernel] = entry
    out["pays"] = [k for k in LIGER_KERNELS if out["kernels"].get(k, {}).get("pays")]
    return out


def versions() -> dict[str, str | None]:
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, str | None] = {"python": platform.python_version(), "cuda": torch.version.cuda}
    for pkg in (
        "torch",
        "transformers",
        "trl",
        "peft",
        "accelerate",
        "liger-kernel",
        "bitsandbytes",
        "triton",
        "flash-attn",
        "kernels",
    ):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = None
    return out


def device_info(device: str) -> dict[str, Any]:
    if device != "cuda":
        return {"type": "cpu", "name": platform.processor() or platform.machine(), "threads": torch.get_num_threads()}
    props = torch.cuda.get_device_properties(0)
    return {
        "type": "cuda",
        "name": torch.cuda.get_device_name(),
        "memory_gib": props.total_memory / 2**30,
        "peak_bf16_flops": peak_flops(device),
    }


# ----------------------------------------------------------------------------------------------- bench


@dataclass
class Bench:
    """What every section shares: the data, the saved model, the report being built, the time budget."""

    args: argparse.Namespace
    tok: Any
    device: str
    dtype: torch.dtype
    settings: Settings
    config: Any
    examples: list[Any]
    folder: Path | None
    report: dict[str, Any]
    deadline: float
    walls: list[float] = field(default_factory=list)

    @property
    def flops(self) -> float:
        return flops_per_token(self.config, self.settings.r)

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def per_run(self) -> float:
        """Seconds a 1B run takes: the mean of those measured so far, or a first guess."""
        return sum(self.walls) / len(self.walls) if self.walls else (6.0 if self.args.smoke else 30.0)

    def announce(self, section: str, runs: int, per_run: float | None = None) -> None:
        estimate = runs * (per_run or self.per_run())
        say(f"\n== {section}: {runs} runs, about {estimate:.0f}s ({self.left():.0f}s of the time budget left)")

    def run(
        self,
        name: str,
        fn: Callable[[], RunStats],
        *,
        config: dict[str, Any] | None = None,
        into: dict[str, Any] | None = None,
        estimate: float | None = None,
    ) -> RunStats | None:
        """One guarded run stored under `into` (the report's runs); skipped, and said so, past the time budget."""
        need = 1.2 * (estimate or self.per_run()) + 10
        if not self.args.smoke and self.left() < need:
            say(f"  skipped {name}: {self.left():.0f}s of the time budget left, about {need:.0f}s needed")
            self.report["skipped"].append(name)
            return None
        stats = guarded(name, fn, config)
        if estimate is None and stats.wall_seconds > 1:
            self.walls.append(stats.wall_seconds)
        (self.report["runs"] if into is None else into)[name] = asdict(stats)
        return stats

    def load(self, attn: str) -> Any:
        from transformers import AutoModelForCausalLM

        assert self.folder is not None
        model = AutoModelForCausalLM.from_pretrained(str(self.folder), dtype=self.dtype, attn_implementation=attn)
        return model.to(self.device)

    def memory_budget(self, runs: dict[str, dict[str, Any]]) -> float | None:
        """Ours gets the best stock peer's peak memory as its budget (or --ours-budget-gib); none on a CPU."""
        if self.device != "cuda":
            return None
        if self.args.ours_budget_gib:
            return self.args.ours_budget_gib
        best = best_stock(runs)
        return runs[best]["peak_memory_gib"] if best else None

    def ours_fast(self, liger: tuple[str, ...] | None, budget: float | None, **changes: Any) -> FastPath:
        a = self.args
        checkpointing = a.ours_checkpointing
        if self.device == "cpu" and checkpointing == "auto":
            checkpointing = "none"  # no device memory to plan against
        options = (
            dict(
                liger=liger,
                checkpointing=checkpointing,
                compile=a.ours_compile,
                attention=a.ours_attention,
                memory_budget_gib=budget,
            )
            | changes
        )
        return FastPath(**options)

    def ours_liger(self) -> tuple[str, ...] | None:
        choice = self.args.ours_liger
        if choice == "default":
            return None
        if choice == "measured":
            return tuple(self.report.get("liger_per_kernel", {}).get("pays", ()))
        return () if choice == "none" else tuple(k.strip() for k in choice.split(",") if k.strip())


def chat_dataset(examples: list[Any]) -> Any:
    from harness.arms._train import _sft_dataset

    return _sft_dataset(examples)


def content_tokens(tok: Any, examples: list[Any]) -> int:
    return sum(n_tokens(tok, ex.prompt[0].content) + n_tokens(tok, ex.answer) for ex in examples)


def section_why(b: Bench) -> None:
    from datasets import Dataset

    settings = Settings(**(asdict(b.settings) | {"steps": b.args.why_steps, "warmup": b.args.why_warmup}))
    examples = b.examples[: settings.steps * settings.batch]
    variants = data_variants(b.tok, examples, settings)
    b.announce("why (TRL defaults on five forms of the data)", len(variants), 0.6 * b.per_run())
    out: dict[str, Any] = {
        "what": "TRL's SFTTrainer at its defaults (gradient checkpointing on, right-padded batches, SDPA) on the "
        "same model and LoRA, on five forms of data of similar length; shares are of the batches TRL built",
        "settings": asdict(settings),
        "variants": {},
        "runs": {},
    }
    for v in variants:
        dataset = Dataset.from_list(v.rows)
        stats = b.run(
            f"why-{v.name}",
            lambda v=v, d=dataset: run_trl(
                f"why-{v.name}",
                b.load,
                b.tok,
                d,
                settings,
                b.device,
                b.flops,
                flags=v.flags,
                content_tokens=v.content_tokens,
            ),
            into=out["runs"],
            estimate=0.6 * b.per_run(),
        )
        if stats is None:
            continue
        out["variants"][v.name] = {
            "what": v.what,
            "error": stats.error,
            "real_tokens_per_second": stats.real_tokens_per_second,
            "padded_tokens_per_second": stats.padded_tokens_per_second,
            "peak_memory_gib": stats.peak_memory_gib,
            **stats.composition,
        }
    names = [v.name for v in variants]
    changes = [
        "loss on every token instead of the completion only",
        "the conversations as plain text rows",
        "no chat template (the same words)",
        "other rows: words drawn from the whole vocabulary",
    ]
    out["steps"] = []
    for (a, c), change in zip(zip(names, names[1:], strict=False), changes, strict=True):
        x, y = out["variants"].get(a), out["variants"].get(c)
        if not x or not y or x["error"] or y["error"] or not x["real_tokens_per_second"]:
            continue
        out["steps"].append(
            {
                "from": a,
                "to": c,
                "change": change,
                "real_tokens_per_second_ratio": y["real_tokens_per_second"] / x["real_tokens_per_second"],
                "padded_tokens_per_second_ratio": (
                    y["padded_tokens_per_second"] / x["padded_tokens_per_second"]
                    if x["padded_tokens_per_second"]
                    else None
                ),
                **{
                    f"{k}": [x.get(k), y.get(k)]
                    for k in ("padding_share", "template_share", "loss_token_share", "real_tokens_per_row")
                },
            }
        )
    first, last = out["variants"].get(names[0]), out["variants"].get(names[-1])
    if first and last and not first["error"] and not last["error"] and first["real_tokens_per_second"]:
        out["overall"] = {
            "from": names[0],
            "to": names[-1],
            "real_tokens_per_second_ratio": last["real_tokens_per_second"] / first["real_tokens_per_second"],
            "largest_step": max(out["steps"], key=lambda s: abs(s["real_tokens_per_second_ratio"] - 1), default={}).get(
                "change"
            ),
        }
    b.report["why_peer_is_slow"] = out


def slug(text: str) -> str:
    return text.replace("/", "-").replace("_", "-")


def section_stock(b: Bench) -> None:
    attns = b.args.padding_free_attn
    b.announce("stock TRL peers", 4 + len(attns))
    dataset, content = chat_dataset(b.examples), content_tokens(b.tok, b.examples)
    runs = b.report["runs"]

    def trl(name: str, flags: dict[str, Any], attn: str = "sdpa", probe: bool = False) -> RunStats | None:
        config = {
            "stock_flags": flags,
            "attn_implementation": attn,
            "same_order_as_peer": not flags.get("group_by_length", False),
        }
        return b.run(
            name,
            lambda: run_trl(
                name,
                b.load,
                b.tok,
                dataset,
                b.settings,
                b.device,
                b.flops,
                flags=flags,
                attn=attn,
                probe=probe,
                content_tokens=content,
            ),
            config=config,
        )

    trl("peer", {})
    base, prefix = {"gradient_checkpointing": False}, "trl-no-gc"
    trl(prefix, base)
    liger = trl(f"{prefix}-liger", base | {"use_liger_kernel": True})
    if liger is not None and not liger.error:
        base, prefix = base | {"use_liger_kernel": True}, f"{prefix}-liger"
    padding_free: dict[str, Any] = {}
    for attn in attns:
        name = f"{prefix}-padding-free-{slug(attn)}"
        stats = trl(name, base | {"padding_free": True, "max_length": None}, attn=attn, probe=True)
        if stats is not None:
            padding_free[attn] = {
                "run": name,
                "ran": not stats.error,
                "error": stats.error,
                "packed_probe": stats.config.get("packed_probe"),
            }
    trl(f"{prefix}-group-by-length", base | {"group_by_length": True})
    best = best_stock(runs)
    b.report["stock"] = {
        "runs": [n for n in runs if is_stock(n)],
        "best": best,
        "best_config": runs[best]["config"] if best else None,
        "padding_free_attention": padding_free,
        "note": "each configuration adds flags to the previous one that ran; the padding-free runs take "
        "max_length=None (TRL refuses padding_free with a max_length unless packing; no row here is "
        "longer than max_length) and first check that a packed forward matches the padded one",
    }


def section_liger(b: Bench) -> None:
    budget = b.memory_budget(b.report["runs"])
    choices: list[tuple[str, tuple[str, ...]]] = [
        ("none", ()),
        *((k, (k,)) for k in LIGER_KERNELS),
        ("all", LIGER_KERNELS),
    ]
    b.announce("liger (our path, one kernel at a time)", len(choices))
    for label, kernels in choices:
        name = f"ours-liger-{label}"
        fast = b.ours_fast(kernels, budget)
        b.run(
            name,
            lambda n=name, f=fast: run_ours(
                n, b.folder, b.examples, b.settings, b.device, b.flops, f, b.args.ours_micro_batch
            ),
        )
    b.report["liger_per_kernel"] = liger_per_kernel(b.report["runs"], b.args.loss_steps)


def section_ours(b: Bench) -> None:
    budget = b.memory_budget(b.report["runs"])
    liger = b.ours_liger()
    variants = [("ours", b.ours_fast(liger, budget))]
    if budget is not None:
        variants.append(("ours-unbounded", b.ours_fast(liger, None)))
    lean = FastPath().lean_lora  # the other choice than the default's, for the record
    variants.append(("ours-no-lean-lora" if lean else "ours-lean-lora", b.ours_fast(liger, budget, lean_lora=not lean)))
    graphs = FastPath().cuda_graphs
    variants.append(
        ("ours-no-cuda-graphs" if graphs else "ours-cuda-graphs", b.ours_fast(liger, budget, cuda_graphs=not graphs))
    )
    overlap = FastPath().overlap
    variants.append(("ours-no-overlap" if overlap else "ours-overlap", b.ours_fast(liger, budget, overlap=not overlap)))
    if b.args.compile_variant:
        variants.append(("ours-compile", b.ours_fast(liger, budget, compile=True)))
    b.announce("ours", len(variants))
    for name, fast in variants:
        b.run(
            name,
            lambda n=name, f=fast: run_ours(
                n, b.folder, b.examples, b.settings, b.device, b.flops, f, b.args.ours_micro_batch
            ),
        )
    b.report["ours_config"] = {
        "memory_budget_gib": budget,
        "memory_budget_from": (
            "--ours-budget-gib"
            if b.args.ours_budget_gib
            else f"peak memory of {best_stock(b.report['runs'])}"
            if budget
            else "default (90% of GPU)"
        ),
        "liger": b.args.ours_liger,
        "checkpointing": b.args.ours_checkpointing,
        "compile": b.args.ours_compile,
        "micro_batch": b.args.ours_micro_batch or b.settings.batch,
    }


def section_ablations(b: Bench) -> None:
    budget = b.memory_budget(b.report["runs"])
    liger = b.ours_liger()
    variants: list[tuple[str, FastPath | None]] = [
        ("ours-no-padding-free", b.ours_fast(liger, budget, padding_free=False)),
        ("ours-full-checkpointing", b.ours_fast(liger, budget, checkpointing="full")),
        ("plain-harness-path", None),
    ]
    b.announce("ablations", len(variants))
    for name, fast in variants:
        b.run(name, lambda n=name, f=fast: run_ours(n, b.folder, b.examples, b.settings, b.device, b.flops, f))


def section_profile(b: Bench) -> None:
    from harness.arms import sft_with_model
    from harness.model import load_model

    steps, first = (2 if b.args.smoke else 3), b.settings.warmup
    prof = Settings(**(asdict(b.settings) | {"steps": first + steps + 1}))
    b.announce("profile (peer and ours, torch.profiler)", 2)
    tables: dict[str, Any] = {}
    peer_cb = step_profiler(first, steps, b.device)
    guarded(
        "trl-no-gc (profiled)",
        lambda: run_trl(
            "trl-no-gc-profiled",
            b.load,
            b.tok,
            chat_dataset(b.examples),
            prof,
            b.device,
            b.flops,
            flags={"gradient_checkpointing": False},
            callbacks=(peer_cb,),
        ),
    )
    tables["trl-no-gc"] = peer_cb.table
    ours_cb = step_profiler(first, steps, b.device)
    fast = b.ours_fast(b.ours_liger(), b.memory_budget(b.report["runs"]))

    def profiled_ours() -> RunStats:
        model, tok = load_model(str(b.folder), b.device)
        model.train()
        try:
            with tempfile.TemporaryDirectory() as out:
                r = sft_with_model(
                    arm_for(prof),
                    model,
                    tok,
                    b.examples,
                    Path(out),
                    b.device,
                    fast=fast,
                    progress=False,
                    callbacks=(ours_cb,),
                )
        finally:
            del model
            free_memory()
        return stats_from_rows("ours-profiled", r.steps, first, b.flops, b.device, r.peak_memory_gib, r.fastpath, 0.0)

    guarded("ours (profiled)", profiled_ours)
    tables["ours"] = ours_cb.table
    b.report["profiles"] = tables
    for name, table in tables.items():
        if name in b.report["runs"]:
            b.report["runs"][name]["profile"] = table


def section_scaling(b: Bench) -> None:
    """Step time against tokens per step, ours and TRL without checkpointing, at several batch sizes (no
    accumulation): the intercept of a least-squares line is the per-step cost that does not shrink with fewer
    tokens (launches, synchronisations, optimizer, trainer), its slope the cost per token."""
    batches = [int(x) for x in b.args.scaling_batches.split(",") if x.strip()]
    steps = 4 if b.args.smoke else 12
    warmup = 1 if b.args.smoke else 3
    b.announce("scaling (step time vs tokens per step)", 2 * len(batches))
    runs: dict[str, Any] = {}
    fast = b.ours_fast(b.ours_liger(), None)
    for batch in batches:
        settings = Settings(**(asdict(b.settings) | {"steps": steps, "warmup": warmup, "batch": batch}))
        examples = synthetic_examples(b.tok, steps * batch, settings.min_words, settings.max_words, settings.seed)
        b.run(
            f"scaling-ours-b{batch}",
            lambda s=settings, e=examples, f=fast: run_ours("ours", b.folder, e, s, b.device, b.flops, f),
            into=runs,
        )
        b.run(
            f"scaling-trl-no-gc-b{batch}",
            lambda s=settings, e=examples: run_trl(
                "trl-no-gc",
                b.load,
                b.tok,
                chat_dataset(e),
                s,
                b.device,
                b.flops,
                flags={"gradient_checkpointing": False},
            ),
            into=runs,
        )
    fits = {}
    for path in ("ours", "trl-no-gc"):
        ran = [r for batch in batches if (r := runs.get(f"scaling-{path}-b{batch}")) and not r.get("error")]
        fits[path] = line_fit(
            [point for r in ran for point in zip(r["step_tokens"][warmup:], r["step_seconds"][warmup:], strict=True)]
        )
    b.report["scaling"] = {
        "batches": batches,
        "steps": steps,
        "warmup": warmup,
        "fits": fits,
        "runs": {
            k: {f: v[f] for f in ("real_tokens_per_second", "peak_memory_gib", "step_tokens", "step_seconds", "error")}
            for k, v in runs.items()
        },
    }


def line_fit(points: list[tuple[int, float]]) -> dict[str, Any] | None:
    """Least squares seconds = intercept + slope * tokens, over (tokens, seconds) points (scipy's linregress);
    None when fewer than two token counts differ."""
    from scipy.stats import linregress

    if len({x for x, _ in points}) < 2:
        return None
    fit = linregress(*zip(*points, strict=True))
    return {
        "points": len(points),
        "intercept_ms_per_step": float(fit.intercept) * 1000,
        "ms_per_1k_tokens": float(fit.slope) * 1e6,
        "r2": float(fit.rvalue) ** 2 if len({y for _, y in points}) > 1 else None,
    }


def section_8b(b: Bench) -> None:
    """LoRA (bf16) and QLoRA (NF4) at Llama-3-8B shape: TRL defaults, the best stock configuration found on the
    1B shape, and ours within the best of those peers' memory; the model is built anew (same seed) for each run."""
    a = b.args
    shape = SHAPES["smoke" if a.smoke else "8b"]
    config = shape_config(shape, b.tok)
    settings = Settings(
        **(
            asdict(b.settings)
            | {"shape": "smoke" if a.smoke else "8b", "steps": a.steps_8b, "warmup": a.warmup_8b, "batch": a.batch_8b}
        )
    )
    examples = synthetic_examples(b.tok, settings.steps * settings.batch, settings.min_words, settings.max_words, 1)
    dataset, content = chat_dataset(examples), content_tokens(b.tok, examples)
    flops = flops_per_token(config, settings.r)
    best = best_stock(b.report["runs"])
    peers: list[tuple[str, dict[str, Any], str]] = [("peer", {}, "sdpa")]
    if best and best != "peer":
        best_config = b.report["runs"][best]["config"]
        peers.append((best, best_config.get("stock_flags", {}), best_config.get("attn_implementation", "sdpa")))
    per_run = 8.0 if a.smoke else 45.0
    b.announce(
        f"8b ({shape.layers} layers, LoRA and QLoRA: {', '.join(p[0] for p in peers)}, ours)",
        2 * (len(peers) + 1),
        per_run,
    )
    section: dict[str, Any] = {
        "settings": asdict(settings),
        "parameters": parameter_count(config),
        "lora_parameters": lora_parameter_count(config, settings.r),
        "peers": [p[0] for p in peers],
        "best_stock_from": best,
    }

    for kind in ("lora", "qlora"):
        nf4 = kind == "qlora"
        runs: dict[str, Any] = {}

        def build(attn: str = "sdpa", nf4: bool = nf4) -> Any:
            model = build_random_llama(config, b.device, b.dtype, nf4=nf4)
            if attn != "sdpa":
                model.set_attn_implementation(attn)
            return model

        for name, flags, attn in peers:
            b.run(
                f"8b {kind} {name}",
                lambda n=name, f=flags, t=attn: run_trl(
                    n, build, b.tok, dataset, settings, b.device, flops, flags=f, attn=t, content_tokens=content
                ),
                config={
                    "stock_flags": flags,
                    "attn_implementation": attn,
                    "same_order_as_peer": not flags.get("group_by_length", False),
                },
                into=runs,
                estimate=per_run,
            )
        for key in list(runs):
            runs[key.removeprefix(f"8b {kind} ")] = runs.pop(key)
        budget = b.memory_budget(runs)
        # bitsandbytes' paged 8-bit AdamW (the qlora recipe's optimizer) needs CUDA: on a CPU the NF4 model trains
        # with the lora recipe's AdamW
        recipe = kind if b.device == "cuda" else "lora"
        fast = b.ours_fast(b.ours_liger(), budget)
        b.run(
            f"8b {kind} ours",
            lambda f=fast, r=recipe: run_built(
                "ours", lambda: build("sdpa"), b.tok, examples, settings, b.device, flops, r, f
            ),
            into=runs,
            estimate=per_run,
        )
        runs["ours"] = runs.pop(f"8b {kind} ours", None) or {}
        if not runs["ours"]:
            runs.pop("ours")
        section[kind] = {
            "runs": runs,
            "memory_budget_gib": budget,
            "vs_best_stock": vs_best_stock(runs, "ours", a.loss_steps),
        }
    lora, qlora = (section[k]["runs"].get("ours", {}) for k in ("lora", "qlora"))
    if (
        lora.get("peak_memory_gib")
        and qlora.get("peak_memory_gib")
        and not lora.get("error")
        and not qlora.get("error")
    ):
        section["qlora_vs_lora"] = {
            "peak_memory_ratio": qlora["peak_memory_gib"] / lora["peak_memory_gib"],
            "throughput_ratio": qlora["real_tokens_per_second"] / max(lora["real_tokens_per_second"], 1e-9),
            "note": "ours, each within its own best stock peer's memory",
        }
    b.report["shape_8b"] = section


# ------------------------------------------------------------------------------------------------- dpo
# DPO (issue 32): TRL's DPOTrainer at its defaults and its best stock flags against ours (harness.arms
# dpo_with_model on the fast path, harness.model._dpo), on the same pairs, weights, LoRA, order, seed and steps.

DPO_METRICS = (
    "rewards/chosen",
    "rewards/rejected",
    "rewards/accuracies",
    "rewards/margins",
    "logps/chosen",
    "logps/rejected",
)
DPO_MFU_FORMULA = (
    "(6 * N_frozen + 6 * N_lora) * real_tokens_per_second / peak_bf16_flops: the SFT count (4N + 6 "
    "N_lora) plus the reference forward (2N) per real token of chosen and rejected sequences, "
    "precomputed or not"
)


def dpo_pairs(tok: Any, count: int, min_words: int, max_words: int, seed: int) -> list[Any]:
    """Preference pairs: a synthetic prompt, its answer as chosen and another example's answer as rejected."""
    from harness.base import Preference

    examples = synthetic_examples(tok, 2 * count, min_words, max_words, seed)
    out = []
    for ex, other in zip(examples[:count], examples[count:], strict=True):
        rejected = other.answer if other.answer != ex.answer else other.answer + " no"
        out.append(Preference(prompt=ex.prompt, chosen=ex.answer, rejected=rejected))
    return out


def dpo_flops_per_token(config: Any, r: int) -> float:
    return flops_per_token(config, r) + 2.0 * parameter_count(config)


class MetricRows:
    """A trainer callback keeping TRL's logged DPO metrics per step."""

    def __new__(cls) -> Any:
        from transformers import TrainerCallback

        class Rows(TrainerCallback):
            def __init__(self) -> None:
                self.metrics: dict[str, list[float]] = {k: [] for k in DPO_METRICS}

            def on_log(
                self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kw: Any
            ) -> None:
                if logs and "loss" in logs:
                    for key in DPO_METRICS:
                        self.metrics[key].append(float(logs.get(key, float("nan"))))

        return Rows()


def dpo_stats(
    name: str,
    rows: list[dict[str, Any]],
    metrics: dict[str, list[float]],
    settings: Settings,
    flops: float,
    device: str,
    peak: float,
    fastpath: dict[str, Any],
    wall: float,
    reference_seconds: float,
) -> RunStats:
    """RunStats of a DPO run: the reference computed up front counts, by the measured steps' share of the pairs,
    in the measured time."""
    stats = stats_from_rows(name, rows, settings.warmup, flops, device, peak, fastpath, wall)
    measured = max(len(rows) - settings.warmup, 0) if len(rows) > settings.warmup else len(rows)
    share = measured / max(len(rows), 1)
    stats.measured_seconds += reference_seconds * share
    stats.real_tokens_per_second = stats.measured_tokens / max(stats.measured_seconds, 1e-9)
    device_peak = peak_flops(device)
    stats.mfu = flops * stats.real_tokens_per_second / device_peak if device_peak else None
    stats.metrics = {k: v[: len(rows)] for k, v in metrics.items()} | {
        "pairs_per_second": [measured * settings.batch / max(stats.measured_seconds, 1e-9)],
        "reference_seconds": [reference_seconds],
    }
    return stats


def run_trl_dpo(
    name: str,
    load: Callable[[str], Any],
    tok: Any,
    pairs: list[Any],
    settings: Settings,
    device: str,
    flops: float,
    *,
    flags: dict[str, Any] | None = None,
    callbacks: tuple[Any, ...] = (),
) -> RunStats:
    """Stock TRL: DPOTrainer + PEFT LoRA, TRL's defaults plus `flags` (DPOConfig fields). A flag this TRL does not
    honour (its padding_free for DPO, Liger's fused loss) fails the run with TRL's reason.

    With `precompute_ref_log_probs`, TRL names its cache of reference log-probs by a SHA-256 of every weight read
    to the CPU (`trl.trainer.utils.hash_module`), set-up outside the measured steps that grows with the model. The
    bench names each run's cache uniquely instead, so no run reuses another's reference pass and the hash does not
    eat the time budget; the measured steps and the reference pass are TRL's own."""
    from transformers.models.llama import modeling_llama
    from transformers.trainer_callback import PrinterCallback, ProgressCallback
    from trl import DPOConfig, DPOTrainer
    from trl.trainer import dpo_trainer

    from harness.arms import peak_memory_gib, quiet_libraries, step_logger
    from harness.arms._train import _dpo_dataset

    class TimedDPOTrainer(DPOTrainer):
        reference_seconds = 0.0

        def _precompute_ref_logps(self, *args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return super()._precompute_ref_logps(*args, **kwargs)
            finally:
                type(self).reference_seconds += time.perf_counter() - started

    quiet_libraries()
    started = time.perf_counter()
    flags = dict(flags or {})
    known = {f.name for f in fields(DPOConfig)}
    unknown = sorted(set(flags) - known)
    if unknown:
        raise ValueError(f"DPOConfig has no field {unknown[0]!r} in this TRL")
    log, metrics = step_logger(progress=False), MetricRows()
    model = trainer = None
    with (
        restoring_namespace(modeling_llama),
        restoring_namespace(dpo_trainer),
        tempfile.TemporaryDirectory() as out,
    ):
        dpo_trainer.hash_module = lambda module: uuid.uuid4().hex
        try:
            model = load("sdpa")
            base = {
                "output_dir": out,
                "per_device_train_batch_size": settings.batch,
                "max_length": settings.max_length,
                "max_steps": settings.steps,
                "learning_rate": settings.lr,
                "lr_scheduler_type": "linear",
                "warmup_steps": 0,
                "logging_steps": 1,
                "save_strategy": "no",
                "report_to": "none",
                "seed": settings.seed,
                "data_seed": settings.seed,
                "bf16": device == "cuda",
                "use_cpu": device == "cpu",
                "include_num_input_tokens_seen": "non_padding",
                "disable_tqdm": True,
                "beta": 0.1,
            }
            args = DPOConfig(**(base | flags))
            trainer = TimedDPOTrainer(
                model=model,
                args=args,
                train_dataset=_dpo_dataset(pairs),
                processing_class=tok,
                peft_config=peer_lora(settings),
                callbacks=[log, metrics, *callbacks],
            )
            if flags.get("padding_free") and not getattr(trainer, "padding_free", False):
                raise ValueError(
                    "this TRL turns padding_free off for DPOTrainer (it warns: 'temporarily unavailable "
                    "after a refactor') and trains padded"
                )
            trainer.remove_callback(PrinterCallback)
            trainer.remove_callback(ProgressCallback)
            if device == "cuda":
                torch.cuda.reset_peak_memory_stats()
            trainer.train()
            peak = peak_memory_gib()
        finally:  # a failed configuration must leave the GPU empty for the next one
            model = trainer = None
            free_memory()
    stats = dpo_stats(
        name,
        log.rows,
        metrics.metrics,
        settings,
        flops,
        device,
        peak,
        {},
        time.perf_counter() - started,
        TimedDPOTrainer.reference_seconds,
    )
    stats.config = {
        "stock_flags": flags,
        "gradient_checkpointing": bool(args.gradient_checkpointing),
        "precompute_ref_log_probs": bool(args.precompute_ref_log_probs),
    }
    return stats


def run_ours_dpo(
    name: str,
    build: Callable[[], tuple[Any, Any]],
    pairs: list[Any],
    settings: Settings,
    device: str,
    flops: float,
    fast: FastPath,
    reference: str,
    callbacks: tuple[Any, ...] = (),
) -> RunStats:
    """Our DPO path on a loaded (or built) model: harness.arms._train.dpo_with_model with the fast path."""
    from harness.arms._train import dpo_with_model
    from harness.plan import DpoArm

    started = time.perf_counter()
    model, tok = build()
    metrics = MetricRows()
    arm = DpoArm(
        name="bench-dpo",
        type="dpo",
        r=settings.r,
        alpha=settings.alpha,
        dropout=settings.dropout,
        target_modules="all-linear",
        lr=settings.lr,
        max_steps=settings.steps,
        batch_size=settings.batch,
        max_length=settings.max_length,
        warmup_steps=0,
        scheduler="linear",
        seed=settings.seed,
        beta=0.1,
    )
    try:
        model.train()
        with tempfile.TemporaryDirectory() as out:
            result = dpo_with_model(
                arm,
                model,
                tok,
                pairs,
                Path(out),
                device,
                fast=fast,
                progress=False,
                callbacks=(metrics, *callbacks),
                reference=reference,
            )
    finally:
        del model
        free_memory()
    stats = dpo_stats(
        name,
        result.steps,
        metrics.metrics,
        settings,
        flops,
        device,
        result.peak_memory_gib,
        result.fastpath,
        time.perf_counter() - started,
        result.fastpath.get("reference_seconds", 0.0),
    )
    stats.config = {"fast_path": asdict(fast), "reference": reference}
    return stats


def dpo_vs(ours: dict[str, Any], peer: dict[str, Any], first: int, warmup: int | None = None) -> dict[str, Any]:
    """Ours against a DPO peer: throughput (real tokens/s, pairs/s beside it), peak memory, and over the same
    steps the loss and the reward accuracy (sum of absolute differences over the sum of the peer's values); with
    `warmup`, also the typical measured step of each (`step_rates`)."""
    comp = compare(ours, peer, first)
    if "error" in comp:
        return comp
    n = min(first, len(ours["losses"]), len(peer["losses"]))
    a, b = (r.get("metrics", {}).get("rewards/accuracies", [])[:n] for r in (ours, peer))
    accuracy = (
        sum(abs(x - y) for x, y in zip(a, b, strict=False)) / max(sum(abs(y) for y in b), 1e-9) if a and b else None
    )
    pairs = [r.get("metrics", {}).get("pairs_per_second", [None])[0] for r in (ours, peer)]
    out = {
        "throughput_ratio": comp["throughput_ratio"],
        "pairs_per_second": {"ours": pairs[0], "peer": pairs[1]},
        "peak_memory_ratio": comp["peak_memory_ratio"],
        "loss_rel_diff": comp["loss"].get("mean_rel_diff"),
        "reward_accuracy_rel_diff": accuracy,
        "same_tokens": comp["same_tokens"],
        "steps_compared": n,
    }
    rates = step_rates(ours, peer, warmup) if warmup is not None else None
    return out | ({"step_rates": rates} if rates else {})


SLOW_STEP = 2.0  # a measured step of ours over this many times its median seconds per token counts as slow


def step_rates(ours: dict[str, Any], peer: dict[str, Any], warmup: int) -> dict[str, Any] | None:
    """The typical measured step against the whole window: each run's median seconds per real token over its
    measured steps (its up-front reference spread over its tokens), their ratio, and ours' slow steps (over
    SLOW_STEP times its median). A short window can hold work done once per run, such as a CUDA graph captured the
    first time a padded length appears, which a long run spreads thin; a median is not moved by a few such steps.
    The fast path logs a step's row once the next step is queued, so one row's seconds can hold part of its
    neighbour's: the median is a diagnosis beside the window's ratio, not a replacement for it."""

    def per_token(run: dict[str, Any]) -> dict[int, float]:
        seconds, tokens = run.get("step_seconds") or [], run.get("step_tokens") or []
        n = min(len(seconds), len(tokens))
        reference = (run.get("metrics", {}).get("reference_seconds") or [0.0])[0] / max(sum(tokens[:n]), 1)
        return {i: seconds[i] / tokens[i] + reference for i in range(warmup if n > warmup else 0, n) if tokens[i]}

    a, b = per_token(ours), per_token(peer)
    if len(a) < 3 or len(b) < 3:
        return None
    median_a, median_b = statistics.median(a.values()), statistics.median(b.values())
    seconds = ours["step_seconds"]
    slow = [i for i, x in a.items() if x > SLOW_STEP * median_a]
    return {
        "measured_steps": len(a),
        "median_seconds_per_token": {"ours": median_a, "peer": median_b},
        "throughput_ratio_median_step": median_b / max(median_a, 1e-12),
        "slow_steps": [i + 1 for i in slow],
        "slow_seconds": sum(seconds[i] for i in slow),
        "measured_seconds": sum(seconds[i] for i in a),
    }


def dpo_stock_spread(runs: dict[str, Any], first: int) -> dict[str, Any]:
    """How far apart the stock configurations themselves are over the same steps: each one that ran against the one
    before it in the flag chain (`dpo_vs`'s loss and reward-accuracy differences). Ours against the best stock
    is read against this floor: two TRL configurations on the same pairs, weights and seed differ by this much."""
    ran = [n for n, r in runs.items() if is_stock(n) and not r.get("error") and r.get("real_tokens_per_second")]
    pairs = {f"{b}_vs_{a}": dpo_vs(runs[b], runs[a], first) for a, b in zip(ran, ran[1:], strict=False)}
    values = {
        key: [v[key] for v in pairs.values() if v.get(key) is not None]
        for key in ("loss_rel_diff", "reward_accuracy_rel_diff")
    }
    return {"pairs": pairs} | {key: {"min": min(v), "max": max(v)} if v else None for key, v in values.items()}


def dpo_targets(
    best: dict[str, Any], spread: dict[str, Any] | None = None, graphs: str | None = None
) -> dict[str, Any]:
    """Issue 32's targets against the best stock DPO configuration. Under `bounded_by`: a missed parity target
    that lies within the stock-against-stock spread (`dpo_stock_spread`), and a missed throughput target that ours'
    median measured step meets (`step_rates`; `graphs`: its fast path's CUDA graph summary)."""
    if "throughput_ratio" not in best:
        return {}
    memory, loss, accuracy = best["peak_memory_ratio"], best["loss_rel_diff"], best["reward_accuracy_rel_diff"]
    targets = {
        "throughput_ratio": {"value": best["throughput_ratio"], "target": 1.5, "met": best["throughput_ratio"] >= 1.5},
        "peak_memory_ratio": {"value": memory, "target": 1.0, "met": memory is not None and memory <= 1.0},
        "loss_rel_diff": {"value": loss, "target": LOSS_CLOSE, "met": loss is not None and loss <= LOSS_CLOSE},
        "reward_accuracy_rel_diff": {
            "value": accuracy,
            "target": LOSS_CLOSE,
            "met": accuracy is not None and accuracy <= LOSS_CLOSE,
        },
    }
    rates, speed = best.get("step_rates"), targets["throughput_ratio"]
    if rates and not speed["met"] and rates["throughput_ratio_median_step"] >= speed["target"]:
        speed["bounded_by"] = (
            f"slow steps inside a short measured window: ours' median measured step ran "
            f"{rates['throughput_ratio_median_step']:.2f}x the best stock's (per token), and {len(rates['slow_steps'])}"
            f" of its {rates['measured_steps']} measured steps took over {SLOW_STEP:g}x its median "
            f"({rates['slow_seconds']:.2f} of its {rates['measured_seconds']:.2f} s; step_rates). Its fast path: "
            f"{graphs or 'no CUDA graphs'}; a graph is captured the first time a padded length appears, which a "
            f"longer run meets less and less often"
        )
    for key in ("loss_rel_diff", "reward_accuracy_rel_diff"):
        band, target = (spread or {}).get(key), targets[key]
        if not band or target["met"] or target["value"] is None:
            continue
        pairs = sum(1 for v in spread["pairs"].values() if v.get(key) is not None)
        by = (
            (f"{band['min']:.4g}" if band["min"] == band["max"] else f"{band['min']:.4g} to {band['max']:.4g}")
            + f" ({pairs} pair{'s' if pairs != 1 else ''} of stock configurations run one after the other, on the same "
            "pairs, weights, order and seed; stock_spread)"
        )
        if target["value"] <= band["max"]:
            target["bounded_by"] = f"the stock configurations themselves, which differ from each other by {by}"
        else:
            target["above_stock_spread"] = f"{target['value'] / band['max']:.2f}x the largest stock difference: {by}"
    return targets


def dpo_shape(b: Bench, shape_name: str) -> dict[str, Any]:
    """One shape of the dpo section: the stock peers, each adding a flag to the last one that ran, then ours with
    each reference within the best stock peer's peak memory, then (with --dpo-profile) both profiled."""
    from harness.model import load_model

    a = b.args
    shape = SHAPES["smoke" if a.smoke else shape_name]
    config = shape_config(shape, b.tok)
    settings = Settings(
        **(
            asdict(b.settings)
            | {
                "shape": "smoke" if a.smoke else shape_name,
                "steps": a.dpo_steps,
                "warmup": a.dpo_warmup,
                "batch": a.dpo_batch,
                "max_length": a.dpo_max_length or b.settings.max_length,
            }
        )
    )
    pairs = dpo_pairs(b.tok, settings.steps * settings.batch, settings.min_words, settings.max_words, 3)
    flops = dpo_flops_per_token(config, settings.r)
    if shape_name == "1b" and b.folder is not None:

        def load(attn: str = "sdpa") -> Any:
            return b.load(attn)

        def ours_model() -> tuple[Any, Any]:
            return load_model(str(b.folder), b.device)
    else:

        def load(attn: str = "sdpa") -> Any:
            model = build_random_llama(config, b.device, b.dtype)
            if attn != "sdpa":
                model.set_attn_implementation(attn)
            return model

        def ours_model() -> tuple[Any, Any]:
            return load(), b.tok

    started = datetime.now(UTC).isoformat(timespec="seconds")
    per_run = 10.0 if a.smoke else (60.0 if shape_name == "1b" else 120.0)
    b.announce(f"dpo {shape_name} ({shape.layers} layers): stock DPOTrainer peers and ours", 8, per_run)
    runs: dict[str, Any] = {}

    def estimate() -> float:
        """The time budget's guess for the next run: the longest this shape's runs have taken so far."""
        walls = [r["wall_seconds"] for r in runs.values() if not r.get("error") and r.get("wall_seconds")]
        return max(walls) if walls else per_run

    def trl(name: str, flags: dict[str, Any]) -> RunStats | None:
        return b.run(
            name,
            lambda: run_trl_dpo(name, load, b.tok, pairs, settings, b.device, flops, flags=flags),
            config={"stock_flags": flags},
            into=runs,
            estimate=estimate(),
        )

    trl("peer", {})
    base, prefix = {"gradient_checkpointing": False}, "trl-no-gc"
    trl(prefix, base)
    for label, flags in (
        ("precompute", {"precompute_ref_log_probs": True}),
        ("liger", {"use_liger_kernel": True}),
        ("liger-fused-loss", {"use_liger_kernel": True, "liger_kernel_config": {"fused_linear_cross_entropy": True}}),
        ("padding-free", {"padding_free": True}),
    ):
        stats = trl(f"{prefix}-{label}", base | flags)
        if stats is not None and not stats.error:
            base, prefix = base | flags, f"{prefix}-{label}"
    best = best_stock(runs)
    budget = b.memory_budget(runs)
    fast = b.ours_fast(b.ours_liger(), budget)
    default = default_reference(settings.steps * settings.batch / len(pairs))  # what a plan of this length gets
    for reference in ("precomputed", "adapter_off"):
        name = "ours" if reference == default else f"ours-{reference.replace('_', '-')}"
        b.run(
            name,
            lambda n=name, r=reference: run_ours_dpo(n, ours_model, pairs, settings, b.device, flops, fast, r),
            into=runs,
            estimate=estimate(),
        )
    section: dict[str, Any] = {
        "date": started,
        "settings": asdict(settings),
        "parameters": parameter_count(config),
        "pairs": len(pairs),
        "lora_parameters": lora_parameter_count(config, settings.r),
        "memory_budget_gib": budget,
        "runs": runs,
        "mfu_formula": DPO_MFU_FORMULA,
        "note": "each stock configuration adds a flag to the last one that ran; a flag that fails is recorded with "
        "its error; the reference computed up front counts in the measured time by the measured steps' "
        "share of the pairs; TRL's SHA-256 of every weight that names its reference cache (set-up before the "
        "first step) is replaced by a unique name per run",
    }
    derive_dpo(section, a.loss_steps)
    if a.dpo_profile and best:
        steps = 2 if a.smoke else 3
        prof = Settings(**(asdict(settings) | {"steps": settings.warmup + steps + 1}))
        tables: dict[str, Any] = {}
        peer_cb, ours_cb = (
            step_profiler(settings.warmup, steps, b.device),
            step_profiler(settings.warmup, steps, b.device),
        )
        flags = runs[best]["config"].get("stock_flags", {})
        guarded(
            f"dpo {best} (profiled)",
            lambda: run_trl_dpo(
                best,
                load,
                b.tok,
                pairs[: prof.steps * prof.batch],
                prof,
                b.device,
                flops,
                flags=flags,
                callbacks=(peer_cb,),
            ),
        )
        guarded(
            "dpo ours (profiled)",
            lambda: run_ours_dpo(
                "ours",
                ours_model,
                pairs[: prof.steps * prof.batch],
                prof,
                b.device,
                flops,
                fast,
                default,
                callbacks=(ours_cb,),
            ),
        )
        tables[best], tables["ours"] = peer_cb.table, ours_cb.table
        section["profiles"] = tables
    return section


def derive_dpo(section: dict[str, Any], loss_steps: int) -> None:
    """Everything a dpo shape derives from its runs: the best stock configuration, ours against each stock one,
    the stock-against-stock spread, ours against the best, and the targets."""
    runs, warmup = section["runs"], section["settings"]["warmup"]
    best = best_stock(runs)
    ours_names = [n for n in runs if n.startswith("ours")]
    faster = max(
        (n for n in ours_names if not runs[n].get("error")),
        key=lambda n: runs[n]["real_tokens_per_second"],
        default=None,
    )
    section["best_stock"] = best
    section["best_stock_config"] = runs[best]["config"] if best else None
    section["reference_faster"] = runs[faster]["config"]["reference"] if faster else None
    section["comparisons"] = {
        f"{n}_vs_{p}": dpo_vs(runs[n], runs[p], loss_steps, warmup) for n in ours_names for p in runs if is_stock(p)
    }
    section["stock_spread"] = dpo_stock_spread(runs, loss_steps)
    ran = best and "ours" in runs
    best_vs = dpo_vs(runs["ours"], runs[best], loss_steps, warmup) if ran else {"error": "not run"}
    section["vs_best_stock"] = {"peer": best, "ours": "ours"} | best_vs
    graphs = runs["ours"].get("fastpath", {}).get("cuda_graphs") if "ours" in runs else None
    section["targets"] = dpo_targets(best_vs, section["stock_spread"], graphs and graphs.split(", ")[0])


def section_dpo(b: Bench) -> None:
    out = b.report.setdefault("dpo", {})
    for shape_name in b.args.dpo_shapes:
        out[shape_name] = dpo_shape(b, shape_name)
        say(
            f"dpo {shape_name}: "
            + json.dumps(
                {k: v for k, v in out[shape_name]["vs_best_stock"].items() if k != "pairs_per_second"}, default=str
            )
        )


SECTION_RUNNERS: dict[str, Callable[[Bench], None]] = {
    "why": section_why,
    "stock": section_stock,
    "liger": section_liger,
    "ours": section_ours,
    "ablations": section_ablations,
    "profile": section_profile,
    "scaling": section_scaling,
    "8b": section_8b,
    "dpo": section_dpo,
}


def finish(report: dict[str, Any], loss_steps: int) -> None:
    """Everything derived from the runs (recomputed after a merge)."""
    runs = report["runs"]
    report["comparisons"] = {}
    peer, best = runs.get("peer"), best_stock(runs)
    for name, run in runs.items():
        if is_stock(name):
            continue
        if peer:
            report["comparisons"][f"{name}_vs_peer"] = compare(run, peer, loss_steps)
        if best:
            report["comparisons"][f"{name}_vs_best_stock"] = compare(run, runs[best], loss_steps)
    for name in runs:  # each stock configuration against TRL's defaults
        if is_stock(name) and name != "peer" and peer:
            report["comparisons"][f"{name}_vs_peer"] = compare(runs[name], peer, loss_steps)
    report["vs_best_stock"] = vs_best_stock(runs, "ours", loss_steps)
    for part in report.get("dpo", {}).values():
        derive_dpo(part, loss_steps)
    report["mfu_formula"] = MFU_FORMULA
    report["targets"] = targets(report)


# ------------------------------------------------------------------------------------------------ main


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--smoke", action="store_true", help="tiny shape, few steps, CPU (the tests run this)")
    p.add_argument(
        "--sections",
        default=",".join(DEFAULT_SECTIONS),
        help=f"comma-separated, run in this order: {', '.join(SECTIONS)} (default {','.join(DEFAULT_SECTIONS)})",
    )
    p.add_argument("--merge", action="store_true", help="add these sections' results to the JSON at --out")
    p.add_argument("--steps", type=int, help="optimizer steps per 1B run (default 30; smoke 4)")
    p.add_argument("--warmup", type=int, help="steps left out of the throughput (default 5; smoke 1)")
    p.add_argument("--batch", type=int, default=8, help="examples per optimizer step, every run (smoke 4)")
    p.add_argument("--why-steps", type=int, help="steps per `why` run (default 15; smoke 3)")
    p.add_argument("--loss-steps", type=int, default=20, help="loss curves are compared over the first N steps")
    p.add_argument(
        "--padding-free-attn",
        default=",".join(PADDING_FREE_ATTN[:3]),
        help="attention implementations tried for TRL's padding_free, in order (also: flex_attention)",
    )
    p.add_argument(
        "--ours-liger",
        default="default",
        help="Liger kernels of ours: default (the code's measured default), measured (those the liger "
        f"section found to pay), none, or a list of {', '.join(LIGER_KERNELS)}",
    )
    p.add_argument(
        "--ours-checkpointing",
        choices=["auto", "none", "full"],
        default="auto",
        help="activation checkpointing of ours (auto: the memory plan decides, within the budget)",
    )
    p.add_argument("--ours-budget-gib", type=float, help="memory budget of ours (default: the best stock peak)")
    p.add_argument("--ours-micro-batch", type=int, help="micro-batch of ours (accumulating to --batch)")
    p.add_argument("--ours-compile", action="store_true", help="regional torch.compile of the decoder layers")
    p.add_argument("--ours-attention", choices=["auto", "per_sequence"], default="auto")
    p.add_argument("--compile-variant", action="store_true", help="also time ours with torch.compile (`ours` section)")
    p.add_argument("--scaling-batches", default="2,4,8,16,32", help="batch sizes of the `scaling` section")
    p.add_argument("--steps-8b", type=int, help="optimizer steps per 8B run (default 20; smoke 3)")
    p.add_argument("--batch-8b", type=int, default=4, help="examples per optimizer step at 8B shape")
    p.add_argument("--dpo-shapes", default="1b,8b", help="shapes of the `dpo` section (1b, 8b)")
    p.add_argument("--dpo-steps", type=int, help="optimizer steps per DPO run (default 20; smoke 3)")
    p.add_argument("--dpo-batch", type=int, default=4, help="preference pairs per optimizer step (smoke 2)")
    p.add_argument("--dpo-max-length", type=int, help="max_length of the DPO runs (default: the SFT runs')")
    p.add_argument("--dpo-profile", action="store_true", help="dpo: also profile the best stock peer and ours")
    p.add_argument(
        "--tokenizer",
        default=os.environ.get("TUNEGATE_BENCH_TOKENIZER", "smollm2-135m"),
        help="tokenizer spec (alias, .gguf or folder); only its vocabulary and chat template are used",
    )
    p.add_argument("--time-budget", type=float, default=560.0, help="seconds; runs past it are skipped (recorded)")
    p.add_argument("--out", type=Path, help="JSON path (default reports/perf/train_throughput-<date>.json)")
    args = p.parse_args(argv)
    args.sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = [s for s in args.sections if s not in SECTIONS]
    if unknown:
        p.error(f"--sections: unknown section {unknown[0]!r} (known: {', '.join(SECTIONS)})")
    args.padding_free_attn = [s.strip() for s in args.padding_free_attn.split(",") if s.strip()]
    args.dpo_shapes = [s.strip() for s in args.dpo_shapes.split(",") if s.strip()]
    if any(s not in ("1b", "8b") for s in args.dpo_shapes):
        p.error(f"--dpo-shapes: expected 1b and/or 8b, got {','.join(args.dpo_shapes)}")
    if args.merge and args.out is None:
        p.error("--merge needs --out (the JSON to add to)")
    if args.smoke:
        args.batch, args.batch_8b, args.dpo_batch = 4, 2, 2
    defaults = {"steps": (4, 30), "warmup": (1, 5), "why_steps": (3, 15), "steps_8b": (3, 20), "dpo_steps": (3, 20)}
    for name, (smoke, full) in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, smoke if args.smoke else full)
    args.why_warmup = 1 if args.smoke else 3
    args.warmup_8b = 1 if args.smoke else 5  # the first steps capture CUDA graphs and compile Liger's kernels
    args.dpo_warmup = 1 if args.smoke else 5
    if args.ours_micro_batch and (args.ours_micro_batch <= 0 or args.batch % args.ours_micro_batch):
        p.error(f"--ours-micro-batch {args.ours_micro_batch} must divide --batch {args.batch}")
    if args.ours_liger not in ("default", "measured", "none"):
        try:
            FastPath(liger=tuple(k.strip() for k in args.ours_liger.split(",") if k.strip()))
        except ValueError as exc:
            p.error(f"--ours-liger: {exc}")
    return args


def merged_report(fresh: dict[str, Any], out: Path) -> dict[str, Any]:
    """The report at `out`, to add sections to; exits 2 (one line) when it cannot be read or was measured on
    another device or with other settings (its ratios would mix two setups)."""
    try:
        old = json.loads(out.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        print(f"--merge: cannot read {out}: {exc}", file=sys.stderr)
        sys.exit(2)
    for key, value in (("settings", old.get("settings")), ("device", old.get("device", {}).get("name"))):
        if value != (fresh["settings"] if key == "settings" else fresh["device"]["name"]):
            print(f"--merge: {out} was measured with other {key}; run its sections again instead", file=sys.stderr)
            sys.exit(2)
    old.setdefault("runs", {})
    old.setdefault("skipped", [])
    old.setdefault("sections_run", {})
    return old


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse(argv)
    t0 = time.monotonic()
    device = "cuda" if torch.cuda.is_available() and not args.smoke else "cpu"
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    from harness.model import load_tokenizer, quiet_transformers

    quiet_transformers()
    tok = load_tokenizer(args.tokenizer)
    shape = SHAPES["smoke" if args.smoke else "1b"]
    settings = Settings(
        shape="smoke" if args.smoke else "1b",
        steps=args.steps,
        warmup=args.warmup,
        batch=args.batch,
        max_length=128 if args.smoke else 1024,
        min_words=5 if args.smoke else 40,
        max_words=60 if args.smoke else 900,
        lr=2e-4,
    )
    config = shape_config(shape, tok)
    examples = synthetic_examples(
        tok, settings.steps * settings.batch, settings.min_words, settings.max_words, settings.seed
    )
    fresh: dict[str, Any] = {
        "bench": "train_throughput",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "device": device_info(device),
        "versions": versions(),
        "settings": asdict(settings),
        "model": {
            "shape": asdict(shape) | {"vocab": config.vocab_size},
            "parameters": parameter_count(config),
            "lora_parameters": lora_parameter_count(config, settings.r),
            "flops_per_token": flops_per_token(config, settings.r),
        },
        "runs": {},
        "skipped": [],
        "sections_run": {},
    }
    out = args.out or REPO / "reports" / "perf" / (
        f"train_throughput-{'smoke-' if args.smoke else ''}{datetime.now().strftime('%Y%m%d-%H%M%S')}.json"
    )
    report = merged_report(fresh, out) if args.merge and out.exists() else fresh
    if report is not fresh:
        report |= {k: fresh[k] for k in ("date", "versions")}
    say(
        f"train_throughput on {fresh['device']['name']}: {fresh['model']['parameters'] / 1e9:.3f}B params, "
        f"{settings.steps} steps x {settings.batch} examples, max length {settings.max_length}; "
        f"sections {', '.join(args.sections)}"
    )
    needs_model = any(
        s in args.sections for s in ("why", "stock", "liger", "ours", "ablations", "profile", "scaling")
    ) or ("dpo" in args.sections and "1b" in args.dpo_shapes)
    with tempfile.TemporaryDirectory(prefix="bench-model-") as tmp:
        folder = save_random_model(config, tok, device, dtype, Path(tmp)) if needs_model else None
        if needs_model:
            say(f"  random model saved in {time.monotonic() - t0:.0f}s")
        bench = Bench(
            args=args,
            tok=tok,
            device=device,
            dtype=dtype,
            settings=settings,
            config=config,
            examples=examples,
            folder=folder,
            report=report,
            deadline=t0 + args.time_budget,
        )
        for section in SECTIONS:
            if section in args.sections:
                started = time.monotonic()
                SECTION_RUNNERS[section](bench)
                report["sections_run"][section] = {
                    "date": datetime.now(UTC).isoformat(timespec="seconds"),
                    "seconds": time.monotonic() - started,
                }
                save(report, out, args.loss_steps, t0)  # a run stopped later still leaves this section's numbers
    save(report, out, args.loss_steps, t0)
    summary(report)
    say(f"wrote {out}")
    return report


def save(report: dict[str, Any], out: Path, loss_steps: int, t0: float) -> None:
    finish(report, loss_steps)
    report["seconds"] = time.monotonic() - t0
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))


def summary(report: dict[str, Any]) -> None:
    why = report.get("why_peer_is_slow", {}).get("variants", {})
    if why:
        say("\nwhy (TRL defaults)            real tok/s  padded tok/s  padding  template  loss tokens")
        for name, v in why.items():
            if v.get("error"):
                say(f"{name:28s} ERROR {v['error']}")
                continue
            say(
                f"{name:28s} {v['real_tokens_per_second']:>10,.0f} {v['padded_tokens_per_second'] or 0:>13,.0f} "
                f"{v.get('padding_share', 0):>8.1%} {v.get('template_share') or 0:>9.1%} "
                f"{v.get('loss_token_share', 0):>12.1%}"
            )
    say("\nrun                                        real tok/s      MFU   peak GiB  vs best stock  loss rel diff")
    for name, s in report["runs"].items():
        if s.get("error"):
            say(f"{name:42s} ERROR {s['error'][:150]}")
            continue
        comp = report["comparisons"].get(f"{name}_vs_best_stock", {})
        ratio = f"{comp['throughput_ratio']:.2f}x" if "throughput_ratio" in comp else "-"
        rel = comp.get("loss", {}).get("mean_rel_diff")
        mfu = f"{s['mfu']:.1%}" if s.get("mfu") is not None else "-"
        say(
            f"{name:42s} {s['real_tokens_per_second']:>10,.0f} {mfu:>8} {s['peak_memory_gib']:>10.2f} {ratio:>14} "
            f"{'-' if rel is None else f'{rel:.3%}':>14}"
        )
    for kind in ("lora", "qlora"):
        part = report.get("shape_8b", {}).get(kind, {})
        for name, s in part.get("runs", {}).items():
            state = (
                f"ERROR {s['error'][:120]}"
                if s.get("error")
                else (f"{s['real_tokens_per_second']:>10,.0f} tok/s, peak {s['peak_memory_gib']:.2f} GiB")
            )
            say(f"8b {kind:5s} {name:33s} {state}")
    for shape_name, part in report.get("dpo", {}).items():
        for name, s in part.get("runs", {}).items():
            state = (
                f"ERROR {s['error'][:120]}"
                if s.get("error")
                else (f"{s['real_tokens_per_second']:>10,.0f} tok/s, peak {s['peak_memory_gib']:.2f} GiB")
            )
            say(f"dpo {shape_name} {name:38s} {state}")
        vs = part.get("vs_best_stock", {})
        if "throughput_ratio" in vs:
            say(
                f"dpo {shape_name} ours vs best stock ({vs['peer']}): {vs['throughput_ratio']:.2f}x tokens/s, "
                f"{vs['peak_memory_ratio'] or 0:.2f}x peak memory, loss rel diff {vs['loss_rel_diff'] or 0:.3%}, "
                f"reward accuracy rel diff {vs['reward_accuracy_rel_diff'] or 0:.3%}"
            )
    best = report.get("vs_best_stock")
    if best and "throughput_ratio" in best:
        say(
            f"\nours vs best stock ({best['peer']}): {best['throughput_ratio']:.2f}x tokens/s, "
            f"{best['peak_memory_ratio'] or 0:.2f}x peak memory, loss rel diff {best['loss_rel_diff'] or 0:.3%}"
        )
    for name, checks in report.get("targets", {}).items():
        say(
            f"targets {name}: "
            + ", ".join(
                f"{k} {'met' if v['met'] else 'MISSED'} "
                f"({v['value'] if v['value'] is None else round(v['value'], 4)} vs "
                f"{v['target']})"
                for k, v in checks.items()
            )
        )
    if report.get("skipped"):
        say(f"skipped (time budget): {', '.join(report['skipped'])}")


if __name__ == "__main__":
    main()
