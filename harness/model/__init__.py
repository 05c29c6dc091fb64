"""Models: load (alias, local folder, GGUF, hub id), generate and rank choices in batches, and the fast training path.

Names are imported on first use (PEP 562), so importing one light part does not load the heavy ones."""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from harness.model._fastpath import (
        ATTENTION_NAME,
        DEFAULT_LIGER_KERNELS,
        FastPath,
        FastReport,
        FastSession,
        GIB,
        LAYER_KERNELS,
        LIGER_KERNELS,
        MemoryPlan,
        PackedRow,
        SEQ_LENGTHS_KWARG,
        activation_bytes_per_token,
        apply_liger,
        attention_implementation,
        backbone_of,
        checkpointing,
        compiled_layers,
        decoder_layers,
        liger_available,
        liger_loss_head,
        lora_bf16_inputs,
        max_tokens_per_micro_batch,
        optimizer_bytes,
        pack_from_mask,
        packed_kwargs,
        padding_free,
        plan_memory,
        register_attention,
        restoring_patches,
        select_attention_kernel,
        unwrap,
        varlen_attention_forward,
    )
    from harness.model._generate import (
        MAX_DEVICE_BATCH,
        MEMORY_SHARE,
        Progress,
        chat_prompt,
        device_batch_size,
        encode_pairs,
        generate,
        loglikelihood,
        packable,
        scoring_mode,
    )
    from harness.model._load import (
        ALIASES,
        CHATML_TEMPLATE,
        DEFAULT_MODEL,
        DISK_LOADS,
        ResolvedModel,
        cache_root,
        convert_gguf,
        default_device,
        fix_tokenizer,
        keep_models_loaded,
        load_model,
        load_tokenizer,
        local_folder,
        nf4_config,
        quiet_transformers,
        resolve,
    )

_EXPORTS = {
    "ALIASES": "harness.model._load",
    "ATTENTION_NAME": "harness.model._fastpath",
    "CHATML_TEMPLATE": "harness.model._load",
    "DEFAULT_LIGER_KERNELS": "harness.model._fastpath",
    "DEFAULT_MODEL": "harness.model._load",
    "DISK_LOADS": "harness.model._load",
    "FastPath": "harness.model._fastpath",
    "FastReport": "harness.model._fastpath",
    "FastSession": "harness.model._fastpath",
    "GIB": "harness.model._fastpath",
    "LAYER_KERNELS": "harness.model._fastpath",
    "LIGER_KERNELS": "harness.model._fastpath",
    "MAX_DEVICE_BATCH": "harness.model._generate",
    "MEMORY_SHARE": "harness.model._generate",
    "MemoryPlan": "harness.model._fastpath",
    "PackedRow": "harness.model._fastpath",
    "Progress": "harness.model._generate",
    "ResolvedModel": "harness.model._load",
    "SEQ_LENGTHS_KWARG": "harness.model._fastpath",
    "activation_bytes_per_token": "harness.model._fastpath",
    "apply_liger": "harness.model._fastpath",
    "attention_implementation": "harness.model._fastpath",
    "backbone_of": "harness.model._fastpath",
    "cache_root": "harness.model._load",
    "chat_prompt": "harness.model._generate",
    "checkpointing": "harness.model._fastpath",
    "compiled_layers": "harness.model._fastpath",
    "convert_gguf": "harness.model._load",
    "decoder_layers": "harness.model._fastpath",
    "default_device": "harness.model._load",
    "device_batch_size": "harness.model._generate",
    "encode_pairs": "harness.model._generate",
    "fix_tokenizer": "harness.model._load",
    "generate": "harness.model._generate",
    "keep_models_loaded": "harness.model._load",
    "liger_available": "harness.model._fastpath",
    "liger_loss_head": "harness.model._fastpath",
    "load_model": "harness.model._load",
    "load_tokenizer": "harness.model._load",
    "local_folder": "harness.model._load",
    "loglikelihood": "harness.model._generate",
    "lora_bf16_inputs": "harness.model._fastpath",
    "max_tokens_per_micro_batch": "harness.model._fastpath",
    "nf4_config": "harness.model._load",
    "optimizer_bytes": "harness.model._fastpath",
    "pack_from_mask": "harness.model._fastpath",
    "packable": "harness.model._generate",
    "packed_kwargs": "harness.model._fastpath",
    "padding_free": "harness.model._fastpath",
    "plan_memory": "harness.model._fastpath",
    "quiet_transformers": "harness.model._load",
    "register_attention": "harness.model._fastpath",
    "resolve": "harness.model._load",
    "restoring_patches": "harness.model._fastpath",
    "scoring_mode": "harness.model._generate",
    "select_attention_kernel": "harness.model._fastpath",
    "unwrap": "harness.model._fastpath",
    "varlen_attention_forward": "harness.model._fastpath",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module = importlib.import_module(_EXPORTS[name])
    value = module if module.__name__.endswith("." + name) else getattr(module, name)
    globals()[name] = value
    return value
