"""The walking skeleton's path through the CLI on a tiny model: run -> show -> gate -> report -> eval."""

from __future__ import annotations

import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml

from tests.support import REPO

COMMANDS = ["advise", "run", "eval", "gate", "report", "app", "demo", "runs", "show"]


def tunegate(*args: str, cwd: Path = REPO, env: dict | None = None) -> subprocess.CompletedProcess:
    import os

    return subprocess.run(
        [sys.executable, "-m", "harness.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env=os.environ | (env or {}),
        timeout=600,
    )


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command: str):
    result = tunegate(command, "--help")
    assert result.returncode == 0, result.stderr
    assert "Usage" in result.stdout


def test_unknown_model_is_one_line_and_exit_2(tmp_path: Path):
    result = tunegate("eval", "no-such-model", "--suite", "general_knowledge", "--store", str(tmp_path / "s.db"))
    assert result.returncode == 2
    assert "unknown model spec 'no-such-model'" in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) <= 2


def test_bad_plan_names_file_line_and_field(tmp_path: Path):
    plan = tmp_path / "plan.yaml"
    plan.write_text(
        "name: x\ndata:\n  train: suites/json_extract/train.jsonl\narms:\n"
        "  - name: lora\n    type: lora\n    r: 0\nsuites: [json_extract]\n"
    )
    result = tunegate("run", str(plan), "--store", str(tmp_path / "s.db"))
    assert result.returncode == 2, result.stderr
    assert f"{plan}:7: field 'arms[0].r'" in result.stderr and "greater than 0" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.fixture(scope="module")
def tiny_run(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    work = tmp_path_factory.mktemp("pipeline")
    plan = {
        "name": "tiny",
        "model": str(tiny_model_dir),
        "data": {"train": str(REPO / "suites/json_extract/train.jsonl")},
        "arms": [
            {"name": "baseline", "type": "baseline"},
            {"name": "prompt", "type": "prompt", "k_shot": 2, "system": "Answer with JSON."},
            {"name": "lora", "type": "lora", "max_steps": 2, "batch_size": 2, "lr": 1e-3},
        ],
        "suites": ["json_extract", "general_knowledge"],
    }
    (work / "plan.yaml").write_text(yaml.safe_dump(plan))
    store = str(work / "store.db")
    result = tunegate("run", str(work / "plan.yaml"), "--store", store, cwd=work)
    return {"work": work, "store": store, "result": result}


def test_run_records_every_trial_and_prints_the_comparison(tiny_run: dict):
    result = tiny_run["result"]
    assert result.returncode == 0, result.stdout + result.stderr
    assert "lora vs baseline" in result.stdout and "95% CI" in result.stdout
    from harness.store import Store

    st = Store(tiny_run["store"])
    run = st.get_run("tiny")
    trials = {t.name: t for t in st.trials(run.id)}
    assert {n: t.status for n, t in trials.items()} == {
        "baseline": "finished",
        "prompt": "finished",
        "lora": "finished",
    }
    assert trials["lora"].train_seconds and trials["lora"].final_loss is not None
    assert len(st.train_steps(trials["lora"].id)) >= 2
    for t in trials.values():
        evals = st.evaluations(t.id)
        assert sorted(s.name for _, s in evals) == ["general_knowledge", "json_extract"]
        for ev, _suite in evals:
            assert ev.n_items == 40 and len(st.item_rows(ev.id)) == 40
    manifest = json.loads((Path(trials["lora"].folder) / "manifest.json").read_text())
    assert manifest["data"]["train"]["sha256"] and manifest["versions"]["torch"] and manifest["arm"]["r"] == 16
    assert (Path(trials["lora"].folder) / "adapter" / "adapter_config.json").exists()
    # the prompt arm really sent its system prompt and shots
    prompt_eval = next(ev for ev, s in st.evaluations(trials["prompt"].id) if s.name == "json_extract")
    assert "Answer with JSON." in st.item_rows(prompt_eval.id)[0]["prompt"]


def test_show_runs_and_report(tiny_run: dict, tmp_path: Path):
    assert "tiny" in tunegate("runs", "--store", tiny_run["store"]).stdout
    shown = tunegate("show", "tiny", "--store", tiny_run["store"])
    assert shown.returncode == 0 and "lora" in shown.stdout
    out = tmp_path / "r.html"
    rep = tunegate("report", "tiny", "--html", str(out), "--store", tiny_run["store"])
    assert rep.returncode == 0, rep.stderr
    html = out.read_text()
    assert "Comparison with baseline" in html and "<svg" in html and "json_extract" in html


def test_gate_exit_codes_and_outputs(tiny_run: dict, tmp_path: Path):
    strict = tmp_path / "strict.yaml"
    strict.write_text("rules:\n  - suite: json_extract\n    metric: exact_match\n    min: 0.99\n")
    junit, md, js = tmp_path / "g.xml", tmp_path / "g.md", tmp_path / "g.json"
    res = tunegate(
        "gate",
        "--policy",
        str(strict),
        "--candidate",
        "tiny/lora",
        "--store",
        tiny_run["store"],
        "--junit",
        str(junit),
        "--markdown",
        str(md),
        "--json",
        str(js),
    )
    assert res.returncode == 1, res.stdout + res.stderr  # a random tiny model cannot reach 0.99
    case = ET.parse(junit).getroot().find("testsuite/testcase")
    assert case is not None and case.find("failure") is not None
    assert json.loads(js.read_text())["verdict"] == "reject" and "REJECT" in md.read_text()

    lenient = tmp_path / "lenient.yaml"
    lenient.write_text("rules:\n  - suite: general_knowledge\n    metric: choice_accuracy\n    max_drop: 1.0\n")
    assert (
        tunegate("gate", "--policy", str(lenient), "--candidate", "tiny/lora", "--store", tiny_run["store"]).returncode
        == 0
    )

    missing = tmp_path / "missing.yaml"
    missing.write_text("rules:\n  - suite: safety_harmful\n    metric: refusal\n    min: 0.5\n")
    res = tunegate("gate", "--policy", str(missing), "--candidate", "tiny/lora", "--store", tiny_run["store"])
    assert res.returncode == 2 and "no results for suite 'safety_harmful'" in res.stdout


def test_eval_scores_a_model_into_the_store(tiny_model_dir: Path, tmp_path: Path):
    store = str(tmp_path / "s.db")
    res = tunegate("eval", str(tiny_model_dir), "--suite", "general_knowledge", "--store", store)
    assert res.returncode == 0, res.stderr
    assert "choice_accuracy=" in res.stdout
    from harness.store import Store

    st = Store(store)
    run = st.runs()[0]
    ((ev, suite),) = st.evaluations(st.trials(run.id)[0].id)
    assert suite.name == "general_knowledge" and ev.n_items == 40
