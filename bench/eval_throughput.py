"""Evaluation throughput: tunegate's batched generation and log-likelihood scoring against the usual ways.

    python bench/eval_throughput.py                                  # GPU: the default model, float32 + bfloat16
    python bench/eval_throughput.py --model /root/model/SmolLM2-135M-Instruct.Q4_1.gguf
    python bench/eval_throughput.py --smoke                          # CPU, tiny random model (the tests run this)

Generation: `harness.model._generate.generate` (sorted, left-padded batches, greedy) against a naive loop that
calls `model.generate` once per item, on the same prompts; the outputs must be identical.
Log-likelihood: `harness.model._generate.loglikelihood` (shared forwards for identical inputs, padding-free
packed rows, LM head only at continuation tokens) against lm-eval's HF backend (`HFLM` wrapping the same
in-memory model, same batch size) on the same multiple-choice requests; the values must agree within a
tolerance (float32: 1e-3 absolute + 1e-4 relative; bfloat16 numbers are reported, not asserted, unless
--strict-bf16: batching changes bf16 rounding).

Each dtype in --dtypes is timed separately. The JSON (reports/perf/) holds the device, versions, date,
every timing, the speed-ups and the checks; the exit status is 1 when a check fails.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch

sys.path.append(str(Path(__file__).resolve().parents[1]))  # bench._common from this checkout, PYTHONPATH or not
from bench._common import REPO, TINY_SHAPE, llama_config, say
from harness.model import _generate as gen

TOLERANCE = {"float32": (1e-3, 1e-4), "bfloat16": (0.25, 2e-2)}  # (absolute, relative)


def timed(fn: Callable[[], Any], device: str) -> tuple[Any, float]:
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    out = fn()
    if device == "cuda":
        torch.cuda.synchronize()
    return out, time.perf_counter() - start


# ------------------------------------------------------------------------------------------------ data


def prompts_for(tok: Any, words: list[str], n: int, seed: int) -> list[str]:
    """Chat prompts of 5-80 words (varied lengths, as in real suites)."""
    rng = random.Random(seed)
    return [
        gen.chat_prompt(
            tok,
            [
                {
                    "role": "user",
                    "content": "Continue this list of words: " + " ".join(rng.choices(words, k=rng.randint(5, 80))),
                }
            ],
        )
        for _ in range(n)
    ]


def choice_requests(words: list[str], questions: int, seed: int) -> list[tuple[str, str]]:
    """Multiple-choice (context, continuation) pairs: four answers per question; half the questions have
    one-word answers (the case lm-eval shares one forward for), half answers of 2-8 words."""
    rng = random.Random(seed)
    pairs = []
    for q in range(questions):
        context = "Question: " + " ".join(rng.choices(words, k=rng.randint(8, 60))) + "?\nAnswer:"
        for _ in range(4):
            n = 1 if q % 2 == 0 else rng.randint(2, 8)
            pairs.append((context, " " + " ".join(rng.choices(words, k=n))))
    return pairs


# ----------------------------------------------------------------------------------------------- paths


def naive_generate(model: Any, tok: Any, prompts: list[str], max_new_tokens: int) -> list[str]:
    """One `model.generate` call per prompt: no padding, no batching."""
    device = next(model.parameters()).device
    stops = gen._stop_ids(tok, model)
    outputs = []
    with torch.inference_mode():
        for prompt in prompts:
            ids = torch.tensor([tok(prompt, add_special_tokens=False)["input_ids"]], device=device)
            out = model.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                do_sample=False,
                max_new_tokens=max_new_tokens,
                eos_token_id=stops,
                pad_token_id=tok.pad_token_id,
            )
            new = out[0, ids.shape[1] :].tolist()
            cut = next((k for k, t in enumerate(new) if t in stops), len(new))
            outputs.append(tok.decode(new[:cut], skip_special_tokens=True))
    return outputs


def lm_eval_loglikelihood(model: Any, tok: Any, pairs: list[tuple[str, str]], batch_size: int) -> list[float]:
    """lm-eval's HF backend on the in-memory model."""
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    lm = HFLM(pretrained=model, tokenizer=tok, batch_size=batch_size)
    requests = [Instance(request_type="loglikelihood", doc={}, arguments=pair, idx=i) for i, pair in enumerate(pairs)]
    return [float(ll) for ll, _ in lm.loglikelihood(requests, disable_tqdm=True)]


# ------------------------------------------------------------------------------------------------ model


def load(args: argparse.Namespace, device: str) -> tuple[Any, Any, str]:
    from harness.model import load_model, load_tokenizer, quiet_transformers

    quiet_transformers()
    if not args.smoke:
        model, tok = load_model(args.model, device)
        return model, tok, args.model
    from transformers import LlamaForCausalLM

    tok = load_tokenizer(args.tokenizer)
    torch.manual_seed(0)
    config = llama_config(TINY_SHAPE, vocab=len(tok), tied=True, tok=tok, max_positions=1024)
    return LlamaForCausalLM(config).eval(), tok, "tiny random Llama (smoke)"


def run_dtype(
    model: Any,
    tok: Any,
    dtype_name: str,
    args: argparse.Namespace,
    device: str,
    prompts: list[str],
    pairs: list[tuple[str, str]],
) -> dict[str, Any]:
    dtype = getattr(torch, dtype_name)
    model.to(dtype)
    torch.backends.cuda.matmul.allow_tf32 = False  # float32 means float32 on both sides
    torch.backends.cudnn.allow_tf32 = False
    absolute, relative = TOLERANCE[dtype_name]
    # warm-up: CUDA context, cuBLAS handles, the attention kernel self-check
    gen.generate(model, tok, prompts[:2], max_new_tokens=4, batch_size=2)
    naive_generate(model, tok, prompts[:1], 4)
    gen.loglikelihood(model, tok, pairs[:8], batch_size=4)
    lm_eval_loglikelihood(model, tok, pairs[:8], 4)

    say(
        f"  [{dtype_name}] generation: {len(prompts)} prompts, {args.max_new_tokens} new tokens, "
        f"batch {args.batch_size}"
    )
    ours, t_ours = timed(
        lambda: gen.generate(model, tok, prompts, max_new_tokens=args.max_new_tokens, batch_size=args.batch_size),
        device,
    )
    naive, t_naive = timed(lambda: naive_generate(model, tok, prompts, args.max_new_tokens), device)
    same = [a == b for a, b in zip(ours, naive, strict=True)]
    out_tokens = sum(len(x) for x in tok(ours, add_special_tokens=False)["input_ids"]) if ours else 0
    generation = {
        "items": len(prompts),
        "ours_seconds": t_ours,
        "naive_seconds": t_naive,
        "speedup": t_naive / max(t_ours, 1e-9),
        "ours_items_per_second": len(prompts) / t_ours,
        "naive_items_per_second": len(prompts) / t_naive,
        "output_tokens": out_tokens,
        "ours_output_tokens_per_second": out_tokens / t_ours,
        "identical": sum(same),
        "mismatches": [
            {"item": i, "ours": ours[i][:200], "naive": naive[i][:200]} for i, ok in enumerate(same) if not ok
        ][:5],
    }
    say(
        f"    ours {t_ours:.2f}s, naive loop {t_naive:.2f}s -> {generation['speedup']:.1f}x; "
        f"identical {sum(same)}/{len(same)}"
    )

    say(f"  [{dtype_name}] log-likelihood: {len(pairs)} requests, batch {args.batch_size}")
    ll_ours, t_ll = timed(lambda: gen.loglikelihood(model, tok, pairs, batch_size=args.batch_size), device)
    ll_ref, t_ref = timed(lambda: lm_eval_loglikelihood(model, tok, pairs, args.batch_size), device)
    diffs = [abs(a - b) for a, b in zip(ll_ours, ll_ref, strict=True)]
    within = [d <= absolute + relative * abs(b) for d, b in zip(diffs, ll_ref, strict=True)]
    scoring = {
        "requests": len(pairs),
        "ours_seconds": t_ll,
        "lm_eval_seconds": t_ref,
        "speedup": t_ref / max(t_ll, 1e-9),
        "ours_requests_per_second": len(pairs) / t_ll,
        "lm_eval_requests_per_second": len(pairs) / t_ref,
        "max_abs_diff": max(diffs, default=0.0),
        "mean_abs_diff": sum(diffs) / max(len(diffs), 1),
        "within_tolerance": sum(within),
        "tolerance": {"absolute": absolute, "relative": relative},
        "mode": gen.scoring_mode(model),
    }
    say(
        f"    ours {t_ll:.2f}s, lm-eval HFLM {t_ref:.2f}s -> {scoring['speedup']:.2f}x; "
        f"max |diff| {scoring['max_abs_diff']:.2e}, within tolerance {sum(within)}/{len(within)}"
    )
    result: dict[str, Any] = {"generation": generation, "loglikelihood": scoring}
    if args.profile:
        result["profile"] = {
            "generate": profiled(
                lambda: gen.generate(
                    model,
                    tok,
                    prompts[: args.batch_size],
                    max_new_tokens=args.max_new_tokens,
                    batch_size=args.batch_size,
                ),
                device,
            ),
            "loglikelihood": profiled(lambda: gen.loglikelihood(model, tok, pairs, batch_size=args.batch_size), device),
        }
    return result


def profiled(fn: Callable[[], Any], device: str) -> dict[str, Any]:
    from torch.profiler import ProfilerActivity, profile

    from harness.model._profile import top_ops

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
    with profile(activities=activities) as prof:
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
    return top_ops(prof, device, steps=1, limit=20)


# ------------------------------------------------------------------------------------------------- main


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--smoke", action="store_true", help="CPU, tiny random model, few items")
    p.add_argument("--model", default="smollm2-135m", help="model spec (alias, .gguf, folder)")
    p.add_argument("--tokenizer", default="smollm2-135m", help="tokenizer for --smoke's random model")
    p.add_argument("--prompts", type=int, help="generation prompts (default 64; smoke 6)")
    p.add_argument("--questions", type=int, help="multiple-choice questions, 4 requests each (default 128; smoke 6)")
    p.add_argument("--max-new-tokens", type=int, help="default 48; smoke 8")
    p.add_argument("--batch-size", type=int, default=None, help="default 32 (smoke 4)")
    p.add_argument("--dtypes", default=None, help="comma-separated; default float32,bfloat16 on CUDA, float32 on CPU")
    p.add_argument("--strict-bf16", action="store_true", help="also fail on bfloat16 mismatches")
    p.add_argument("--profile", action="store_true", help="torch.profiler top-20 ops of our two paths")
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)
    args.prompts = args.prompts or (6 if args.smoke else 64)
    args.questions = args.questions or (6 if args.smoke else 128)
    args.max_new_tokens = args.max_new_tokens or (8 if args.smoke else 48)
    args.batch_size = args.batch_size or (4 if args.smoke else 32)
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    from train_throughput import device_info, versions, word_list

    args = parse(argv)
    t0 = time.monotonic()
    device = "cuda" if torch.cuda.is_available() and not args.smoke else "cpu"
    dtypes = (args.dtypes or ("float32,bfloat16" if device == "cuda" else "float32")).split(",")
    model, tok, model_name = load(args, device)
    model.to(device).eval()
    words = word_list(tok)
    prompts = prompts_for(tok, words, args.prompts, seed=0)
    pairs = choice_requests(words, args.questions, seed=1)
    report: dict[str, Any] = {
        "bench": "eval_throughput",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "device": device_info(device),
        "versions": versions(),
        "model": model_name,
        "parameters": sum(p.numel() for p in model.parameters()),
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "dtypes": {},
    }
    say(f"eval_throughput on {report['device']['name']}: {model_name}, {report['parameters'] / 1e6:.0f}M params")
    for name in dtypes:
        report["dtypes"][name] = run_dtype(model, tok, name, args, device, prompts, pairs)
    report["checks"] = checks(report, args)
    report["seconds"] = time.monotonic() - t0
    out = args.out or REPO / ("runs" if args.smoke else "reports") / "perf" / (  # a smoke run measures nothing
        f"eval_throughput-{'smoke-' if args.smoke else ''}{datetime.now().strftime('%Y%m%d-%H%M%S')}.json"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    for check in report["checks"]:
        say(f"{'ok  ' if check['passed'] else 'FAIL'} {check['name']}: {check['detail']}")
    say(f"wrote {out}")
    return report


def checks(report: dict[str, Any], args: argparse.Namespace) -> list[dict[str, Any]]:
    """Correctness (asserted) and the issue's speed targets (reported)."""
    out = []
    for name, r in report["dtypes"].items():
        g, s = r["generation"], r["loglikelihood"]
        asserted = name == "float32" or args.strict_bf16
        out += [
            {
                "name": f"{name} greedy outputs identical to the naive loop",
                "asserted": asserted,
                "passed": g["identical"] == g["items"],
                "detail": f"{g['identical']}/{g['items']}",
            },
            {
                "name": f"{name} log-likelihoods match lm-eval",
                "asserted": asserted,
                "passed": s["within_tolerance"] == s["requests"],
                "detail": f"{s['within_tolerance']}/{s['requests']}, max |diff| {s['max_abs_diff']:.2e}",
            },
            {
                "name": f"{name} generation >= 5x the naive loop (target)",
                "asserted": False,
                "passed": g["speedup"] >= 5,
                "detail": f"{g['speedup']:.2f}x",
            },
            {
                "name": f"{name} log-likelihood >= 1.5x lm-eval (target)",
                "asserted": False,
                "passed": s["speedup"] >= 1.5,
                "detail": f"{s['speedup']:.2f}x",
            },
        ]
    return out


if __name__ == "__main__":
    result = main()
    sys.exit(1 if any(c["asserted"] and not c["passed"] for c in result["checks"]) else 0)
