"""Issue 31: hostile YAML and JSONL (alias bombs, deep nesting, huge integers) are refused at once; values that
would fail after a run started are refused by `--dry-run`; `advise` reads data as `tunegate run` does; control
characters and credentials never reach the terminal or the store; read-only commands create no store.

Every command runs as a real process. The `timeout` of each is a hang guard (an alias bomb used to run for
minutes and gigabytes), generous enough for a slow CI machine; no test asserts on elapsed time."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from harness.base._errors import MAX_ALIAS_NODES, MAX_DEPTH, MAX_DIGITS, UserError, YamlDoc
from harness.store import Store
from tests.cli.test_bad_inputs import one_line_exit_2, plan_file
from tests.support import REPO
from tests.support.storekit import tunegate

HANG_GUARD = 20  # seconds: a hostile file must be refused well within this
ANSWERS = REPO / "examples" / "demo" / "answers.yaml"
TRAIN = REPO / "suites" / "json_extract" / "train.jsonl"
BIG = "9" * 5001


def alias_bomb(levels: int = 9, width: int = 9) -> str:
    """A ~600-byte document whose nested aliases expand to width**levels nodes."""
    lines = ["a0: &a0 [" + ", ".join(['"lol"'] * width) + "]"]
    for i in range(1, levels):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * width) + "]")
    return "\n".join(lines) + "\n"


HOSTILE_YAML = {
    "alias-bomb": (alias_bomb(), "aliases (*name) expand this document"),
    "self-alias": ("a: &a [*a]\n", "recursive alias"),
    "deep": ("a: " + "[" * 5000 + "]" * 5000 + "\n", f"nested more than {MAX_DEPTH} levels deep"),
    "deep-mappings": ("a: " + "{b: " * 5000 + "1" + "}" * 5000 + "\n", f"nested more than {MAX_DEPTH} levels"),
    "huge-int": (f"name: x\nseed: {BIG}\n", f"at most {MAX_DIGITS} digits"),
}


@pytest.mark.parametrize("case", list(HOSTILE_YAML))
def test_the_one_yaml_loader_refuses_hostile_documents(tmp_path: Path, case: str) -> None:
    text, words = HOSTILE_YAML[case]
    path = tmp_path / "hostile.yaml"
    path.write_text(text)
    with pytest.raises(UserError, match=re.escape(words)) as info:
        YamlDoc(path)
    assert info.value.file == path and info.value.line is not None


def test_aliases_within_the_bound_still_load(tmp_path: Path) -> None:
    path = tmp_path / "ok.yaml"
    path.write_text("base: &b {lr: 0.001, r: 8}\narms:\n  - {name: one, shape: *b}\n  - {name: two, shape: *b}\n")
    assert YamlDoc(path).data["arms"][1] == {"name": "two", "shape": {"lr": 0.001, "r": 8}}
    path.write_text(alias_bomb(levels=3, width=9))  # 9**3 nodes: far below the bound
    assert len(YamlDoc(path).data["a2"]) == 9 and 9**3 < MAX_ALIAS_NODES


def _where(kind: str, tmp_path: Path, text: str) -> list[str]:
    """The command line that reads `text` as a file of `kind`."""
    path = tmp_path / f"{kind}.yaml"
    path.write_text(text)
    store = str(tmp_path / "s.db")
    return {
        "policy": ["gate", "--policy", str(path), "--candidate", "t1", "--store", store],
        "answers": ["advise", "--answers", str(path)],
        "plan": ["run", str(path), "--dry-run", "--store", store],
    }[kind]


@pytest.mark.parametrize("kind", ["policy", "answers", "plan"])
@pytest.mark.parametrize("case", ["alias-bomb", "deep", "huge-int"])
def test_hostile_yaml_through_every_command_is_exit_2_at_once(tmp_path: Path, kind: str, case: str) -> None:
    text, words = HOSTILE_YAML[case]
    if kind == "policy":
        Store(str(tmp_path / "s.db"))  # the gate judges an existing store
    result = tunegate(*_where(kind, tmp_path, text), timeout=HANG_GUARD)
    assert result.returncode == 2, result.stdout + result.stderr
    out = result.stdout + result.stderr
    assert words in out and "Traceback" not in out and f"{kind}.yaml:" in out


def test_a_huge_policy_min_items_is_refused(tmp_path: Path) -> None:
    Store(str(tmp_path / "s.db"))
    text = f"rules:\n  - {{suite: s, metric: m, min: 0.5, min_items: {BIG}}}\n"
    result = tunegate(*_where("policy", tmp_path, text), timeout=HANG_GUARD)
    assert result.returncode == 2 and "policy.yaml:2: field 'rules[0].min_items'" in result.stdout, result.stdout


# --- JSONL: advise --train, suite items ------------------------------------------------------------------------------
def test_a_huge_integer_in_training_data_names_its_line(tmp_path: Path) -> None:
    train = tmp_path / "train.jsonl"
    train.write_text('{"prompt": "a", "completion": "b"}\n{"prompt": "a", "completion": "b", "n": ' + BIG + "}\n")
    result = tunegate("advise", "--answers", str(ANSWERS), "--train", str(train), timeout=HANG_GUARD)
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"{train}:2: invalid JSON: a number of 5001 digits" in result.stdout


def test_a_huge_integer_or_deep_nesting_in_suite_items(tmp_path: Path) -> None:
    suite = tmp_path / "suites" / "hostile"
    suite.mkdir(parents=True)
    (suite / "suite.yaml").write_text("name: hostile\nscorers: [exact_match]\n")
    for row, words in (
        (f'{{"id": "a", "prompt": "p", "reference": "r", "n": {BIG}}}', "digits"),
        ('{"id": "a", "prompt": ' + "[" * 100_000 + "]" * 100_000 + "}", "nested too deeply"),
    ):
        (suite / "items.jsonl").write_text(row + "\n")
        plan = plan_file(tmp_path, extra="    max_steps: 2").read_text().replace("[json_extract]", "[hostile]")
        (tmp_path / "plan.yaml").write_text(plan)
        result = tunegate(
            "run",
            str(tmp_path / "plan.yaml"),
            "--dry-run",
            "--store",
            str(tmp_path / "s.db"),
            env={"TUNEGATE_SUITES": str(tmp_path / "suites")},
            timeout=HANG_GUARD * 3,
        )
        line = one_line_exit_2(result)
        assert f"{suite / 'items.jsonl'}:1: invalid JSON" in line and words in line


# --- item 3: values refused before a run starts ----------------------------------------------------------------------
@pytest.mark.parametrize(
    "extra, field",
    [
        ("    max_steps: 2\n    seed: 1000000000000000000000000000000", "arms[1].seed"),
        ("    max_steps: 2\n    seed: -5", "arms[1].seed"),
        ("    max_steps: 2\n    batch_size: 100000000000000000000", "arms[1].batch_size"),
        ("    max_steps: 1000000000000000000000000000000", "arms[1].max_steps"),
        ("    max_steps: 2\n    grad_accum: 100000000", "arms[1].grad_accum"),
    ],
)
@pytest.mark.parametrize("dry_run", [True, False], ids=["dry-run", "run"])
def test_out_of_range_values_are_refused_before_anything_runs(
    tmp_path: Path, extra: str, field: str, dry_run: bool
) -> None:
    db = tmp_path / "s.db"
    args = ["run", str(plan_file(tmp_path, extra=extra)), "--store", str(db)] + (["--dry-run"] if dry_run else [])
    line = one_line_exit_2(tunegate(*args, cwd=tmp_path, timeout=120))
    assert f"field '{field}'" in line and "GiB" not in line
    assert not db.exists() or Store(str(db)).runs() == []  # no run row written


def test_a_plan_seed_must_fit_32_bits(tmp_path: Path) -> None:
    path = plan_file(tmp_path)
    path.write_text(path.read_text() + "seed: 4294967296\n")
    line = one_line_exit_2(tunegate("run", str(path), "--dry-run", timeout=120))
    assert "field 'seed'" in line and "4294967295" in line


def test_dry_run_refuses_an_unknown_executor_as_the_run_does(tmp_path: Path) -> None:
    for extra in ([], ["--dry-run"]):
        line = one_line_exit_2(
            tunegate(
                "run",
                str(plan_file(tmp_path)),
                "--executor",
                "bogus",
                *extra,
                "--store",
                str(tmp_path / "s.db"),
                timeout=120,
            )
        )
        assert "--executor" in line and "unknown executor 'bogus'" in line


# --- item 4: advise reads data as `tunegate run` does --------------------------------------------------------------
@pytest.mark.parametrize(
    "option, content, words",
    [
        ("--train", b'{"prompt": "caf\xe9", "completion": "x"}\n', ":1: not UTF-8"),
        ("--train", b'{"prompt": 5, "completion": "x"}\n', ":1: field 'prompt'"),
        ("--test", b"\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00\xff\xfe\n", ":1: not UTF-8"),
        ("--test", b"", ": no rows"),
        ("--preference", b'{"prompt": "a", "chosen": "b"}\n', ":1: field 'rejected'"),
    ],
    ids=["train-latin1", "train-prompt-5", "test-binary", "test-empty", "preference-malformed"],
)
def test_advise_refuses_data_that_run_refuses(tmp_path: Path, option: str, content: bytes, words: str) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(content)
    plan = tmp_path / "plan.yaml"
    train = bad if option == "--train" else TRAIN
    extra = [] if option == "--train" else [option, str(bad)]
    result = tunegate(
        "advise", "--answers", str(ANSWERS), "--train", str(train), *extra, "--write", str(plan), timeout=120
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"{bad}{words}" in result.stdout and "Traceback" not in result.stdout + result.stderr
    assert not plan.exists()  # nothing written


# --- item 5: control characters from a file's keys or name ---------------------------------------------------------
def test_advise_never_prints_control_characters_from_input(tmp_path: Path) -> None:
    answers = tmp_path / "answers.yaml"
    answers.write_text(ANSWERS.read_text() + '"evil\\e]0;pwned\\a": 3\n')
    result = tunegate("advise", "--answers", str(answers), timeout=120)
    assert result.returncode == 2 and "evil\\x1b]0;pwned\\x07" in result.stdout, result.stdout
    named = tmp_path / "tr\x1b]0;title\x07.jsonl"
    named.write_bytes(b"\xff\n")
    result = tunegate("advise", "--answers", str(ANSWERS), "--train", str(named), timeout=120)
    assert result.returncode == 2 and "tr\\x1b]0;title\\x07.jsonl" in result.stdout, result.stdout
    ok = tmp_path / "ok\x1b[31m.jsonl"
    ok.write_text(TRAIN.read_text())
    result = tunegate("advise", "--answers", str(ANSWERS), "--train", str(ok), timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ok\\x1b[31m.jsonl" in result.stdout and "\x1b" not in result.stdout


# --- item 6: credentials in a judge URL ---------------------------------------------------------------------------
def test_a_suite_with_credentials_in_its_judge_url_is_refused_and_nothing_stored(tmp_path: Path) -> None:
    suite = tmp_path / "suites" / "judged"
    suite.mkdir(parents=True)
    (suite / "items.jsonl").write_text('{"id": "a", "prompt": "2+2?", "reference": "4"}\n')
    (suite / "suite.yaml").write_text(
        "name: judged\nscorers:\n  - name: judge_rubric\n    params:\n      rubric: correct\n"
        "      judge: {base_url: 'http://user:pass-w0rd-77@127.0.0.1:9/v1', model: m}\n"
    )
    db = tmp_path / "s.db"
    plan = plan_file(tmp_path).read_text().replace("[json_extract]", "[judged]")
    (tmp_path / "plan.yaml").write_text(plan)
    result = tunegate(
        "run",
        str(tmp_path / "plan.yaml"),
        "--store",
        str(db),
        cwd=tmp_path,
        env={"TUNEGATE_SUITES": str(tmp_path / "suites")},
        timeout=120,
    )
    line = one_line_exit_2(result)
    assert "judge.base_url must not hold credentials" in line and "TUNEGATE_JUDGE_API_KEY" in line
    assert "pass-w0rd-77" not in result.stdout + result.stderr
    for written in tmp_path.glob("s.db*"):  # the store, its WAL and shared-memory files
        assert b"pass-w0rd-77" not in written.read_bytes()


# --- item 8: read-only commands on a mistyped store ----------------------------------------------------------------
@pytest.mark.parametrize(
    "args",
    [
        ["show", "1"],
        ["runs"],
        ["report", "1", "--html", "r.html"],
        ["gate", "--policy", "gate.yaml", "--candidate", "t1"],
        ["export-results", "out.csv"],
        ["rollback"],
    ],
)
def test_read_only_commands_never_create_a_store(tmp_path: Path, args: list[str]) -> None:
    typo = tmp_path / "runs" / "tunegat.db"
    line = one_line_exit_2(tunegate(*args, "--store", str(typo), cwd=tmp_path, timeout=120))
    assert f"{typo}" in line and "does not exist" in line
    assert not typo.exists() and not typo.parent.exists()


def test_eval_of_a_file_that_is_not_gguf(tmp_path: Path) -> None:
    fake = tmp_path / "m.gguf"
    fake.write_text("not a model")
    line = one_line_exit_2(
        tunegate("eval", str(fake), "--suite", "json_extract", "--store", str(tmp_path / "s.db"), timeout=120)
    )
    assert f"{fake}" in line and "not a GGUF file" in line


def test_report_to_a_path_that_cannot_be_written(tmp_path: Path) -> None:
    from tests.support import storekit as kit

    store = Store(str(tmp_path / "s.db"))
    kit.new_run(store, "r")
    line = one_line_exit_2(
        tunegate("report", "1", "--html", "/proc/x.html", "--store", str(tmp_path / "s.db"), timeout=120)
    )
    assert "/proc/x.html" in line and "--html" in line


def test_a_plan_suite_outside_the_suite_roots_is_refused(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "suite.yaml").write_text("name: outside\nscorers: [exact_match]\n")
    (outside / "items.jsonl").write_text('{"id": "a", "prompt": "p", "reference": "r"}\n')
    work = tmp_path / "work"
    work.mkdir()
    path = plan_file(work)
    path.write_text(path.read_text().replace("[json_extract]", "[json_extract, ../outside]"))
    line = one_line_exit_2(tunegate("run", str(path), "--dry-run", cwd=work, timeout=120))
    assert "field 'suites[1]'" in line and "'../outside' leaves its folder" in line
