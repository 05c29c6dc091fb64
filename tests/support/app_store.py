"""Stores for the app, browser and report tests.

`run_store()` fills a real SQLite store by a real run: `harness.runner.Runner` on the tiny random
Llama (conftest's `tiny_model_dir`) with a baseline, a prompt arm and a LoRA arm swept over
max_steps 1 and 2 (a learning curve), scored on the repository's json_extract, general_knowledge and
two safety suites, then judged by three gate policies (promote, reject, error). The suites are
the shipped ones cut to their first items and shorter generations, so the whole build stays well
under a minute on two CPU cores. It is built once per test session and shared by every module.

`hostile_store()` holds outputs, prompts and an error message written to attack a renderer
(script tags, event handlers, markdown images and links, colour directives, math) through the
store's own API, with no model.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path

import yaml

from tests.support import REPO

SUITE_CUTS = {"json_extract": 8, "general_knowledge": 12, "safety_harmful": 4, "safety_overrefusal": 4}
MAX_NEW_TOKENS = 16
SWEEP = [1, 2]
CANDIDATE = "lora-max_steps2"

PAYLOAD_SCRIPT = "<script>window.__pwned = 'script';</script>"
PAYLOAD_IMG = "<img src=x onerror=\"window.__pwned = 'img'\">"
PAYLOAD_MD_IMAGE = "![tracker](http://127.0.0.1:9/pixel.png)"
PAYLOAD_MD_LINK = "[click me](javascript:window.__pwned='link')"
PAYLOAD_DIRECTIVE = ":red-background[not a colour] $x^2$ **not bold**"
HOSTILE_OUTPUT = f"{PAYLOAD_SCRIPT}\n{PAYLOAD_IMG}\n{PAYLOAD_MD_IMAGE}\n{PAYLOAD_MD_LINK}\n{PAYLOAD_DIRECTIVE}"
HOSTILE_PROMPT = 'Summarise: <b onmouseover="window.__pwned=\'prompt\'">bold</b> <iframe src="about:blank"></iframe>'
HOSTILE_ERROR = "CUDA error <script>window.__pwned='error'</script>"


@dataclass(frozen=True)
class RunStore:
    url: str  # SQLAlchemy URL of the store
    run_id: int
    trials: tuple[str, ...]
    decisions: dict[str, str]  # policy name -> verdict
    work: Path


_BUILT: dict[str, RunStore] = {}


def trimmed_suite(name: str, dest: Path, n_items: int) -> Path:
    """A copy of a shipped suite with its first `n_items` items and short generations."""
    src = REPO / "suites" / name
    spec = yaml.safe_load((src / "suite.yaml").read_text())
    spec.setdefault("generation", {})["max_new_tokens"] = MAX_NEW_TOKENS
    folder = dest / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "suite.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    lines = (src / spec.get("items", "items.jsonl")).read_text().splitlines()
    (folder / spec.get("items", "items.jsonl")).write_text("\n".join(lines[:n_items]) + "\n")
    return folder


def write_policies(folder: Path) -> dict[str, Path]:
    policies = {
        # retention only, with a generous allowance: the tiny model passes it
        "promote": {
            "name": "retention",
            "rules": [{"suite": "general_knowledge", "metric": "choice_accuracy", "max_drop": 1.0, "min_items": 5}],
        },
        # a real quality bar: a random model cannot reach it
        "reject": {
            "name": "quality-bar",
            "rules": [
                {
                    "suite": "json_extract",
                    "metric": "exact_match",
                    "min": 0.6,
                    "require_improvement": True,
                    "min_items": 5,
                },
                {"suite": "general_knowledge", "metric": "choice_accuracy", "max_drop": 1.0, "min_items": 5},
            ],
        },
        # evidence that does not exist: an error, never a promotion
        "error": {"name": "missing-suite", "rules": [{"suite": "no_such_suite", "metric": "exact_match", "min": 0.5}]},
    }
    out = {}
    for name, policy in policies.items():
        out[name] = folder / f"{name}.yaml"
        out[name].write_text(yaml.safe_dump(policy, sort_keys=False))
    return out


def run_store(model_dir: Path, work: Path) -> RunStore:
    """The tiny real run (built once per session)."""
    if "run" in _BUILT:
        return _BUILT["run"]
    from rich.console import Console

    from harness.gate import decide
    from harness.run import Runner
    from harness.store import Store

    suites = [trimmed_suite(name, work / "suites", n) for name, n in SUITE_CUTS.items()]
    plan = {
        "name": "tiny-app",
        "model": str(model_dir),
        "data": {"train": str(REPO / "suites" / "json_extract" / "train.jsonl")},
        "arms": [
            {"name": "baseline", "type": "baseline"},
            {"name": "prompt", "type": "prompt", "k_shot": 1, "system": "Answer with compact JSON."},
            {
                "name": "lora",
                "type": "lora",
                "r": 4,
                "alpha": 8,
                "batch_size": 2,
                "lr": 1e-3,
                "max_length": 128,
                "max_steps": 1,
            },
        ],
        "sweep": {"arm": "lora", "params": {"max_steps": SWEEP}},
        "suites": [str(s) for s in suites],
    }
    plan_path = work / "plan.yaml"
    plan_path.write_text(yaml.safe_dump(plan, sort_keys=False))
    path = work / "store.db"
    store = Store(str(path))
    outcome = Runner(store, Console(file=io.StringIO(), width=120), runs_dir=work / "runs").run(plan_path)
    assert not outcome.failed, outcome.failed
    decisions = {}
    for name, policy in write_policies(work).items():
        decisions[name] = decide(store, policy, f"{outcome.run_id}/{CANDIDATE}").verdict
    trials = tuple(t.name for t in store.trials(outcome.run_id))
    store.dispose()
    _BUILT["run"] = RunStore(f"sqlite:///{path}", outcome.run_id, trials, decisions, work)
    return _BUILT["run"]


def hostile_store(path: Path, url: str | None = None) -> RunStore:
    """A run whose outputs, prompt and error text try to inject HTML, scripts and markdown; in a
    SQLite file at `path`, or in the store at `url` (its suite files go next to `path`)."""
    from harness.evaluation import ItemResult, SuiteResult, load
    from harness.store import Store

    suite_dir = path.parent / "hostile-suite"
    suite_dir.mkdir(parents=True, exist_ok=True)
    (suite_dir / "suite.yaml").write_text(
        yaml.safe_dump({"name": "hostile", "kind": "generate", "category": "task", "scorers": ["exact_match"]})
    )
    items = [
        {"id": "evil-1", "prompt": HOSTILE_PROMPT, "reference": PAYLOAD_SCRIPT},
        {"id": "plain-2", "prompt": "Say hello.", "reference": "hello"},
    ]
    (suite_dir / "items.jsonl").write_text("".join(json.dumps(i) + "\n" for i in items))
    suite = load(str(suite_dir))
    url = url or f"sqlite:///{path}"
    store = Store(url)
    run_id = store.create_run("hostile", {"suites": ["hostile"]}, "0" * 16, "tiny-model", str(path.parent))
    outputs = {
        "baseline": {"evil-1": "hello", "plain-2": "hello"},
        "tuned": {"evil-1": HOSTILE_OUTPUT, "plain-2": "hello " + PAYLOAD_SCRIPT},
    }
    for name, by_item in outputs.items():
        trial = store.ensure_trial(run_id, name, name, "baseline" if name == "baseline" else "prompt", {})
        results = [
            ItemResult(
                item.id,
                item.prompt or "",
                by_item[item.id],
                {"exact_match": float(by_item[item.id].strip() == str(item.reference).strip())},
                {"exact_match": "judge reason: " + PAYLOAD_IMG},
            )
            for item in suite.items
        ]
        store.save_evaluation(trial.id, SuiteResult(suite, results, 0.1))
        store.update_trial(trial.id, status="finished")
    broken = store.ensure_trial(run_id, "broken", "broken", "lora", {})
    store.update_trial(broken.id, status="failed", error=HOSTILE_ERROR)
    store.finish_run(run_id, "failed")
    trials = tuple(t.name for t in store.trials(run_id))
    store.dispose()
    return RunStore(url, run_id, trials, {}, path.parent)


REFUSAL = "I'm sorry, but I can't help with that."
ANSWER = "Sure. Start by reading the documentation, then try it on a small example."


def safety_store(path: Path) -> RunStore:
    """Two arms on the shipped safety suites (first 6 items each), scored by the real refusal scorers:
    the baseline refuses every harmful request and answers every benign one; `tuned` answers the
    last 3 harmful requests and refuses the first 2 benign ones."""
    from harness.evaluation import ItemResult, SuiteResult, load
    from harness.scorers import build
    from harness.store import Store

    store = Store(str(path))
    run_id = store.create_run(
        "safety", {"suites": ["safety_harmful", "safety_overrefusal"]}, "1" * 16, "tiny-model", str(path.parent)
    )
    folders = {
        name: trimmed_suite(name, path.parent / "suites", 6) for name in ("safety_harmful", "safety_overrefusal")
    }
    for arm in ("baseline", "tuned"):
        trial = store.ensure_trial(run_id, arm, arm, "baseline" if arm == "baseline" else "lora", {})
        for name, folder in folders.items():
            suite = load(str(folder))
            scorers = [build(s) for s in suite.spec.scorers]
            results = []
            for i, item in enumerate(suite.items):
                refuses = (
                    (name == "safety_harmful") if arm == "baseline" else (i < 3 if name == "safety_harmful" else i < 2)
                )
                out = REFUSAL if refuses else ANSWER
                results.append(ItemResult(item.id, item.prompt or "", out, {s.name: s(out, item) for s in scorers}))
            store.save_evaluation(trial.id, SuiteResult(suite, results, 0.1))
        store.update_trial(trial.id, status="finished")
    store.finish_run(run_id, "finished")
    store.dispose()
    return RunStore(f"sqlite:///{path}", run_id, ("baseline", "tuned"), {}, path.parent)
