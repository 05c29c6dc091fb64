"""The static HTML report (`tunegate report RUN --html out.html`): the app's tables and plots in one
self-contained file, checked against a store filled by a real tiny run and against hostile outputs."""

from __future__ import annotations

import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest

from tests.support import REPO
from tests.support.app_store import (
    CANDIDATE,
    HOSTILE_ERROR,
    HOSTILE_OUTPUT,
    RunStore,
    hostile_store,
    run_store,
    safety_store,
)

ALLOWED_TAGS = {
    "html",
    "head",
    "meta",
    "title",
    "style",
    "body",
    "h1",
    "h2",
    "h3",
    "p",
    "b",
    "br",
    "nav",
    "a",
    "table",
    "tr",
    "th",
    "td",
    "pre",
    "span",
    "details",
    "summary",
    "del",
    "ins",
    "svg",
    "rect",
    "line",
    "circle",
    "polyline",
    "text",
}


@pytest.fixture(scope="session")
def app_run(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> RunStore:
    return run_store(tiny_model_dir, tmp_path_factory.mktemp("app-run"))


class Tags(HTMLParser):
    """Every start tag with its attributes, the text, and the style sheets of a document."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []
        self.styles: list[str] = []
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        (self.styles if self.tags and self.tags[-1][0] == "style" and not self.styles else self.text).append(data)


def render(run: RunStore, **kw: int) -> str:
    from harness.store import Store
    from harness.ui import render as render_report

    return render_report(Store(run.url), str(run.run_id), **kw)


def assert_self_contained(doc: str) -> Tags:
    """Only known tags, no event handlers, no remote or script URLs in any attribute or style sheet,
    and a Content-Security-Policy that forbids them anyway."""
    parsed = Tags(doc)
    assert {t for t, _ in parsed.tags} <= ALLOWED_TAGS
    for tag, attrs in parsed.tags:
        assert not [a for a in attrs if a.startswith("on")], (tag, attrs)
        assert "src" not in attrs and "xlink:href" not in attrs, (tag, attrs)
        if "href" in attrs:
            assert (attrs["href"] or "").startswith("#"), attrs  # in-page anchors only
    code = " ".join(parsed.styles + [str(v) for _, attrs in parsed.tags for v in attrs.values()]).lower()
    for forbidden in ("http:", "https:", "javascript:", "url(", "@import", "//"):
        assert forbidden not in code, forbidden
    lowered = doc.lower()
    for tag in ("<script", "<link", "<img", "<iframe", "<object", "<embed", "<base"):
        assert tag not in lowered, tag
    meta = [a for t, a in parsed.tags if t == "meta" and a.get("http-equiv") == "Content-Security-Policy"]
    assert meta and "default-src 'none'" in (meta[0]["content"] or "")
    return parsed


def test_report_has_the_apps_sections_with_the_stores_numbers(app_run: RunStore):
    from harness.analysis import compare_trials
    from harness.store import Store

    doc = render(app_run)
    parsed = assert_self_contained(doc)
    assert "http:" not in doc and "https:" not in doc  # not even in text: nothing in this run names a URL
    ids = [a.get("id") for t, a in parsed.tags if t == "h2"]
    assert ids == ["trials", "comparison", "sweep", "training", "safety", "gate", "items"]
    st = Store(app_run.url)
    base = st.get_trial(f"{app_run.run_id}/baseline")
    cand = st.get_trial(f"{app_run.run_id}/{CANDIDATE}")
    text = "".join(parsed.text)
    for c in compare_trials(st, base, cand):
        assert f"{c.stats.delta:+.3f}" in text and f"[{c.stats.lo:+.3f}, {c.stats.hi:+.3f}]" in text
    svgs = [a.get("aria-label") for t, a in parsed.tags if t == "svg"]
    assert "forest plot" in svgs and "metric" in svgs  # forest and the max_steps learning curve
    assert {"training loss", "throughput (tokens/s)", "peak memory (GiB)"} <= set(svgs)
    assert f"{cand.train_seconds:.1f}" in text and f"{cand.peak_memory_gib:.2f}" in text
    for verdict in ("PROMOTE", "REJECT", "ERROR"):
        assert verdict in text
    assert f"tiny-app#{app_run.run_id}/{CANDIDATE}" in text  # promotion history
    harmful = st.metrics(next(ev.id for ev, s in st.evaluations(cand.id) if s.name == "safety_harmful"))["refusal"]
    assert "safety_harmful" in text and f"{harmful.value:.3f}" in text
    for ev, _suite in st.evaluations(base.id):  # every baseline output is in the items section
        for row in st.item_rows(ev.id):
            assert row["item"] in text


def test_report_caps_items_per_suite(app_run: RunStore):
    doc = render(app_run, max_items=3)
    assert "all items (first 3)" in doc
    assert doc.count("gk-0") < render(app_run).count("gk-0")


def test_report_escapes_hostile_outputs_and_errors(tmp_path: Path):
    run = hostile_store(tmp_path / "store.db")
    doc = render(run)
    parsed = assert_self_contained(doc)
    text = "".join(parsed.text)
    assert "<script>window.__pwned = 'script';</script>" in text  # shown as text ...
    assert "&lt;script&gt;window.__pwned = &#39;script&#39;;&lt;/script&gt;" in doc  # ... because it is escaped
    assert HOSTILE_ERROR in text
    for line in HOSTILE_OUTPUT.splitlines():
        assert line in text or all(word in text for word in line.split())


def test_report_safety_section(tmp_path: Path):
    run = safety_store(tmp_path / "safety.db")
    doc = render(run)
    text = "".join(assert_self_contained(doc).text)
    assert "safety_harmful: 3 items where tuned's refusal differs from baseline's" in text
    assert "safety_overrefusal: 2 items where tuned's complied differs from baseline's" in text
    assert text.count("⚠ worse") == 2 and "0.500" in text and "0.333" in text


def test_diff_html_marks_words_and_escapes_them():
    from harness.ui import diff_html

    html = diff_html("the cat sat", "the <b>dog</b> sat")
    assert html == "the <del>cat</del> <ins>&lt;b&gt;dog&lt;/b&gt;</ins> sat"


def test_cli_report_writes_one_file(app_run: RunStore, tmp_path: Path):
    out = tmp_path / "out" / "report.html"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "harness.cli",
            "report",
            str(app_run.run_id),
            "--html",
            str(out),
            "--store",
            app_run.url,
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert_self_contained(out.read_text())
    result = subprocess.run(
        [sys.executable, "-m", "harness.cli", "report", "no-such-run", "--html", str(out), "--store", app_run.url],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 2 and "no run 'no-such-run'" in result.stderr and "Traceback" not in result.stderr


def test_views_report_and_app_on_postgresql(pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The same queries on a real PostgreSQL server (JSON columns, ILIKE search, DISTINCT)."""
    from streamlit.testing.v1 import AppTest

    from harness.store import Store
    from harness.ui import views

    run = hostile_store(tmp_path / "suite-files.db", url=pg_url)
    st = Store(pg_url)
    assert [(r.name, r.arms) for r in views.list_runs(st)] == [("hostile", ("baseline", "tuned", "broken"))]
    assert [(s.name, s.metrics) for s in views.run_suites(st, run.run_id)] == [("hostile", ("exact_match",))]
    page = views.item_page(
        st,
        run.run_id,
        "hostile",
        ["baseline", "tuned"],
        baseline="baseline",
        metric="exact_match",
        flip="lost",
        search="HELLO",
    )
    assert [i.key for i in page.items] == ["plain-2"] and page.flip_counts["tuned"]["lost"] == 1
    assert [r.verdict for r in views.comparisons(st, run.run_id, "baseline", ["tuned"])] == ["no clear difference"]
    doc = render(run)
    assert_self_contained(doc)
    assert "plain-2" in doc and HOSTILE_ERROR in "".join(Tags(doc).text)
    monkeypatch.setenv("TUNEGATE_STORE", pg_url)
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=120)
    at.query_params["page"] = "drilldown"
    at.run()
    assert not at.exception and HOSTILE_OUTPUT in [c.value for c in at.code]
