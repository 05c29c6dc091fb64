"""LLM-as-judge against a real OpenAI-compatible server on 127.0.0.1 (tests/support/servers/openai_compat.py)
that runs the tiny HF model greedily, and against the same model as a local judge.

The random model never follows a rubric, so the real-model tests check the whole path and that an
unreadable answer is recorded as a failure with its raw text. Forced completions (a request header
the server honours) make parsing, order swapping and failure handling deterministic."""

from __future__ import annotations

import math
import textwrap
from pathlib import Path

import pytest
from sqlalchemy import select

from harness import scorers as J
from harness.base import UserError
from harness.evaluation import _suite as suites
from harness.store import Score
from tests.support.servers.openai_compat import FORCE_HEADER, ChatServer

RUBRIC = "5: correct and complete. 3: partly correct. 1: wrong or off-topic."
CASE = J.RubricCase("q1", "What is the capital of France?", "Paris.", "Paris")


@pytest.fixture(scope="module")
def chat_server(tiny_model_dir: Path):
    with ChatServer(tiny_model_dir, api_key="sk-test-judge") as server:
        yield server


@pytest.fixture
def server(chat_server: ChatServer, monkeypatch: pytest.MonkeyPatch) -> ChatServer:
    chat_server.reset()
    J.clear_memory_cache()
    monkeypatch.setenv(J.ENV_BASE_URL, chat_server.url)
    monkeypatch.setenv(J.ENV_MODEL, "tiny-judge")
    monkeypatch.setenv(J.ENV_API_KEY, "sk-test-judge")
    for var in ("LANGFUSE_PUBLIC_KEY", "LANGFUSE_SECRET_KEY"):
        monkeypatch.delenv(var, raising=False)
    return chat_server


def forced(text: str, **kw) -> J.JudgeConfig:
    return J.JudgeConfig(headers={FORCE_HEADER: text.replace("\n", "\\n")}, backoff_s=0.01, **kw)


def test_rubric_with_the_real_model_end_to_end(server: ChatServer, store) -> None:
    judge = J.Judge(J.JudgeConfig(max_tokens=24), store=store)
    [verdict] = judge.rubric(RUBRIC, [CASE])
    [req] = server.requests
    assert req.source == "model" and req.status == 200
    assert req.headers["Authorization"] == "Bearer sk-test-judge"  # the key came from the environment
    assert req.body["model"] == "tiny-judge" and req.body["temperature"] == 0 and req.body["max_tokens"] == 24
    user = req.body["messages"][-1]["content"]
    assert RUBRIC in user and "[Response]\nParis.\n" in user and "[Reference answer]\nParis\n" in user
    assert verdict.call.text == req.content and not verdict.call.cached  # the model's own words, kept raw
    try:
        expected = J.parse_score(req.content)[0]
    except J.VerdictError:
        expected = None
    assert verdict.score == expected
    [row] = store.judge_calls(key=verdict.call.key)
    assert row.response == req.content and row.model == "tiny-judge"
    assert row.request["messages"] == req.body["messages"] and "sk-test-judge" not in str(row.request)
    if expected is None:  # what a random model does: a failure with its text, never a score
        assert verdict.call.status == row.status == "failed" and "no score" in row.error
        assert verdict.detail.startswith("judge failed: no score") and req.content[:20] in verdict.detail


def test_local_model_judge(tiny_model_dir: Path, store) -> None:
    J.clear_memory_cache()
    judge = J.Judge(J.JudgeConfig(backend="local", model=str(tiny_model_dir), max_tokens=12), store=store)
    verdicts = judge.rubric(RUBRIC, [CASE, J.RubricCase("q2", "2+2?", "4")])
    assert len(verdicts) == 2
    for v in verdicts:
        assert v.call.text is not None and not v.call.cached
        assert (v.score is None) == (v.call.status == "failed")
    assert [r.status for r in store.judge_calls()] == [v.call.status for v in verdicts]


def test_rubric_score_and_reason_parsed(server: ChatServer) -> None:
    judge = J.Judge(forced("Reason: Correct and complete.\nScore: 4"))
    [v] = judge.rubric(RUBRIC, [CASE])
    assert (v.score, v.reason, v.call.status) == (4, "Correct and complete.", "ok")
    assert server.requests[0].source == "forced"


def test_identical_calls_are_cached(server: ChatServer, store) -> None:
    config = forced("Reason: fine\nScore: 5")
    first = J.Judge(config, store=store).rubric(RUBRIC, [CASE, CASE])  # the same request twice: sent once
    assert server.count == 1 and [v.score for v in first] == [5, 5]
    again = J.Judge(config, store=store).rubric(RUBRIC, [CASE])
    assert server.count == 1 and again[0].call.cached and again[0].score == 5
    J.clear_memory_cache()  # a new process: the store still has it
    from_store = J.Judge(config, store=store).rubric(RUBRIC, [CASE])
    assert server.count == 1 and from_store[0].call.cached and from_store[0].reason == "fine"
    J.clear_memory_cache()
    J.Judge(config).rubric(RUBRIC, [CASE])  # no store, no memory: asked again
    assert server.count == 2
    other = J.Judge(config, store=store).rubric(RUBRIC, [J.RubricCase("q1", CASE.question, "Lyon.", "Paris")])
    assert server.count == 3 and not other[0].call.cached  # a different response is a different request
    assert len(store.judge_calls()) == 2  # one row per request actually sent


def test_retries_5xx_with_exponential_backoff(server: ChatServer, store) -> None:
    server.fail_next.extend([503, 503])
    config = forced("Score: 3", retries=4).resolved()
    sleeps: list[float] = []
    judge = J.Judge(config, backend=J.OpenAIBackend(config, sleep=sleeps.append), store=store)
    [v] = judge.rubric(RUBRIC, [CASE])
    assert server.count == 3 and [r.status for r in server.requests] == [503, 503, 200]
    assert v.score == 3 and v.call.status == "ok"
    assert sleeps == [0.01, 0.02]
    assert [r.status for r in store.judge_calls()] == ["ok"]


def test_429_honours_retry_after(server: ChatServer) -> None:
    server.fail_next.append((429, 0.05))
    config = forced("Score: 2").resolved()
    sleeps: list[float] = []
    [v] = J.Judge(config, backend=J.OpenAIBackend(config, sleep=sleeps.append)).rubric(RUBRIC, [CASE])
    assert v.score == 2 and server.count == 2 and sleeps == [0.05]


def test_timeout_is_retried(server: ChatServer) -> None:
    server.delay_next.append(1.5)
    [v] = J.Judge(forced("Score: 5", timeout_s=0.4)).rubric(RUBRIC, [CASE])
    assert v.score == 5 and server.count == 2


def test_a_failing_endpoint_is_recorded_as_failed_never_as_a_score(server: ChatServer, store) -> None:
    server.always_status = 500
    judge = J.Judge(forced("Score: 5", retries=2), store=store)
    [v] = judge.rubric(RUBRIC, [CASE])
    assert server.count == 3
    assert v.score is None and v.call.status == "failed" and v.call.text is None
    assert "HTTP 500" in v.call.error and "after 3 attempts" in v.call.error
    [row] = store.judge_calls()
    assert (row.status, row.response) == ("failed", None) and "HTTP 500" in row.error
    judge.rubric(RUBRIC, [CASE])  # failures are not cached: asked again
    assert server.count == 6 and len(store.judge_calls()) == 2


def test_client_errors_are_not_retried(server: ChatServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(J.ENV_API_KEY, "wrong-key")
    [v] = J.Judge(forced("Score: 5")).rubric(RUBRIC, [CASE])
    assert server.count == 1 and v.score is None and "HTTP 401" in v.call.error


def test_pairwise_asks_both_orders_and_detects_position_bias(server: ChatServer) -> None:
    cases = [J.PairCase("c1", "Capital of France?", "Paris", "Lyon"), J.PairCase("c2", "2+2?", "four", "five")]
    verdicts, summary = J.compare_pairwise(J.Judge(forced("Reason: the first one.\nWinner: 1")), "Correctness.", cases)
    assert server.count == 4
    prompts = [r.body["messages"][-1]["content"] for r in server.requests]  # sent concurrently: any order
    for c in cases:
        for first, second in ((c.a, c.b), (c.b, c.a)):
            assert sum(f"[Response 1]\n{first}\n" in p and f"[Response 2]\n{second}\n" in p for p in prompts) == 1
    for v in verdicts:  # always "the first one": A when A is first, B when B is first
        assert (v.first, v.second, v.consistent, v.outcome) == ("a", "b", False, "tie")
    assert (summary.judged, summary.ties, summary.inconsistent) == (2, 2, 2)
    assert summary.position_consistency == 0.0 and summary.first_position_rate == 1.0
    assert summary.win_rate_b == 0.5 and math.isnan(summary.decisive_rate_b)

    server.reset()
    J.clear_memory_cache()
    verdicts, summary = J.compare_pairwise(J.Judge(forced("Winner: tie")), "Correctness.", cases)
    assert all(v.consistent and v.outcome == "tie" for v in verdicts)
    assert summary.position_consistency == 1.0 and summary.ties == 2


def test_pairwise_failure_leaves_the_case_out(server: ChatServer) -> None:
    server.fail_next.extend([500])  # the first request (c1, A shown first); one at a time
    verdicts, summary = J.compare_pairwise(
        J.Judge(forced("Winner: 2", retries=0, concurrency=1)),
        "c",
        [J.PairCase("c1", "q", "x", "y"), J.PairCase("c2", "q", "x2", "y2")],
    )
    assert verdicts[0].failed and verdicts[0].outcome is None and verdicts[0].second == "a"
    assert (summary.n, summary.judged, summary.failed) == (2, 1, 1)


def _verdict(first: str | None, second: str | None) -> J.PairVerdict:
    call = J.Call("k", "ok", "", None, False)
    return J.PairVerdict("i", first, second, (call, call))


def test_pairwise_summary_statistics() -> None:
    verdicts = [_verdict("b", "b")] * 8 + [_verdict("a", "a")] * 2 + [_verdict("a", "b")] * 2 + [_verdict(None, "a")]
    s = J.summarize_pairwise(verdicts)
    assert (s.n, s.judged, s.failed, s.b_wins, s.a_wins, s.ties, s.inconsistent) == (13, 12, 1, 8, 2, 2, 2)
    assert s.position_consistency == pytest.approx(10 / 12)
    assert s.win_rate_b == pytest.approx(9 / 12) and s.win_rate_b_lo < 9 / 12 < s.win_rate_b_hi
    assert 0.45 < s.win_rate_b_lo and s.win_rate_b_hi <= 1.0
    assert s.decisive_rate_b == 0.8
    assert (s.decisive_lo, s.decisive_hi) == pytest.approx((0.4902, 0.9433), abs=1e-4)  # Wilson, 8 of 10
    assert s.first_position_rate == pytest.approx(14 / 24)  # (b,b): 1 of 2 firsts; (a,a): 1; (a,b): 2


@pytest.mark.parametrize(
    "text, score",
    [
        ("Reason: good.\nScore: 4", 4),
        ("**Score:** 5/5", 5),
        ("score = 2", 2),
        ("Rating: 3 out of 5", 3),
        ("3", 3),
        ("Score: 1 ... on reflection, Score: 2", 2),
        ("Score: 10", None),
        ("Score: 0", None),
        ("I think it is fine", None),
        ("", None),
        ("Score: 4.5", None),
    ],
)
def test_parse_score(text: str, score: int | None) -> None:
    if score is None:
        with pytest.raises(J.VerdictError):
            J.parse_score(text)
    else:
        assert J.parse_score(text)[0] == score


@pytest.mark.parametrize(
    "text, winner",
    [
        ("Reason: x\nWinner: 1", "1"),
        ("Winner: Response 2", "2"),
        ("winner: TIE", "tie"),
        ("Verdict: 2", "2"),
        ("Response 1 is better", None),
        ("Winner: 3", None),
    ],
)
def test_parse_winner(text: str, winner: str | None) -> None:
    if winner is None:
        with pytest.raises(J.VerdictError):
            J.parse_winner(text)
    else:
        assert J.parse_winner(text) == winner


def _judge_suite(tmp_path: Path, judge_yaml: str) -> Path:
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "items.jsonl").write_text(
        '{"id": "a", "prompt": "Capital of France?", "reference": "Paris"}\n'
        '{"id": "b", "prompt": "2+2?", "reference": "4"}\n'
    )
    path = tmp_path / "suite.yaml"
    path.write_text(
        textwrap.dedent(f"""\
        name: judged
        kind: generate
        generation: {{max_new_tokens: 4, batch_size: 2}}
        scorers:
          - exact_match
          - name: judge_rubric
            params:
              rubric: "{RUBRIC}"
              judge: {judge_yaml}
        primary: judge_rubric
        """)
    )
    return path


def test_judge_scorer_in_a_suite(server: ChatServer, tiny_model_dir: Path, tmp_path: Path, store) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from harness.evaluation import evaluate

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    force = f'{{headers: {{{FORCE_HEADER}: "Reason: ok\\\\nScore: 4"}}}}'  # the server turns the header's \\n into a newline
    suite = suites.load(str(_judge_suite(tmp_path / "ok", force)))
    with J.using_store(store):
        result = evaluate(model, tok, suite)
    assert server.count == 2  # one judge request per item
    assert [r.scores["judge_rubric"] for r in result.items] == [4.0, 4.0]
    assert [r.details["judge_rubric"] for r in result.items] == ["ok", "ok"]
    assert result.metrics["judge_rubric"] == (4.0, 0.0, 2)
    assert len(store.judge_calls()) == 2
    run = store.create_run("j", {}, "h", "tiny", "")
    trial = store.ensure_trial(run, "base", "baseline", "baseline", {})
    ev = store.save_evaluation(trial.id, result)
    with store.reading() as s:  # the reasons are stored with the scores
        rows = s.execute(
            select(Score.value, Score.detail).where(Score.evaluation_id == ev, Score.metric == "judge_rubric")
        ).all()
    assert sorted(rows) == [(4.0, "ok"), (4.0, "ok")]

    server.always_status = 500
    suite = suites.load(str(_judge_suite(tmp_path / "bad", "{retries: 0}")))
    result = evaluate(model, tok, suite)
    assert [r.scores["judge_rubric"] for r in result.items] == [None, None]
    assert all(r.details["judge_rubric"].startswith("judge failed: HTTP 500") for r in result.items)
    assert "judge_rubric" not in result.metrics and "exact_match" in result.metrics  # never a zero
    ev = store.save_evaluation(trial.id, result)
    assert store.item_scores(ev, "judge_rubric") == {"a": None, "b": None}


def test_judge_suite_errors_name_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(J.ENV_BASE_URL, raising=False)
    path = _judge_suite(tmp_path, "{}")
    with pytest.raises(UserError, match=J.ENV_BASE_URL) as err:
        suites.load(str(path))
    assert Path(err.value.file) == path and err.value.line is not None
    monkeypatch.setenv(J.ENV_BASE_URL, "http://127.0.0.1:9/v1")
    monkeypatch.setenv(J.ENV_MODEL, "m")
    path.write_text(path.read_text().replace("judge: {}", "judge: {backend: remote}"))
    suites._load.cache_clear()
    with pytest.raises(UserError) as err:
        suites.load(str(path))
    assert Path(err.value.file) == path and "judge" in str(err.value)


def test_compare_stored_evaluations(server: ChatServer, store) -> None:
    from harness.evaluation import ItemResult, SuiteResult

    suite = suites.load("json_extract")
    items = suite.items[:3]
    small = suite.model_copy(update={"items": items})
    run = store.create_run("p", {}, "h", "tiny", "")
    evs = []
    for name, suffix in (("base", "-A"), ("cand", "-B")):
        trial = store.ensure_trial(run, name, name, "baseline", {})
        res = SuiteResult(
            small, [ItemResult(i.id, "prompt", i.id + suffix, {m: 0.0 for m in small.scorer_names}) for i in items], 1.0
        )
        evs.append(store.save_evaluation(trial.id, res))
    verdicts, summary = J.compare_evaluations(store, J.Judge(forced("Winner: tie")), "Which is right?", *evs)
    assert [v.item_id for v in verdicts] == [i.id for i in items] and summary.ties == 3
    prompts = [r.body["messages"][-1]["content"] for r in server.requests]  # sent concurrently: any order
    assert len(prompts) == 6
    for item in items:  # the stored outputs, both orders, A = baseline
        for first, second in (("A", "B"), ("B", "A")):
            [prompt] = [p for p in prompts if f"[Response 1]\n{item.id}-{first}\n" in p]
            assert f"[Response 2]\n{item.id}-{second}\n" in prompt
            assert J.request_text({"prompt": item.prompt}) in prompt
