"""Arms: the trained arms (SFT/DPO with TRL + PEFT), prompting and RAG shaping, trial artifacts and export.

Names are imported on first use (PEP 562), so importing one light part does not load the heavy ones."""

from __future__ import annotations

from harness._lazy import lazy_getattr

_EXPORTS = {
    "export_trial": "harness.arms._artifacts",
    "load_trial_model": "harness.arms._artifacts",
    "embedding_folder": "harness.arms._prompting",
    "load_documents": "harness.arms._prompting",
    "prompt_shaper": "harness.arms._prompting",
    "rag_shaper": "harness.arms._prompting",
    "shaper_for": "harness.arms._prompting",
    "with_shots": "harness.arms._prompting",
    "lora_config": "harness.arms._train",
    "peak_memory_gib": "harness.arms._train",
    "quiet_libraries": "harness.arms._train",
    "sft_with_model": "harness.arms._train",
    "step_logger": "harness.arms._train",
    "train_dpo": "harness.arms._train",
    "train_sft": "harness.arms._train",
}
__all__ = list(_EXPORTS)
__getattr__ = lazy_getattr(__name__, _EXPORTS)
