"""Models: load (alias, local folder, GGUF, hub id), generate and rank choices in batches, and the fast training path.

Names are imported on first use (PEP 562), so importing one light part does not load the heavy ones."""

from __future__ import annotations

from harness._lazy import lazy_getattr

_EXPORTS = {
    "DEFAULT_LIGER_KERNELS": "harness.model._fastpath",
    "FastPath": "harness.model._fastpath",
    "LIGER_KERNELS": "harness.model._fastpath",
    "liger_loss_head": "harness.model._fastpath",
    "ALIASES": "harness.model._load",
    "DEFAULT_MODEL": "harness.model._load",
    "load_model": "harness.model._load",
    "load_tokenizer": "harness.model._load",
    "local_folder": "harness.model._load",
    "nf4_config": "harness.model._load",
    "quiet_transformers": "harness.model._load",
    "resolve": "harness.model._load",
}
__all__ = list(_EXPORTS)
__getattr__ = lazy_getattr(__name__, _EXPORTS)
