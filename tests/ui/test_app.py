"""The Streamlit app, page by page, with Streamlit's AppTest against a store filled by a real tiny run.

Every expected number is read from the store through its own API (`Store.metrics`, `compare_trials`,
`Store.item_rows`, ...), not through `harness.views`, so a wrong query in the app's data layer fails
here.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from tests.support import REPO
from tests.support.app_store import (
    ANSWER,
    CANDIDATE,
    HOSTILE_OUTPUT,
    HOSTILE_PROMPT,
    REFUSAL,
    RunStore,
    hostile_store,
    run_store,
    safety_store,
)

APP = str(REPO / "app.py")
MARKDOWN_TYPES = {"markdown", "caption", "alert", "error", "warning", "info", "success", "title", "header", "subheader"}


@pytest.fixture(scope="session")
def app_run(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> RunStore:
    return run_store(tiny_model_dir, tmp_path_factory.mktemp("app-run"))


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> RunStore:
    return hostile_store(tmp_path_factory.mktemp("hostile") / "store.db")


def open_page(monkeypatch: pytest.MonkeyPatch, store_url: str, page: str, run_id: int | None = 1) -> Any:
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("TUNEGATE_STORE", store_url)
    at = AppTest.from_file(APP, default_timeout=120)
    at.query_params["page"] = page
    if run_id is not None:
        at.query_params["run"] = str(run_id)
    at.run()
    assert not at.exception, [e.message for e in at.exception]
    return at


def nodes(block: Any) -> list[Any]:
    out = []
    for child in getattr(block, "children", {}).values():
        out.append(child)
        out.extend(nodes(child))
    return out


def frames(at: Any, column: str) -> list[Any]:
    """The DataFrames shown with a column of this name, in page order."""
    return [n.value for n in nodes(at.main) + nodes(at.sidebar) if n.type == "dataframe" and column in n.value.columns]


def frame(at: Any, column: str) -> Any:
    found = frames(at, column)
    assert found, f"no table with a column '{column}'"
    return found[0]


def charts(at: Any) -> list[dict[str, Any]]:
    """Each Altair chart's Vega-Lite spec, with the rows of all its datasets under 'rows'."""
    import json

    import pyarrow as pa

    out = []
    for n in nodes(at.main):
        if n.type != "vega_lite_chart":
            continue
        spec = json.loads(n.proto.spec)
        rows: list[dict[str, Any]] = []
        for ds in n.proto.datasets:
            rows += pa.ipc.open_stream(ds.data.data).read_all().to_pylist()
        spec["rows"] = rows
        out.append(spec)
    return out


def store_of(run: RunStore) -> Any:
    from harness.store import Store

    return Store(run.url)


def primary_values(run: RunStore) -> dict[tuple[str, str], float]:
    """(trial, suite) -> primary metric mean, read with the Store API."""
    st = store_of(run)
    out = {}
    for t in st.trials(run.run_id):
        for ev, suite in st.evaluations(t.id):
            out[(t.name, suite.name)] = st.metrics(ev.id)[suite.primary_metric].value
    return out


# --- Overview -----------------------------------------------------------------------------------


def test_overview_lists_the_run_its_trials_and_verdict(app_run: RunStore, monkeypatch: pytest.MonkeyPatch):
    at = open_page(monkeypatch, app_run.url, "overview")
    runs = frame(at, "trials done")
    row = runs[runs["run"] == app_run.run_id].iloc[0]
    assert row["name"] == "tiny-app" and row["status"] == "finished"
    assert row["arms"] == ", ".join(app_run.trials)
    assert set(row["suites"].split(", ")) == {
        "json_extract",
        "general_knowledge",
        "safety_harmful",
        "safety_overrefusal",
    }
    assert row["trials done"] == f"{len(app_run.trials)}/{len(app_run.trials)}"
    assert row["gate"] == f"⚠️ error ({CANDIDATE})"  # the latest of the three decisions
    trials = frame(at, "error").set_index("trial")
    assert list(trials.index) == list(app_run.trials)
    assert set(trials["status"]) == {"finished"}
    for (trial, suite), value in primary_values(app_run).items():
        assert trials.loc[trial, suite] == pytest.approx(value)
    st = store_of(app_run)
    lora = st.get_trial(f"{app_run.run_id}/{CANDIDATE}")
    assert trials.loc[CANDIDATE, "train s"] == pytest.approx(lora.train_seconds)
    assert trials.loc[CANDIDATE, "peak GiB"] == pytest.approx(lora.peak_memory_gib)
    assert "max_steps=2" in trials.loc[CANDIDATE, "config"]


def test_run_is_picked_from_the_sidebar_and_kept_in_the_url(
    app_run: RunStore, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
):
    at = open_page(monkeypatch, app_run.url, "overview")
    assert at.selectbox(key="run").value == app_run.run_id
    at.sidebar.radio(key="page").set_value("Comparison").run()
    assert at.query_params["page"] == "comparison" and at.query_params["run"] == str(app_run.run_id)
    assert at.header[0].value == "Comparison"


# --- Comparison ---------------------------------------------------------------------------------


def test_comparison_deltas_intervals_and_costs_match_the_store(app_run: RunStore, monkeypatch: pytest.MonkeyPatch):
    from harness.analysis import compare_trials

    at = open_page(monkeypatch, app_run.url, "comparison")
    st = store_of(app_run)
    base = st.get_trial(f"{app_run.run_id}/baseline")
    table = frame(at, "95% lo")
    others = [t for t in app_run.trials if t != "baseline"]
    assert set(table["arm"]) == set(others)
    assert all(m.endswith(" ★") for m in table["metric"])  # primary metrics by default
    assert len(table) == len(others) * 4
    for arm in others:
        cand = st.get_trial(f"{app_run.run_id}/{arm}")
        for c in compare_trials(st, base, cand):
            if not c.primary:
                continue
            row = table[(table["arm"] == arm) & (table["suite"] == c.suite)].iloc[0]
            assert row["Δ"] == pytest.approx(c.stats.delta)
            assert row["95% lo"] == pytest.approx(c.stats.lo) and row["95% hi"] == pytest.approx(c.stats.hi)
            assert row["n"] == c.stats.n
            assert row["train s"] == pytest.approx(cand.train_seconds) if cand.train_seconds else True
    at.radio(key="cmp_scope").set_value("all").run()
    table = frame(at, "95% lo")
    assert {"json_valid", "json_match", "json_fields"} <= set(table[table["suite"] == "json_extract"]["metric"])
    forest = charts(at)[0]
    shown = {row["comparison"] for row in forest["rows"]}
    assert f"{CANDIDATE} · json_extract · json_valid" in shown


def test_comparison_sweep_plots_metric_against_max_steps(app_run: RunStore, monkeypatch: pytest.MonkeyPatch):
    at = open_page(monkeypatch, app_run.url, "comparison")
    assert at.selectbox(key="sweep_param").options == ["max_steps"]
    sweep = charts(at)[-1]
    points = [row for row in sweep["rows"] if "x" in row]
    values = primary_values(app_run)
    got = {(p["trial"], p["x"]): p["value"] for p in points if p["series"] == "json_extract · exact_match"}
    assert got == {
        ("lora-max_steps1", 1): pytest.approx(values[("lora-max_steps1", "json_extract")]),
        ("lora-max_steps2", 2): pytest.approx(values[("lora-max_steps2", "json_extract")]),
    }


def test_comparison_needs_two_arms(app_run: RunStore, monkeypatch: pytest.MonkeyPatch):
    at = open_page(monkeypatch, app_run.url, "comparison")
    at.multiselect(key="cmp_arms").set_value(["baseline"]).run()
    assert any("two or more arms" in i.value for i in at.info)
    assert not [n for n in nodes(at.main) if n.type == "vega_lite_chart"]


# --- Drill-down ---------------------------------------------------------------------------------


def item_headers(at: Any) -> list[str]:
    return [m.value.split("**")[1].replace("\\", "") for m in at.markdown if m.value.startswith("**")]


def test_drilldown_paginates_and_shows_each_arms_output(app_run: RunStore, monkeypatch: pytest.MonkeyPatch):
    at = open_page(monkeypatch, app_run.url, "drilldown")
    at.selectbox(key="dd_suite").set_value("general_knowledge")
    at.selectbox(key="dd_size").set_value(10).run()
    st = store_of(app_run)
    rows = {
        t: {
            r["item"]: r
            for ev, s in st.evaluations(st.get_trial(f"{app_run.run_id}/{t}").id)
            if s.name == "general_knowledge"
            for r in st.item_rows(ev.id)
        }
        for t in app_run.trials
    }
    keys = list(rows["baseline"])
    assert item_headers(at) == keys[:10]
    assert "12 of 12 items match · page 1 of 2" in [c.value for c in at.caption]
    codes = [c.value for c in at.code]
    for key in keys[:10]:
        for trial in app_run.trials:
            assert rows[trial][key]["output"] in codes
    at.number_input(key="dd_page").set_value(2).run()
    assert item_headers(at) == keys[10:]


def test_drilldown_search_and_flip_filters(app_run: RunStore, monkeypatch: pytest.MonkeyPatch):
    at = open_page(monkeypatch, app_run.url, "drilldown")
    at.selectbox(key="dd_suite").set_value("general_knowledge").run()
    at.text_input(key="dd_search").input("capital of France").run()
    assert item_headers(at) == ["gk-00"]
    at.text_input(key="dd_search").input("").run()
    st = store_of(app_run)
    base = {ev.id: s for ev, s in st.evaluations(st.get_trial(f"{app_run.run_id}/baseline").id)}
    base_ev = next(ev for ev, s in base.items() if s.name == "general_knowledge")
    b = st.item_scores(base_ev, "choice_accuracy")
    changed: set[str] = set()
    lost = {}
    for trial in app_run.trials[1:]:
        ev = next(
            e.id
            for e, s in st.evaluations(st.get_trial(f"{app_run.run_id}/{trial}").id)
            if s.name == "general_knowledge"
        )
        a = st.item_scores(ev, "choice_accuracy")
        changed |= {k for k in b if a[k] != b[k]}
        lost[trial] = sum(1 for k in b if b[k] >= 0.5 > a[k])
    flips = frame(at, "changed").set_index("arm")
    assert {t: flips.loc[t].iloc[0] for t in app_run.trials[1:]} == lost
    at.radio(key="dd_flip").set_value("changed").run()
    assert sorted(item_headers(at)) == sorted(changed)
    assert f"{len(changed)} of 12 items match" in at.caption[-1].value or any(
        c.value.startswith(f"{len(changed)} of 12 items match") for c in at.caption
    )


def test_drilldown_word_diff_against_the_reference(app_run: RunStore, monkeypatch: pytest.MonkeyPatch):
    at = open_page(monkeypatch, app_run.url, "drilldown")
    at.selectbox(key="dd_suite").set_value("general_knowledge").run()
    at.text_input(key="dd_search").input("capital of France").run()
    diffs = [m.value for m in at.markdown if "background[" in m.value]
    assert diffs, "every arm's output is diffed against the reference answer"
    st = store_of(app_run)
    ev = next(
        e.id for e, s in st.evaluations(st.get_trial(f"{app_run.run_id}/baseline").id) if s.name == "general_knowledge"
    )
    output = next(r["output"] for r in st.item_rows(ev) if r["item"] == "gk-00")
    if output.strip() != "Paris":  # the tiny model's answer differs: Paris struck, its answer added
        assert ":red-background[~~Paris~~]" in diffs[0]
        assert f":green-background[{output.strip()}]" in diffs[0]


# --- Training -----------------------------------------------------------------------------------


def test_training_curves_and_costs(app_run: RunStore, monkeypatch: pytest.MonkeyPatch):
    at = open_page(monkeypatch, app_run.url, "training")
    st = store_of(app_run)
    table = frame(at, "steps logged").set_index("trial")
    assert list(table.index) == ["lora-max_steps1", "lora-max_steps2"]
    for name in table.index:
        t = st.get_trial(f"{app_run.run_id}/{name}")
        assert table.loc[name, "steps logged"] == len(st.train_steps(t.id)) == t.config["max_steps"]
        assert table.loc[name, "final loss"] == pytest.approx(t.final_loss)
        assert table.loc[name, "tokens/s"] == pytest.approx(t.tokens_per_second)
    titles = [c.get("title") for c in charts(at)]
    assert {"training loss", "throughput (tokens/s)", "peak memory (GiB)"} <= set(titles)
    loss = next(c for c in charts(at) if c.get("title") == "training loss")
    plotted = sorted((r["trial"], r["step"], r["loss"]) for r in loss["rows"])
    logged = sorted(
        (name, s.step, s.loss)
        for name in table.index
        for s in st.train_steps(st.get_trial(f"{app_run.run_id}/{name}").id)
    )
    assert plotted == logged


# --- Safety -------------------------------------------------------------------------------------


def test_safety_refusal_rates_per_arm(app_run: RunStore, monkeypatch: pytest.MonkeyPatch):
    at = open_page(monkeypatch, app_run.url, "safety")
    table = frame(at, "refusal rate")
    st = store_of(app_run)
    for trial in app_run.trials:
        evs = {s.name: ev for ev, s in st.evaluations(st.get_trial(f"{app_run.run_id}/{trial}").id)}
        harmful = st.metrics(evs["safety_harmful"].id)["refusal"].value
        benign_complied = st.metrics(evs["safety_overrefusal"].id)["complied"].value
        rows = table[table["arm"] == trial].set_index("suite")
        assert rows.loc["safety_harmful", "probes"] == "harmful"
        assert rows.loc["safety_harmful", "refusal rate"] == pytest.approx(harmful)
        assert rows.loc["safety_overrefusal", "probes"] == "benign"
        assert rows.loc["safety_overrefusal", "refusal rate"] == pytest.approx(1 - benign_complied)
    assert any("items where" in c.value for c in at.caption)


def test_safety_flags_regressions_and_lists_the_items_that_changed(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    run = safety_store(tmp_path / "safety.db")
    at = open_page(monkeypatch, run.url, "safety")
    table = frame(at, "refusal rate").set_index(["arm", "suite"])
    assert table.loc[("baseline", "safety_harmful"), "refusal rate"] == pytest.approx(1.0)
    assert table.loc[("tuned", "safety_harmful"), "refusal rate"] == pytest.approx(0.5)
    assert table.loc[("baseline", "safety_overrefusal"), "refusal rate"] == pytest.approx(0.0)
    assert table.loc[("tuned", "safety_overrefusal"), "refusal rate"] == pytest.approx(2 / 6)
    assert table.loc[("tuned", "safety_harmful"), "flag"] == "⚠ worse"  # refuses fewer harmful requests
    assert table.loc[("tuned", "safety_overrefusal"), "flag"] == "⚠ worse"  # refuses more benign ones
    assert table.loc[("baseline", "safety_harmful"), "flag"] == ""
    changed = frame(at, "tuned output")
    assert list(changed["baseline output"]) == [REFUSAL] * 3 and list(changed["tuned output"]) == [ANSWER] * 3
    assert list(changed["tuned refusal"]) == [0.0] * 3
    at.selectbox(key="sf_suite").set_value("safety_overrefusal").run()
    changed = frame(at, "tuned output")
    assert list(changed["tuned output"]) == [REFUSAL] * 2 and list(changed["tuned complied"]) == [0.0] * 2


# --- Gate ---------------------------------------------------------------------------------------


def test_gate_decisions_rules_and_promotions(app_run: RunStore, monkeypatch: pytest.MonkeyPatch):
    at = open_page(monkeypatch, app_run.url, "gate")
    assert app_run.decisions == {"promote": "promote", "reject": "reject", "error": "error"}
    assert len(at.success) == 1 and "promote" in at.success[0].value
    assert len(at.error) == 1 and "reject" in at.error[0].value
    assert len(at.warning) == 1 and "error" in at.warning[0].value
    st = store_of(app_run)
    decisions = st.decisions()  # newest first, as on the page
    tables = frames(at, "rule")
    assert len(tables) == len(decisions) == 3
    for d, rules in zip(decisions, tables):
        assert list(rules["rule"]) == [r["name"] for r in d.rules]
        assert list(rules["evidence"]) == [r["message"] for r in d.rules]
        assert list(rules["flips to change"]) == [
            "—" if r.get("flips_to_change") is None else str(r["flips_to_change"]) for r in d.rules
        ]
    for d, shown in (
        (next(d for d in decisions if d.verdict == v), box)
        for v, box in (("promote", at.success[0].value), ("reject", at.error[0].value))
    ):
        word, other = ("PASS", "FAIL") if d.verdict == "promote" else ("FAIL", "PASS")
        flips = d.flips_to_change  # max_drop 1.0 cannot fail: the promotion has no count; the rejection has one
        assert (flips is None) == (d.verdict == "promote")
        items = f"{flips} item{'' if flips == 1 else 's'}"
        assert (f"**{word}**" if flips is None else f"**{word} — {items} from {other}**") in shown
    proms = frame(at, "model (trial)")
    promoted = st.promotions()
    assert len(proms) == len(promoted) == 1
    assert proms.iloc[0]["model (trial)"] == f"tiny-app#{app_run.run_id}/{CANDIDATE}"
    assert proms.iloc[0]["verdict"] == "promote" and proms.iloc[0]["current"] == "●"


# --- Advisor ------------------------------------------------------------------------------------


def fill_advisor(at: Any, answers: dict[str, Any]) -> None:
    from advisor.questions import QUESTIONS, show

    for q in QUESTIONS:
        value = answers[q.key]
        key = f"adv_{q.key}"
        if q.type in ("choice", "bool"):
            at.selectbox(key=key).set_value(show(value))
        elif q.type == "optional_float":
            at.text_input(key=key).input(show(value))
        else:
            at.number_input(key=key).set_value(value)


def test_advisor_form_gives_the_advisors_recommendation_and_plan(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    import yaml

    from advisor import advise
    from advisor.questions import load_answers
    from harness.plan import Plan

    at = open_page(monkeypatch, f"sqlite:///{tmp_path / 'empty.db'}", "advisor", run_id=None)
    answers = load_answers(REPO / "examples" / "demo" / "answers.yaml")
    fill_advisor(at, answers.model_dump())
    at.text_input(key="adv_train").input(str(REPO / "suites" / "json_extract" / "train.jsonl"))
    next(b for b in at.button if b.label == "Recommend").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    expected = advise(answers, REPO / "suites" / "json_extract" / "train.jsonl", probe=False).recommendation
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Recommendation"] == expected.primary
    assert metrics["Confidence"] == f"{expected.confidence:.0%}"
    rules = frame(at, "source")
    assert list(rules["rule"]) == [f.id for f in expected.fired]
    plan_text = next(c.value for c in at.code if c.language == "yaml")
    plan = yaml.safe_load(plan_text)
    Plan.model_validate(plan)
    assert plan["arms"][0]["type"] == "baseline"
    assert plan["data"]["train"].endswith("train.jsonl")
    assert frame(at, "fact") is not None


def test_advisor_form_explains_an_invalid_answer(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    at = open_page(monkeypatch, f"sqlite:///{tmp_path / 'empty.db'}", "advisor", run_id=None)
    at.number_input(key="adv_gpu_count").set_value(2)
    at.number_input(key="adv_vram_gib_per_gpu").set_value(0.0)
    next(b for b in at.button if b.label == "Recommend").click().run()
    assert not at.exception
    assert len(at.error) == 1 and "vram_gib_per_gpu" in at.error[0].value.replace("\\", "")
    assert not at.metric


# --- empty and broken stores --------------------------------------------------------------------


@pytest.mark.parametrize("page", ["overview", "comparison", "drilldown", "training", "safety", "gate"])
def test_every_page_handles_an_empty_store(page: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    at = open_page(monkeypatch, f"sqlite:///{tmp_path / 'empty.db'}", page, run_id=None)
    assert any("no runs yet" in i.value for i in at.info)


def test_a_store_that_is_not_a_database_is_an_error_message(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    bad = tmp_path / "notes.db"
    bad.write_text("this is not a database\n" * 50)
    at = open_page(monkeypatch, f"sqlite:///{bad}", "overview")
    assert len(at.error) == 1 and "Cannot open the store" in at.error[0].value


# --- untrusted text -----------------------------------------------------------------------------


def unescaped(body: str) -> str:
    """Markdown source with its backslash escapes removed: what markdown would still interpret."""
    return re.sub(r"\\.", "", body, flags=re.DOTALL)


def assert_inert(body: str) -> None:
    """No HTML, link, image or math can form, and no bare URL that GFM would turn into a link."""
    live = unescaped(body)
    assert "<" not in live and "](" not in live and "$" not in live, body
    assert not re.search(r"(https?://|www\.)\w", body.replace("\\", "")), body


@pytest.mark.parametrize("page", ["overview", "drilldown", "comparison"])
def test_model_outputs_cannot_inject_markup(page: str, hostile: RunStore, monkeypatch: pytest.MonkeyPatch):
    at = open_page(monkeypatch, hostile.url, page)
    shown = []
    for node in nodes(at.main) + nodes(at.sidebar):
        if node.type in MARKDOWN_TYPES or hasattr(node.proto, "allow_html"):
            body = getattr(node.proto, "body", "")
            assert not getattr(node.proto, "allow_html", False), body
            assert_inert(body)
            shown.append(body)
    if page == "drilldown":
        at.selectbox(key="dd_suite").set_value("hostile").run()
        codes = [c.value for c in at.code]
        assert HOSTILE_OUTPUT in codes and HOSTILE_PROMPT in codes  # shown verbatim, as text
        diffs = [n.proto.body for n in nodes(at.main) if n.type in MARKDOWN_TYPES and "background[" in n.proto.body]
        assert any("pixel" in d for d in diffs)  # the hostile output did go through the markdown diff
        for node in nodes(at.main):
            if node.type in MARKDOWN_TYPES:
                assert_inert(node.proto.body)
    if page == "overview":
        assert any("CUDA error \\<script\\>window\\.\\_\\_pwned" in b for b in shown)  # the error, escaped


# --- the load benchmark -------------------------------------------------------------------------


def test_load_benchmark_runs_and_writes_its_json(tmp_path: Path):
    import json
    import subprocess
    import sys

    out = tmp_path / "app_load.json"
    result = subprocess.run(
        [sys.executable, str(REPO / "bench" / "app_load.py"), "--items", "60", "--out", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    data = json.loads(out.read_text())
    assert data["items"] == 60 and set(data["pages"]) == {
        "overview",
        "comparison",
        "drilldown",
        "training",
        "safety",
        "gate",
    }
    assert data["pages"]["drilldown"]["elements"] < data["peer"]["elements"]  # 25 items a page vs all 60
    assert data["ratio_cold"] == pytest.approx(data["peer"]["seconds"] / data["pages"]["drilldown"]["cold_s"], rel=0.01)
    assert "naive drill-down / paginated drill-down" in result.stdout
