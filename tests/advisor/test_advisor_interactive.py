"""Drive `python -m advisor --interactive` through a real pseudo-terminal, as a person would."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

pexpect = pytest.importorskip("pexpect")
ROOT = Path(__file__).resolve().parents[2]


def spawn(*args: str):
    env = dict(os.environ, TERM="dumb", NO_COLOR="1", COLUMNS="200", PYTHONUNBUFFERED="1")
    env.pop("TUNEGATE_ADVISOR_BASE_URL", None)
    return pexpect.spawn(
        sys.executable,
        ["-m", "advisor", *args],
        cwd=str(ROOT),
        env=env,
        encoding="utf-8",
        timeout=60,
        dimensions=(50, 200),
    )


def test_interactive_session_with_reasks_ends_in_a_recommendation() -> None:
    child = spawn("--interactive")
    try:
        child.expect("What kind of task is it")
        child.sendline("chatbot")  # not one of the choices
        child.expect("Please select one of the available options")
        child.expect("What kind of task is it")
        child.sendline("classification_extraction")
        child.expect("second aspect")
        child.sendline("none")
        child.expect(r"labelled examples.*\?")
        child.sendline("lots")  # not a number: explained, re-asked
        child.expect("Invalid answer for labelled_examples")
        child.expect(r"labelled examples.*\?")
        child.sendline("300")
        child.expect(r"preference pairs.*\(unknown\):")  # nothing is guessed: the default is unknown
        child.sendline("")
        child.expect("reference documents")
        child.sendline("0")
        child.expect("How often do the facts")
        child.sendline("never")
        child.expect("cite the source")
        child.sendline("no")
        child.expect("Latency budget")
        child.sendline("200")
        child.expect("requests a day")
        child.sendline("")  # every question takes 'unknown' (the default)
        child.expect("Cost budget")
        child.sendline("no limit")
        child.expect("May the data leave your premises")
        child.sendline("no")
        # a hosted model is only asked about when data may leave: the next question is the deployment
        assert child.expect(["May a hosted", "Where will the model run"]) == 1
        child.sendline("on_premises")
        child.expect("How many GPUs")
        child.sendline("none")
        assert child.expect(["Memory per GPU", "Size of the base model"]) == 1
        child.sendline("0.135")
        child.expect("Quality bar")
        child.sendline("1.5")  # out of range: re-asked
        child.expect("Invalid answer for quality_target")
        child.expect("Quality bar")
        child.sendline("0.9")
        child.expect("Recommendation: lora")
        child.expect("Arms to test: lora, prompting, rag")
        child.expect("extraction-format-band")
        child.expect("requests_per_day \\(unknown\\)")
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert child.exitstatus == 0


def test_interactive_defaults_come_from_an_answers_file() -> None:
    child = spawn("--interactive", "--answers", "examples/demo/answers.yaml")
    try:
        child.expect(r"What kind of task is it.*\(classification_extraction\):")
        for _ in range(15):  # accept every default; hosted and VRAM questions are skipped
            child.sendline("")
        child.expect("Recommendation: lora")
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert child.exitstatus == 0
