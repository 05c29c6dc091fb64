"""The evaluate scorer: Hugging Face `evaluate` metrics written as local scripts in the test (offline), scored
per item and corpus-level, stored, compared and gated on a real SQLite store; the offline Hub-name error and the
suite version following the metric's identity; one end-to-end `tunegate eval` on a tiny model."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from harness.analysis import compare_trials
from harness.base._errors import UserError
from harness.evaluation import _suite as suite_registry
from harness.evaluation._results import ItemResult, SuiteResult
from harness.gate import ERROR, PROMOTE, REJECT, decide
from harness.scorers import _evaluate_metric as hf_metric
from harness.scorers import _registry as registry
from harness.store import Store
from tests.support import storekit as kit

pytest.importorskip("evaluate")

HEADER = """import datasets
import evaluate

FEATURES = datasets.Features({"predictions": datasets.Value("string"), "references": datasets.Value("string")})


"""
# A per-item metric: a list as long as the predictions (as bertscore gives), plus a corpus mean.
MATCH = (
    HEADER
    + """class Match(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(description="1 where the prediction equals the reference", citation="",
                                   inputs_description="", features=FEATURES)

    def _compute(self, predictions, references, weight=1.0):
        scores = [weight * float(p.strip() == r) for p, r in zip(predictions, references)]
        return {"score": scores, "mean": sum(scores) / len(scores)}
"""
)
# A metric that gives one number for whatever it is given: scored per item, compute runs on each item alone.
LENGTH = (
    HEADER
    + """class Length(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(description="mean prediction length in characters", citation="",
                                   inputs_description="", features=FEATURES)

    def _compute(self, predictions, references):
        return {"chars": sum(len(p) for p in predictions) / len(predictions)}
"""
)
# A corpus-level metric: pooled over the corpus, not a mean of item values (micro-averaged character overlap).
POOLED = (
    HEADER
    + """class Pooled(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(description="pooled character overlap", citation="", inputs_description="",
                                   features=FEATURES)

    def _compute(self, predictions, references):
        hit = sum(sum(a == b for a, b in zip(p, r)) for p, r in zip(predictions, references))
        return {"overlap": hit / sum(len(r) for r in references)}
"""
)
N = 12
REFERENCES = [f"answer {i}" for i in range(N)]


def write_suite(folder: Path, scorers: str, *, name: str = "evs") -> Path:
    """A suite folder with the three metric scripts (`match` as a folder, the others as files) and N items."""
    (folder / "metrics" / "match").mkdir(parents=True, exist_ok=True)
    (folder / "metrics" / "match" / "match.py").write_text(MATCH)
    (folder / "metrics" / "length.py").write_text(LENGTH)
    (folder / "metrics" / "pooled.py").write_text(POOLED)
    (folder / "suite.yaml").write_text(f"name: {name}\nkind: generate\nscorers:\n{scorers}")
    (folder / "items.jsonl").write_text(
        "".join(
            json.dumps({"id": f"q{i:02d}", "prompt": f"question {i}", "reference": ref}) + "\n"
            for i, ref in enumerate(REFERENCES)
        )
    )
    return folder / "suite.yaml"


def load(path: Path) -> Any:
    suite_registry._load.cache_clear()
    return suite_registry.load(str(path))


SCORERS = """\
  - evaluate: {path: metrics/match, key: score, binary: true}
  - name: evaluate
    params: {path: metrics/pooled.py, key: overlap, per_item: false}
  - evaluate: {path: metrics/length.py, key: chars, higher_is_better: false}
"""


def score(suite: Any, outputs: list[str]) -> SuiteResult:
    """What harness.evaluation.evaluate does after generation, on given outputs (no model)."""
    built = [registry.build(s, base_dir=suite.path.parent) for s in suite.spec.scorers]
    items = [ItemResult(item.id, f"prompt {item.id}", out, {}) for item, out in zip(suite.items, outputs)]
    corpus = hf_metric.score_items(built, items, suite.items)
    return SuiteResult(suite, items, 1.0, corpus=corpus)


def outputs_right(k: int) -> list[str]:
    """The first k answers right, the rest wrong (and longer)."""
    return [ref if i < k else f"not {ref}" for i, ref in enumerate(REFERENCES)]


@pytest.fixture
def suite(tmp_path: Path) -> Any:
    return load(write_suite(tmp_path / "evs", SCORERS))


def test_local_metrics_score_per_item_and_corpus_level(suite: Any) -> None:
    assert suite.scorer_names == ["match/score", "pooled/overlap", "length/chars"]
    assert suite.spec.primary == "match/score"
    result = score(suite, outputs_right(9))
    assert [r.scores["match/score"] for r in result.items] == [1.0] * 9 + [0.0] * 3  # the metric's own list
    assert [r.scores["length/chars"] for r in result.items] == [float(len(o)) for o in outputs_right(9)]  # per item
    assert all("pooled/overlap" not in r.scores for r in result.items)  # corpus-level: no item scores
    assert result.metrics["match/score"][:1] == (0.75,) and result.metrics["match/score"][2] == N
    hits = sum(sum(a == b for a, b in zip(o, r)) for o, r in zip(outputs_right(9), REFERENCES))
    assert result.metrics["pooled/overlap"] == (pytest.approx(hits / sum(map(len, REFERENCES))), 0.0, N)
    kinds = result.kinds
    assert kinds["match/score"] == registry.MetricKind(higher_is_better=True, binary=True, corpus=False)
    assert kinds["pooled/overlap"].corpus and not kinds["pooled/overlap"].binary
    assert not kinds["length/chars"].higher_is_better


def test_stored_results_mark_the_corpus_metric_and_pair_the_others(suite: Any, store: Store) -> None:
    run = kit.new_run(store)
    base = kit.add_trial(store, run, "baseline", [score(suite, outputs_right(4))], arm_type="baseline")
    cand = kit.add_trial(store, run, "lora", [score(suite, outputs_right(10))])
    ((ev, _),) = store.evaluations(cand.id)
    rows = store.metrics(ev.id)
    assert rows["pooled/overlap"].corpus is True and rows["match/score"].corpus is False
    assert store.item_scores(ev.id, "pooled/overlap") == {}
    assert len(store.item_scores(ev.id, "match/score")) == N
    by_metric = {c.metric: c for c in compare_trials(store, base, cand)}
    match = by_metric["match/score"]
    assert match.stats is not None and match.stats.delta == pytest.approx(0.5)
    assert match.stats.mcnemar_p is not None  # binary per-item scores: McNemar's test applies
    assert match.verdict == "better"
    assert by_metric["length/chars"].verdict == "better"  # shorter is better, and the tuned answers are shorter
    pooled = by_metric["pooled/overlap"]
    assert pooled.stats is None and pooled.problem is not None and "corpus-level" in pooled.problem
    from harness.store._export import results_frame

    frame = results_frame(store)
    assert frame.set_index(["trial", "metric"])["corpus"].to_dict() == {
        (t, m): m == "pooled/overlap" for t in ("baseline", "lora") for m in suite.scorer_names
    }


def test_the_gate_refuses_item_based_rules_on_a_corpus_metric(suite: Any, store: Store, tmp_path: Path) -> None:
    run = kit.new_run(store)
    kit.add_trial(store, run, "baseline", [score(suite, outputs_right(4))], arm_type="baseline")
    kit.add_trial(store, run, "lora", [score(suite, outputs_right(10))])
    refused = kit.write_policy(
        tmp_path / "refused.yaml", "rules:\n  - suite: evs\n    metric: pooled/overlap\n    max_drop: 0.01\n"
    )
    d = decide(store, refused, "exp/lora", record=False)
    assert d.exit_code == ERROR and d.verdict == "error"
    assert "corpus-level metric" in d.reason and "max_drop" in d.reason and f"{refused}:2" in d.reason
    interval = kit.write_policy(
        tmp_path / "interval.yaml",
        "rules:\n  - suite: evs\n    metric: pooled/overlap\n    min: 0.1\n    judge_on: interval\n",
    )
    assert decide(store, interval, "exp/lora", record=False).exit_code == ERROR
    # a floor or ceiling on the corpus value is judged
    value = store.metrics(store.evaluations(store.get_trial("exp/lora").id)[0][0].id)["pooled/overlap"].value
    ok = kit.write_policy(
        tmp_path / "ok.yaml", f"rules:\n  - suite: evs\n    metric: pooled/overlap\n    min: {value - 0.01}\n"
    )
    d = decide(store, ok, "exp/lora", record=False)
    assert d.exit_code == PROMOTE, d.reason
    assert d.rules[0].evidence["corpus"] is True and d.rules[0].evidence["candidate_value"] == pytest.approx(value)
    high = kit.write_policy(
        tmp_path / "high.yaml", f"rules:\n  - suite: evs\n    metric: pooled/overlap\n    min: {value + 0.01}\n"
    )
    assert decide(store, high, "exp/lora", record=False).exit_code == REJECT
    # a paired rule on the per-item metric of the same suite works as for a built-in scorer
    paired = kit.write_policy(
        tmp_path / "paired.yaml", "rules:\n  - suite: evs\n    metric: match/score\n    require_improvement: true\n"
    )
    d = decide(store, paired, "exp/lora", record=False)
    assert d.exit_code == PROMOTE, d.reason
    assert d.rules[0].evidence["mcnemar_p"] < 0.05 and d.rules[0].evidence["paired_n"] == N


def test_the_metric_identity_is_part_of_the_suite_version(tmp_path: Path) -> None:
    path = write_suite(tmp_path / "evs", SCORERS)
    first = load(path).version
    assert load(path).version == first  # the same metric, the same version
    script = path.parent / "metrics" / "match" / "match.py"
    script.write_text(MATCH.replace("p.strip() == r", "p == r"))  # the metric changed, the suite's files did not
    changed = load(path).version
    assert changed != first
    (path.parent / "metrics" / "match" / "helper.txt").write_text("a file of the metric folder")
    assert load(path).version not in (first, changed)
    script.write_text(MATCH)
    (path.parent / "metrics" / "match" / "helper.txt").unlink()
    assert load(path).version == first
    path.write_text(
        path.read_text().replace("key: score, binary: true", "key: score, binary: true, args: {weight: 1.0}")
    )
    assert load(path).version != first
    built = registry.build(load(path).spec.scorers[0], base_dir=path.parent)
    import evaluate

    assert built.fn.identity["evaluate"] == evaluate.__version__ and built.fn.identity["args"] == {"weight": 1.0}
    # a suite with only built-in scorers keeps the plain content hash (stored results stay comparable)
    plain = kit.make_suite(tmp_path / "plain", "plain", 3)
    import hashlib

    raw = plain.path.read_bytes() + b"\0" + (plain.path.parent / "items.jsonl").read_bytes()
    assert plain.version == hashlib.sha256(raw).hexdigest()[:16]


def test_a_hub_name_offline_fails_at_suite_load_with_file_line_and_field(tmp_path: Path) -> None:
    """Through the real command line: one line naming the suite file, line and field, exit 2, before any model
    is loaded (the model named does not even exist)."""
    path = write_suite(tmp_path / "hub", "  - exact_match\n  - evaluate: {name: tunegate-no-such-metric, key: f1}\n")
    res = kit.tunegate(
        "eval",
        "no-such-model",
        "--suite",
        str(path),
        "--store",
        str(tmp_path / "s.db"),
        env={"HF_EVALUATE_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "modules")},
    )
    assert res.returncode == 2, res.stdout + res.stderr
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in res.stderr, res.stderr
    assert f"{path}:5" in lines[0] and "scorers[1].evaluate.name" in lines[0]
    assert "offline" in lines[0] and "tunegate-no-such-metric" in lines[0]


@pytest.mark.parametrize(
    ("scorers", "line", "field", "message"),
    [
        ("  - evaluate: {path: metrics/nope.py, key: score}\n", 4, "scorers[0].evaluate.path", "no metric script"),
        ("  - evaluate: {path: metrics/length.py, kee: chars}\n", 4, "scorers[0].evaluate.kee", "did you mean 'key'"),
        (
            "  - evaluate: {path: metrics/length.py, name: bleu, key: x}\n",
            4,
            "scorers[0].evaluate.path",
            "exactly one of 'path'",
        ),
        (
            (
                "  - name: evaluate\n    params:\n      path: metrics/pooled.py\n      key: overlap\n      per_item: false\n"
                "      binary: true\n"
            ),
            9,
            "scorers[0].params.binary",
            "no item scores to be binary",
        ),
        (
            "  - evaluate: {path: metrics/length.py, key: chars}\n  - evaluate: {path: metrics/length.py, key: chars}\n",
            None,
            None,
            "two scorers store their scores as metric 'length/chars'",
        ),
    ],
)
def test_bad_evaluate_params_name_the_suite_line_and_field(
    tmp_path: Path, scorers: str, line: int | None, field: str | None, message: str
) -> None:
    path = write_suite(tmp_path / "bad", scorers)
    with pytest.raises(UserError) as err:
        load(path)
    assert message in err.value.message
    if line is not None:
        assert err.value.line == line and err.value.field == field and err.value.file == path.resolve()


def registry_spec(name: str, **params: Any) -> Any:
    return suite_registry.ScorerSpec(name=name, params=params)


def test_without_the_extra_the_suite_says_what_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "evaluate", None)  # `import evaluate` raises ImportError, as when not installed
    path = write_suite(tmp_path / "evs", "  - exact_match\n  - evaluate: {path: metrics/length.py, key: chars}\n")
    with pytest.raises(UserError) as err:
        load(path)
    assert "pip install 'tunegate[evaluate]'" in err.value.message and err.value.line == 5


def test_a_metric_that_misbehaves_on_items_is_named_with_the_fix(tmp_path: Path) -> None:
    suite = load(
        write_suite(
            tmp_path / "evs",
            "  - evaluate: {path: metrics/match, key: mean}\n"
            "  - evaluate: {path: metrics/pooled.py, key: nope, per_item: false}\n",
        )
    )
    first = registry.build(suite.spec.scorers[0], base_dir=suite.path.parent)
    item = suite.items[0]
    assert first(item.reference, item) == 1.0  # `mean` is one number: computed on the item alone
    missing = registry.build(suite.spec.scorers[1], base_dir=suite.path.parent)
    with pytest.raises(UserError, match=r"gave no 'nope' \(it gave: overlap\)"):
        missing.fn.corpus_score(["x"], [item])
    # a number over several items that one item alone cannot give: the error names the fix
    (suite.path.parent / "metrics" / "spread.py").write_text(
        LENGTH.replace(
            'return {"chars": sum(len(p) for p in predictions) / len(predictions)}',
            'return {"spread": max(map(len, predictions)) - min(map(len, predictions)) if len(predictions) > 1 '
            'else float("nan")}',
        )
    )
    spread = registry.build(
        registry_spec("evaluate", path="metrics/spread.py", key="spread"), base_dir=suite.path.parent
    )
    with pytest.raises(
        UserError,
        match=r"gave spread=nan on item 'q00', not a finite number; a metric defined only "
        r"over the whole suite needs per_item: false",
    ):
        spread.fn.item_scores(["a", "bb"], suite.items[:2])
    no_refs = item.model_copy(update={"reference": None})
    assert first.check_item(no_refs) == (
        "reference",
        "evaluate metric 'metrics/match' compares with references: every item needs one",
    )


# A metric with a further input besides predictions and references (as SARI takes `sources`).
EDITED = """import datasets
import evaluate


class Edited(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(description="1 where the prediction changed its source", citation="",
                                   inputs_description="", features=datasets.Features({
                                       "sources": datasets.Value("string"), "predictions": datasets.Value("string"),
                                       "references": datasets.Value("string")}))

    def _compute(self, sources, predictions, references):
        return {"edited": [float(p != s) for s, p in zip(sources, predictions)]}
"""


def test_further_compute_inputs_come_from_item_fields(tmp_path: Path) -> None:
    path = write_suite(
        tmp_path / "edits",
        "  - evaluate: {path: metrics/edited.py, key: edited, binary: true,\n"
        "               inputs: {sources: meta.source}}\n",
    )
    (path.parent / "metrics" / "edited.py").write_text(EDITED)
    items = path.parent / "items.jsonl"
    items.write_text(
        "".join(
            json.dumps({"id": f"e{i}", "prompt": f"fix: {src}", "reference": src.capitalize(), "meta": {"source": src}})
            + "\n"
            for i, src in enumerate(["abc", "def"])
        )
    )
    suite = load(path)
    result = score(suite, ["Abc", "def"])
    assert [r.scores["edited/edited"] for r in result.items] == [1.0, 0.0]
    items.write_text(items.read_text() + json.dumps({"id": "e9", "prompt": "p", "reference": "r"}) + "\n")
    with pytest.raises(UserError) as err:
        load(path)
    assert (err.value.line, err.value.field) == (3, "meta.source") and "takes 'meta.source'" in err.value.message
    path.write_text(path.read_text().replace("meta.source", "meta."))
    with pytest.raises(UserError, match="an item field: prompt, reference, id or meta.<key>"):
        load(path)


def test_tunegate_eval_scores_a_tiny_model_with_evaluate_metrics(tiny_model_dir: Path, tmp_path: Path) -> None:
    path = write_suite(tmp_path / "evs", SCORERS)
    path.write_text(path.read_text() + "generation: {max_new_tokens: 4, batch_size: 12}\n")
    store = str(tmp_path / "s.db")
    res = kit.tunegate(
        "eval",
        str(tiny_model_dir),
        "--suite",
        str(path),
        "--store",
        store,
        env={"HF_EVALUATE_OFFLINE": "1"},
        timeout=600,
    )
    assert res.returncode == 0, res.stderr
    assert "pooled/overlap=" in res.stdout and "(corpus-level, n=12)" in res.stdout
    assert "match/score=" in res.stdout and "length/chars=" in res.stdout
    st = Store(store)
    ((ev, suite),) = st.evaluations(st.trials(st.runs()[0].id)[0].id)
    assert suite.version == load(path).version
    assert st.metrics(ev.id)["pooled/overlap"].corpus is True
    rows = st.item_rows(ev.id)
    assert len(rows) == N and all(set(r["scores"]) == {"match/score", "length/chars"} for r in rows)
    assert all(r["scores"]["length/chars"] == len(r["output"]) for r in rows)
