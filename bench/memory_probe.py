"""Measure the peak GPU memory of real training steps and compare it with harness.plan.estimate_training_memory.

    python bench/memory_probe.py --out reports/gpu/memory_table.json          # on a CUDA GPU
    python bench/memory_probe.py --smoke --out /tmp/memory_smoke.json         # anywhere, tiny model

Each configuration builds a randomly initialised Llama-shaped model (no download), wraps it for
LoRA / QLoRA (NF4 + double quant via bitsandbytes, skipped when it is not importable) or trains
it fully, runs a few AdamW steps on random tokens in bf16, and records
`torch.cuda.max_memory_allocated` next to `estimate_training_memory(...).allocated_gib`.
Without CUDA (smoke mode on a CPU) the steps still run but `measured_gib` is null.
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import sys
import tempfile
import time
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

sys.path.append(str(Path(__file__).resolve().parents[1]))  # bench._common from this checkout, PYTHONPATH or not
from bench._common import llama_config
from harness.plan import GIB, Method, ModelDims, estimate_training_memory

SHAPES: dict[str, ModelDims] = {
    "llama-135m": ModelDims(576, 1536, 30, 9, 3, 49152, True),  # SmolLM2-135M's shape
    "llama-1b": ModelDims(2048, 8192, 16, 32, 8, 128256, True),  # Llama-3.2-1B's shape
}
SMOKE_SHAPE = ModelDims(64, 128, 2, 4, 2, 256, True)
LORA_R, LORA_ALPHA, LORA_DROPOUT = 16, 32, 0.05
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def has_bitsandbytes() -> bool:
    try:
        import bitsandbytes  # noqa: F401
    except Exception:
        return False
    return torch.cuda.is_available()


def build_model(dims: ModelDims, method: str, device: str, saved: dict[str, str], name: str) -> Any:
    from transformers import LlamaForCausalLM

    model: Any

    dtype = torch.bfloat16
    config = llama_config(dims, vocab=dims.vocab, tied=dims.tied_embeddings, attn_implementation="sdpa")
    if method == "qlora":
        from transformers import BitsAndBytesConfig

        if name not in saved:  # quantisation happens on load, so save the random weights once
            folder = tempfile.mkdtemp(prefix=f"probe-{name}-")
            LlamaForCausalLM(config).to(dtype).save_pretrained(folder)
            saved[name] = folder
        quant = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=dtype
        )
        model = LlamaForCausalLM.from_pretrained(
            saved[name], quantization_config=quant, dtype=dtype, device_map={"": 0}, attn_implementation="sdpa"
        )
    else:
        with torch.device(device):
            model = LlamaForCausalLM(config).to(dtype)
    if method in ("lora", "qlora"):
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(
            model,
            LoraConfig(
                r=LORA_R,
                lora_alpha=LORA_ALPHA,
                lora_dropout=LORA_DROPOUT,
                target_modules=TARGETS,
                task_type="CAUSAL_LM",
            ),
        )
    return model


def run_config(
    name: str,
    dims: ModelDims,
    method: Method,
    seq_len: int,
    batch_size: int,
    grad_ckpt: bool,
    steps: int,
    device: str,
    saved: dict[str, str],
) -> dict[str, Any]:
    cuda = device == "cuda"
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        start = torch.cuda.memory_allocated()
    t0 = time.perf_counter()
    model = build_model(dims, method, device, saved, name)
    if grad_ckpt:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.config.use_cache = False
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4, fused=cuda)
    ids = torch.randint(0, dims.vocab, (batch_size, seq_len), device=device)
    losses = []
    for _ in range(steps):
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(round(float(loss.detach()), 4))
    measured = reserved = None
    if cuda:
        torch.cuda.synchronize()
        measured = round((torch.cuda.max_memory_allocated() - start) / GIB, 4)
        reserved = round(torch.cuda.max_memory_reserved() / GIB, 4)
    est = estimate_training_memory(
        dims,
        method,
        seq_len=seq_len,
        batch_size=batch_size,
        lora_r=LORA_R,
        dtype="bf16",
        grad_checkpointing=grad_ckpt,
        lora_dropout=LORA_DROPOUT,
    )
    del model, optimizer, params, ids, loss
    gc.collect()
    if cuda:
        torch.cuda.empty_cache()
    return {
        "model": name,
        "dims": asdict(dims),
        "n_params": dims.n_params,
        "method": method,
        "seq_len": seq_len,
        "batch_size": batch_size,
        "grad_checkpointing": grad_ckpt,
        "lora_r": LORA_R,
        "lora_dropout": LORA_DROPOUT,
        "dtype": "bf16",
        "steps": steps,
        "losses": losses,
        "measured_gib": measured,
        "measured_reserved_gib": reserved,
        "estimated_gib": est.allocated_gib,
        "estimated_total_gib": est.total_gib,
        "ratio": round(est.allocated_gib / measured, 3) if measured else None,
        "breakdown": est.breakdown,
        "seconds": round(time.perf_counter() - t0, 2),
    }


def configs(smoke: bool, with_qlora: bool) -> list[tuple[str, ModelDims, Method, int, int, bool]]:
    if smoke:
        return [("smoke", SMOKE_SHAPE, m, 32, 2, False) for m in ("lora", "full")]
    methods: list[Method] = ["lora", "full", "qlora"] if with_qlora else ["lora", "full"]
    rows = [
        (name, dims, m, seq, bs, False)
        for name, dims in SHAPES.items()
        for m in methods
        for seq in (512, 1024)
        for bs in (4, 8)
    ]
    rows += [("llama-1b", SHAPES["llama-1b"], m, 1024, 8, True) for m in methods]
    return rows


def versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": platform.python_version(), "torch": torch.__version__}
    for mod in ("transformers", "peft", "bitsandbytes"):
        try:
            out[mod] = __import__(mod).__version__
        except Exception:
            out[mod] = None
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="where to write the JSON table")
    parser.add_argument("--smoke", action="store_true", help="tiny model, 1 step; runs on CPU")
    parser.add_argument("--steps", type=int, default=None, help="training steps per config (default 3, smoke 1)")
    args = parser.parse_args(argv)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu" and not args.smoke:
        parser.error("no CUDA device: use --smoke on a CPU")
    steps = args.steps or (1 if args.smoke else 3)
    with_qlora = has_bitsandbytes()
    saved: dict[str, str] = {}
    rows = []
    for name, dims, method, seq, bs, ckpt in configs(args.smoke, with_qlora):
        row = run_config(name, dims, method, seq, bs, ckpt, steps, device, saved)
        print(
            f"{name:11s} {method:6s} seq={seq:5d} bs={bs} ckpt={ckpt!s:5s} measured={row['measured_gib']} "
            f"estimated={row['estimated_gib']} ratio={row['ratio']} ({row['seconds']} s)",
            flush=True,
        )
        rows.append(row)
    table = {
        "device": torch.cuda.get_device_name(0) if device == "cuda" else platform.processor() or "cpu",
        **versions(),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "smoke": args.smoke,
        "qlora_measured": with_qlora,
        "note": "measured_gib = torch.cuda.max_memory_allocated over model build + steps; "
        "estimated_gib = harness.plan.estimate_training_memory allocated_gib (no CUDA context)",
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(table, indent=2) + "\n")
    print(f"wrote {args.out} ({len(rows)} rows)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
