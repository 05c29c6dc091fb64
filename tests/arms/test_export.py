"""`tunegate export`: the adapter alone, or merged into the base weights — whose logits must equal the
base model with the adapter applied."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from harness.arms import export_trial, load_trial_model
from harness.base import UserError
from harness.run import Runner
from harness.store import Store
from tests.support.tiny_plans import REPO, train_arm, write_data, write_plan, write_suites

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Any:
    root = tmp_path_factory.mktemp("export")
    suites = write_suites(root, items=2)
    train, _ = write_data(root, rows=6)
    arms = [
        {"name": "baseline", "type": "baseline"},
        train_arm("lora", r=4, lr=5e-2, max_steps=2),
        train_arm("full", "full", lr=1e-3),
    ]
    plan = write_plan(root / "plan.yaml", tiny_model_dir, arms, train=train, name="exp")
    store = Store(str(root / "store.db"))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TUNEGATE_SUITES", str(suites))
        outcome = Runner(store, Console(file=open(os.devnull, "w")), runs_dir=root / "runs").run(plan)
    assert not outcome.failed, outcome.failed
    yield {"root": root, "store": store, "model": tiny_model_dir, "run": outcome.run_id}


def logits(model: Any, tok: Any) -> Any:
    import torch

    ids = tok(["Extract the name: Ana Berg, 40, Oslo.", "hello"], return_tensors="pt", padding=True)
    with torch.inference_mode():
        return model(**ids).logits


@pytest.mark.slow
def test_merged_model_logits_equal_base_plus_adapter(trained: dict[str, Any], tmp_path: Path):
    from transformers import AutoModelForCausalLM

    from harness.model import load_model

    store = trained["store"]
    trial = store.get_trial(f"{trained['run']}/lora")
    out = tmp_path / "merged"
    done = export_trial(store, f"{trained['run']}/lora", out, merge=True, device="cpu")
    assert done.kind == "merged" and (out / "config.json").exists() and not (out / "adapter_config.json").exists()
    merged = AutoModelForCausalLM.from_pretrained(out).eval()  # a plain model: no PEFT needed to serve it
    peft_model, tok = load_trial_model(str(trained["model"]), trial.folder, "cpu")
    base, _ = load_model(str(trained["model"]), "cpu")
    got, want, plain = logits(merged, tok), logits(peft_model, tok), logits(base, tok)
    assert (want - plain).abs().max() > 1e-3  # the adapter really changes the model...
    assert (got - want).abs().max() < 1e-4  # ...and the merged weights reproduce it
    info = json.loads((out / "tunegate_export.json").read_text())
    assert info["kind"] == "merged" and info["trial"] == "exp/lora" and info["config"]["r"] == 4


@pytest.mark.slow
def test_adapter_export_loads_on_its_base(trained: dict[str, Any], tmp_path: Path):
    from peft import PeftModel

    from harness.model import load_model

    store = trained["store"]
    out = tmp_path / "adapter"
    done = export_trial(store, f"{trained['run']}/lora", out)
    assert done.kind == "adapter"
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == str(Path(trained["model"]).resolve())
    assert (out / "adapter_model.safetensors").exists() and (out / "tokenizer.json").exists()
    base, tok = load_model(str(trained["model"]), "cpu")
    served = PeftModel.from_pretrained(base, str(out)).eval()
    trial = store.get_trial(f"{trained['run']}/lora")
    reference, _ = load_trial_model(str(trained["model"]), trial.folder, "cpu")
    assert (logits(served, tok) - logits(reference, tok)).abs().max() < 1e-6


@pytest.mark.slow
def test_full_fine_tune_exports_its_folder_and_the_cli_works(trained: dict[str, Any], tmp_path: Path):
    out = tmp_path / "full"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "harness.cli",
            "export",
            f"{trained['run']}/full",
            "--out",
            str(out),
            "--store",
            trained["store"].url.removeprefix("sqlite:///"),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
        env=os.environ | {"OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 0, result.stderr
    assert "exported exp/full (full" in result.stdout
    assert (out / "config.json").exists() and (out / "model.safetensors").exists()
    bad = subprocess.run(
        [
            sys.executable,
            "-m",
            "harness.cli",
            "export",
            f"{trained['run']}/baseline",
            "--out",
            str(tmp_path / "b"),
            "--store",
            trained["store"].url.removeprefix("sqlite:///"),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
        env=os.environ | {"OMP_NUM_THREADS": "1"},
    )
    assert bad.returncode == 2 and "trained no weights" in bad.stderr and "Traceback" not in bad.stderr


@pytest.mark.slow
def test_export_refuses_what_it_cannot_export(trained: dict[str, Any], tmp_path: Path):
    store = trained["store"]
    with pytest.raises(UserError, match="trained no weights"):
        export_trial(store, f"{trained['run']}/baseline", tmp_path / "x")
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("mine")
    with pytest.raises(UserError) as info:
        export_trial(store, f"{trained['run']}/lora", busy)
    assert info.value.field == "--out" and (busy / "keep.txt").read_text() == "mine"
    with pytest.raises(UserError, match="no trial"):
        export_trial(store, f"{trained['run']}/nope", tmp_path / "y")
    run_id = store.create_run("other", {}, "h", "m", "")
    store.ensure_trial(run_id, "lora", "lora", "lora", {})
    with pytest.raises(UserError, match="pending, not finished"):
        export_trial(store, f"{run_id}/lora", tmp_path / "z")
