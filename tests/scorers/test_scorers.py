"""Every registered scorer on real suite items, with the edge cases: empty output, unicode, 100k chars."""

from __future__ import annotations

import math
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
import sacrebleu
from rouge_score import rouge_scorer

from harness import scorers
from harness.base import UserError
from harness.evaluation import ScorerSpec, SuiteItem
from harness.scorers import ScorerParamError, build, last_number

LONG = "lorem ipsum dolor sit amet " * 3704  # 100,008 characters
assert len(LONG) >= 100_000


def item(
    reference: Any = None,
    *,
    meta: dict[str, Any] | None = None,
    choices: list[str] | None = None,
    answer: int | None = None,
    id: str = "x-1",
) -> SuiteItem:
    return SuiteItem(id=id, prompt="q", reference=reference, meta=meta or {}, choices=choices, answer=answer)


def make(name: str, **params: Any) -> scorers.Scorer:
    return build(ScorerSpec(name=name, params=params))


def test_registry_lists_every_metric() -> None:
    assert {
        "exact_match",
        "token_f1",
        "rouge_l",
        "bleu",
        "chrf",
        "json_valid",
        "json_match",
        "json_fields",
        "json_schema",
        "regex",
        "numeric",
        "instructions",
        "instructions_partial",
        "choice_accuracy",
        "python",
        "refusal",
        "complied",
    } <= set(scorers.names())
    assert scorers.is_binary("numeric") and scorers.is_binary("refusal") and not scorers.is_binary("rouge_l")
    assert not scorers.is_binary("no-such-metric")


def test_a_metric_kind_is_registered_or_declared_by_the_suite() -> None:
    assert scorers.kind("refusal") == scorers.MetricKind(higher_is_better=True, binary=True)
    assert scorers.kind("rouge_l") == scorers.MetricKind(higher_is_better=True, binary=False)
    assert scorers.kind("python") == scorers.MetricKind(higher_is_better=True, binary=False)
    declared = ScorerSpec(name="python", params={"ref": "m:f", "binary": True, "higher_is_better": "false"})
    assert scorers.kind(declared) == scorers.MetricKind(higher_is_better=False, binary=True)
    # exact_match takes no such parameter, so its registration stands
    assert scorers.kind(ScorerSpec(name="exact_match", params={"higher_is_better": False})).higher_is_better


def test_unknown_scorer_and_param_are_named() -> None:
    with pytest.raises(KeyError, match="did you mean 'rouge_l'"):
        build("rouge-l")
    with pytest.raises(ScorerParamError) as exc:
        make("regex", patern="x")
    assert exc.value.param == "patern" and "did you mean 'pattern'" in str(exc.value)
    with pytest.raises(ScorerParamError) as exc:
        make("chrf", char_order=0)
    assert exc.value.param == "char_order"
    with pytest.raises(ScorerParamError) as exc:
        make("numeric", abs_tol="wide")
    assert exc.value.param == "abs_tol"
    with pytest.raises(ScorerParamError) as exc:  # filled in by the loader, never by the author
        make("python", ref="m:f", suite_dir="/tmp")
    assert exc.value.param == "suite_dir"


# --- exact match --------------------------------------------------------------------------------


def test_exact_match_default_strips_only() -> None:
    em = build("exact_match")
    assert em("  Paris\n", item("Paris")) == 1.0
    assert em("paris", item("Paris")) == 0.0
    assert em("", item("Paris")) == 0.0
    assert em("", item("")) == 1.0
    assert em(LONG, item("Paris")) == 0.0


def test_exact_match_normalization_and_alternatives() -> None:
    em = make("exact_match", normalize_steps=["nfkc", "lower", "punctuation", "articles", "whitespace"])
    assert em("The  Eiffel Tower!", item("eiffel tower")) == 1.0
    assert em("ＰＡＲＩＳ", item("paris")) == 1.0  # full-width letters fold under NFKC
    assert em("Zürich.", item(["Zurich", "zürich"])) == 1.0  # a list means alternative answers
    assert em("Zurich", item(["Bern", "Geneva"])) == 0.0
    with pytest.raises(ScorerParamError) as exc:
        make("exact_match", normalize_steps=["lowr"])
    assert exc.value.param == "normalize_steps"
    assert em.check_item(item(None)) == ("reference", "this suite's scorers need a 'reference' on every item")


# --- token F1, ROUGE-L, BLEU, chrF ---------------------------------------------------------------


def test_token_f1_matches_squad_by_hand() -> None:
    f1 = build("token_f1")
    # normalized: [cat, sat, on, mat] vs [cat, sat]: precision 2/4, recall 2/2
    assert f1("The cat sat on the mat.", item("a cat sat")) == pytest.approx(2 * 0.5 * 1 / 1.5)
    assert f1("Cat sat", item(["dog", "the cat sat"])) == 1.0  # best reference
    assert f1("", item("cat")) == 0.0
    assert f1("", item("the")) == 1.0  # both normalize to nothing
    assert f1("Café au lait", item("café")) == pytest.approx(0.5)  # p 1/3, r 1
    assert f1("東京 大阪", item("東京")) == pytest.approx(2 * 0.5 / 1.5)
    long_score = f1(LONG + " cat", item("cat"))
    assert 0 < long_score < 0.001


def test_rouge_l_against_rouge_score_and_by_hand() -> None:
    rl = build("rouge_l")
    ref, out = "the cat sat on the mat", "the cat on the mat"
    # LCS 5 tokens: precision 5/5, recall 5/6
    assert rl(out, item(ref)) == pytest.approx(2 * 1 * (5 / 6) / (1 + 5 / 6))
    direct = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True).score(ref, "cats sitting on mats")
    assert rl("cats sitting on mats", item(ref)) == pytest.approx(direct["rougeL"].fmeasure)
    assert make("rouge_l", measure="recall")(out, item(ref)) == pytest.approx(5 / 6)
    assert rl("", item(ref)) == 0.0
    assert rl(LONG, item(ref)) == 0.0
    assert rl(LONG + " the cat sat on the mat", item(ref)) > 0


def test_rouge_l_unicode_tokenizer_keeps_non_latin_words() -> None:
    greek = item("καλημέρα")
    assert build("rouge_l")("καλημέρα κόσμε", greek) == 0.0  # rouge_score's default drops non-ASCII
    assert make("rouge_l", tokenizer="unicode")("καλημέρα κόσμε", greek) == pytest.approx(2 * 0.5 / 1.5)
    with pytest.raises(ScorerParamError) as exc:
        make("rouge_l", tokenizer="spacy")
    assert exc.value.param == "tokenizer"


def test_bleu_is_sacrebleu_sentence_bleu_scaled() -> None:
    bleu = build("bleu")
    ref = "the quick brown fox jumps over the lazy dog"
    assert bleu(ref, item(ref)) == 1.0
    hyp = "the fast brown fox jumped over the lazy dog"
    assert bleu(hyp, item(ref)) == pytest.approx(sacrebleu.sentence_bleu(hyp, [ref]).score / 100)
    both = [ref, "a fast brown fox jumped over a lazy dog"]
    assert bleu(hyp, item(both)) == pytest.approx(sacrebleu.sentence_bleu(hyp, both).score / 100)
    assert bleu("", item(ref)) == 0.0
    assert 0 <= bleu(LONG, item(ref)) < 0.01
    assert make("bleu", tokenize="zh")("我爱北京", item("我爱北京")) == 1.0
    with pytest.raises(ScorerParamError):
        make("bleu", tokenize="moses")


def test_chrf_and_chrf_plus_plus() -> None:
    chrf, chrfpp = build("chrf"), make("chrf", word_order=2)
    ref, hyp = "Die Katze sitzt auf der Matte", "Die Katze saß auf der Matte"
    assert chrf(ref, item(ref)) == 1.0
    assert chrf(hyp, item(ref)) == pytest.approx(sacrebleu.sentence_chrf(hyp, [ref]).score / 100)
    assert chrfpp(hyp, item(ref)) == pytest.approx(
        sacrebleu.metrics.CHRF(word_order=2).sentence_score(hyp, [ref]).score / 100
    )
    assert chrfpp(hyp, item(ref)) != chrf(hyp, item(ref))
    assert chrf("", item(ref)) == 0.0
    assert chrf("東京都", item("東京都")) == 1.0
    assert 0 <= chrf(LONG, item(ref)) < 0.2


# --- JSON ---------------------------------------------------------------------------------------


def test_json_valid_edge_cases() -> None:
    jv = build("json_valid")
    assert jv('{"a": 1}', item()) == 1.0
    assert jv('```json\n{"a": 1}\n```', item()) == 1.0
    assert jv("", item()) == 0.0
    assert jv('{"name": "Zoë", "city": "東京"}', item()) == 1.0
    assert jv("[" + ",".join(["1"] * 50_000) + "]", item()) == 1.0  # 100k chars
    assert jv("[" * 100_000, item()) == 0.0  # too deep: not JSON, no crash
    assert jv('Sure! {"a": 1}', item()) == 0.0


def test_json_match_and_fields() -> None:
    ref = '{"name":"Ana Lopez","age":31,"city":"Lisbon"}'
    assert build("json_match")('{"city": "Lisbon", "age": 31, "name": "Ana Lopez"}', item(ref)) == 1.0
    assert build("json_match")('{"name": "Ana Lopez"}', item(ref)) == 0.0
    assert build("json_fields")('{"name": "Ana Lopez", "age": 30}', item(ref)) == pytest.approx(1 / 3)
    assert build("json_fields")("", item(ref)) == 0.0


PERSON = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer", "minimum": 0}},
    "required": ["name", "age"],
    "additionalProperties": False,
}


def test_json_schema_from_params() -> None:
    js = make("json_schema", schema=PERSON)
    assert js('{"name": "Ana", "age": 31}', item()) == 1.0
    assert js('{"name": "Ana", "age": -1}', item()) == 0.0
    assert js('{"name": "Ana"}', item()) == 0.0
    assert js('{"name": "Ana", "age": 3, "x": 1}', item()) == 0.0
    assert js("", item()) == 0.0
    assert js('{"name": "' + "é" * 100_000 + '", "age": 1}', item()) == 1.0
    assert js.check_item(item()) is None


def test_json_schema_per_item_and_format_checks() -> None:
    js = build("json_schema")
    email = item(meta={"schema": {"type": "object", "properties": {"e": {"type": "string", "format": "email"}}}})
    assert js('{"e": "sam@example.com"}', email) == 1.0
    assert js('{"e": "not an email"}', email) == 0.0
    assert js.check_item(item()) == (
        "meta.schema",
        "json_schema has no 'schema' param, so every item needs meta.schema",
    )
    field, msg = js.check_item(item(meta={"schema": {"type": "banana"}}))
    assert field == "meta.schema" and "invalid JSON schema" in msg
    with pytest.raises(ScorerParamError) as exc:
        make("json_schema", schema={"type": 12})
    assert exc.value.param == "schema"


# --- regex --------------------------------------------------------------------------------------


def test_regex_full_and_partial() -> None:
    full = make("regex", pattern=r"\d{4}-\d{2}-\d{2}")
    assert full(" 2025-01-01\n", item()) == 1.0
    assert full("Date: 2025-01-01", item()) == 0.0
    partial = make("regex", pattern=r"\d{4}-\d{2}-\d{2}", match="partial")
    assert partial("Date: 2025-01-01", item()) == 1.0
    assert partial("", item()) == 0.0
    assert partial(LONG + "2025-01-01", item()) == 1.0
    assert make("regex", pattern="yes|no", flags=["ignorecase"])("YES", item()) == 1.0
    assert make("regex", pattern="yes|no")("YES", item()) == 0.0
    assert make("regex", pattern=r"\w+")("naïve", item()) == 1.0
    assert make("regex", pattern="", strip=False)("", item()) == 1.0


def test_regex_per_item_pattern_and_errors() -> None:
    rx = build("regex")
    assert rx("42", item(meta={"pattern": r"\d+"})) == 1.0
    assert rx.check_item(item()) == ("meta.pattern", "regex has no 'pattern' param, so every item needs meta.pattern")
    assert rx.check_item(item(meta={"pattern": "("}))[0] == "meta.pattern"
    with pytest.raises(ScorerParamError) as exc:
        make("regex", pattern="(")
    assert exc.value.param == "pattern"
    with pytest.raises(ScorerParamError) as exc:
        make("regex", pattern="x", flags=["global"])
    assert exc.value.param == "flags"


# --- numeric ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text,value",
    [
        ("The answer is 1,234.", 1234.0),
        ("-5", -5.0),
        ("\u22125 degrees", -5.0),
        ("about 3/4 of it", 0.75),
        ("1e3", 1000.0),
        ("x = 2.50", 2.5),
        ("first 3, then 7", 7.0),
        (".5", 0.5),
        ("v2", None),
        ("", None),
        ("no numbers here", None),
        ("1,2,3", 3.0),
        ("٤٢ تفاحة", 42.0),
        ("Total: 12 apples.", 12.0),
        ("+8", 8.0),
    ],
)
def test_last_number(text: str, value: float | None) -> None:
    assert last_number(text) == value


def test_numeric_tolerances() -> None:
    num = build("numeric")
    assert num("391", item(391)) == 1.0
    assert num("17 × 23 = 391.", item("391")) == 1.0
    assert num("391.0000001", item(391)) == 1.0  # within the default 1e-6
    assert num("391.1", item(391)) == 0.0
    assert make("numeric", abs_tol=0.2)("391.1", item(391)) == 1.0
    assert make("numeric", rel_tol=0.01)("1005", item(1000)) == 1.0
    assert make("numeric", rel_tol=0.001)("1005", item(1000)) == 0.0
    assert num("", item(3)) == 0.0
    assert num("∞", item(3)) == 0.0
    assert num(LONG + " so 42", item(42)) == 1.0
    assert num.check_item(item(None))[0] == "reference"
    assert num.check_item(item("no number"))[0] == "reference"
    assert num.check_item(item(True))[0] == "reference"
    with pytest.raises(ScorerParamError):
        make("numeric", abs_tol=-1)


# --- instructions -------------------------------------------------------------------------------


def constraint_item(*cs: dict[str, Any]) -> SuiteItem:
    return item(meta={"constraints": list(cs)})


@pytest.mark.parametrize(
    "constraint,good,bad",
    [
        ({"type": "word_count", "exactly": 3}, "Vast blue deep", "Vast and blue deep"),
        ({"type": "word_count", "min": 2, "max": 3}, "Two words.", "One"),
        ({"type": "sentence_count", "exactly": 2}, "It rains. It pours!", "It rains."),
        ({"type": "line_count", "exactly": 2}, "snow falls\nquietly\n", "one line"),
        ({"type": "char_count", "max": 10}, "Jupiter", "Jupiter is the largest"),
        ({"type": "bullet_count", "exactly": 2}, "- sleep\n- food", "- sleep"),
        ({"type": "bullet_count", "exactly": 3}, "1. red\n2. green\n3. blue", "red, green, blue"),
        ({"type": "case", "case": "upper"}, "HELLO, WORLD 2!", "Hello"),
        ({"type": "case", "case": "upper"}, "ÇA VA ÉTÉ", "ça va"),
        ({"type": "case", "case": "lower"}, "autumn leaves", "Autumn"),
        ({"type": "starts_with", "text": "Certainly"}, "certainly! 4", "Yes, certainly"),
        ({"type": "ends_with", "text": "That is all."}, "Nouns name things. That is all.", "That is all. Bye"),
        (
            {"type": "contains", "words": ["morning", "cup"]},
            "A cup of coffee every Morning",
            "a cupboard in the morning",
        ),
        ({"type": "excludes", "words": ["blue"]}, "The sky is bluish grey", "Blue sky"),
        ({"type": "no_commas"}, "Bread is warm and soft", "Bread, warm"),
        ({"type": "one_of", "options": ["yes", "no"]}, "Yes.", "Yes, it is"),
        ({"type": "json", "json_type": "list", "length": 3, "items": "string"}, '["a", "b", "c"]', '["a", 2, "c"]'),
        ({"type": "json", "json_type": "object", "keys": ["name", "age"]}, '{"age": 3, "name": "x"}', '{"name": "x"}'),
        ({"type": "json", "json_type": "list", "items": "integer"}, "[2, 4]", "[2, true]"),
        ({"type": "regex", "pattern": r"OK\."}, "OK.", "OK"),
        ({"type": "quoted"}, '"A cat."', "A cat."),
    ],
)
def test_each_instruction_constraint(constraint: dict[str, Any], good: str, bad: str) -> None:
    inst = build("instructions")
    it = constraint_item(constraint)
    assert inst.check_item(it) is None
    assert inst(good, it) == 1.0
    assert inst(bad, it) == 0.0
    assert inst("", it) == 0.0 or constraint["type"] in ("excludes", "no_commas", "char_count", "line_count")


def test_instructions_all_vs_partial() -> None:
    it = constraint_item({"type": "case", "case": "upper"}, {"type": "word_count", "exactly": 2})
    assert build("instructions")("BIG WHALE", it) == 1.0
    assert build("instructions")("BIG BLUE WHALE", it) == 0.0
    assert build("instructions_partial")("BIG BLUE WHALE", it) == 0.5
    assert build("instructions_partial")(LONG, it) == 0.0


def test_instruction_constraints_are_checked_per_item() -> None:
    inst = build("instructions")
    assert inst.check_item(item())[0] == "meta.constraints"
    assert inst.check_item(constraint_item({"type": "word_count"})) == (
        "meta.constraints[0]",
        "Value error, give 'exactly', 'min' or 'max'",
    )
    field, msg = inst.check_item(
        constraint_item({"type": "case", "case": "upper"}, {"type": "word_count", "exactly": "three"})
    )
    assert field == "meta.constraints[1].exactly" and "integer" in msg
    assert inst.check_item(constraint_item({"type": "wordcount", "exactly": 3}))[0] == "meta.constraints[0]"
    assert inst.check_item(constraint_item({"type": "regex", "pattern": "("}))[0] == "meta.constraints[0]"


# --- multiple choice ----------------------------------------------------------------------------


def test_choice_accuracy() -> None:
    ca = build("choice_accuracy")
    it = item(choices=[" Paris", " Berlin"], answer=0)
    assert ca(" Paris", it) == 1.0 and ca(" Berlin", it) == 0.0 and ca("", it) == 0.0


# --- python -------------------------------------------------------------------------------------


def test_python_scorer_from_module_with_kwargs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "my_metrics_mod.py").write_text(
        textwrap.dedent("""
        def length_ok(output, item, limit=5):
            return len(output) <= limit
        def share_of_ref(output, item):
            return sum(ch in output for ch in item.reference) / len(item.reference)
        NOT_CALLABLE = 3
    """)
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    ok = make("python", ref="my_metrics_mod:length_ok", binary=True, kwargs={"limit": 3})
    assert ok.binary and ok("abc", item()) == 1.0 and ok("abcd", item()) == 0.0 and ok("", item()) == 1.0
    share = make("python", ref="my_metrics_mod:share_of_ref")
    assert not share.binary and share("ab", item("abcd")) == 0.5
    for ref, needle in [
        ("my_metrics_mod:nope", "no attribute"),
        ("my_metrics_mod:NOT_CALLABLE", "not callable"),
        ("no_such_module_xyz:f", "cannot import"),
        ("just_a_name", "should look like"),
    ]:
        with pytest.raises(ScorerParamError, match=needle) as exc:
            make("python", ref=ref)
        assert exc.value.param == "ref"
    sys.modules.pop("my_metrics_mod", None)


def test_python_scorer_from_file_relative_to_suite(tmp_path: Path) -> None:
    (tmp_path / "scoring").mkdir()
    (tmp_path / "scoring" / "custom.py").write_text(
        textwrap.dedent("""
        def polite(output, item):
            return 1.0 if "please" in output.lower() else 0.0
        def broken(output, item):
            return {"score": 1}
        def crashes(output, item):
            raise RuntimeError("boom")
        def not_binary(output, item):
            return 0.5
    """)
    )
    spec = ScorerSpec(name="python", params={"ref": "scoring/custom.py:polite", "binary": True})
    polite = build(spec, base_dir=tmp_path)
    assert polite("Please pass the salt", item()) == 1.0 and polite("", item()) == 0.0
    assert polite("ПОЖАЛУЙСТА please", item()) == 1.0
    with pytest.raises(ScorerParamError, match="needs the suite folder"):
        build(spec)
    with pytest.raises(ScorerParamError, match="not found"):
        build(ScorerSpec(name="python", params={"ref": "scoring/missing.py:f"}), base_dir=tmp_path)
    bad = build(ScorerSpec(name="python", params={"ref": "scoring/custom.py:broken"}), base_dir=tmp_path)
    with pytest.raises(UserError, match="returned {'score': 1} on item 'x-1'"):
        bad("a", item())
    crash = build(ScorerSpec(name="python", params={"ref": "scoring/custom.py:crashes"}), base_dir=tmp_path)
    with pytest.raises(UserError, match="raised RuntimeError on item 'x-1': boom"):
        crash("a", item())
    half = build(
        ScorerSpec(name="python", params={"ref": "scoring/custom.py:not_binary", "binary": True}), base_dir=tmp_path
    )
    with pytest.raises(UserError, match="declared binary"):
        half("a", item())


def test_python_scorer_file_that_fails_to_import(tmp_path: Path) -> None:
    (tmp_path / "bad.py").write_text("import no_such_package_abc\n")
    with pytest.raises(ScorerParamError, match="importing .*bad.py failed: ModuleNotFoundError"):
        build(ScorerSpec(name="python", params={"ref": "bad.py:f"}), base_dir=tmp_path)


# --- speed on long outputs ------------------------------------------------------------------------


def test_every_scorer_handles_100k_char_output_quickly() -> None:
    it = item(
        "lorem ipsum",
        meta={"constraints": [{"type": "word_count", "max": 5}], "schema": {"type": "object"}, "pattern": "lorem"},
    )
    started = time.perf_counter()
    for name in [
        "exact_match",
        "token_f1",
        "rouge_l",
        "bleu",
        "chrf",
        "json_valid",
        "json_match",
        "json_fields",
        "json_schema",
        "regex",
        "numeric",
        "instructions",
        "instructions_partial",
        "refusal",
        "complied",
    ]:
        if name == "numeric":
            value = build(name)(LONG, item(5))
        else:
            value = build(name)(LONG, it)
        assert math.isfinite(value) and 0.0 <= value <= 1.0, name
    assert time.perf_counter() - started < 15
