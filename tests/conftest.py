"""Shared fixtures: a tiny random-init Llama with the real SmolLM2 tokenizer (built in seconds), real SQLite
stores in tmp folders, and (from tests/support/postgres.py) a private PostgreSQL server. Helpers that are not
fixtures live in tests/support/."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.support import REPO

pytest_plugins = ("tests.support.postgres",)

os.environ.setdefault("TUNEGATE_CACHE", str(REPO / ".cache"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer, 64-wide Llama with SmolLM2's tokenizer and chat template, saved as a local HF folder."""
    import torch
    from transformers import LlamaForCausalLM

    from harness.model import load_tokenizer
    from tests.support import tiny_llama_config

    tok = load_tokenizer("smollm2-135m")
    torch.manual_seed(0)
    config = tiny_llama_config(tok)
    model = LlamaForCausalLM(config)
    folder = tmp_path_factory.mktemp("tiny-llama")
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def one_torch_thread():
    """Two shared cores: torch's second thread mostly spins; modules that train many tiny models run on one."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def store(tmp_path: Path):
    from harness.store import Store

    return Store(str(tmp_path / "store.db"))
