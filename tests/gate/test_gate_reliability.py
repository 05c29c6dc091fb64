"""The gate's exit code and its audit row always agree: an output path it cannot write is refused (exit 2) before
anything is decided or recorded, and a write that fails after recording leaves the row saying error/2 with no
promotion. Control characters in a rule name or candidate never reach the JUnit or Markdown files raw."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from harness.gate import decide, to_junit, to_markdown
from harness.store import Store
from tests.gate.test_gate import POLICY, M, N, experiment
from tests.support import storekit as kit


@pytest.fixture
def suites(tmp_path: Path) -> dict[str, Any]:
    return {
        "task": kit.make_suite(tmp_path / "suites", "task", N),
        "harmful": kit.make_suite(tmp_path / "suites", "harmful", M, category="safety", scorers=("refusal",)),
    }


@pytest.fixture
def filled(tmp_path: Path, suites) -> tuple[Path, Path]:
    db = tmp_path / "gate.db"
    experiment(Store(str(db)), suites, task=kit.ones(N, range(2)), refusal=kit.ones(M, range(3)), name="good")
    return db, kit.write_policy(tmp_path / "gate.yaml", POLICY)


def _recorded(db: Path) -> tuple[int, int]:
    store = Store(str(db))
    return len(store.decisions()), len(store.promotions())


@pytest.mark.parametrize("flag,target", [("--junit", "DIR"), ("--json", "no/such/dir/d.json"), ("--markdown", "DIR")])
@pytest.mark.parametrize("policy_ok", [True, False])
def test_an_unwritable_output_is_refused_before_anything_is_recorded(
    filled, tmp_path: Path, flag: str, target: str, policy_ok: bool
) -> None:
    db, policy = filled
    (tmp_path / "DIR").mkdir()
    out = str(tmp_path / target)
    done = kit.tunegate(
        "gate",
        "--policy",
        str(policy if policy_ok else tmp_path / "missing.yaml"),
        "--candidate",
        "good/lora",
        "--store",
        str(db),
        flag,
        out,
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert flag in done.stderr and out in done.stderr
    assert _recorded(db) == (0, 0)  # nothing decided, nothing promoted


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full (a file every write to fails)")
def test_a_write_that_fails_after_recording_makes_the_row_say_error(filled, tmp_path: Path) -> None:
    db, policy = filled
    done = kit.tunegate(
        "gate",
        "--policy",
        str(policy),
        "--candidate",
        "good/lora",
        "--store",
        str(db),
        "--json",
        str(tmp_path / "ok.json"),
        "--markdown",
        "/dev/full",
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert "Traceback" not in done.stderr and "--markdown /dev/full" in done.stdout
    [row] = Store(str(db)).decisions()
    assert (row.verdict, row.exit_code) == ("error", 2) and "could not be written" in row.reason
    assert Store(str(db)).promotions() == [] and Store(str(db)).promoted_trial() is None
    written = json.loads((tmp_path / "ok.json").read_text())  # rewritten: the file says what the exit code says
    assert (written["verdict"], written["exit_code"]) == ("error", 2)


def test_a_promotion_exits_0_with_a_row_that_says_0(filled, tmp_path: Path) -> None:
    db, policy = filled
    done = kit.tunegate(
        "gate",
        "--policy",
        str(policy),
        "--candidate",
        "good/lora",
        "--store",
        str(db),
        "--junit",
        str(tmp_path / "g.xml"),
    )
    assert done.returncode == 0, done.stdout + done.stderr
    [row] = Store(str(db)).decisions()
    assert (row.verdict, row.exit_code) == ("promote", 0) and len(Store(str(db)).promotions()) == 1


HOSTILE = "evil\x1b]0;pwned\x07\x0cname\x00\ud800"


def test_control_characters_never_reach_junit_or_markdown(store: Store, suites, tmp_path: Path) -> None:
    policy = kit.write_policy(
        tmp_path / "p.yaml", POLICY.replace("    min_items: 30", '    min_items: 30\n    name: "evil\\e]0;t\\a\\f"')
    )
    experiment(store, suites, task=kit.ones(N, range(2)), refusal=kit.ones(M, range(3)), name="good")
    decision = decide(store, policy, "good/lora")
    for rule in decision.rules:
        rule.name, rule.message = rule.name + HOSTILE, rule.message + HOSTILE
    decision.candidate, decision.reason = HOSTILE, HOSTILE
    xml = to_junit(decision)
    root = ET.fromstring(xml.encode("utf-8", "surrogatepass"))  # parses: well-formed XML
    assert root.find("testsuite") is not None
    markdown = to_markdown(decision)
    for text in (xml, markdown):
        assert not any(c in text for c in "\x1b\x07\x0c\x00\ud800"), repr(text)
    assert "\\x1b" in markdown and "\\x1b" in xml
