"""Issue 18, items 5-8: names printed to a terminal drive nothing, the gate's Markdown cannot be broken out of,
credentials never reach the store or the screen, and what the store says is true (eval runs end, a failed
judge is an error, a negative interval is called negative)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from markdown_it import MarkdownIt

from harness.gate import decide
from harness.gate._decide import Decision
from harness.gate._outputs import to_markdown
from harness.gate._policy import RuleResult
from harness.redact import redact, redact_json
from harness.store import Store
from tests.support import storekit as kit

HOSTILE = "evil\x1b]0;pwned\x07\x1b[31mred\u202e[link=javascript:alert(1)]click[/link]"


# --- 5. terminal ---------------------------------------------------------------------------------------------
def test_runs_and_show_print_hostile_names_inert(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    store = Store(str(db))
    run = store.create_run(HOSTILE, {}, "h", HOSTILE, "")
    trial = store.ensure_trial(run, HOSTILE, "a", "lora", {})
    store.update_trial(trial.id, status="failed", error=HOSTILE)
    for args in (["runs"], ["show", str(run)]):
        result = kit.tunegate(*args, "--store", str(db), env={"COLUMNS": "400"})
        assert result.returncode == 0, result.stderr
        out = result.stdout
        assert "\x1b" not in out and "\x07" not in out and "\u202e" not in out  # no escape reaches the terminal
        assert "\\x1b]0;pwned\\x07" in out and "\\u202e" in out  # shown, visibly
        assert "[link=javascript:alert(1)]click[/link]" in out  # markup shown, not applied


def test_cli_error_lines_are_printable_and_redacted(tmp_path: Path) -> None:
    Store(str(tmp_path / "s.db"))
    result = kit.tunegate("show", "no\x1b[2Jrun", "--store", f"sqlite:///{tmp_path}/s.db")
    assert result.returncode == 2 and "\x1b" not in result.stderr and "no\\x1b[2Jrun" in result.stderr


# --- 6. Markdown ---------------------------------------------------------------------------------------------
def test_markdown_comment_cannot_be_broken_out_of() -> None:
    payload = "x` ![img](http://evil.example/p.png) [a](javascript:alert(1)) <img src=x onerror=alert(1)> | `"
    rule = RuleResult(payload, False, False, payload, {"delta": -0.1, "ci_low": -0.2, "ci_high": 0.0})
    d = Decision("reject", 1, f"cand{payload}", f"base``{payload}", [rule], reason=payload, policy=f"pol{payload}")
    md = to_markdown(d)
    html = MarkdownIt("commonmark").enable("table").render(md)
    assert "<img" not in html and "<a " not in html and "onerror=alert" not in html.replace("onerror=alert(1)&gt;", "")
    table_rows = [line for line in md.splitlines() if line.startswith("| ") and "---" not in line]
    assert all(line.count(" | ") == 7 for line in table_rows[1:])  # the pipe in the name made no new cell
    assert "pol" + payload.replace("|", "\\|") in md  # the policy name is shown whole, inside its code span


# --- 7. credentials --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "text, secret",
    [
        ("http://user:k3y-s3cret@judge.example/v1", "k3y-s3cret"),
        ("https://sk-abcdefghijklmnop@judge.example", "sk-abcdefghijklmnop"),
        ("401: invalid Authorization: Bearer abc.DEF-123_xyz", "abc.DEF-123_xyz"),
        ('{"error": "bad api_key=zz99zz99zz"}', "zz99zz99zz"),
        ("key sk-proj-AbCdEf1234567890 rejected", "AbCdEf1234567890"),
        ("token hf_abcdefghijklmnopqrstuv", "hf_abcdefghijklmnopqrstuv"),
    ],
)
def test_redact(text: str, secret: str) -> None:
    assert secret not in redact(text) and "***" in redact(text)


def test_redact_configured_key_and_leaves_plain_text(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TUNEGATE_JUDGE_API_KEY", "plainkeyvalue42")
    assert redact("the server said: plainkeyvalue42 is not valid") == "the server said: *** is not valid"
    plain = "Score: 4. The answer names Paris; 12 tokens used."
    assert redact(plain) == plain
    assert redact_json({"base_url": "http://u:p4ss@h/v1", "n": 3}) == {"base_url": "http://***@h/v1", "n": 3}


def test_judge_calls_are_stored_without_credentials(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TUNEGATE_JUDGE_API_KEY", "echoed-key-123456")
    store.record_judge_call(
        "k",
        "m",
        {"base_url": "http://user:url-key-999@judge/v1", "messages": []},
        None,
        "failed",
        error="HTTP 401: key echoed-key-123456 is wrong",
    )
    [call] = store.judge_calls()
    stored = json.dumps(call.request) + (call.error or "")
    assert "url-key-999" not in stored and "echoed-key-123456" not in stored and "judge/v1" in stored


# --- 8. state ----------------------------------------------------------------------------------------------------
def test_eval_whose_every_judge_call_failed_exits_non_zero(tmp_path: Path, tiny_model_dir: Path) -> None:
    suite = tmp_path / "judged"
    suite.mkdir()
    (suite / "items.jsonl").write_text('{"id": "a", "prompt": "2+2?", "reference": "4"}\n')
    (suite / "suite.yaml").write_text(
        "name: judged\ngeneration: {max_new_tokens: 2, batch_size: 1}\nscorers:\n  - name: judge_rubric\n"
        "    params:\n      rubric: correct\n"
        "      judge: {base_url: 'http://127.0.0.1:9/v1', model: m, retries: 0, timeout_s: 2}\n"
    )
    db = tmp_path / "s.db"
    result = kit.tunegate("eval", str(tiny_model_dir), "--suite", str(suite), "--store", str(db), timeout=300)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "no item got a 'judge_rubric' score" in result.stderr and "judge failed" in result.stderr
    store = Store(str(db))
    [run] = store.runs()
    assert run.status == "failed"  # not "running" forever
    [call] = store.judge_calls()
    assert call.status == "failed"


def test_a_successful_eval_run_is_finished(tmp_path: Path, tiny_model_dir: Path) -> None:
    from tests.support.tiny_plans import write_suites

    suites = write_suites(tmp_path, items=2)
    db = tmp_path / "s.db"
    result = kit.tunegate(
        "eval", str(tiny_model_dir), "--suite", str(suites / "tiny_mc"), "--store", str(db), timeout=300
    )
    assert result.returncode == 0, result.stderr
    [run] = Store(str(db)).runs()
    assert run.status == "finished" and run.finished_at


def test_interval_wholly_below_zero_is_called_negative(store: Store, tmp_path: Path) -> None:
    n = 40
    suite = kit.make_suite(tmp_path / "suites", "task", n)
    run = kit.new_run(store, "exp")
    kit.add_trial(store, run, "baseline", [kit.suite_result(suite, kit.ones(n))], arm_type="baseline")
    kit.add_trial(store, run, "lora", [kit.suite_result(suite, kit.ones(n, range(8)))])
    policy = kit.write_policy(
        tmp_path / "gate.yaml", "rules:\n  - {suite: task, metric: exact_match, require_improvement: true}\n"
    )
    d = decide(store, policy, "exp/lora")
    [rule] = d.rules
    assert d.exit_code == 1 and rule.evidence["ci_high"] < 0
    assert "the change is negative" in rule.message and "does not exclude 0" not in rule.message
