"""Issue 18, items 2-4 (and the oversized row): every bad input is one line naming the file (and line and
field where there is one), exit 2; nothing is accepted silently; messages say what is really wrong."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from harness.base import UserError, YamlDoc
from harness.base._data import MAX_ROW_BYTES, load_examples, read_jsonl
from harness.evaluation import _suite as suites
from harness.gate._policy import load_policy
from harness.plan._load import load_plan
from harness.store import Store
from tests.support.storekit import tunegate
from tests.support.tiny_plans import JSON_TRAIN

PLAN = """name: p
model: smollm2-135m
data: {{train: {train}}}
arms:
  - {{name: baseline, type: baseline}}
  - name: lora
    type: lora
{extra}
suites: [json_extract]
"""


def plan_file(tmp_path: Path, extra: str = "    max_steps: 2", train: Path | str = JSON_TRAIN) -> Path:
    path = tmp_path / "plan.yaml"
    path.write_text(PLAN.format(train=train, extra=extra))
    return path


def one_line_exit_2(result) -> str:
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr + result.stdout
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


# --- the command line: a traceback or a wrong exit code before -----------------------------------------------
def test_plan_path_that_is_a_folder(tmp_path: Path) -> None:
    line = one_line_exit_2(tunegate("run", str(tmp_path), "--dry-run", "--store", str(tmp_path / "s.db")))
    assert f"{tmp_path}: is a folder, not a file" in line


@pytest.mark.parametrize("option", ["--spare-workers", "--trials-per-gpu"])
def test_worker_counts_that_are_not_counts(tmp_path: Path, option: str) -> None:
    line = one_line_exit_2(tunegate("run", str(plan_file(tmp_path)), option, "-1", "--store", str(tmp_path / "s.db")))
    assert "'-1' is not a count" in line and option in line


@pytest.mark.parametrize("raw", [b"\x00\x01\xff\xfebinary\x00", b"name: caf\xe9\n"], ids=["binary", "latin-1"])
def test_plan_that_is_not_utf8(tmp_path: Path, raw: bytes) -> None:
    bad = tmp_path / "plan.yaml"
    bad.write_bytes(raw)
    line = one_line_exit_2(tunegate("run", str(bad), "--dry-run", "--store", str(tmp_path / "s.db")))
    assert f"{bad}:1: not UTF-8" in line


def test_gate_policy_that_is_a_folder_is_an_error_not_a_reject(tmp_path: Path) -> None:
    Store(str(tmp_path / "s.db"))  # an existing store (read-only commands never create one)
    result = tunegate("gate", "--policy", str(tmp_path), "--candidate", "t1", "--store", str(tmp_path / "s.db"))
    assert result.returncode == 2, result.stdout + result.stderr  # 1 would read as "reject" in CI
    assert "is a folder, not a file" in " ".join(result.stdout.split()) and "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "args", [["show", "99999999999999999999999"], ["export", "t99999999999999999999999", "--out", "x"]]
)
def test_ids_too_large_for_the_database_are_not_found(tmp_path: Path, args: list[str]) -> None:
    Store(str(tmp_path / "s.db"))
    line = one_line_exit_2(tunegate(*args, "--store", str(tmp_path / "s.db"), cwd=tmp_path))
    assert "99999999999999999999999" in line and "in the store" in line


def test_gate_candidate_too_large_is_a_gate_error(tmp_path: Path) -> None:
    policy = tmp_path / "gate.yaml"
    policy.write_text("rules:\n  - {suite: s, metric: m, min: 0.5}\n")
    Store(str(tmp_path / "s.db"))
    result = tunegate(
        "gate", "--policy", str(policy), "--candidate", "t99999999999999999999999", "--store", str(tmp_path / "s.db")
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr


def test_files_in_the_way_of_outputs(tmp_path: Path) -> None:
    blocker = tmp_path / "afile"
    blocker.write_text("not a folder")
    line = one_line_exit_2(tunegate("runs", "--store", str(blocker / "x.db")))
    assert f"{blocker} is a file" in line
    store = str(tmp_path / "s.db")
    Store(store)
    line = one_line_exit_2(tunegate("report", "1", "--html", str(blocker / "r.html"), "--store", store))
    assert "is a file" in line or "no run" in line
    line = one_line_exit_2(tunegate("export-results", str(blocker / "r.csv"), "--store", store))
    assert f"{blocker} is a file" in line


def test_eval_of_an_unknown_trial_offline_says_so_at_once(tmp_path: Path) -> None:
    result = tunegate(
        "eval",
        "nosuchrun/lora",
        "--suite",
        "json_extract",
        "--store",
        str(tmp_path / "s.db"),
        env={"HF_HUB_OFFLINE": "1"},
    )
    line = one_line_exit_2(result)
    assert "neither a trial in the store" in line and "nor a local model" in line


# --- YAML: duplicate keys, non-finite numbers, BOM ----------------------------------------------------------
def test_duplicate_key_in_a_plan_names_both_lines(tmp_path: Path) -> None:
    path = plan_file(tmp_path, "    max_steps: 2\n    max_steps: 5000")
    with pytest.raises(UserError) as info:
        load_plan(path)
    err = info.value
    assert (err.file, err.line, err.field) == (path, 9, "arms[1].max_steps")
    assert "duplicate key 'max_steps': given on line 8 and again on line 9" in str(err)


@pytest.mark.parametrize(
    "text, line, field, words",
    [
        (
            "rules:\n  - suite: s\n    metric: m\n    max_drop: 0.0\n    max_drop: 1.0\n",
            5,
            "rules[0].max_drop",
            "duplicate key 'max_drop': given on line 4 and again on line 5",
        ),
        ("rules:\n  - {suite: s, metric: m, min: -1}\n", 2, "rules[0].min", "greater than or equal to 0"),
        ("rules:\n  - {suite: s, metric: m, max_drop: .inf}\n", 2, "rules[0].max_drop", "not a finite number"),
        ("rules:\n  - {suite: s, metric: m, min: .nan}\n", 2, "rules[0].min", "not a finite number"),
        ("rules:\n  - {suite: s, metric: m, min: 'nan'}\n", 2, "rules[0].min", "finite number"),
    ],
)
def test_bad_policy_values_are_errors_naming_line_and_field(
    tmp_path: Path, text: str, line: int, field: str, words: str
) -> None:
    path = tmp_path / "gate.yaml"
    path.write_text(text)
    with pytest.raises(UserError) as info:
        load_policy(path)
    assert (info.value.line, info.value.field) == (line, field) and words in info.value.message, str(info.value)


def test_nan_policy_through_the_cli_is_exit_2_not_reject(tmp_path: Path) -> None:
    path = tmp_path / "gate.yaml"
    path.write_text("rules:\n  - {suite: s, metric: m, min: .nan}\n")
    Store(str(tmp_path / "s.db"))
    result = tunegate("gate", "--policy", str(path), "--candidate", "t1", "--store", str(tmp_path / "s.db"))
    assert result.returncode == 2 and "not a finite number" in result.stdout


def test_duplicate_keys_in_suites_and_answers(tmp_path: Path) -> None:
    from advisor.errors import AdvisorInputError
    from advisor.questions import load_answers

    folder = tmp_path / "dup"
    folder.mkdir()
    (folder / "items.jsonl").write_text('{"id": "a", "prompt": "p", "reference": "r"}\n')
    (folder / "suite.yaml").write_text("name: dup\nscorers: [exact_match]\nname: other\n")
    with pytest.raises(UserError, match="duplicate key 'name': given on line 1 and again on line 3"):
        suites.load(str(folder))
    answers = tmp_path / "answers.yaml"
    answers.write_text("labelled_examples: 100\nlabelled_examples: 5000\n")
    with pytest.raises(AdvisorInputError) as info:
        load_answers(answers)
    assert (info.value.file, info.value.line, info.value.field) == (answers, 2, "labelled_examples")


def test_nan_learning_rate_says_not_finite_not_less_than_1000(tmp_path: Path) -> None:
    with pytest.raises(UserError) as info:
        load_plan(plan_file(tmp_path, "    lr: .nan"))
    assert info.value.field == "arms[1].lr" and "finite" in info.value.message and "1000" not in str(info.value)


def test_utf8_bom_is_accepted_in_yaml_and_jsonl(tmp_path: Path) -> None:
    train = tmp_path / "train.jsonl"
    train.write_bytes(b"\xef\xbb\xbf" + JSON_TRAIN.read_bytes())
    path = plan_file(tmp_path, train=train)
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    plan, _ = load_plan(path)
    assert plan.name == "p" and len(load_examples(train)) == len(JSON_TRAIN.read_text().splitlines())
    assert YamlDoc(path).data["name"] == "p"


def test_yaml_folder_and_missing_file_messages(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="is a folder, not a file"):
        YamlDoc(tmp_path)
    with pytest.raises(UserError, match="file not found"):
        YamlDoc(tmp_path / "none.yaml")


# --- plans: target_modules, data paths -----------------------------------------------------------------------
@pytest.mark.parametrize(
    "value, expected",
    [
        ('"q_proj"', ["q_proj"]),
        ('"q_proj, v_proj"', ["q_proj", "v_proj"]),
        ("[q_proj, k_proj]", ["q_proj", "k_proj"]),
        ("all-linear", "all-linear"),
    ],
)
def test_target_modules_string_form_means_module_names(tmp_path: Path, value: str, expected) -> None:
    plan, _ = load_plan(plan_file(tmp_path, f"    target_modules: {value}"))
    assert plan.arms[1].target_modules == expected


@pytest.mark.parametrize("value", ['""', "[]", "3"])
def test_target_modules_nonsense_is_rejected_at_load(tmp_path: Path, value: str) -> None:
    with pytest.raises(UserError) as info:
        load_plan(plan_file(tmp_path, f"    target_modules: {value}"))
    assert (info.value.line, info.value.field) == (8, "arms[1].target_modules")


def test_data_train_that_is_a_folder_says_folder(tmp_path: Path) -> None:
    with pytest.raises(UserError) as info:
        load_plan(plan_file(tmp_path, train=tmp_path))
    assert info.value.field == "data.train" and "is a folder, not a file" in info.value.message


# --- JSONL ---------------------------------------------------------------------------------------------------
def test_binary_jsonl_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "train.jsonl"
    path.write_bytes(b"\xff\xd8\xff\xe0\x00\x10JFIF" + bytes(range(256)) * 4)
    with pytest.raises(UserError) as info:
        load_examples(path)
    assert info.value.file == path and "not UTF-8" in info.value.message


def test_one_bad_byte_on_line_5(tmp_path: Path) -> None:
    lines = JSON_TRAIN.read_bytes().splitlines(keepends=True)[:8]
    lines[4] = lines[4].replace(b'"', b'"\xff', 1)
    path = tmp_path / "train.jsonl"
    path.write_bytes(b"".join(lines))
    with pytest.raises(UserError) as info:
        load_examples(path)
    assert (info.value.file, info.value.line) == (path, 5) and "0xff" in info.value.message


def test_json_error_column_is_the_real_column(tmp_path: Path) -> None:
    path = tmp_path / "train.jsonl"
    path.write_text('{"prompt": "a", "completion": x}\n')  # the x is at column 31
    with pytest.raises(UserError) as info:
        list(read_jsonl(path))
    assert info.value.line == 1 and "(column 31)" in info.value.message


def test_oversized_row_is_refused_before_it_is_read_whole(tmp_path: Path) -> None:
    path = tmp_path / "train.jsonl"
    first = JSON_TRAIN.read_text().splitlines()[0]
    with path.open("w") as f:
        f.write(first + "\n")
        f.write(json.dumps({"prompt": "p", "completion": "x" * (MAX_ROW_BYTES + 10)}) + "\n")
    with pytest.raises(UserError) as info:
        load_examples(path)
    assert info.value.line == 2 and "longer than" in info.value.message


def test_binary_suite_items_and_items_outside_the_suite(tmp_path: Path) -> None:
    folder = tmp_path / "s"
    folder.mkdir()
    (folder / "items.jsonl").write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff")
    (folder / "suite.yaml").write_text("name: s\nscorers: [exact_match]\n")
    with pytest.raises(UserError) as info:
        suites.load(str(folder))
    assert info.value.file == (folder / "items.jsonl").resolve() and "not UTF-8" in info.value.message
    escape = tmp_path / "e"
    escape.mkdir()
    (escape / "suite.yaml").write_text("name: e\nscorers: [exact_match]\nitems: ../../../../etc/passwd\n")
    with pytest.raises(UserError) as info:
        suites.load(str(escape))
    assert (info.value.line, info.value.field) == (3, "items") and "outside the suite's folder" in info.value.message


def test_export_onto_an_existing_file(tmp_path: Path, store) -> None:
    from harness.arms._artifacts import export_trial

    run = store.create_run("r", {}, "h", "m", str(tmp_path))
    trial = store.ensure_trial(run, "lora", "lora", "lora", {})
    (tmp_path / "lora" / "adapter").mkdir(parents=True)
    store.update_trial(trial.id, status="finished", folder=str(tmp_path / "lora"))
    target = tmp_path / "served"
    target.write_text("a file")
    with pytest.raises(UserError) as info:
        export_trial(store, f"t{trial.id}", target)
    assert info.value.field == "--out" and "is a file" in info.value.message and target.read_text() == "a file"
    assert os.path.isfile(target)
