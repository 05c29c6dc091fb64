"""Helpers shared by the tests (not tests themselves): the repository's path, small file writers, stores
filled for the app and gate tests, tiny plans, and local servers (OpenAI-compatible chat, OTLP receiver)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def tiny_llama_config(tok: Any, hidden: int = 64, intermediate: int = 128, max_positions: int = 512) -> Any:
    """A 2-layer Llama config (4 heads, 2 KV heads, tied embeddings) for `tok`, with `<|im_end|>` as eos (the chat
    template's end of turn): the tests' random models differ only in width."""
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=len(tok),
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=max_positions,
        tie_word_embeddings=True,
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.convert_tokens_to_ids("<|im_end|>"),
    )


def two_cpu_ranks(module: str, model_dir: Path, option: str) -> dict[str, Any]:
    """`accelerate launch` of `python -m module MODEL_DIR OUT OPTION` (the data-parallel scripts in tests/support)
    as two processes over gloo on the CPU (CUDA hidden from them, on a GPU host too); returns the JSON the script
    wrote to OUT, a temporary file."""
    import os
    import subprocess
    import sys
    import tempfile

    from harness.run._executors import free_port

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out.json"
        cmd = [
            *(sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "2", "--num_machines", "1"),
            *("--multi_gpu", "--main_process_port", str(free_port()), "--dynamo_backend", "no"),
            *("-m", module, str(model_dir), str(out), option),
        ]
        done = subprocess.run(
            cmd, capture_output=True, text=True, timeout=600, env=os.environ | {"CUDA_VISIBLE_DEVICES": ""}
        )
        assert done.returncode == 0, done.stderr[-3000:]
        return json.loads(out.read_text())
