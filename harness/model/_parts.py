"""Where the parts of a transformers causal LM are: the model inside a PEFT wrapper, its backbone, its decoder
layers and the device of its weights."""

from __future__ import annotations

from typing import Any

import torch


def model_device(model: torch.nn.Module) -> torch.device:
    """Where a model's weights are (its first parameter's device)."""
    return next(model.parameters()).device


def unwrap(model: Any) -> Any:
    """The transformers CausalLM inside a PEFT wrapper (or the model itself)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def backbone_of(causal_lm: Any) -> torch.nn.Module:
    return getattr(causal_lm, causal_lm.base_model_prefix)


def decoder_layers(backbone: torch.nn.Module) -> list[torch.nn.Module]:
    layers = getattr(backbone, "layers", None)
    if layers is None:
        raise ValueError(f"{type(backbone).__name__} has no `layers`: the fast path needs a decoder-only model")
    return list(layers)
