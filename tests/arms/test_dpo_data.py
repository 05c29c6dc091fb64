"""Issue 32, item 4: bad preference pairs are one line naming file, line and field (exit 2) before any training;
over-long pairs are cut as TRL cuts them only when the arm says `truncation: keep_start`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.arms._dpo_data import check_pairs, load_pairs, pair_lengths, sequence_lengths, tokenize_pair
from harness.base._errors import UserError
from tests.support.storekit import tunegate
from tests.support.tiny_plans import write_plan

GOOD = {"prompt": "Name a colour.", "chosen": "Green.", "rejected": "A fox."}


def prefs_file(tmp_path: Path, *bad: dict) -> Path:
    path = tmp_path / "prefs.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in (GOOD, GOOD, *bad)))
    return path


@pytest.fixture(scope="module")
def tok(tiny_model_dir):
    from harness.model import load_tokenizer

    return load_tokenizer(str(tiny_model_dir))


@pytest.mark.parametrize(
    ("row", "field", "words"),
    [
        ({"prompt": "q", "chosen": "a"}, "rejected", "required"),
        ({"prompt": "q", "rejected": "a"}, "chosen", "required"),
        ({"prompt": "q", "chosen": "", "rejected": "b"}, "chosen", "at least 1 character"),
        ({"prompt": "q", "chosen": "a", "rejected": "  \n"}, "rejected", "empty 'rejected' answer"),
        ({"prompt": " ", "chosen": "a", "rejected": "b"}, "prompt", "empty prompt"),
        ({"prompt": "q", "chosen": "Same answer.", "rejected": " Same answer. "}, "rejected", "identical to 'chosen'"),
    ],
    ids=["no-rejected", "no-chosen", "empty-chosen", "blank-rejected", "blank-prompt", "identical"],
)
def test_bad_pairs_name_file_line_and_field(tmp_path, row, field, words):
    path = prefs_file(tmp_path, row)
    with pytest.raises(UserError) as err:
        load_pairs(path)
    assert err.value.file == path and err.value.line == 3 and err.value.field == field
    assert words in str(err.value) and "\n" not in str(err.value)


def test_every_bad_pair_of_a_file_is_found_in_one_pass(tmp_path):
    """The first bad row is the error; the message names how many others are bad and on which lines, for rows
    that fail validation and for pairs that fail the DPO checks."""
    missing = prefs_file(tmp_path, {"prompt": "q", "chosen": "a"}, GOOD, {"prompt": "q", "chosen": ""}, GOOD)
    with pytest.raises(UserError) as err:
        load_pairs(missing)
    assert (err.value.line, err.value.field) == (3, "rejected")
    assert str(err.value).endswith("(and 1 more row with errors: line 5)") and "\n" not in str(err.value)

    same = {"prompt": "q", "chosen": "x", "rejected": "x"}
    path = prefs_file(tmp_path, same, {"prompt": "q", "chosen": " ", "rejected": "b"}, *[same] * 6)
    with pytest.raises(UserError) as err:
        load_pairs(path)
    assert (err.value.line, err.value.field) == (3, "rejected") and "identical to 'chosen'" in err.value.message
    assert err.value.message.endswith("(and 7 more rows with errors: lines 4, 5, 6, 7, 8, ...)")


def test_bad_pairs_without_lines_are_counted_too():
    """Pairs built in code or read from a hub dataset have no line: each still counts among the bad rows."""
    from harness.base._data import Message, Preference

    def pair(chosen: str, line: int = 0) -> Preference:
        return Preference(prompt=[Message(role="user", content="q")], chosen=chosen, rejected="x", line=line)

    with pytest.raises(UserError) as err:
        check_pairs([pair("x"), pair("x"), pair("x", line=7)], "hub:org/prefs")
    assert err.value.line is None and err.value.message.endswith("(and 2 more rows with errors: line 7)")
    with pytest.raises(UserError) as err:
        check_pairs([pair("x"), pair("x")], "hub:org/prefs")
    assert err.value.message.endswith("(and 1 more row with errors)")


def test_over_long_pairs_are_refused_unless_the_arm_truncates(tmp_path, tok):
    long_answer = " ".join(["river stone cloud"] * 40)
    path = prefs_file(tmp_path, {"prompt": "q", "chosen": "short", "rejected": long_answer})
    pairs = load_pairs(path)
    counted = [tokenize_pair(tok, p) for p in pairs]
    assert counted[2].rejected_sequence > 64 > counted[2].chosen_sequence
    with pytest.raises(UserError) as err:
        pair_lengths(pairs, tok, 64, path)
    assert (err.value.line, err.value.field) == (3, "rejected") and "truncation: keep_start" in err.value.message
    assert "more row" not in err.value.message
    twice = pairs + [pairs[2].model_copy(update={"line": 9})]
    with pytest.raises(UserError) as err:
        pair_lengths(twice, tok, 64, path)
    assert err.value.line == 3 and err.value.message.endswith("(and 1 more row with errors: line 9)")
    kept = pair_lengths(pairs, tok, 64, path, "keep_start")
    assert kept == counted and sequence_lengths(kept, 64)[2] == counted[2].chosen_sequence + 64
    # a prompt that fills max_length by itself leaves nothing to learn from: refused even when truncating
    path = prefs_file(tmp_path, {"prompt": long_answer, "chosen": "a", "rejected": "b"})
    with pytest.raises(UserError) as err:
        pair_lengths(load_pairs(path), tok, 64, path, "keep_start")
    assert (err.value.line, err.value.field) == (3, "prompt")


def test_token_counts_are_those_of_trl(tmp_path, tok):
    """TRL's own tokenisation and collator agree with our counts: the token counts match TRL's prepared dataset."""
    from datasets import Dataset
    from trl import DPOConfig
    from trl.trainer.dpo_trainer import DPOTrainer

    pairs = load_pairs(prefs_file(tmp_path, {"prompt": "q", "chosen": "a b c " * 30, "rejected": "d"}))
    rows = Dataset.from_list(
        [
            {
                "prompt": [m.model_dump() for m in p.prompt],
                "chosen": [{"role": "assistant", "content": p.chosen}],
                "rejected": [{"role": "assistant", "content": p.rejected}],
            }
            for p in pairs
        ]
    )
    prepared = DPOTrainer._prepare_dataset(
        type("T", (), {"_tokenizer": tok})(),
        rows,
        tok,
        DPOConfig(output_dir=str(tmp_path), max_length=None, report_to="none", use_cpu=True, bf16=False),
        "train",
    )
    for pair, row in zip(pairs, prepared, strict=True):
        counted = tokenize_pair(tok, pair)
        assert (counted.prompt, counted.chosen, counted.rejected) == (
            len(row["prompt_ids"]),
            len(row["chosen_ids"]),
            len(row["rejected_ids"]),
        )


@pytest.mark.parametrize("case", ["over-long", "identical"])
def test_the_command_line_stops_before_training(tmp_path, tiny_model_dir, case):
    bad = (
        {"prompt": "q", "chosen": "ok", "rejected": " ".join(["river stone cloud"] * 60)}
        if case == "over-long"
        else {"prompt": "q", "chosen": "ok", "rejected": "ok"}
    )
    prefs = prefs_file(tmp_path, bad)
    plan = write_plan(
        tmp_path / "plan.yaml",
        tiny_model_dir,
        [{"name": "d", "type": "dpo", "max_steps": 1, "max_length": 64}],
        prefs=prefs,
    )
    result = tunegate("run", str(plan), "--dry-run", "--store", str(tmp_path / "s.db"))
    assert result.returncode == 2, result.stdout + result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in result.stdout + result.stderr, result.stderr
    assert f"{prefs}:3: field 'rejected'" in lines[0]
