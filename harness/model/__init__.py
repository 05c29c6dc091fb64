"""Models: load (alias, local folder, GGUF, hub id), generate and rank choices in batches, and the fast training path.

Names are imported on first use (PEP 562), so importing one light part does not load the heavy ones."""
from __future__ import annotations

from typing import TYPE_CHECKING

from harness._lazy import lazy_getattr

if TYPE_CHECKING:
    from harness.model._attention import (
        ATTENTION_NAME,
        SEQ_LENGTHS_KWARG,
        attention_implementation,
        register_attention,
        select_attention_kernel,
        varlen_attention_forward,
    )
    from harness.model._fastpath import (
        FastPath,
        FastReport,
        FastSession,
        compiled_layers,
        lora_bf16_inputs,
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
    from harness.model._liger import (
        DEFAULT_LIGER_KERNELS,
        LAYER_KERNELS,
        LIGER_KERNELS,
        apply_liger,
        liger_available,
        liger_loss_head,
        restoring_patches,
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
    from harness.model._memory_plan import (
        GIB,
        MemoryModel,
        MemoryPlan,
        activation_bytes_per_token,
        checkpointing,
        max_tokens_per_micro_batch,
        optimizer_bytes,
        plan_memory,
    )
    from harness.model._packing import (
        PackedRow,
        pack_from_mask,
        packed_kwargs,
        padding_free,
    )
    from harness.model._parts import (
        backbone_of,
        decoder_layers,
        model_device,
        unwrap,
    )

_EXPORTS = {
    "ALIASES": "harness.model._load",
    "ATTENTION_NAME": "harness.model._attention",
    "CHATML_TEMPLATE": "harness.model._load",
    "DEFAULT_LIGER_KERNELS": "harness.model._liger",
    "DEFAULT_MODEL": "harness.model._load",
    "DISK_LOADS": "harness.model._load",
    "FastPath": "harness.model._fastpath",
    "FastReport": "harness.model._fastpath",
    "FastSession": "harness.model._fastpath",
    "GIB": "harness.model._memory_plan",
    "LAYER_KERNELS": "harness.model._liger",
    "LIGER_KERNELS": "harness.model._liger",
    "MAX_DEVICE_BATCH": "harness.model._generate",
    "MEMORY_SHARE": "harness.model._generate",
    "MemoryModel": "harness.model._memory_plan",
    "MemoryPlan": "harness.model._memory_plan",
    "PackedRow": "harness.model._packing",
    "Progress": "harness.model._generate",
    "ResolvedModel": "harness.model._load",
    "SEQ_LENGTHS_KWARG": "harness.model._attention",
    "activation_bytes_per_token": "harness.model._memory_plan",
    "apply_liger": "harness.model._liger",
    "attention_implementation": "harness.model._attention",
    "backbone_of": "harness.model._parts",
    "cache_root": "harness.model._load",
    "chat_prompt": "harness.model._generate",
    "checkpointing": "harness.model._memory_plan",
    "compiled_layers": "harness.model._fastpath",
    "convert_gguf": "harness.model._load",
    "decoder_layers": "harness.model._parts",
    "default_device": "harness.model._load",
    "device_batch_size": "harness.model._generate",
    "encode_pairs": "harness.model._generate",
    "fix_tokenizer": "harness.model._load",
    "generate": "harness.model._generate",
    "keep_models_loaded": "harness.model._load",
    "liger_available": "harness.model._liger",
    "liger_loss_head": "harness.model._liger",
    "load_model": "harness.model._load",
    "load_tokenizer": "harness.model._load",
    "local_folder": "harness.model._load",
    "loglikelihood": "harness.model._generate",
    "lora_bf16_inputs": "harness.model._fastpath",
    "max_tokens_per_micro_batch": "harness.model._memory_plan",
    "model_device": "harness.model._parts",
    "nf4_config": "harness.model._load",
    "optimizer_bytes": "harness.model._memory_plan",
    "pack_from_mask": "harness.model._packing",
    "packable": "harness.model._generate",
    "packed_kwargs": "harness.model._packing",
    "padding_free": "harness.model._packing",
    "plan_memory": "harness.model._memory_plan",
    "quiet_transformers": "harness.model._load",
    "register_attention": "harness.model._attention",
    "resolve": "harness.model._load",
    "restoring_patches": "harness.model._liger",
    "scoring_mode": "harness.model._generate",
    "select_attention_kernel": "harness.model._attention",
    "unwrap": "harness.model._parts",
    "varlen_attention_forward": "harness.model._attention",
}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_getattr(__name__, _EXPORTS)
