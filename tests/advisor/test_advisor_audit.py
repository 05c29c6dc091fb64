from __future__ import annotations

from pathlib import Path

import pytest

from advisor.advice import advise
from advisor.audit import audit_dataset, read_rows
from advisor.duplicates import near_duplicate_pairs
from advisor.pii import find_pii, luhn_valid
from harness.base._errors import UserError

LONG = (
    "the warehouse in rotterdam ships refrigerated containers to hamburg every tuesday and the "
    "customs paperwork must be filed two days before departure by the logistics team lead"
)


def ticket(i: int, label: str) -> dict:
    return {
        "prompt": f"Classify support ticket number {i}: customer {i} writes about order {i * 7}",
        "completion": label,
    }


@pytest.fixture
def planted(jsonl) -> tuple[Path, Path]:
    """A training file with known duplicates, PII and class imbalance, and a test file that overlaps it."""
    rows = [ticket(i, "billing") for i in range(30)] + [ticket(i, "shipping") for i in range(30, 39)]
    rows.append(ticket(39, "fraud"))  # rarest class: 1 of 40 distinct
    rows += [ticket(5, "billing"), ticket(5, "billing")]  # two exact copies of row 6
    rows.append({"prompt": LONG, "completion": "shipping"})
    rows.append({"prompt": LONG.replace("team lead", "team leader"), "completion": "shipping"})  # near copy
    rows.append(
        {"prompt": "Refund to jane.doe@example.com please, call me on +1 415-555-0132", "completion": "billing"}
    )
    rows.append({"prompt": "Card 4111 1111 1111 1111 was charged twice", "completion": "billing"})
    rows.append({"prompt": "Card 4111 1111 1111 1112 was charged twice (typo)", "completion": "billing"})
    rows.append(
        {"prompt": "my key AKIAIOSFODNN7EXAMPLE leaked, also sk-proj-abcdefghijklmnopqrstuvwx", "completion": "fraud"}
    )
    train = jsonl("train.jsonl", rows)
    test = jsonl(
        "test.jsonl",
        [
            ticket(3, "billing"),  # exact prompt overlap
            {"prompt": LONG.replace("tuesday", "wednesday"), "completion": "shipping"},  # near overlap
            {"prompt": "A question that appears nowhere in the training data at all", "completion": "billing"},
            {"prompt": "Another brand new question about an invoice for a laptop", "completion": "billing"},
        ],
    )
    return train, test


def test_rows_and_duplicates(planted: tuple[Path, Path]) -> None:
    report = audit_dataset(*planted)
    assert report.rows == 48 and report.format == "prompt_completion"
    assert report.exact_duplicate_rows == 2
    assert report.exact_duplicate_groups == [[6, 41, 42]]
    assert report.unique_rows == 46
    assert [(p.line_a, p.line_b) for p in report.near_duplicates] == [(43, 44)]
    assert report.near_duplicates[0].jaccard >= 0.8
    assert report.near_duplicate_rows == 1


def test_train_test_contamination(planted: tuple[Path, Path]) -> None:
    overlap = audit_dataset(*planted).overlap
    assert overlap is not None
    assert overlap.exact == [(4, 1)]
    assert [(p.line_a, p.line_b) for p in overlap.near] == [(43, 2)]
    assert overlap.contaminated_test_rows == 2 and overlap.contamination_fraction == 0.5


def test_pii_found_and_redacted(planted: tuple[Path, Path]) -> None:
    pii = audit_dataset(*planted).pii
    assert pii.counts == {"email": 1, "phone": 1, "credit_card": 1, "aws_access_key": 1, "api_key": 1}
    assert pii.rows_with_pii == 3
    redacted = {(f.line, f.kind): f.redacted for f in pii.findings}
    assert redacted[(45, "email")] == "j***@example.com"
    assert redacted[(46, "credit_card")] == "***1111"
    assert (47, "credit_card") not in redacted  # fails the Luhn check
    assert all("AKIAIOSFODNN7EXAMPLE" != v for v in redacted.values())


def test_label_balance(planted: tuple[Path, Path]) -> None:
    labels = audit_dataset(*planted).labels
    assert labels is not None and labels.distinct == 3
    assert labels.counts["fraud"] == 2 and labels.counts["billing"] == 35
    assert labels.minority_share == round(2 / 48, 4) and labels.minority_share < 0.05


def test_token_lengths_estimate_and_context(planted: tuple[Path, Path]) -> None:
    tokens = audit_dataset(planted[0], context_len=20).tokens
    assert tokens is not None and not tokens.exact and "estimate" in tokens.counter
    assert tokens.p50 <= tokens.p90 <= tokens.p99 <= tokens.max
    assert tokens.over_context == 2  # the two long warehouse rows
    assert tokens.over_context_fraction == round(2 / 48, 4)


def test_token_lengths_with_a_real_tokenizer(jsonl) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"[UNK]": 0, "hello": 1, "world": 2}
    raw = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    raw.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=raw, unk_token="[UNK]")
    path = jsonl(
        "t.jsonl",
        [{"prompt": "hello world", "completion": "hello"}, {"prompt": "hello " * 9, "completion": "world, world"}],
    )
    tokens = audit_dataset(path, tokenizer=tok, context_len=5).tokens
    assert tokens is not None and tokens.exact and tokens.counter.startswith("tokenizer")
    assert (tokens.p50, tokens.max) == (3, 12)  # "hello world\nhello"; 9 x hello + "world , world"
    assert tokens.over_context == 1


def test_all_four_formats_read_strictly(jsonl) -> None:
    """Each format reads as `tunegate run` reads it; a row of another format, or that is not JSON, stops the
    audit with its line (issue 31, item 4: no row is skipped silently)."""
    examples = [
        {
            "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": "hi"},
                {"role": "assistant", "content": "hello"},
            ]
        },
        {"instruction": "Translate", "input": "bonjour", "output": "hello"},
        {"prompt": "2+2?", "completion": "4"},
        {"prompt": "Say hi", "chosen": "Hi!", "rejected": "Go away"},
    ]
    rows = [read_rows(jsonl(f"f{i}.jsonl", [row]))[0] for i, row in enumerate(examples)]
    assert [r.format for r in rows] == ["messages", "alpaca", "prompt_completion", "preference"]
    assert rows[0].prompt == "be brief\nhi" and rows[0].output == "hello"
    assert rows[1].prompt == "Translate\nbonjour" and rows[3].output is None
    assert "Go away" in rows[3].text
    with pytest.raises(UserError, match=r"mixed.jsonl:2: field 'messages': Field required"):
        read_rows(jsonl("mixed.jsonl", examples))
    bad = jsonl("bad.jsonl", examples[:1])
    bad.write_text(bad.read_text() + "{not json\n")
    with pytest.raises(UserError, match=r"bad.jsonl:2: invalid JSON"):
        audit_dataset(bad)


def test_preference_file_overrides_preference_pairs(jsonl) -> None:
    rows = [
        {"prompt": f"Write a greeting for customer {i}", "chosen": f"Dear customer {i}, welcome", "rejected": "hey"}
        for i in range(120)
    ]
    result = advise({"task_type": "style_format", "labelled_examples": 500}, jsonl("prefs.jsonl", rows))
    assert [(o.field, o.stated, o.audited) for o in result.overrides] == [
        ("preference_pairs", None, 120)
    ]  # not stated: unknown
    assert result.answers.labelled_examples == 500


def test_audit_facts_fire_rules(planted: tuple[Path, Path]) -> None:
    result = advise({"task_type": "classification_extraction", "labelled_examples": 48}, *planted)
    fired = {f.id for f in result.recommendation.fired}
    assert {"audit-pii", "audit-contamination", "audit-class-imbalance", "audit-duplicates"} <= fired
    assert result.answers.labelled_examples == 46


@pytest.mark.parametrize(
    "number,valid",
    [
        ("4111111111111111", True),
        ("5500000000000004", True),
        ("378282246310005", True),
        ("4111111111111112", False),
        ("1234567812345678", False),
    ],
)
def test_luhn(number: str, valid: bool) -> None:
    assert luhn_valid(number) is valid


@pytest.mark.parametrize(
    "text,kinds",
    [
        ("released on 2024-01-15 as version 1.2.3", []),
        ("order 12345 shipped in 3 boxes", []),
        ("server at 10.0.12.7 and localhost 127.0.0.1", ["ipv4"]),
        ("password = hunter2hunter2", ["secret_assignment"]),
        ("-----BEGIN RSA PRIVATE KEY-----\nMIIEow...", ["private_key"]),
        ("ghp_" + "a" * 36, ["github_token"]),
        ("call (020) 7946 0958 or +44 20 7946 0958", ["phone", "phone"]),
        ("amex 3782 822463 10005", ["credit_card"]),
    ],
)
def test_find_pii_patterns(text: str, kinds: list[str]) -> None:
    assert [k for k, _ in find_pii(text)] == kinds


def test_near_duplicates_need_real_similarity() -> None:
    texts = [
        LONG,
        "an entirely different sentence about cats sleeping in the afternoon sun by the window",
        LONG.replace("hamburg", "bremen"),
    ]
    assert [(i, j) for i, j, _ in near_duplicate_pairs(texts)] == [(0, 2)]


def test_a_suites_items_are_a_test_file(jsonl) -> None:
    """A suite's items.jsonl (id + prompt or messages, no training target) is read as a test file, strictly: its
    prompts are checked for contamination, and a malformed item names its line and field."""
    train = jsonl(
        "train.jsonl", [{"prompt": f"Extract the city: I live in town {i}.", "completion": "x"} for i in range(5)]
    )
    items = [
        {"id": "a", "prompt": "Extract the city: I live in town 3.", "reference": "x"},
        {"id": "b", "messages": [{"role": "user", "content": "What is 2+2?"}], "reference": "4"},
    ]
    overlap = audit_dataset(train, jsonl("items.jsonl", items)).overlap
    assert overlap is not None and overlap.test_rows == 2 and overlap.exact == [(4, 1)]
    with pytest.raises(UserError, match=r"bad_items.jsonl:2: field 'promt': unknown key"):
        audit_dataset(train, jsonl("bad_items.jsonl", [items[0], {"id": "c", "promt": "typo"}]))
