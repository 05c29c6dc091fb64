"""What the bench scripts share: the checkout's paths, progress lines, a Llama config from a shape, and the item
outputs of a stored run. The scripts import it as `bench._common`, with the checkout on PYTHONPATH (as
`bench/gpu_env.sh` and `tests/support/bench.py` set it)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
GPU_PLAN = REPO / "examples" / "gpu" / "plan.yaml"


def say(*parts: Any) -> None:
    """A progress line, shown at once (the benches run for minutes under `timeout` and in logs)."""
    print(*parts, flush=True)


@dataclass(frozen=True)
class LlamaShape:
    """A decoder's shape, named as the scripts' settings and `harness.plan.ModelDims` name it."""

    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int


TINY_SHAPE = LlamaShape(hidden=64, intermediate=128, layers=2, heads=4, kv_heads=2)  # the smoke runs' model


def llama_config(
    shape: Any, *, vocab: int, tied: bool, tok: Any = None, max_positions: int = 4096, **extra: Any
) -> Any:
    """A `LlamaConfig` of `shape` (anything with a LlamaShape's fields); with a tokenizer, its pad and bos ids
    and `<|im_end|>` as eos (the chat template's end of turn). `extra` goes to the config as is (e.g.
    `attn_implementation`)."""
    from transformers import LlamaConfig

    ids = (
        {}
        if tok is None
        else {
            "pad_token_id": tok.pad_token_id,
            "bos_token_id": tok.bos_token_id,
            "eos_token_id": tok.convert_tokens_to_ids("<|im_end|>"),
        }
    )
    return LlamaConfig(
        hidden_size=shape.hidden,
        intermediate_size=shape.intermediate,
        num_hidden_layers=shape.layers,
        num_attention_heads=shape.heads,
        num_key_value_heads=shape.kv_heads,
        vocab_size=vocab,
        tie_word_embeddings=tied,
        max_position_embeddings=max_positions,
        **ids,
        **extra,
    )


def item_outputs(store_url: str, run_id: int) -> dict[str, str]:
    """Every item output of a stored run, keyed `trial/suite/item` (to compare two runs output by output)."""
    from harness.store import Store

    store = Store(store_url)
    return {
        f"{t.name}/{suite.name}/{row['item']}": row["output"]
        for t in store.trials(run_id)
        for ev, suite in store.evaluations(t.id)
        for row in store.item_rows(ev.id)
    }
