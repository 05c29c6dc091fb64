"""Training throughput: tunegate's training path against plain TRL on the same data, model and LoRA.

    python bench/train_throughput.py                       # H100: 1.07B Llama shape, peer vs ours (+ ablations)
    python bench/train_throughput.py --qlora-8b            # + QLoRA vs bf16 LoRA at Llama-3-8B shape
    python bench/train_throughput.py --profile             # + torch.profiler top-20 ops of both runs
    python bench/train_throughput.py --smoke               # CPU, tiny shape, a few steps (the test suite runs this)

The peer is TRL's SFTTrainer exactly as a user would run it: TRL defaults (gradient checkpointing on,
right-padded batches, SDPA), PEFT LoRA r16/alpha32/dropout 0.05 on all linear layers, micro-batch 8,
max length 1024, bf16. Ours is `harness.train.train_sft` (the fast path) with the same LoRA config,
learning rate, schedule, seed, data order, optimizer steps and tokens. Both load the same randomly
initialised weights from one folder; the data are prompt/answer pairs of 40-900 words (one token each).

Reported per run: real (non-padding) tokens/s over the steps after warm-up, MFU (4 * N * tokens/s
over the GPU's dense bf16 peak), peak allocated memory, the loss per step; for ours vs the peer:
the throughput ratio and the loss curves' mean absolute (and relative) difference. Everything goes
to a JSON file under reports/perf/ with the device, library versions and date.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import random
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch

from harness.model import FastPath

# dense bf16 tensor-core peak, FLOP/s, by device name fragment (NVIDIA data sheets)
PEAK_BF16 = {"H200": 989.4e12, "H100 PCIe": 756.0e12, "H100 NVL": 835.0e12, "H100": 989.4e12, "A100": 312.0e12,
             "L40S": 362.1e12, "A10G": 70.0e12, "L4": 121.0e12}


@dataclass(frozen=True)
class Shape:
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    vocab: int | None      # None: the tokenizer's vocabulary
    tied: bool


SHAPES = {
    "1b": Shape(2048, 8192, 16, 32, 8, 49152, True),        # the issue's 1.07B Llama shape
    "8b": Shape(4096, 14336, 32, 32, 8, 128256, False),     # Llama-3-8B
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
    mfu: float | None = None
    peak_memory_gib: float = 0.0
    tokens: int = 0
    measured_tokens: int = 0
    measured_seconds: float = 0.0
    wall_seconds: float = 0.0
    losses: list[float] = field(default_factory=list)
    step_seconds: list[float] = field(default_factory=list)
    step_tokens: list[int] = field(default_factory=list)
    fastpath: dict[str, Any] = field(default_factory=dict)
    profile: dict[str, Any] | None = None
    error: str | None = None


def say(*parts: Any) -> None:
    print(*parts, flush=True)


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
    from harness.arms import Example, Message

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


# ----------------------------------------------------------------------------------------------- models


def llama_config(shape: Shape, tok: Any) -> Any:
    from transformers import LlamaConfig

    return LlamaConfig(hidden_size=shape.hidden, intermediate_size=shape.intermediate,
                       num_hidden_layers=shape.layers, num_attention_heads=shape.heads,
                       num_key_value_heads=shape.kv_heads, vocab_size=shape.vocab or len(tok),
                       tie_word_embeddings=shape.tied, max_position_embeddings=4096,
                       pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
                       eos_token_id=tok.convert_tokens_to_ids("<|im_end|>"), attn_implementation="sdpa")


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
                    quantised = bnb.nn.Linear4bit(linear.in_features, linear.out_features, bias=False,
                                                  compute_dtype=dtype, compress_statistics=True, quant_type="nf4",
                                                  device="meta")
                    weight = torch.empty(linear.out_features, linear.in_features, dtype=dtype, device=device)
                    weight.normal_(0.0, std, generator=gen)
                    quantised.weight = bnb.nn.Params4bit(weight, requires_grad=False, compress_statistics=True,
                                                         quant_type="nf4", module=quantised).to(device)
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
    if nf4:   # what from_pretrained(quantization_config=...) marks: PEFT and TRL treat the model as QLoRA's,
        model.is_loaded_in_4bit = True                 # and the Trainer leaves its placement alone
        model.quantization_method = "bitsandbytes"
    return model


def parameter_count(config: Any) -> int:
    """N of the 4*N*tokens FLOP count (embedding included once when tied)."""
    h, i, layers, v = config.hidden_size, config.intermediate_size, config.num_hidden_layers, config.vocab_size
    kv = config.num_key_value_heads * (h // config.num_attention_heads)
    per_layer = 2 * h * h + 2 * h * kv + 3 * h * i + 2 * h
    return layers * per_layer + v * h * (1 if config.tie_word_embeddings else 2) + h


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


# ------------------------------------------------------------------------------------------------ runs


def arm_for(settings: Settings, kind: str = "lora", batch: int | None = None, checkpointing: bool = False) -> Any:
    from harness.plan import LoraArm, QloraArm

    cls = QloraArm if kind == "qlora" else LoraArm
    return cls(name=f"bench-{kind}", type=kind, r=settings.r, alpha=settings.alpha, dropout=settings.dropout,
               target_modules="all-linear", lr=settings.lr, max_steps=settings.steps,
               batch_size=batch or settings.batch, grad_accum=1, max_length=settings.max_length, warmup_steps=0,
               scheduler="linear", seed=settings.seed, gradient_checkpointing=checkpointing)


def peak_flops(device: str) -> float | None:
    if device != "cuda":
        return None
    name = torch.cuda.get_device_name()
    return next((v for k, v in PEAK_BF16.items() if k in name), None)


def stats_from_rows(name: str, rows: list[dict[str, Any]], warmup: int, n_params: int, device: str,
                    peak: float, fastpath: dict[str, Any], wall: float) -> RunStats:
    measured = rows[warmup:] or rows
    tokens = sum(int(r["tokens"]) for r in measured)
    seconds = sum(float(r["seconds"]) for r in measured)
    tps = tokens / max(seconds, 1e-9)
    flops = peak_flops(device)
    return RunStats(name=name, real_tokens_per_second=tps, mfu=4 * n_params * tps / flops if flops else None,
                    peak_memory_gib=peak, tokens=sum(int(r["tokens"]) for r in rows), measured_tokens=tokens,
                    measured_seconds=seconds, wall_seconds=wall, losses=[float(r["loss"]) for r in rows],
                    step_seconds=[float(r["seconds"]) for r in rows], step_tokens=[int(r["tokens"]) for r in rows],
                    fastpath=fastpath)


def run_peer(folder: Path, tok: Any, examples: list[Any], settings: Settings, device: str, n_params: int,
             callbacks: tuple[Any, ...] = ()) -> RunStats:
    """Plain TRL: SFTTrainer + PEFT LoRA with TRL's defaults."""
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM
    from transformers.trainer_callback import PrinterCallback, ProgressCallback
    from trl import SFTConfig, SFTTrainer

    from harness.arms import peak_memory_gib, quiet_libraries, step_logger
    from harness.arms._train import _eos_for_template, _sft_dataset

    quiet_libraries()
    started = time.perf_counter()
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=dtype, attn_implementation="sdpa").to(device)
    log = step_logger(progress=False)
    with tempfile.TemporaryDirectory() as out:
        args = SFTConfig(output_dir=out, per_device_train_batch_size=settings.batch, max_length=settings.max_length,
                         max_steps=settings.steps, learning_rate=settings.lr, lr_scheduler_type="linear",
                         warmup_steps=0, logging_steps=1, save_strategy="no", report_to="none", seed=settings.seed,
                         data_seed=settings.seed, bf16=device == "cuda", use_cpu=device == "cpu",
                         include_num_input_tokens_seen="non_padding", disable_tqdm=True,
                         eos_token=_eos_for_template(tok))
        peft_config = LoraConfig(r=settings.r, lora_alpha=settings.alpha, lora_dropout=settings.dropout,
                                 target_modules="all-linear", task_type="CAUSAL_LM", bias="none")
        trainer = SFTTrainer(model=model, args=args, train_dataset=_sft_dataset(examples), processing_class=tok,
                             peft_config=peft_config, callbacks=[log, *callbacks])
        trainer.remove_callback(PrinterCallback)
        trainer.remove_callback(ProgressCallback)
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        trainer.train()
        peak = peak_memory_gib()
    del trainer, model
    free_memory()
    return stats_from_rows("peer", log.rows, settings.warmup, n_params, device, peak, {},
                           time.perf_counter() - started)


def run_ours(name: str, folder: Path, examples: list[Any], settings: Settings, device: str, n_params: int,
             fast: FastPath | None) -> RunStats:
    """tunegate's own path, end to end: harness.train.train_sft (loads the folder, trains, saves the adapter)."""
    from harness.arms import train_sft

    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as out:
        result = train_sft(arm_for(settings), str(folder), examples, Path(out), device, fast=fast, progress=False)
    free_memory()
    return stats_from_rows(name, result.steps, settings.warmup, n_params, device, result.peak_memory_gib,
                           result.fastpath, time.perf_counter() - started)


def run_built(name: str, build: Callable[[], Any], tok: Any, examples: list[Any], settings: Settings, device: str,
              n_params: int, kind: str, fast: FastPath, batch: int, callbacks: tuple[Any, ...] = ()) -> RunStats:
    """Our path on a model built in memory (the 8B sections): harness.train.sft_with_model."""
    from harness.arms import sft_with_model

    started = time.perf_counter()
    model = build()
    say(f"  built {name} in {time.perf_counter() - started:.1f}s "
        f"({torch.cuda.memory_allocated() / 2**30:.2f} GiB allocated)" if device == "cuda" else f"  built {name}")
    with tempfile.TemporaryDirectory() as out:
        result = sft_with_model(arm_for(settings, kind, batch), model, tok, examples, Path(out), device, fast=fast,
                                progress=False, callbacks=callbacks)
    del model
    free_memory()
    return stats_from_rows(name, result.steps, settings.warmup, n_params, device, result.peak_memory_gib,
                           result.fastpath, time.perf_counter() - started)


def guarded(name: str, fn: Callable[[], RunStats]) -> RunStats:
    """One run; a failure is recorded (with its traceback's last line) instead of ending the bench."""
    say(f"[{time.strftime('%H:%M:%S')}] {name} ...")
    try:
        stats = fn()
    except Exception as exc:  # noqa: BLE001 - a failing variant is a result too
        traceback.print_exc()
        free_memory()
        return RunStats(name=name, error=f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
    mfu = f", MFU {stats.mfu:.1%}" if stats.mfu is not None else ""
    losses = f"loss {stats.losses[0]:.4f} -> {stats.losses[-1]:.4f}" if stats.losses else "no loss logged"
    say(f"    {stats.real_tokens_per_second:,.0f} real tok/s{mfu}, peak {stats.peak_memory_gib:.2f} GiB, "
        f"{losses}, {stats.wall_seconds:.0f}s wall")
    return stats


# --------------------------------------------------------------------------------------------- profile


def profiler_callback(first_step: int, steps: int, device: str) -> Any:
    """A TrainerCallback that records torch.profiler over steps [first_step, first_step + steps)."""
    from torch.profiler import ProfilerActivity, profile
    from transformers import TrainerCallback

    class Profiled(TrainerCallback):
        def __init__(self) -> None:
            self.prof: Any = None
            self.table: dict[str, Any] | None = None

        def on_step_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            if state.global_step == first_step and self.prof is None:
                activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
                self.prof = profile(activities=activities, record_shapes=False)
                self.prof.__enter__()

        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            if self.prof is not None and self.table is None and state.global_step >= first_step + steps:
                if device == "cuda":
                    torch.cuda.synchronize()
                self.prof.__exit__(None, None, None)
                self.table = top_ops(self.prof, device, steps)

    return Profiled()


def top_ops(prof: Any, device: str, steps: int, limit: int = 20) -> dict[str, Any]:
    """The top-`limit` ops by self device time (CPU time on a CPU) per step, and the total."""
    def attr(evt: Any, *names: str) -> float:
        for n in names:
            if hasattr(evt, n):
                return float(getattr(evt, n))
        return 0.0

    events = prof.key_averages()
    key = ("self_device_time_total", "self_cuda_time_total") if device == "cuda" else ("self_cpu_time_total",)
    total = sum(attr(e, *key) for e in events)
    rows = sorted(events, key=lambda e: attr(e, *key), reverse=True)[:limit]
    return {
        "sorted_by": key[0], "steps": steps, "total_ms_per_step": total / 1000 / steps,
        "ops": [{"name": e.key, "calls_per_step": e.count / steps,
                 "self_ms_per_step": attr(e, *key) / 1000 / steps,
                 "share": attr(e, *key) / total if total else 0.0,
                 "self_cpu_ms_per_step": attr(e, "self_cpu_time_total") / 1000 / steps} for e in rows],
    }


# ---------------------------------------------------------------------------------------------- report


def loss_gap(ours: RunStats, peer: RunStats, first: int) -> dict[str, float]:
    n = min(first, len(ours.losses), len(peer.losses))
    if n == 0:
        return {}
    pairs = list(zip(ours.losses[:n], peer.losses[:n], strict=True))
    return {"steps": n, "mean_abs_diff": sum(abs(a - b) for a, b in pairs) / n,
            "mean_rel_diff": sum(abs(a - b) / max(abs(b), 1e-9) for a, b in pairs) / n}


def compare(ours: RunStats, peer: RunStats, first: int) -> dict[str, Any]:
    if ours.error or peer.error or not peer.real_tokens_per_second:
        return {"error": ours.error or peer.error or "peer measured no tokens"}
    return {"throughput_ratio": ours.real_tokens_per_second / peer.real_tokens_per_second,
            "peak_memory_ratio": ours.peak_memory_gib / peer.peak_memory_gib if peer.peak_memory_gib else None,
            "same_tokens": ours.tokens == peer.tokens, "tokens": [ours.tokens, peer.tokens],
            "loss": loss_gap(ours, peer, first)}


def versions() -> dict[str, str | None]:
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, str | None] = {"python": platform.python_version(), "cuda": torch.version.cuda}
    for pkg in ("torch", "transformers", "trl", "peft", "accelerate", "liger-kernel", "bitsandbytes", "triton"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = None
    return out


def device_info(device: str) -> dict[str, Any]:
    if device != "cuda":
        return {"type": "cpu", "name": platform.processor() or platform.machine(), "threads": torch.get_num_threads()}
    props = torch.cuda.get_device_properties(0)
    return {"type": "cuda", "name": torch.cuda.get_device_name(), "memory_gib": props.total_memory / 2**30,
            "peak_bf16_flops": peak_flops(device)}


# ------------------------------------------------------------------------------------------------ main


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--smoke", action="store_true", help="tiny shape, few steps, CPU-friendly (the tests run this)")
    p.add_argument("--steps", type=int, help="optimizer steps per run (default 40; smoke 4)")
    p.add_argument("--warmup", type=int, help="steps left out of the throughput (default 5; smoke 1)")
    p.add_argument("--batch", type=int, default=8, help="micro-batch (examples per optimizer step)")
    p.add_argument("--loss-steps", type=int, default=20, help="loss curves are compared over the first N steps")
    p.add_argument("--no-ablations", action="store_true", help="only the peer and our default path")
    p.add_argument("--compile-variant", action="store_true", help="also time torch.compile (minutes to compile)")
    p.add_argument("--qlora-8b", action="store_true", help="QLoRA vs bf16 LoRA at Llama-3-8B shape")
    p.add_argument("--only-qlora-8b", action="store_true", help="run only the 8B QLoRA-vs-LoRA section")
    p.add_argument("--qlora-steps", type=int, default=8)
    p.add_argument("--qlora-batch", type=int, default=4)
    p.add_argument("--qlora-checkpointing", choices=["full", "auto", "none"], default="full",
                   help="activation checkpointing for both 8B runs (default full: QLoRA's memory-saving recipe)")
    p.add_argument("--profile", action="store_true", help="torch.profiler top-20 ops of the peer and ours")
    p.add_argument("--tokenizer", default=os.environ.get("TUNEGATE_BENCH_TOKENIZER", "smollm2-135m"),
                   help="tokenizer spec (alias, .gguf or folder); only its vocabulary and chat template are used")
    p.add_argument("--time-budget", type=float, default=560.0, help="seconds; later sections are skipped past it")
    p.add_argument("--out", type=Path, help="JSON path (default reports/perf/train_throughput-<date>.json)")
    args = p.parse_args(argv)
    if args.steps is None:
        args.steps = 4 if args.smoke else 40
    if args.warmup is None:
        args.warmup = 1 if args.smoke else 5
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse(argv)
    t0 = time.monotonic()
    deadline = t0 + args.time_budget
    device = "cuda" if torch.cuda.is_available() and not args.smoke else "cpu"
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    from harness.model import load_tokenizer, quiet_transformers

    quiet_transformers()
    tok = load_tokenizer(args.tokenizer)
    shape = SHAPES["smoke" if args.smoke else "1b"]
    settings = Settings(shape="smoke" if args.smoke else "1b", steps=args.steps, warmup=args.warmup,
                        batch=4 if args.smoke else args.batch, max_length=128 if args.smoke else 1024,
                        min_words=5 if args.smoke else 40, max_words=60 if args.smoke else 900, lr=2e-4)
    config = llama_config(shape, tok)
    n_params = parameter_count(config)
    examples = synthetic_examples(tok, settings.steps * settings.batch, settings.min_words, settings.max_words,
                                  settings.seed)
    report: dict[str, Any] = {
        "bench": "train_throughput", "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "device": device_info(device), "versions": versions(), "settings": asdict(settings),
        "model": {"shape": asdict(shape) | {"vocab": config.vocab_size}, "parameters": n_params},
        "runs": {}, "comparisons": {}, "targets": {}, "skipped": [],
    }
    say(f"train_throughput on {report['device']['name']}: {n_params / 1e9:.3f}B params, {settings.steps} steps "
        f"x {settings.batch} examples, max length {settings.max_length}")

    def left() -> float:
        return deadline - time.monotonic()

    runs: dict[str, RunStats] = {}
    if args.only_qlora_8b:
        args.qlora_8b = True
    else:
        with tempfile.TemporaryDirectory(prefix="bench-model-") as tmp:
            folder = save_random_model(config, tok, device, dtype, Path(tmp))
            say(f"  random model saved in {time.monotonic() - t0:.0f}s")
            runs["peer"] = guarded("peer (TRL SFTTrainer defaults)",
                                   lambda: run_peer(folder, tok, examples, settings, device, n_params))
            peer = runs["peer"]
            default = FastPath() if device == "cuda" else FastPath(checkpointing="none")
            runs["ours"] = guarded("ours (harness.train, default fast path)",
                                   lambda: run_ours("ours", folder, examples, settings, device, n_params, default))
            per_run = max(runs["ours"].wall_seconds, 10.0)
            variants: list[tuple[str, FastPath | None]] = []
            if peer.peak_memory_gib and not peer.error and device == "cuda":
                variants.append(("ours-within-peer-memory", FastPath(memory_budget_gib=peer.peak_memory_gib)))
            if not args.no_ablations:
                variants += [("ours-no-liger", FastPath(liger=False)),
                             ("ours-no-padding-free", FastPath(padding_free=False)),
                             ("ours-full-checkpointing", FastPath(checkpointing="full")),
                             ("plain-harness-path", None)]
            if args.compile_variant:
                variants.append(("ours-compile", FastPath(compile=True, liger=False)))
            for name, fast in variants:
                if device == "cpu" and fast is not None:
                    fast = FastPath(**(asdict(fast) | {"checkpointing": "none" if fast.checkpointing == "auto"
                                                       else fast.checkpointing}))
                if left() < 1.5 * per_run + 30 or (args.smoke and name != "plain-harness-path"):
                    report["skipped"].append(name)
                    continue
                runs[name] = guarded(name, lambda n=name, f=fast: run_ours(n, folder, examples, settings, device,
                                                                           n_params, f))
            if args.profile and left() < 2 * per_run + 30 and not args.smoke:
                report["skipped"].append("profile")
            elif args.profile:
                steps = 2 if args.smoke else 3
                first = settings.warmup
                prof_settings = Settings(**(asdict(settings) | {"steps": first + steps + 1}))
                cb = profiler_callback(first, steps, device)
                guarded("peer (profiled)", lambda: run_peer(folder, tok, examples, prof_settings, device, n_params,
                                                            callbacks=(cb,)))
                peer.profile = cb.table
                cb2 = profiler_callback(first, steps, device)
                from harness.arms import sft_with_model
                from harness.model import load_model

                def profiled_ours() -> RunStats:
                    model, tok2 = load_model(str(folder), device)
                    model.train()
                    with tempfile.TemporaryDirectory() as out:
                        r = sft_with_model(arm_for(prof_settings), model, tok2, examples, Path(out), device,
                                           fast=default, progress=False, callbacks=(cb2,))
                    del model
                    free_memory()
                    return stats_from_rows("ours-profiled", r.steps, first, n_params, device, r.peak_memory_gib,
                                           r.fastpath, 0.0)

                guarded("ours (profiled)", profiled_ours)
                runs["ours"].profile = cb2.table

    if args.qlora_8b:
        report["qlora_8b"] = qlora_section(args, tok, device, dtype, left)

    report["runs"] = {k: asdict(v) for k, v in runs.items()}
    for name, stats in runs.items():
        if name != "peer":
            report["comparisons"][f"{name}_vs_peer"] = compare(stats, peer, args.loss_steps)
    report["targets"] = targets(report, runs)
    report["seconds"] = time.monotonic() - t0
    out = args.out or REPO / ("runs" if args.smoke else "reports") / "perf" / (  # a smoke run measures nothing
        f"train_throughput-{'smoke-' if args.smoke else ''}{datetime.now().strftime('%Y%m%d-%H%M%S')}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    summary(report, runs)
    say(f"wrote {out}")
    return report


def qlora_section(args: argparse.Namespace, tok: Any, device: str, dtype: torch.dtype,
                  left: Callable[[], float]) -> dict[str, Any]:
    """bf16 LoRA and QLoRA (NF4 + double quant) at Llama-3-8B shape (smoke: the tiny shape), same data, same
    fast path settings and activation checkpointing; peak memory and real tokens/s of each."""
    shape = SHAPES["smoke" if args.smoke else "8b"]
    config = llama_config(shape, tok)
    n_params = parameter_count(config)
    settings = Settings(shape="smoke" if args.smoke else "8b", steps=args.qlora_steps if not args.smoke else 3,
                        warmup=2 if not args.smoke else 1, batch=args.qlora_batch,
                        max_length=128 if args.smoke else 1024, min_words=5 if args.smoke else 40,
                        max_words=60 if args.smoke else 900, lr=2e-4)
    examples = synthetic_examples(tok, settings.steps * settings.batch, settings.min_words, settings.max_words, 1)
    fast = FastPath(checkpointing=args.qlora_checkpointing)
    section: dict[str, Any] = {"settings": asdict(settings), "parameters": n_params, "fast_path": asdict(fast)}
    if left() < 120 and not args.smoke:
        section["skipped"] = f"time budget: {left():.0f}s left"
        return section
    say(f"QLoRA vs LoRA at {settings.shape} shape ({n_params / 1e9:.2f}B params)")
    # bitsandbytes' paged 8-bit AdamW (the qlora recipe's optimizer) needs CUDA; the CPU smoke trains the NF4
    # model with the lora recipe's AdamW instead
    qlora_kind = "qlora" if device == "cuda" else "lora"
    lora = guarded("lora-bf16", lambda: run_built("lora-bf16", lambda: build_random_llama(config, device, dtype),
                                                  tok, examples, settings, device, n_params, "lora", fast,
                                                  settings.batch))
    qlora = guarded("qlora-nf4", lambda: run_built("qlora-nf4",
                                                   lambda: build_random_llama(config, device, dtype, nf4=True),
                                                   tok, examples, settings, device, n_params, qlora_kind, fast,
                                                   settings.batch))
    section["runs"] = {"lora_bf16": asdict(lora), "qlora_nf4": asdict(qlora)}
    if not lora.error and not qlora.error:
        section["peak_memory_ratio"] = qlora.peak_memory_gib / lora.peak_memory_gib if lora.peak_memory_gib else None
        section["throughput_ratio"] = (qlora.real_tokens_per_second / lora.real_tokens_per_second
                                       if lora.real_tokens_per_second else None)
        say(f"  QLoRA peak {qlora.peak_memory_gib:.2f} GiB vs LoRA {lora.peak_memory_gib:.2f} GiB "
            f"({section['peak_memory_ratio']:.0%}); tokens/s ratio {section['throughput_ratio']:.2f}")
    return section


def targets(report: dict[str, Any], runs: dict[str, RunStats]) -> dict[str, Any]:
    """The issue's targets, met or missed and by how much (meaningful on the H100 run only)."""
    out: dict[str, Any] = {}
    for name in ("ours", "ours-within-peer-memory"):
        comp = report["comparisons"].get(f"{name}_vs_peer", {})
        if "throughput_ratio" not in comp:
            continue
        stats = runs[name]
        out[name] = {
            "throughput_ratio": {"value": comp["throughput_ratio"], "target": 3.0, "met": comp["throughput_ratio"] >= 3},
            "mfu": {"value": stats.mfu, "target": 0.35, "met": stats.mfu is not None and stats.mfu >= 0.35},
            "loss_rel_diff": {"value": comp["loss"].get("mean_rel_diff"), "target": 0.02,
                              "met": comp["loss"].get("mean_rel_diff", 1.0) <= 0.02},
            "peak_memory_ratio": {"value": comp["peak_memory_ratio"], "target": 1.0,
                                  "met": comp["peak_memory_ratio"] is not None and comp["peak_memory_ratio"] <= 1.0},
        }
    q = report.get("qlora_8b", {})
    if q.get("peak_memory_ratio") is not None:
        out["qlora_8b"] = {"peak_memory_ratio": {"value": q["peak_memory_ratio"], "target": 0.45,
                                                 "met": q["peak_memory_ratio"] <= 0.45}}
    return out


def summary(report: dict[str, Any], runs: dict[str, RunStats]) -> None:
    say("\nrun                          real tok/s      MFU   peak GiB   vs peer   loss rel diff")
    for name, s in runs.items():
        if s.error:
            say(f"{name:28s} ERROR {s.error}")
            continue
        comp = report["comparisons"].get(f"{name}_vs_peer", {})
        ratio = f"{comp['throughput_ratio']:.2f}x" if "throughput_ratio" in comp else "-"
        rel = comp.get("loss", {}).get("mean_rel_diff")
        mfu = f"{s.mfu:.1%}" if s.mfu is not None else "-"
        say(f"{name:28s} {s.real_tokens_per_second:>10,.0f} {mfu:>8} {s.peak_memory_gib:>10.2f} {ratio:>9} "
            f"{'-' if rel is None else f'{rel:.3%}':>15}")
    for name, checks in report["targets"].items():
        say(f"targets {name}: " + ", ".join(f"{k} {'met' if v['met'] else 'MISSED'} "
                                           f"({v['value'] if v['value'] is None else round(v['value'], 4)} vs "
                                           f"{v['target']})" for k, v in checks.items()))


if __name__ == "__main__":
    main()
