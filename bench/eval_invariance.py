"""Evaluation invariance: does an item's score depend only on the model and the item? And how fast is it?

    python bench/eval_invariance.py --out reports/perf/eval_invariance.json   # GPU: smollm2-135m bf16, GPU plan suites
    python bench/eval_invariance.py --adapters RUN/lora-a/adapter,RUN/lora-b/adapter ...  # a GPU plan's adapters
    python bench/eval_invariance.py --smoke --out /tmp/inv.json                # CPU, tiny random bf16 model

Models: the base model and two LoRA adapters on it (`--adapters`: two adapter folders, e.g. two trials of
`examples/gpu/plan.yaml`; otherwise two adapters trained here for a few steps on the plan's training data), in
bf16. Suites: those of the plan (`--plan`, default the GPU plan).

Invariance. For every model, every suite item is scored in the invariant mode (`tunegate`'s default) alone
(batch 1: the reference) and then with other companions: the suite scored 7 items at a time, its own
`batch_size` at a time, all at once with device-sized batching ("device"), both adapters together through
`evaluate_adapters` ("mixed-adapter", what `--shared-eval` runs), and four processes scoring at once on the same
device ("four trials": base, adapter a, adapter b, base). Outputs (generation, and the chosen answer of a
multiple-choice item) and log-likelihoods (every choice of a multiple-choice item; the reference output of a
generation item given its prompt) are compared bit for bit with the reference: `outputs_compared`,
`outputs_differing`, `loglik_compared`, `loglik_differing`, and per configuration. The same comparisons in the
fast mode (batch 7 and device against batch 1; the base model, `--fast-items` items per suite: today's path at batch
1 is slow) are reported as `fast_mode`, which is what the invariant mode fixes.

Speed: greedy generation of the prompts `bench/eval_throughput.py` uses (64 prompts, 48 new tokens, same seed)
by the invariant path, today's batched path (fast mode, batch 32 and device-sized) and the naive loop (one
`model.generate` per item, on the first `--naive-prompts`), as output tokens per second (outputs re-tokenized,
as eval_throughput counts them); then the invariant path and the device-sized fast path each repeated back to back
for `--util-seconds` with NVML GPU utilisation sampled every 50 ms (`sustained`);
`speedup_vs_current_bf16` divides the invariant path's rate by the bf16 rate committed in
`reports/perf/eval_throughput.json`, `speedup_vs_fast_same_run` by today's path measured here.

The JSON holds the device, versions, date, the numerics record and every number; the exit status is 1 when an
output or log-likelihood differs in the invariant mode.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(REPO))

import torch
import yaml

from bench._common import GPU_PLAN, LlamaShape, llama_config, say
from harness.evaluation import _suite as suite_registry
from harness.evaluation._evaluate import evaluate, evaluate_adapters
from harness.model import _generate as gen
from harness.model import _invariant as inv
from harness.model import _numerics

# wide enough that the fast path's sums change with the batch shape on a CPU
WIDE_TINY_SHAPE = LlamaShape(hidden=256, intermediate=1024, layers=2, heads=4, kv_heads=2)
COMMITTED_EVAL = REPO / "reports" / "perf" / "eval_throughput.json"
CONFIGS = ("batch-7", "batch-own", "device", "mixed-adapter", "four-trials")


# --------------------------------------------------------------------------------------------- models


def tiny_model(folder: Path, tokenizer: str) -> Path:
    """A bf16 2-layer Llama 256 wide with SmolLM2's tokenizer, saved (the worker processes load it too)."""
    from transformers import LlamaForCausalLM

    from harness.model import load_tokenizer

    tok = load_tokenizer(tokenizer)
    torch.manual_seed(0)
    config = llama_config(WIDE_TINY_SHAPE, vocab=len(tok), tied=True, tok=tok, max_positions=1024)
    LlamaForCausalLM(config).to(torch.bfloat16).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def load(spec: str, device: str, adapter: str | None = None) -> tuple[Any, Any]:
    from harness.model import load_model, quiet_transformers

    quiet_transformers()
    model, tok = load_model(spec, device)
    model = model.to(device=device, dtype=torch.bfloat16).eval()
    if adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter).eval()
    return model, tok


def train_adapter(model: Any, tok: Any, texts: list[str], folder: Path, seed: int, steps: int, lr: float) -> Path:
    """A LoRA adapter trained for `steps` AdamW steps (8 texts each, next-token loss), saved to `folder`."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    peft_model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules="all-linear"))
    peft_model.train()
    params = [p for p in peft_model.parameters() if p.requires_grad]
    for p in params:
        p.data = p.data.float()
    optimizer = torch.optim.AdamW(params, lr=lr)
    device = next(model.parameters()).device
    for step in range(steps):
        batch = [texts[(step * 8 + k + seed * 3) % len(texts)] for k in range(8)]
        enc = tok(batch, return_tensors="pt", padding=True, truncation=True, max_length=192).to(device)
        labels = enc["input_ids"].masked_fill(enc["attention_mask"] == 0, -100)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            loss = peft_model(**enc, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    for p in params:
        p.data = p.data.to(torch.bfloat16)
    peft_model.eval()
    peft_model.save_pretrained(str(folder))
    peft_model.unload()
    return folder


def training_texts(plan: Path, tok: Any) -> list[str]:
    doc = yaml.safe_load(plan.read_text())
    train = Path(doc["data"]["train"])
    train = train if train.is_absolute() and train.exists() else (plan.parent / train).resolve()
    rows = [json.loads(line) for line in train.read_text().splitlines() if line.strip()][:256]
    return [gen.chat_prompt(tok, [{"role": "user", "content": r["prompt"]}]) + r["completion"] for r in rows]


# ------------------------------------------------------------------------------------------- scoring


def plan_suites(plan: Path, items: int | None, max_new_cap: int | None = None) -> list[Any]:
    """The plan's suites, the first `items` items of each, generation capped at `max_new_cap` new tokens."""
    suites = []
    for name in yaml.safe_load(plan.read_text())["suites"]:
        suite = suite_registry.load(name)
        if items:
            suite = suite.model_copy(update={"items": suite.items[:items]})
        if max_new_cap and suite.spec.generation.max_new_tokens > max_new_cap:
            generation = suite.spec.generation.model_copy(update={"max_new_tokens": max_new_cap})
            suite = suite.model_copy(update={"spec": suite.spec.model_copy(update={"generation": generation})})
        suites.append(suite)
    return suites


def pieces(suite: Any, size: int | None) -> list[Any]:
    """The suite as sub-suites of `size` items (None: whole): each scored by its own call, with its own companions."""
    if size is None:
        return [suite]
    return [suite.model_copy(update={"items": suite.items[k : k + size]}) for k in range(0, len(suite.items), size)]


def scored(results: list[Any]) -> dict[str, str]:
    return {r.item_id: r.output for res in results for r in res.items}


def loglik_requests(suite: Any, outputs: dict[str, str], tok: Any) -> list[tuple[str, tuple[str, str]]]:
    """(key, (context, continuation)) per log-likelihood compared: every choice of a multiple-choice item; a
    generation item's reference output given its templated prompt."""
    out = []
    for item in suite.items:
        if suite.spec.kind == "multiple_choice":
            out += [(f"{item.id}#{k}", (item.prompt or "", c)) for k, c in enumerate(item.choices or [])]
        else:
            out.append((item.id, (gen.chat_prompt(tok, item.chat(suite.spec.system)), outputs.get(item.id, ""))))
    return out


def logliks(
    model: Any, tok: Any, requests: list[tuple[str, tuple[str, str]]], size: int | None, mode: str, batch: int
) -> dict[str, float]:
    """Log-likelihoods of `requests`, `size` items' requests per call (None: all in one call)."""
    keys, pairs = [k for k, _ in requests], [p for _, p in requests]
    step = len(pairs) if size is None else size
    values: list[float] = []
    for k in range(0, len(pairs), max(step, 1)):
        part = pairs[k : k + step]
        values += (
            inv.loglikelihood(model, tok, part)
            if mode == "invariant"
            else gen.loglikelihood(model, tok, part, batch_size=batch)
        )
    return dict(zip(keys, values, strict=True))


def score_model(
    model: Any,
    tok: Any,
    suites: list[Any],
    size: int | None,
    mode: str,
    device_batch: bool,
    references: dict[str, dict[str, str]] | None = None,
) -> dict[str, Any]:
    """Every suite's outputs and log-likelihoods, the items scored `size` at a time (None: the whole suite)."""
    out: dict[str, Any] = {}
    for suite in suites:
        parts = pieces(suite, size)
        if mode == "fast" and size is not None:  # the fast path batches by the suite's batch_size
            parts = [
                p.model_copy(
                    update={
                        "spec": p.spec.model_copy(
                            update={"generation": p.spec.generation.model_copy(update={"batch_size": size})}
                        )
                    }
                )
                for p in parts
            ]
        outputs = scored([evaluate(model, tok, p, numerics=mode, device_batch=device_batch) for p in parts])
        ref = (references or {}).get(suite.name, {}).get("outputs", outputs)
        per = 1 if suite.spec.kind != "multiple_choice" else max(len(i.choices or []) for i in suite.items)
        ll = logliks(
            model,
            tok,
            loglik_requests(suite, ref, tok),
            None if size is None else size * per,
            mode,
            size or suite.spec.generation.batch_size,
        )
        out[suite.name] = {"outputs": outputs, "logliks": ll}
    return out


def compare(reference: dict[str, Any], other: dict[str, Any]) -> dict[str, int]:
    counts = {"outputs_compared": 0, "outputs_differing": 0, "loglik_compared": 0, "loglik_differing": 0}
    for suite, ref in reference.items():
        mine = other.get(suite, {"outputs": {}, "logliks": {}})
        for key, value in ref["outputs"].items():
            counts["outputs_compared"] += 1
            counts["outputs_differing"] += mine["outputs"].get(key) != value
        for key, value in ref["logliks"].items():
            counts["loglik_compared"] += 1
            counts["loglik_differing"] += mine["logliks"].get(key) != value  # bit for bit
    return counts


def add(total: dict[str, int], part: dict[str, int]) -> None:
    for k, v in part.items():
        total[k] = total.get(k, 0) + v


# ------------------------------------------------------------------------------- four processes at once


def worker(spec_file: Path) -> None:
    """One of the four concurrent trials: load, score every suite in the invariant mode, write the scores."""
    spec = json.loads(spec_file.read_text())
    model, tok = load(spec["model"], spec["device"], spec.get("adapter"))
    suites = plan_suites(Path(spec["plan"]), spec["items"], spec["max_new_cap"])
    Path(spec["out"]).write_text(
        json.dumps(score_model(model, tok, suites, None, "invariant", True, spec["references"]))
    )


def four_trials(
    args: argparse.Namespace,
    work: Path,
    model_spec: str,
    device: str,
    adapters: dict[str, str],
    references: dict[str, Any],
) -> dict[str, Any]:
    names = ["base", "adapter-a", "adapter-b", "base"][: args.trials]
    procs = []
    for k, name in enumerate(names):
        spec = {
            "model": model_spec,
            "device": device,
            "adapter": adapters.get(name),
            "plan": str(args.plan),
            "items": args.items,
            "max_new_cap": args.max_new_cap,
            "references": references[name],
            "out": str(work / f"trial{k}.json"),
        }
        spec_file = work / f"trial{k}.spec.json"
        spec_file.write_text(json.dumps(spec))
        env = os.environ | {"PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)}
        procs.append((name, k, subprocess.Popen([sys.executable, __file__, "--worker", str(spec_file)], env=env)))
    results = {}
    for name, k, proc in procs:
        if proc.wait() != 0:
            raise SystemExit(f"trial process {k} ({name}) exited {proc.returncode}")
        results[f"{name}#{k}"] = (name, json.loads((work / f"trial{k}.json").read_text()))
    return results


# ---------------------------------------------------------------------------------------------- speed


def timed(fn: Callable[[], Any], device: str) -> tuple[Any, float]:
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    out = fn()
    if device == "cuda":
        torch.cuda.synchronize()
    return out, time.perf_counter() - start


def sustain(
    fn: Callable[[], list[str]], tokens: Callable[[list[str]], int], args: argparse.Namespace, device: str
) -> dict[str, Any]:
    """`fn` called back to back for `--util-seconds` with NVML sampling every 50 ms: one call of a small model's
    generation lasts well under NVML's own averaging window, so utilisation is only meaningful over many."""
    from sweep_throughput import GpuSampler

    calls, produced = 0, 0
    with GpuSampler(0 if device == "cuda" else None, period=0.05) as sampler:
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        while calls == 0 or time.perf_counter() - start < args.util_seconds:
            produced += tokens(fn())
            calls += 1
        if device == "cuda":
            torch.cuda.synchronize()
        elapsed = time.perf_counter() - start
    util = sampler.summary()
    util.pop("trace", None)
    return {
        "calls": calls,
        "seconds": elapsed,
        "output_tokens_per_second": produced / elapsed,
        "gpu_utilization": util,
    }


def speed(model: Any, tok: Any, args: argparse.Namespace, device: str) -> dict[str, Any]:
    from eval_throughput import naive_generate, prompts_for
    from train_throughput import word_list

    prompts = prompts_for(tok, word_list(tok), args.prompts, seed=0)
    new = args.max_new_tokens

    def tokens(outputs: list[str]) -> int:
        return sum(len(x) for x in tok(outputs, add_special_tokens=False)["input_ids"]) if outputs else 0

    inv.generate(model, tok, prompts[:2], max_new_tokens=4)  # warm-ups
    gen.generate(model, tok, prompts[:2], max_new_tokens=4, batch_size=2)
    naive_generate(model, tok, prompts[:1], 4)
    ours, t_ours = timed(lambda: inv.generate(model, tok, prompts, max_new_tokens=new), device)
    fast, t_fast = timed(
        lambda: gen.generate(model, tok, prompts, max_new_tokens=new, batch_size=args.batch_size), device
    )
    fast_dev, t_dev = timed(
        lambda: gen.generate(model, tok, prompts, max_new_tokens=new, batch_size=args.batch_size, device_batch=True),
        device,
    )
    naive, t_naive = timed(lambda: naive_generate(model, tok, prompts[: args.naive_prompts], new), device)
    rates = {
        "invariant": tokens(ours) / t_ours,
        f"fast_batch_{args.batch_size}": tokens(fast) / t_fast,
        "fast_device_batch": tokens(fast_dev) / t_dev,
        "naive_loop": tokens(naive) / t_naive,
    }
    sustained = {
        "invariant": sustain(lambda: inv.generate(model, tok, prompts, max_new_tokens=new), tokens, args, device),
        "fast_device_batch": sustain(
            lambda: gen.generate(
                model, tok, prompts, max_new_tokens=new, batch_size=args.batch_size, device_batch=True
            ),
            tokens,
            args,
            device,
        ),
    }
    return {
        "prompts": len(prompts),
        "max_new_tokens": new,
        "naive_prompts": args.naive_prompts,
        "seconds": {"invariant": t_ours, "fast": t_fast, "fast_device_batch": t_dev, "naive_loop": t_naive},
        "output_tokens": {
            "invariant": tokens(ours),
            "fast": tokens(fast),
            "fast_device_batch": tokens(fast_dev),
            "naive_loop": tokens(naive),
        },
        "tokens_per_second": rates,
        "sustained": sustained,
        "gpu_utilization_invariant": sustained["invariant"]["gpu_utilization"],
        "invariant_equals_fast": sum(a == b for a, b in zip(ours, fast, strict=True)),
    }


def committed_bf16() -> tuple[float | None, str | None]:
    try:
        doc = json.loads(COMMITTED_EVAL.read_text())
        return float(doc["dtypes"]["bfloat16"]["generation"]["ours_output_tokens_per_second"]), doc["device"]["name"]
    except (OSError, KeyError, ValueError, TypeError):
        return None, None


# ----------------------------------------------------------------------------------------------- main


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--smoke", action="store_true", help="CPU, tiny random bf16 model, a few items per suite")
    p.add_argument("--model", default="smollm2-135m", help="model spec (alias, .gguf, folder)")
    p.add_argument("--tokenizer", default="smollm2-135m", help="tokenizer of --smoke's random model")
    p.add_argument("--plan", type=Path, default=GPU_PLAN, help="the plan whose suites and training data are used")
    p.add_argument("--adapters", help="two LoRA adapter folders, comma-separated (default: train two here)")
    p.add_argument("--adapter-steps", type=int, help="training steps of each adapter made here (default 30; smoke 2)")
    p.add_argument("--adapter-lr", type=float, default=1e-3)
    p.add_argument("--items", type=int, help="items per suite (default all; smoke 4)")
    p.add_argument("--max-new-cap", type=int, help="cap on each suite's max_new_tokens (default none; smoke 6)")
    p.add_argument(
        "--fast-items",
        type=int,
        help="fast-mode comparison: items per suite, base model only (default "
        "4; smoke 3): today's path at batch 1 is the slow part",
    )
    p.add_argument("--trials", type=int, help="concurrent trial processes (default 4; smoke 2)")
    p.add_argument("--prompts", type=int, help="speed: generation prompts (default 64; smoke 6)")
    p.add_argument("--max-new-tokens", type=int, help="speed: new tokens (default 48; smoke 8)")
    p.add_argument("--batch-size", type=int, help="speed: the fast path's batch (default 32; smoke 4)")
    p.add_argument("--naive-prompts", type=int, help="speed: prompts of the naive loop (default 8; smoke 2)")
    p.add_argument(
        "--util-seconds",
        type=float,
        help="speed: seconds each path is repeated for GPU utilisation (default 5; smoke 0.2)",
    )
    p.add_argument("--work", type=Path, help="where adapters and trial outputs go (default: a tmp dir)")
    p.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)
    smoke = args.smoke
    args.adapter_steps = args.adapter_steps or (2 if smoke else 30)
    args.items = args.items or (4 if smoke else None)
    args.max_new_cap = args.max_new_cap or (6 if smoke else None)
    args.fast_items = args.fast_items or (3 if smoke else 4)
    args.trials = args.trials or (2 if smoke else 4)
    args.prompts = args.prompts or (6 if smoke else 64)
    args.max_new_tokens = args.max_new_tokens or (8 if smoke else 48)
    args.batch_size = args.batch_size or (4 if smoke else 32)
    args.naive_prompts = args.naive_prompts or (2 if smoke else 8)
    args.util_seconds = args.util_seconds if args.util_seconds is not None else (0.2 if smoke else 5.0)
    args.plan = args.plan.resolve()
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    from train_throughput import device_info, versions

    args = parse(argv)
    t0 = time.monotonic()
    device = "cuda" if torch.cuda.is_available() and not args.smoke else "cpu"
    work = args.work or Path(tempfile.mkdtemp(prefix="eval-invariance-"))
    work.mkdir(parents=True, exist_ok=True)
    model_spec = str(tiny_model(work / "tiny", args.tokenizer)) if args.smoke else args.model
    model, tok = load(model_spec, device)
    suites = plan_suites(args.plan, args.items, args.max_new_cap)
    say(f"eval_invariance on {device}: {model_spec}, suites {', '.join(s.name for s in suites)}")
    if args.adapters:
        folders = [str(Path(a).resolve()) for a in args.adapters.split(",")]
        if len(folders) != 2:
            raise SystemExit("--adapters takes two adapter folders")
        adapter_source = "given"
    else:
        texts = training_texts(args.plan, tok)
        folders = [
            str(train_adapter(model, tok, texts, work / f"adapter-{k}", k + 1, args.adapter_steps, args.adapter_lr))
            for k in range(2)
        ]
        adapter_source = f"trained here: {args.adapter_steps} AdamW steps, lr {args.adapter_lr}, r 8"
    adapters = {"adapter-a": folders[0], "adapter-b": folders[1]}
    from peft import PeftModel

    shared = PeftModel.from_pretrained(model, folders[0], adapter_name="adapter-a")
    shared.load_adapter(folders[1], adapter_name="adapter-b")
    shared.eval()

    def scoring(name: str) -> Any:
        """A context with `shared` scoring as `name` (adapters disabled for the base model)."""
        import contextlib

        if name == "base":
            return shared.disable_adapter()
        shared.set_adapter(name)
        return contextlib.nullcontext()

    variants = ["base", "adapter-a", "adapter-b"]
    references: dict[str, Any] = {}
    totals: dict[str, int] = {}
    per_config: dict[str, dict[str, int]] = {c: {} for c in CONFIGS}
    fast_totals: dict[str, dict[str, int]] = {}
    for name in variants:
        with scoring(name):
            say(f"  [{name}] reference: every item alone")
            references[name] = score_model(shared, tok, suites, 1, "invariant", True)
            for config, size, device_batch in (("batch-7", 7, False), ("batch-own", 0, False), ("device", None, True)):
                if config == "batch-own":
                    got: dict[str, Any] = {}
                    for s in suites:
                        got |= score_model(
                            shared, tok, [s], s.spec.generation.batch_size, "invariant", False, references[name]
                        )
                else:
                    got = score_model(shared, tok, suites, size, "invariant", device_batch, references[name])
                counts = compare(references[name], got)
                add(per_config[config], counts)
                add(totals, counts)
                say(f"    {config}: {counts}")
            if name != "base":
                continue
            few = [s.model_copy(update={"items": s.items[: args.fast_items]}) for s in suites]
            fast_ref = score_model(shared, tok, few, 1, "fast", False, references[name])
            for config, size, device_batch in (("batch-7", 7, False), ("device", None, True)):
                counts = compare(fast_ref, score_model(shared, tok, few, size, "fast", device_batch, references[name]))
                fast_totals.setdefault(config, {})
                add(fast_totals[config], counts)
                say(f"    fast mode {config}: {counts}")
    say("  mixed-adapter: both adapters through evaluate_adapters")
    for suite in suites:
        together = evaluate_adapters(shared, tok, suite, ["adapter-a", "adapter-b"], numerics="invariant")
        for name in ("adapter-a", "adapter-b"):
            got = {suite.name: {"outputs": scored([together[name]]), "logliks": {}}}
            counts = compare({suite.name: {"outputs": references[name][suite.name]["outputs"], "logliks": {}}}, got)
            add(per_config["mixed-adapter"], counts)
            add(totals, counts)
    say(f"    {per_config['mixed-adapter']}")
    say(f"  four trials: {args.trials} processes scoring at once")
    for key, (name, got) in four_trials(args, work, model_spec, device, adapters, references).items():
        counts = compare(references[name], got)
        add(per_config["four-trials"], counts)
        add(totals, counts)
        say(f"    {key}: {counts}")

    say("  speed: generation, invariant vs fast vs naive (the base model, freshly loaded: no PEFT wrapper)")
    plain, _ = load(model_spec, device)
    rates = speed(plain, tok, args, device)
    say(f"    tokens/s {json.dumps({k: round(v, 1) for k, v in rates['tokens_per_second'].items()})}")
    committed, committed_device = committed_bf16()
    ours = rates["tokens_per_second"]["invariant"]
    fast_default = rates["tokens_per_second"]["fast_device_batch"]
    report: dict[str, Any] = {
        "bench": "eval_invariance",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "device": device_info(device),
        "versions": versions(),
        "model": model_spec,
        "dtype": "bfloat16",
        "numerics": _numerics.record(
            shared, "invariant", inv.shapes_for(torch.device(device)).describe(), attention=inv.attention_used(shared)
        ),
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "worker"},
        "adapters": {"folders": adapters, "source": adapter_source},
        "suites": {
            s.name: {
                "kind": s.spec.kind,
                "items": len(s.items),
                "batch_size": s.spec.generation.batch_size,
                "max_new_tokens": s.spec.generation.max_new_tokens,
            }
            for s in suites
        },
        "configurations": list(CONFIGS),
        **totals,
        "per_configuration": per_config,
        "fast_mode": fast_totals,
        "tokens_per_second": rates["tokens_per_second"],
        "speed": rates,
        "committed_bf16_tokens_per_second": committed,
        "committed_bf16_device": committed_device,
        "speedup_vs_current_bf16": round(ours / committed, 2) if committed else None,
        "speedup_vs_fast_same_run": round(ours / max(fast_default, 1e-9), 2),
        "gpu_utilization_mean": rates["gpu_utilization_invariant"].get("mean"),
    }
    report["seconds"] = time.monotonic() - t0
    out = args.out or REPO / ("runs" if args.smoke else "reports") / "perf" / (
        f"eval_invariance-{'smoke-' if args.smoke else ''}{datetime.now().strftime('%Y%m%d-%H%M%S')}.json"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    say(
        f"outputs differing {report['outputs_differing']}/{report['outputs_compared']}, log-likelihoods differing "
        f"{report['loglik_differing']}/{report['loglik_compared']}; fast mode: {json.dumps(fast_totals)}"
    )
    say(
        f"speedup vs committed bf16 {report['speedup_vs_current_bf16']}x, vs fast path here "
        f"{report['speedup_vs_fast_same_run']}x; GPU utilisation {report['gpu_utilization_mean']}"
    )
    say(f"wrote {out}")
    return report


if __name__ == "__main__":
    if "--worker" in sys.argv:
        worker(parse(sys.argv[1:]).worker)
        sys.exit(0)
    result = main()
    sys.exit(1 if result["outputs_differing"] or result["loglik_differing"] else 0)
