"""`tunegate export RUN/TRIAL --out DIR [--merge]`: a finished trial's weights, ready to serve.

* an adapter trial (lora, qlora, dora, dpo) without --merge: the PEFT adapter folder alone, plus the
  tokenizer and `tunegate_export.json` naming the base model it belongs to;
* with --merge: the base weights with the adapter folded in (PEFT `merge_and_unload`), saved as a
  plain Hugging Face model folder that any server (vLLM, TGI, transformers) loads without PEFT.
  A QLoRA adapter is merged into the base in 16-bit (bf16 on GPU, fp32 on CPU), not into 4-bit weights;
* a full fine-tune: its model folder as it is.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.base._errors import UserError, ensure_folder
from harness.base._kinds import TRAINED, UNTRAINED
from harness.model._load import load_model, local_folder, resolve
from harness.store._store import Store


@dataclass
class Exported:
    folder: Path
    kind: str  # adapter | merged | full
    base_model: str
    trial: str


def _manifest(trial_folder: Path) -> dict[str, Any]:
    path = trial_folder / "manifest.json"
    return json.loads(path.read_text()) if path.exists() else {}


def export_trial(
    store: Store, ref: str, out: str | Path, *, merge: bool = False, device: str | None = None, overwrite: bool = False
) -> Exported:
    """Write the trial's adapter, merged model or full model to `out`."""

    trial = store.get_trial(ref)
    if trial.status != "finished":
        raise UserError(f"trial '{ref}' is {trial.status}, not finished: nothing to export")
    if trial.arm_type in UNTRAINED:
        raise UserError(
            f"trial '{ref}' is a {trial.arm_type} arm: it trained no weights (its prompt is in the "
            f"trial's config); export a {'/'.join(TRAINED)} trial"
        )
    folder = Path(trial.folder)
    weights = folder / "adapter"
    if not weights.is_dir():
        raise UserError(f"trial '{ref}' has no weights at {weights} (was the run folder moved or deleted?)")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"{out} is a file, not a folder; choose a new or empty folder", field="--out")
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise UserError(f"{out} exists and is not empty; choose another folder", field="--out")
        shutil.rmtree(out)
    ensure_folder(out.parent, field="--out")
    run = store.get_run(trial.run_id)
    base = trial_base(run.base_model, folder)
    is_adapter = (weights / "adapter_config.json").exists()
    info = {
        "trial": f"{run.name}/{trial.name}",
        "trial_id": trial.id,
        "run_id": run.id,
        "arm_type": trial.arm_type,
        "base_model": base,
        "config": trial.config,
        "manifest": _manifest(folder),
    }

    if not is_adapter:
        shutil.copytree(weights, out, dirs_exist_ok=True)
        kind = "full"
    elif not merge:
        out.mkdir(parents=True, exist_ok=True)
        for item in weights.iterdir():
            if item.is_dir():
                continue  # e.g. DPO's frozen reference copy (adapter/ref): not needed to serve
            shutil.copy2(item, out / item.name)
        info |= _point_adapter_at(out, base)
        kind = "adapter"
    else:
        merged, tok = merged_model(base, weights, device)
        merged.save_pretrained(str(out))
        tok.save_pretrained(str(out))
        kind = "merged"
    info["kind"] = kind
    (out / "tunegate_export.json").write_text(json.dumps(info, indent=2))
    return Exported(out, kind, base, info["trial"])


def merged_model(base: str, adapter: str | Path, device: str | None = None) -> tuple[Any, Any]:
    """The base model with the adapter merged in (PEFT merge_and_unload), in eval mode."""
    from peft import PeftModel

    model, tok = load_model(base, device)
    peft_model = PeftModel.from_pretrained(model, str(adapter))
    merged = peft_model.merge_and_unload()
    merged.eval()
    return merged, tok


def _point_adapter_at(folder: Path, base: str) -> dict[str, str | None]:
    """Point PEFT's base_model_name_or_path at the weights the adapter was trained on (for a tunegate alias
    or a .gguf file: the dequantized folder tunegate made from it; its hub twin is recorded too)."""

    resolved = resolve(base)
    where = local_folder(base) if resolved.kind in ("alias", "gguf") else resolved.source
    config_path = folder / "adapter_config.json"
    config = json.loads(config_path.read_text())
    config["base_model_name_or_path"] = where
    config_path.write_text(json.dumps(config, indent=2))
    return {"base_weights": where, "hub_id": resolved.hub_id}


def load_trial_model(base_spec: str, trial_folder: str | Path, device: str | None = None) -> tuple[Any, Any]:
    """The model a trial produced: base + LoRA adapter, a full fine-tuned folder, or the base itself."""

    folder = Path(trial_folder) / "adapter" if trial_folder else None
    if folder is None or not folder.exists():
        return load_model(base_spec, device)
    if (folder / "adapter_config.json").exists():
        from peft import PeftModel

        model, tok = load_model(trial_base(base_spec, trial_folder), device)
        return PeftModel.from_pretrained(model, str(folder)).eval(), tok
    return load_model(str(folder), device)


def trial_base(base_spec: str, trial_folder: str | Path) -> str:
    """The base an adapter was trained on: the plan's model, or (DPO after a full fine-tune) the parent's weights."""
    manifest = Path(trial_folder) / "manifest.json"
    if manifest.exists():
        return json.loads(manifest.read_text()).get("base_model") or base_spec
    return base_spec
