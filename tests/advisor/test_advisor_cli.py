from __future__ import annotations

import json
import subprocess
import sys
from io import StringIO
from pathlib import Path

import pytest
import yaml
from rich.console import Console

from advisor.cli import advise_command

ROOT = Path(__file__).resolve().parents[2]
DEMO_ANSWERS = ROOT / "examples" / "demo" / "answers.yaml"
DEMO_TRAIN = ROOT / "suites" / "json_extract" / "train.jsonl"


def console() -> tuple[Console, StringIO]:
    out = StringIO()
    return Console(file=out, width=140, force_terminal=False), out


def run(**kw) -> tuple[int, str]:
    con, out = console()
    args = {
        "answers_file": None,
        "interactive": False,
        "train": None,
        "test": None,
        "write": None,
        "json_out": False,
    } | kw
    code = advise_command(console=con, **args)
    return code, out.getvalue()


def test_demo_answers_print_lora_recommendation() -> None:
    code, text = run(answers_file=DEMO_ANSWERS)
    assert code == 0
    assert "Recommendation: lora" in text
    assert "Arms to test: lora, prompting, rag" in text
    assert "0.135B-parameter base model" in text


def test_json_output_is_machine_readable() -> None:
    code, text = run(answers_file=DEMO_ANSWERS, json_out=True)
    assert code == 0
    data = json.loads(text)
    assert data["recommendation"]["primary"] == "lora"
    assert data["recommendation"]["arms"] == ["lora", "prompting", "rag"]
    assert data["hardware"]["cpu_count"] >= 1


@pytest.mark.skipif(not DEMO_TRAIN.exists(), reason="the harness's demo training file is not in this checkout")
def test_write_plan_for_the_demo_and_load_it_with_the_harness(tmp_path: Path) -> None:
    plan_path = tmp_path / "plan.yaml"
    code, text = run(answers_file=DEMO_ANSWERS, train=DEMO_TRAIN, write=plan_path)
    assert code == 0, text
    assert "Dataset audit" in text and "Plan written to" in text
    plan = yaml.safe_load(plan_path.read_text())
    assert [a["type"] for a in plan["arms"]] == ["baseline", "lora", "prompt", "rag"]
    assert plan["data"]["train"] == str(DEMO_TRAIN)
    harness_plan = pytest.importorskip("harness.plan")
    loaded, _ = harness_plan.load_plan(plan_path)
    assert [a.name for a in loaded.arms] == ["baseline", "lora", "prompt", "rag"]


def test_audit_overrides_the_stated_count(tmp_path: Path, jsonl) -> None:
    rows = [
        {"prompt": f"Classify ticket {i}: my parcel number {i} is late", "completion": "shipping"} for i in range(60)
    ]
    train = jsonl("train.jsonl", rows)
    code, text = run(answers_file=DEMO_ANSWERS, train=train, json_out=True)
    data = json.loads(text)
    assert data["overrides"] == [
        {
            "field": "labelled_examples",
            "stated": 300,
            "audited": 60,
            "why": f"{train} has 60 rows, 60 after removing exact duplicates",
        }
    ]
    assert data["answers"]["labelled_examples"] == 60
    assert data["recommendation"]["primary"] == "prompting"  # 60 real rows, not the 300 stated


def test_bad_answers_file_exit_2_with_file_line_field(tmp_path: Path) -> None:
    bad = tmp_path / "answers.yaml"
    bad.write_text("task_type: classification_extraction\nlabelled_examples: 300\nlatency_budget_ms: fast\n")
    code, text = run(answers_file=bad)
    assert code == 2
    assert f"{bad}:3: field 'latency_budget_ms'" in text
    assert "Traceback" not in text


def test_bad_rules_file_exit_2_with_file_line_field(tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        "rules:\n  - id: x\n    when: {field: gpu_count, op: equals, value: 0}\n"
        "    reason: a rule with a bad op\n    source: test\n"
    )
    code, text = run(answers_file=DEMO_ANSWERS, rules=rules)
    assert code == 2
    assert f"{rules}:3: field 'rules[0].when.op'" in text


@pytest.mark.parametrize(
    "kw,message",
    [
        ({"answers_file": Path("/nonexistent/answers.yaml")}, "/nonexistent/answers.yaml: file not found"),
        ({"train": Path("/nonexistent/train.jsonl")}, "field 'train': file not found"),
        ({"write": Path("plan.yaml")}, "field 'write'"),
        ({"answers_file": None}, "give an answers file"),
    ],
)
def test_usage_errors_exit_2(kw: dict, message: str) -> None:
    args = {"answers_file": DEMO_ANSWERS} | kw
    code, text = run(**args)
    assert code == 2 and message in text, text


def test_python_m_advisor_bad_file_has_no_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "answers.yaml"
    bad.write_text("gpu_count: 2\nvram_gib_per_gpu: 0\n")
    proc = subprocess.run(
        [sys.executable, "-m", "advisor", "--answers", str(bad)], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 2
    assert "vram_gib_per_gpu" in proc.stdout and f"{bad}:2" in proc.stdout
    assert "Traceback" not in proc.stdout + proc.stderr


def test_python_m_advisor_without_a_terminal_asks_for_an_answers_file() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "advisor"],
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "pass --answers FILE" in proc.stdout
    assert "Traceback" not in proc.stdout + proc.stderr


@pytest.mark.parametrize(
    "content,expected",
    [
        ("task_type: style_format\n# caf\u00e9 team\nlabelled_examples: 300\n".encode("latin-1"), ":2: not UTF-8 text"),
        (
            b"task_type: style_format\ndata_can_leave_premises: true\nlabelled_examples: 300\ndata_can_leave_premises: false\n",
            ":4: field 'data_can_leave_premises': duplicate key 'data_can_leave_premises': given on line 2 and again on line 4",
        ),
        (b"task_type: style_format\nlabelled_examples: true\n", ":2: field 'labelled_examples': expected a number"),
    ],
)
def test_python_m_advisor_bad_bytes_exit_2_with_one_line(tmp_path: Path, content: bytes, expected: str) -> None:
    bad = tmp_path / "answers.yaml"
    bad.write_bytes(content)
    proc = subprocess.run(
        [sys.executable, "-m", "advisor", "--answers", str(bad)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={"COLUMNS": "60", "PATH": ""},
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = [line for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]
    assert len(lines) == 1 and f"{bad}{expected}" in lines[0], lines


def test_unknown_answers_are_listed_in_the_output(tmp_path: Path) -> None:
    answers = tmp_path / "answers.yaml"
    answers.write_text("task_type: style_format\nlabelled_examples: 300\ngpu_count: unknown\n")
    code, text = run(answers_file=answers)
    assert code == 0
    assert "Answers the advice did not have" in text
    assert "gpu_count (unknown)" in text and "hosted_model_allowed (not answered)" in text
    assert "base model of unknown size; an unknown number of GPUs" in text


def test_write_plan_stops_when_model_and_size_disagree(tmp_path: Path, jsonl) -> None:
    answers = tmp_path / "answers.yaml"
    answers.write_text(
        "task_type: style_format\nlabelled_examples: 300\ngpu_count: 1\nvram_gib_per_gpu: 16\nmodel_params_b: 8\n"
    )
    train = jsonl("train.jsonl", [{"prompt": f"q{i}", "completion": f"a{i}"} for i in range(300)])
    code, text = run(answers_file=answers, train=train, write=tmp_path / "plan.yaml", model="smollm2-135m")
    assert code == 2 and "field 'model'" in text and not (tmp_path / "plan.yaml").exists()
    code, text = run(answers_file=answers, train=train, write=tmp_path / "plan.yaml")
    assert code == 0, text
    assert yaml.safe_load((tmp_path / "plan.yaml").read_text())["model"] == "meta-llama/Llama-3.1-8B-Instruct"
