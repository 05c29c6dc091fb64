"""Arms: training data formats, the trained arms (SFT/DPO with TRL + PEFT), prompting and RAG shaping, artifacts.

Names are imported on first use (PEP 562), so importing one light part does not load the heavy ones."""
from __future__ import annotations

from typing import TYPE_CHECKING

from harness._lazy import lazy_getattr

if TYPE_CHECKING:
    from harness.arms._artifacts import (
        Exported,
        export_trial,
        load_trial_model,
        merged_model,
        trial_base,
    )
    from harness.base._data import (
        AlpacaRow,
        ChatRow,
        Example,
        FORMATS,
        Format,
        MAX_ROW_BYTES,
        Message,
        Preference,
        PreferenceRow,
        PromptCompletionRow,
        Role,
        detect_format,
        file_sha256,
        load_examples,
        load_preferences,
        load_rows,
        read_jsonl,
    )
    from harness.arms._prompting import (
        Corpus,
        Embedder,
        Retriever,
        TEXT_KEYS,
        describe,
        embedding_folder,
        load_documents,
        prompt_shaper,
        rag_shaper,
        shaper_for,
        with_context,
        with_shots,
    )
    from harness.arms._train import (
        Fast,
        TrainResult,
        TrainingFailed,
        dpo_with_model,
        lora_config,
        peak_memory_gib,
        quiet_libraries,
        resolve_fast,
        sft_with_model,
        step_logger,
        subset,
        train_dpo,
        train_sft,
    )

_EXPORTS = {
    "AlpacaRow": "harness.base._data",
    "ChatRow": "harness.base._data",
    "Corpus": "harness.arms._prompting",
    "Embedder": "harness.arms._prompting",
    "Example": "harness.base._data",
    "Exported": "harness.arms._artifacts",
    "FORMATS": "harness.base._data",
    "Fast": "harness.arms._train",
    "Format": "harness.base._data",
    "MAX_ROW_BYTES": "harness.base._data",
    "Message": "harness.base._data",
    "Preference": "harness.base._data",
    "PreferenceRow": "harness.base._data",
    "PromptCompletionRow": "harness.base._data",
    "Retriever": "harness.arms._prompting",
    "Role": "harness.base._data",
    "TEXT_KEYS": "harness.arms._prompting",
    "TrainResult": "harness.arms._train",
    "TrainingFailed": "harness.arms._train",
    "describe": "harness.arms._prompting",
    "detect_format": "harness.base._data",
    "dpo_with_model": "harness.arms._train",
    "embedding_folder": "harness.arms._prompting",
    "export_trial": "harness.arms._artifacts",
    "file_sha256": "harness.base._data",
    "load_documents": "harness.arms._prompting",
    "load_examples": "harness.base._data",
    "load_preferences": "harness.base._data",
    "load_rows": "harness.base._data",
    "load_trial_model": "harness.arms._artifacts",
    "lora_config": "harness.arms._train",
    "merged_model": "harness.arms._artifacts",
    "peak_memory_gib": "harness.arms._train",
    "prompt_shaper": "harness.arms._prompting",
    "quiet_libraries": "harness.arms._train",
    "rag_shaper": "harness.arms._prompting",
    "read_jsonl": "harness.base._data",
    "resolve_fast": "harness.arms._train",
    "sft_with_model": "harness.arms._train",
    "shaper_for": "harness.arms._prompting",
    "step_logger": "harness.arms._train",
    "subset": "harness.arms._train",
    "train_dpo": "harness.arms._train",
    "train_sft": "harness.arms._train",
    "trial_base": "harness.arms._artifacts",
    "with_context": "harness.arms._prompting",
    "with_shots": "harness.arms._prompting",
}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_getattr(__name__, _EXPORTS)
