"""lm-eval suites (`kind: lm_eval`) on the tiny random model, offline: the shipped HellaSwag-style
log-likelihood task and short-answer generation task, a user task folder, the store and pairing.

Scores are near chance on a random model; what is checked is structure, counts, that every metric
is lm-eval's own aggregate and stderr, and that our per-item values reproduce it."""

from __future__ import annotations

import json
import math
import shutil
import textwrap
from pathlib import Path

import pytest

from harness.base import UserError, mean_stderr
from harness.evaluation import LOCAL_TASKS
from harness.evaluation import _suite as suites

HS_IDS = [f"hs-{i:02d}" for i in range(20)]


def write_suite(folder: Path, body: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "suite.yaml"
    path.write_text(textwrap.dedent(body))
    return path


@pytest.fixture(scope="module")
def model_tok(tiny_model_dir: Path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval(), AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.fixture(scope="module")
def hellaswag_suite(tmp_path_factory: pytest.TempPathFactory) -> suites.Suite:
    path = write_suite(
        tmp_path_factory.mktemp("hs"),
        """\
        name: hs_mini
        kind: lm_eval
        category: benchmark
        lm_eval:
          tasks: [tunegate_hellaswag_mini]
          limit: 8
          batch_size: 8
        """,
    )
    return suites.load(str(path))


@pytest.fixture(scope="module")
def hellaswag_result(model_tok, hellaswag_suite, tmp_path_factory):
    import os

    from harness.evaluation import evaluate

    here = os.getcwd()
    os.chdir(tmp_path_factory.mktemp("elsewhere"))  # data paths resolve against the task file, not the cwd
    try:
        return evaluate(*model_tok, hellaswag_suite)
    finally:
        os.chdir(here)


def test_loglikelihood_task_items_and_metrics(hellaswag_result) -> None:
    r = hellaswag_result
    assert [i.item_id for i in r.items] == HS_IDS[:8]  # the documents' own id field
    assert [i.id for i in r.suite.items] == HS_IDS[:8]  # the suite now carries lm-eval's documents
    assert set(r.metrics) == {"acc", "acc_norm"}
    assert r.suite.spec.primary == "acc"  # lm-eval's first metric when none is named
    for name, (value, stderr, n) in r.metrics.items():
        per_item = [i.scores[name] for i in r.items]
        assert n == len(per_item) == 8 and set(per_item) <= {0.0, 1.0}
        assert math.isclose(sum(per_item) / n, value)  # our items reproduce lm-eval's aggregate
        assert math.isclose(stderr, mean_stderr(per_item)[1], abs_tol=1e-12)  # and carry its stderr
    for item, res in zip(r.suite.items, r.items):
        assert len(item.choices) == 4 and item.answer == item.meta["doc"]["gold"]
        assert res.output in item.choices  # the most likely ending, as text
        assert item.prompt.startswith(item.meta["doc"]["activity_label"] + ":")  # hellaswag's preprocessing


def test_multi_task_generation_names_and_prefixes(model_tok, tmp_path: Path) -> None:
    from harness.evaluation import evaluate

    path = write_suite(
        tmp_path,
        """\
        name: two_tasks
        kind: lm_eval
        lm_eval:
          tasks: [tunegate_hellaswag_mini, tunegate_qa_mini]
          limit: 2
        primary: tunegate_qa_mini/exact_match
        """,
    )
    r = evaluate(*model_tok, suites.load(str(path)))
    assert [i.item_id for i in r.items] == (
        [f"tunegate_hellaswag_mini/hs-0{i}" for i in range(2)] + [f"tunegate_qa_mini/qa-0{i}" for i in range(2)]
    )
    assert set(r.metrics) == {
        "tunegate_hellaswag_mini/acc",
        "tunegate_hellaswag_mini/acc_norm",
        "tunegate_qa_mini/exact_match",
    }
    assert all(n == 2 for _, _, n in r.metrics.values())
    qa = [(i, s) for i, s in zip(r.items, r.suite.items) if s.meta["task"] == "tunegate_qa_mini"]
    rows = [json.loads(line) for line in (LOCAL_TASKS / "tunegate_qa_mini" / "qa_mini.jsonl").read_text().splitlines()]
    for (res, item), row in zip(qa, rows):
        assert item.prompt == f"Question: {row['question']}?\nAnswer:"
        assert item.reference == row["answers"] and item.choices is None
        assert isinstance(res.output, str) and "\n" not in res.output  # stopped at a newline, whitespace removed
        assert set(res.scores) == {"tunegate_qa_mini/exact_match"}
    value, _, n = r.metrics["tunegate_qa_mini/exact_match"]
    assert math.isclose(value, sum(res.scores["tunegate_qa_mini/exact_match"] for res, _ in qa) / n)


def test_user_task_folder_index_ids_and_filters(model_tok, tmp_path: Path) -> None:
    """A task of the user's own (relative data file, no id field, two filter pipelines)."""
    from harness.evaluation import evaluate

    task_dir = tmp_path / "my_tasks" / "echo"
    task_dir.mkdir(parents=True)
    (task_dir / "docs.jsonl").write_text(
        "".join(json.dumps({"q": q, "a": a}) + "\n" for q, a in [("one", "1"), ("two", "2"), ("three", "3")])
    )
    (task_dir / "echo.yaml").write_text(
        textwrap.dedent("""\
        task: my_echo
        dataset_path: json
        dataset_kwargs:
          data_files:
            test: docs.jsonl
        output_type: generate_until
        test_split: test
        doc_to_text: "Write {{q}} as a digit:"
        doc_to_target: "{{a}}"
        generation_kwargs: {until: ["\\n"], do_sample: false, max_gen_toks: 4}
        filter_list:
          - name: strip
            filter: [{function: remove_whitespace}, {function: take_first}]
          - name: raw
            filter: [{function: take_first}]
        metric_list:
          - metric: exact_match
            aggregation: mean
            higher_is_better: false
        """)
    )
    path = write_suite(
        tmp_path,
        """\
        name: mine
        kind: lm_eval
        lm_eval:
          tasks: [my_echo]
          include_path: [my_tasks]
        """,
    )
    r = evaluate(*model_tok, suites.load(str(path)))
    assert [i.item_id for i in r.items] == ["0", "1", "2"]  # no id field: the document index
    assert set(r.metrics) == {"exact_match:strip", "exact_match:raw"}
    # each metric carries lm-eval's direction as the task declares it, and is 0/1 per document
    assert {m: (k.higher_is_better, k.binary) for m, k in r.kinds.items()} == {
        "exact_match:strip": (False, True),
        "exact_match:raw": (False, True),
    }
    for res in r.items:
        assert set(res.scores) == {"exact_match:strip", "exact_match:raw"}


def test_a_task_whose_data_cannot_load_is_a_user_error(model_tok, tmp_path: Path) -> None:
    from harness.evaluation import evaluate

    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "broken.yaml").write_text(
        textwrap.dedent("""\
        task: broken
        dataset_path: json
        dataset_kwargs: {data_files: {test: missing.jsonl}}
        test_split: test
        output_type: generate_until
        doc_to_text: "{{q}}"
        doc_to_target: "{{a}}"
        """)
    )
    path = write_suite(
        tmp_path,
        """\
        name: broken
        kind: lm_eval
        lm_eval:
          include_path: [tasks]
          tasks:
            - tunegate_qa_mini
            - broken
        """,
    )
    with pytest.raises(UserError, match="could not load task 'broken'.*missing.jsonl") as err:
        evaluate(*model_tok, suites.load(str(path)))
    assert (err.value.line, err.value.field) == (7, "lm_eval.tasks[1]")


def test_store_and_pairing_with_a_peft_model(model_tok, hellaswag_suite, hellaswag_result, store) -> None:
    """A PEFT adapter model runs through lm-eval too; a fresh LoRA (B = 0) changes nothing, so the
    paired comparison sees the same per-item scores and a zero delta."""
    from peft import LoraConfig, get_peft_model

    from harness.analysis import compare_trials
    from harness.evaluation import evaluate

    base_model, tok = model_tok
    peft_model = get_peft_model(base_model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"])).eval()
    try:
        tuned = evaluate(peft_model, tok, hellaswag_suite)
    finally:
        peft_model.unload()  # give the shared module-scoped model back its plain layers
    assert [i.scores for i in tuned.items] == [i.scores for i in hellaswag_result.items]

    run = store.create_run("lm", {}, "h", "tiny", "")
    base_t = store.ensure_trial(run, "baseline", "baseline", "baseline", {})
    lora_t = store.ensure_trial(run, "lora", "lora", "lora", {})
    ev = store.save_evaluation(base_t.id, hellaswag_result)
    store.save_evaluation(lora_t.id, tuned)
    stored = store.metrics(ev)
    assert set(stored) == set(hellaswag_result.metrics)
    for m, (value, stderr, n) in hellaswag_result.metrics.items():
        assert (stored[m].value, stored[m].stderr, stored[m].n) == (pytest.approx(value), pytest.approx(stderr), n)
    assert set(store.item_scores(ev, "acc")) == set(HS_IDS[:8])
    assert (stored["acc"].higher_is_better, stored["acc"].binary) == (True, True)  # lm-eval's direction, 0/1 items
    comps = {c.metric: c for c in compare_trials(store, base_t, lora_t)}
    assert set(comps) == {"acc", "acc_norm"} and comps["acc"].primary
    assert comps["acc"].stats.n == 8 and comps["acc"].stats.delta == 0.0


def test_suite_version_follows_task_files(tmp_path: Path) -> None:
    shutil.copytree(LOCAL_TASKS / "tunegate_qa_mini", tmp_path / "tasks" / "qa_copy")
    task_yaml = tmp_path / "tasks" / "qa_copy" / "tunegate_qa_mini.yaml"
    task_yaml.write_text(task_yaml.read_text().replace("task: tunegate_qa_mini", "task: qa_copy"))
    path = write_suite(
        tmp_path,
        """\
        name: v
        kind: lm_eval
        lm_eval: {tasks: [qa_copy], include_path: [tasks]}
        """,
    )
    first = suites.load(str(path)).version
    suites._load.cache_clear()
    assert suites.load(str(path)).version == first
    data = tmp_path / "tasks" / "qa_copy" / "qa_mini.jsonl"
    data.write_text(data.read_text().replace("Paris", "Lutetia"))
    suites._load.cache_clear()
    assert suites.load(str(path)).version != first


def test_shipped_suite_loads() -> None:
    s = suites.load("lmeval")
    assert s.spec.kind == "lm_eval" and s.spec.lm_eval.tasks == ["tunegate_hellaswag_mini", "tunegate_qa_mini"]
    assert s.items == [] and len(s.version) == 16


@pytest.mark.parametrize(
    "body, field, line",
    [
        ("name: x\nkind: lm_eval\n", None, None),
        ("name: x\nkind: lm_eval\nlm_eval:\n  tasks: [a]\n  include_path: [nowhere]\n", "lm_eval.include_path[0]", 5),
        ("name: x\nkind: lm_eval\nlm_eval:\n  tasks: []\n", "lm_eval.tasks", 4),
        ("name: x\nkind: lm_eval\nlm_eval:\n  tasks: [a]\n  limt: 3\n", "lm_eval.limt", 5),
        ("name: x\nkind: lm_eval\nlm_eval: {tasks: [a]}\nscorers: [exact_match]\n", None, None),
    ],
)
def test_bad_suite_files(tmp_path: Path, body: str, field: str | None, line: int | None) -> None:
    path = tmp_path / "suite.yaml"
    path.write_text(body)
    with pytest.raises(UserError) as err:
        suites.load(str(path))
    assert err.value.file is not None and Path(err.value.file) == path
    if field:
        assert err.value.field == field and err.value.line == line


@pytest.mark.slow
def test_standard_task_names_use_lm_evals_registry(model_tok, tmp_path: Path) -> None:
    """hellaswag resolves through lm-eval's registry; offline, its hub dataset cannot load, which is
    a user-facing error naming the suite. A misspelt name gets suggestions."""
    from harness.evaluation import evaluate

    path = write_suite(tmp_path / "a", "name: a\nkind: lm_eval\nlm_eval:\n  tasks: [hellaswag]\n  limit: 2\n")
    with pytest.raises(UserError) as err:
        evaluate(*model_tok, suites.load(str(path)))
    assert "hellaswag" in str(err.value) and Path(err.value.file) == path
    path = write_suite(tmp_path / "b", "name: b\nkind: lm_eval\nlm_eval:\n  tasks: [helaswag]\n")
    with pytest.raises(UserError, match="did you mean.*hellaswag") as err:
        evaluate(*model_tok, suites.load(str(path)))
    assert err.value.line == 4 and err.value.field == "lm_eval.tasks[0]"
