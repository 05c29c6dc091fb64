"""The README's "Use it on your own task" files are real: each fenced block marked `file=PATH` is written into a
fresh project folder, and the plan dry-runs, the suite loads, the gate policy loads and names only suites the plan
scores, and the README's gate command names a trial the plan has."""

from __future__ import annotations

import re
from pathlib import Path

from harness.evaluation import _suite as suites
from harness.gate._policy import load_policy
from tests.support import REPO
from tests.support.storekit import tunegate

BLOCK = re.compile(r"^```\w+ file=(\S+)\n(.*?)^```$", re.M | re.S)


def readme_project(tmp_path: Path) -> dict[str, Path]:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    files = {}
    for name, body in BLOCK.findall(text):
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(body, encoding="utf-8")
        files[name] = path
    return files


def test_the_readme_project_is_valid(tmp_path: Path) -> None:
    files = readme_project(tmp_path)
    assert {"plan.yaml", "gate.yaml", "data/train.jsonl"} <= set(files), sorted(files)
    suite_files = [n for n in files if n.endswith("/suite.yaml")]
    assert suite_files, "the README shows no suite.yaml"

    dry = tunegate("run", "plan.yaml", "--dry-run", cwd=tmp_path)
    assert dry.returncode == 0, dry.stdout + dry.stderr

    plan_text = files["plan.yaml"].read_text(encoding="utf-8")
    plan_suites = re.search(r"^suites: \[(.*)\]$", plan_text, re.M).group(1).split(", ")
    names = set()
    for ref in plan_suites:
        suite = suites.load(str(tmp_path / ref)) if "/" in ref else suites.load(ref)
        names.add(suite.name)
        if "/" in ref:
            assert len(suite.items) >= 3
    policy = load_policy(files["gate.yaml"])
    assert {rule.suite for rule in policy.all_rules()} <= names

    readme = (REPO / "README.md").read_text(encoding="utf-8")
    run_name = re.search(r"^name: (\S+)$", plan_text, re.M).group(1)
    candidates = re.findall(r"tunegate gate --policy gate\.yaml --candidate (\S+)/(\S+)", readme)
    assert candidates, "the README shows no gate command for its plan"
    for run, trial in candidates:
        assert run == run_name
        assert re.search(rf"│ {re.escape(trial)} +│", dry.stdout), (trial, dry.stdout)
