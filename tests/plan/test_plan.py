"""The plan as data: validation errors name file, line and field; sweeps expand into named trials."""

from __future__ import annotations

from pathlib import Path
from typing import get_args

import pytest
from pydantic import ValidationError

from harness.base import ARM_KINDS, UserError
from harness.plan import Arm, Plan, Range, cross_check, expand, load_plan, trial_arms
from tests.support.tiny_plans import REPO, write_data

HEAD = "name: p\nmodel: smollm2-135m\ndata:\n  train: {train}\n"


def plan_file(tmp_path: Path, body: str, *, prefs: bool = False) -> Path:
    train, pref = write_data(tmp_path)
    head = HEAD.format(train=train) + (f"  preference: {pref}\n" if prefs else "")
    path = tmp_path / "plan.yaml"
    path.write_text(head + body)
    return path


def error_of(path: Path) -> UserError:
    with pytest.raises(UserError) as info:
        load_plan(path)
    return info.value


LORA = "arms:\n  - name: base\n    type: baseline\n  - name: lora\n    type: lora\n"


@pytest.mark.parametrize(
    "body, line, field, words",
    [
        (LORA + "    r: 0\nsuites: [json_extract]\n", 10, "arms[1].r", "greater than 0"),
        (LORA + "    rank: 8\nsuites: [json_extract]\n", 10, "arms[1].rank", "unknown key"),
        (LORA + "    lr: -1\nsuites: [json_extract]\n", 10, "arms[1].lr", "greater than 0"),
        (LORA + "    dropout: 1.5\nsuites: [json_extract]\n", 10, "arms[1].dropout", "less than 1"),
        (LORA + "    scheduler: wavy\nsuites: [json_extract]\n", 10, "arms[1].scheduler", "linear"),
        ("arms:\n  - name: x\n    type: magic\nsuites: [json_extract]\n", 6, "arms[0]", "magic"),
        (LORA + "suites: []\n", 10, "suites", "at least 1"),
        (LORA + "suites: [json_extract]\nextra: 1\n", 11, "extra", "unknown key"),
        (LORA + "  - name: lora\n    type: prompt\nsuites: [json_extract]\n", 10, "arms[2].name", "unique"),
        (
            LORA + "suites: [json_extract]\nsweep:\n  arm: lora\n  params:\n    rank: [8, 16]\n",
            14,
            "sweep.params.rank",
            "not a field of lora arm",
        ),
        (LORA + "suites: [json_extract]\nsweep:\n  arm: nope\n  params:\n    r: [8]\n", 12, "sweep.arm", "not an arm"),
        (
            LORA + "suites: [json_extract]\nsweep:\n  arm: lora\n  params:\n    r: [8, -1]\n",
            14,
            "sweep.params.r",
            "value -1",
        ),
        (
            LORA + "suites: [json_extract]\nsweep:\n  arm: lora\n  params:\n    r: []\n",
            14,
            "sweep.params.r",
            "non-empty",
        ),
        (
            LORA + "suites: [json_extract]\nsweep:\n  arm: lora\n  params:\n    lr: {low: 1.0e-4, high: 1.0e-3}\n",
            14,
            "sweep.params.lr",
            "method: random",
        ),
        (
            LORA + "suites: [json_extract]\nsweep:\n  arm: lora\n  method: random\n  n: 2\n  params:\n"
            "    lr: {low: 1.0e-3, high: 1.0e-4}\n",
            16,
            "sweep.params.lr",
            "low must be below high",
        ),
        (LORA + "  - name: dpo\n    type: dpo\nsuites: [json_extract]\n", 11, "arms[2].type", "data.preference"),
    ],
)
def test_bad_plans_name_file_line_and_field(tmp_path: Path, body: str, line: int, field: str, words: str):
    path = plan_file(tmp_path, body)
    err = error_of(path)
    assert (err.file, err.line, err.field) == (path, line, field), str(err)
    assert words in str(err)
    assert str(err).startswith(f"{path}:{line}: field '{field}'")


def test_dpo_from_a_swept_arm_must_name_one_trial(tmp_path: Path):
    path = plan_file(
        tmp_path,
        LORA + "  - name: dpo\n    type: dpo\n    from_arm: lora\n"
        "suites: [json_extract]\nsweep:\n  arm: lora\n  params:\n    r: [8, 16]\n",
        prefs=True,
    )
    err = error_of(path)
    assert err.field == "arms[2].from_arm" and err.line == 13
    assert "lora-r8, lora-r16" in str(err)
    path.write_text(path.read_text().replace("from_arm: lora\n", "from_arm: lora-r16\n"))
    plan, _ = load_plan(path)
    assert [a.name for a in trial_arms(plan)] == ["base", "lora-r8", "lora-r16", "dpo"]


def test_dpo_from_a_non_sft_arm_is_refused(tmp_path: Path):
    path = plan_file(
        tmp_path, LORA + "  - name: dpo\n    type: dpo\n    from_arm: base\nsuites: [json_extract]\n", prefs=True
    )
    err = error_of(path)
    assert err.field == "arms[2].from_arm" and "baseline arm" in str(err)


def test_one_error_names_where_the_others_are(tmp_path: Path):
    """Every field error of a plan shows in one run: the first is the error, its message names the line and field
    of the others."""
    body = LORA + "    r: 0\n    lr: -1\n    dropout: 1.5\n    scheduler: wavy\n    rank: 8\nsuites: [json_extract]\n"
    err = error_of(plan_file(tmp_path, body))
    assert (err.line, err.field) == (10, "arms[1].r") and "\n" not in str(err)
    assert err.message.endswith(
        "(and 4 more errors: line 11 field 'arms[1].lr'; line 12 field 'arms[1].dropout'; "
        "line 13 field 'arms[1].scheduler'; ...)"
    )


def test_cross_part_problems_show_in_one_run(tmp_path: Path):
    """Problems that no single field shows (a missing file, a repeated arm name, data an arm needs, a sweep of a
    field the arm lacks) are found together: the first is the error, the others are named by line and field."""
    path = tmp_path / "plan.yaml"
    path.write_text(
        "name: p\n"
        "data:\n"
        "  preference: nowhere.jsonl\n"
        "arms:\n"
        "  - name: a\n"
        "    type: baseline\n"
        "  - name: a\n"
        "    type: lora\n"
        "sweep:\n"
        "  arm: a\n"
        "  params:\n"
        "    colour: [1, 2]\n"
        "suites: [json_extract]\n"
    )
    err = error_of(path)
    assert (err.line, err.field) == (3, "data.preference") and "file not found" in err.message
    assert err.message.endswith(
        "(and 3 more errors: line 2 field 'data.train'; line 7 field 'arms[1].name'; "
        "line 12 field 'sweep.params.colour')"
    ), err.message
    with pytest.raises(ValidationError, match=r"arms\[1\]\.name: .* \(and 1 more error: data\.train\)"):
        Plan.model_validate(
            {"name": "p", "arms": [{"name": "a", "type": "baseline"}, {"name": "a", "type": "lora"}], "suites": ["x"]}
        )


def test_missing_files_name_their_field(tmp_path: Path):
    path = tmp_path / "plan.yaml"
    path.write_text(
        "name: p\ndata:\n  train: nowhere.jsonl\narms:\n  - name: b\n    type: baseline\nsuites: [json_extract]\n"
    )
    err = error_of(path)
    assert (err.line, err.field) == (3, "data.train") and "file not found" in str(err)
    path.write_text("name: p\narms:\n  - name: lora\n    type: lora\nsuites: [json_extract]\n")
    err = error_of(path)
    assert err.field == "data.train" and "needs training data" in str(err)
    rag = plan_file(tmp_path, "arms:\n  - name: rag\n    type: rag\n    documents: missing.txt\nsuites: [x]\n")
    err = error_of(rag)
    assert (err.line, err.field) == (8, "arms[0].documents")


def test_invalid_yaml_and_missing_plan(tmp_path: Path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: p\narms: [\n")
    err = error_of(bad)
    assert err.file == bad and err.line is not None and "invalid YAML" in str(err)
    assert "file not found" in str(error_of(tmp_path / "none.yaml"))


def test_every_arm_kind_has_exactly_one_arm_class():
    classes = get_args(get_args(Arm)[0])
    tags = [get_args(cls.model_fields["type"].annotation)[0] for cls in classes]
    assert sorted(tags) == sorted(ARM_KINDS) and len(set(tags)) == len(tags)


@pytest.mark.parametrize("kind", ARM_KINDS)
def test_a_bad_field_of_any_arm_kind_is_named_without_the_kind(tmp_path: Path, kind: str):
    path = tmp_path / "plan.yaml"
    path.write_text(f"name: p\narms:\n  - name: a\n    type: {kind}\n    nonsense: 1\nsuites: [json_extract]\n")
    with pytest.raises(UserError) as exc:
        load_plan(path)
    assert exc.value.field == "arms[0].nonsense" and exc.value.line == 5


def test_a_baseline_only_plan_needs_no_data(tmp_path: Path):
    path = tmp_path / "plan.yaml"
    path.write_text("name: p\narms:\n  - name: b\n    type: baseline\nsuites: [json_extract]\n")
    plan, _ = load_plan(path)
    assert plan.data.train is None and [a.name for a in trial_arms(plan)] == ["b"]


def test_relative_paths_fall_back_to_the_plan_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    folder = tmp_path / "exp"
    folder.mkdir()
    write_data(folder)
    (folder / "plan.yaml").write_text(
        "name: p\ndata:\n  train: train.jsonl\n  preference: prefs.jsonl\narms:\n"
        "  - name: d\n    type: dpo\nsuites: [json_extract]\n"
    )
    monkeypatch.chdir(tmp_path)
    plan, _ = load_plan(folder / "plan.yaml")
    assert plan.data.train == str((folder / "train.jsonl").resolve())
    assert Path(plan.data.preference or "").is_absolute()


def test_defaults_are_the_documented_recipe(tmp_path: Path):
    plan, _ = load_plan(plan_file(tmp_path, LORA + "suites: [json_extract]\n"))
    lora = plan.arms[1]
    assert (lora.r, lora.alpha, lora.dropout, lora.target_modules, lora.lr, lora.epochs) == (
        16,
        32,
        0.05,
        "all-linear",
        2e-4,
        1.0,
    )
    assert lora.gpus_per_trial == 1


def test_grid_sweep_expands_every_combination_with_stable_names(tmp_path: Path):
    body = LORA + (
        "suites: [json_extract]\nsweep:\n  arm: lora\n  params:\n    r: [8, 16, 32]\n    lr: [2.0e-4, 5.0e-4]\n"
    )
    plan, _ = load_plan(plan_file(tmp_path, body))
    names = [a.name for a in trial_arms(plan)]
    assert names == [
        "base",
        "lora-r8-lr0.0002",
        "lora-r8-lr0.0005",
        "lora-r16-lr0.0002",
        "lora-r16-lr0.0005",
        "lora-r32-lr0.0002",
        "lora-r32-lr0.0005",
    ]
    swept = {a.name: a for a in trial_arms(plan)}
    assert swept["lora-r32-lr0.0005"].r == 32 and swept["lora-r32-lr0.0005"].lr == 5e-4
    assert swept["lora-r32-lr0.0005"].alpha == 32  # unswept fields keep the arm's value
    assert [i for i, _ in expand(plan)] == [0, 1, 1, 1, 1, 1, 1]


def test_sweep_over_target_modules_and_data_fraction(tmp_path: Path):
    body = LORA + (
        "suites: [json_extract]\nsweep:\n  arm: lora\n  params:\n"
        "    target_modules: [[q_proj, v_proj], all-linear]\n    data_fraction: [0.25, 1.0]\n"
    )
    plan, _ = load_plan(plan_file(tmp_path, body))
    names = [a.name for a in trial_arms(plan)][1:]
    assert names == [
        "lora-target_modulesq_v-data_fraction0.25",
        "lora-target_modulesq_v-data_fraction1",
        "lora-target_modulesall-linear-data_fraction0.25",
        "lora-target_modulesall-linear-data_fraction1",
    ]
    assert trial_arms(plan)[1].target_modules == ["q_proj", "v_proj"] and trial_arms(plan)[1].data_fraction == 0.25


def test_random_search_over_lists_samples_without_repeats_and_is_seeded(tmp_path: Path):
    body = LORA + (
        "suites: [json_extract]\nsweep:\n  arm: lora\n  method: random\n  n: 4\n  seed: 3\n  params:\n"
        "    r: [4, 8, 16, 32]\n    lr: [1.0e-4, 2.0e-4, 5.0e-4]\n"
    )
    plan, _ = load_plan(plan_file(tmp_path, body))
    first = [a.name for a in trial_arms(plan)]
    assert len(first) == 5 and len(set(first)) == 5
    assert first == [a.name for a in trial_arms(load_plan(plan_file(tmp_path, body))[0])]
    other = Plan.model_validate(plan.model_dump() | {"sweep": plan.sweep.model_dump() | {"seed": 4}})
    assert [a.name for a in trial_arms(other)] != first


def test_random_search_over_ranges(tmp_path: Path):
    body = LORA + (
        "suites: [json_extract]\nsweep:\n  arm: lora\n  method: random\n  n: 5\n  params:\n"
        "    lr: {low: 1.0e-5, high: 1.0e-3, log: true}\n    r: {low: 4, high: 64, integer: true}\n"
    )
    plan, _ = load_plan(plan_file(tmp_path, body))
    swept = trial_arms(plan)[1:]
    assert len(swept) == 5
    assert all(1e-5 <= a.lr <= 1e-3 and 4 <= a.r <= 64 and isinstance(a.r, int) for a in swept)
    assert len({a.lr for a in swept}) == 5
    assert all(a.name == f"lora-lr{format(a.lr, '.4g')}-r{a.r}" for a in swept)


def test_range_needs_n_for_random(tmp_path: Path):
    body = (
        LORA
        + "suites: [json_extract]\nsweep:\n  arm: lora\n  method: random\n  params:\n    lr: {low: 0.1, high: 0.2}\n"
    )
    err = error_of(plan_file(tmp_path, body))
    assert err.field == "sweep.n" and "needs n" in str(err)


def test_range_draws_stay_inside():
    import random

    rng = random.Random(0)
    r = Range(low=1e-4, high=1e-2, log=True)
    draws = [r.draw(rng) for _ in range(200)]
    assert min(draws) >= 1e-4 and max(draws) <= 1e-2
    assert sum(d < 1e-3 for d in draws) > 50  # log-uniform: half the draws below the geometric mean


def test_sweep_several_arms_at_once(tmp_path: Path):
    body = (
        "arms:\n  - name: lora\n    type: lora\n  - name: dora\n    type: dora\nsuites: [json_extract]\n"
        "sweep:\n  arm: [lora, dora]\n  params:\n    r: [4, 8]\n"
    )
    plan, _ = load_plan(plan_file(tmp_path, body))
    assert [a.name for a in trial_arms(plan)] == ["lora-r4", "lora-r8", "dora-r4", "dora-r8"]
    assert [a.type for a in trial_arms(plan)] == ["lora", "lora", "dora", "dora"]


def test_sweep_name_clash_is_refused(tmp_path: Path):
    body = (
        "arms:\n  - name: lora\n    type: lora\n  - name: lora-r4\n    type: baseline\nsuites: [json_extract]\n"
        "sweep:\n  arm: lora\n  params:\n    r: [4, 8]\n"
    )
    err = error_of(plan_file(tmp_path, body))
    assert "lora-r4" in str(err) and err.field == "sweep.params"


def test_validating_a_dict_runs_the_cross_checks():
    """The advisor validates the plans it writes with Plan.model_validate: cross-checks apply there too."""
    from pydantic import ValidationError

    good = {
        "name": "p",
        "data": {"train": "t.jsonl"},
        "arms": [{"name": "b", "type": "baseline"}],
        "suites": ["json_extract"],
    }
    assert cross_check(Plan.model_validate(good)) == []
    with pytest.raises(ValidationError, match="needs preference pairs"):
        Plan.model_validate(good | {"arms": [{"name": "d", "type": "dpo"}]})


EXAMPLE_PLANS = sorted(p for p in (REPO / "examples").glob("*/*.yaml") if "\narms:" in p.read_text())


@pytest.mark.parametrize("path", EXAMPLE_PLANS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_shipped_example_plans_load(path: Path):
    plan, _ = load_plan(path)
    assert trial_arms(plan)


def test_example_plans_are_found():
    assert {f"{p.parent.name}/{p.name}" for p in EXAMPLE_PLANS} >= {
        "demo/plan.yaml",
        "gpu/plan.yaml",
        "sweep/plan.yaml",
        "sweep/learning_curve.yaml",
    }


def test_gpu_plan_has_every_arm_and_a_sweep():
    plan, _ = load_plan(REPO / "examples" / "gpu" / "plan.yaml")
    names = [a.name for a in trial_arms(plan)]
    kinds = {a.type for a in trial_arms(plan)}
    assert {"baseline", "prompt", "rag", "lora", "qlora", "dpo"} <= kinds
    assert len(names) >= 6 and sum(a.type == "lora" for a in trial_arms(plan)) == 6
    assert {"json_extract", "general_knowledge"} <= set(plan.suites)
    assert Path(plan.data.preference or "").name == "json_extract_prefs.jsonl"
