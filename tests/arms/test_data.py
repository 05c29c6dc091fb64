import json
from pathlib import Path

import pytest

from harness.base import UserError, detect_format, load_examples, load_preferences, load_rows
from tests.support import write_jsonl

ROWS = {
    "messages": {
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "2+2?"},
            {"role": "assistant", "content": "4"},
        ]
    },
    "alpaca": {"instruction": "Add the numbers.", "input": "2 and 2", "output": "4"},
    "prompt_completion": {"prompt": "2+2?", "completion": "4"},
    "preference": {"prompt": "2+2?", "chosen": "4", "rejected": "5"},
}


@pytest.mark.parametrize("fmt", list(ROWS))
def test_every_format_is_detected(tmp_path: Path, fmt: str):
    path = write_jsonl(tmp_path / "d.jsonl", [ROWS[fmt], ROWS[fmt]])
    detected, rows = load_rows(path)
    assert detected == fmt and len(rows) == 2
    assert detect_format(ROWS[fmt]) == fmt


@pytest.mark.parametrize("fmt", ["messages", "alpaca", "prompt_completion"])
def test_sft_formats_become_examples(tmp_path: Path, fmt: str):
    ex = load_examples(write_jsonl(tmp_path / "d.jsonl", [ROWS[fmt]]))[0]
    assert ex.answer == "4"
    assert ex.messages[-1] == {"role": "assistant", "content": "4"}
    assert "2" in ex.user_text


def test_alpaca_input_is_appended(tmp_path: Path):
    ex = load_examples(write_jsonl(tmp_path / "d.jsonl", [ROWS["alpaca"]]))[0]
    assert ex.prompt[0].content == "Add the numbers.\n\n2 and 2"


def test_preferences(tmp_path: Path):
    p = load_preferences(write_jsonl(tmp_path / "p.jsonl", [ROWS["preference"]]))[0]
    assert (p.chosen, p.rejected, p.prompt[0].content) == ("4", "5", "2+2?")


BAD = [
    ("messages", {"messages": [{"role": "user", "content": "hi"}]}, "messages", "assistant"),
    (
        "messages",
        {"messages": [{"role": "robot", "content": "hi"}, {"role": "assistant", "content": "x"}]},
        "messages[0].role",
        "Input should be",
    ),
    (
        "messages",
        {"messages": [{"role": "user"}, {"role": "assistant", "content": "x"}]},
        "messages[0].content",
        "required",
    ),
    ("alpaca", {"instruction": "", "output": "x"}, "instruction", "at least 1"),
    ("alpaca", {"instruction": "do", "output": 3}, "output", "string"),
    ("prompt_completion", {"prompt": "x"}, "completion", "required"),
    ("preference", {"prompt": "x", "chosen": "a"}, "rejected", "required"),
]


@pytest.mark.parametrize("fmt,bad,field,msg", BAD)
def test_bad_row_names_file_line_and_field(tmp_path: Path, fmt: str, bad: dict, field: str, msg: str):
    path = write_jsonl(tmp_path / "d.jsonl", [ROWS[fmt], ROWS[fmt], bad])
    with pytest.raises(UserError) as err:
        load_rows(path)
    e = err.value
    assert (e.line, e.field, e.exit_code) == (3, field, 2)
    assert str(path) in str(e) and ":3:" in str(e) and msg in str(e)


def test_invalid_json_names_its_line(tmp_path: Path):
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps(ROWS["alpaca"]) + "\n\n{not json\n")
    with pytest.raises(UserError, match=r"d.jsonl:3: invalid JSON"):
        load_rows(path)


def test_unknown_format_and_wrong_kind(tmp_path: Path):
    with pytest.raises(UserError, match="cannot tell the data format"):
        load_rows(write_jsonl(tmp_path / "x.jsonl", [{"text": "hello"}]))
    with pytest.raises(UserError, match="preference data"):
        load_examples(write_jsonl(tmp_path / "p.jsonl", [ROWS["preference"]]))
    with pytest.raises(UserError, match="needs preference rows"):
        load_preferences(write_jsonl(tmp_path / "s.jsonl", [ROWS["alpaca"]]))
    with pytest.raises(UserError, match="not found"):
        load_rows(tmp_path / "missing.jsonl")
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(UserError, match="no rows"):
        load_rows(tmp_path / "empty.jsonl")
