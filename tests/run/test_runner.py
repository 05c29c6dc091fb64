"""`tunegate run` on a tiny model: every trial recorded (status, config, metrics, curves, artifacts), a
diverging trial marked failed while the next one still runs, DPO continuing an SFT adapter, and bad
input refused with file, line and field before anything trains."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from harness.base import UserError, file_sha256
from harness.run import Runner, memory_estimate, model_shape
from harness.store import Store
from tests.support.bench import run_bench
from tests.support.tiny_plans import REPO, tiny_env, train_arm, write_plan

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Any:
    yield from tiny_env(tmp_path_factory.mktemp("runner"))


def quiet() -> Console:
    return Console(width=120, file=open(os.devnull, "w"))


@pytest.fixture(scope="module")
def core_run(env: dict[str, Any], tiny_model_dir: Path) -> dict[str, Any]:
    """baseline, prompt, a diverging full fine-tune, a LoRA after it, and DPO continuing the LoRA adapter."""
    root = env["root"]
    arms = [
        {"name": "baseline", "type": "baseline"},
        {"name": "prompt", "type": "prompt", "k_shot": 2, "system": "Answer with JSON."},
        train_arm("boom", "full", lr=100.0, max_steps=3),
        train_arm("lora", r=4, lr=1e-2, max_steps=2),
        train_arm("dpo-sft", "dpo", from_arm="lora", lr=1e-3),
    ]
    plan = write_plan(root / "core.yaml", tiny_model_dir, arms, train=env["train"], prefs=env["prefs"], name="core")
    store = Store(str(root / "core.db"))
    outcome = Runner(store, quiet(), runs_dir=root / "runs").run(plan)
    run = store.get_run(outcome.run_id)
    return {
        "store": store,
        "outcome": outcome,
        "run": run,
        "plan": plan,
        "trials": {t.name: t for t in store.trials(run.id)},
    }


@pytest.mark.slow
def test_every_trial_is_recorded_and_a_diverging_one_fails_without_stopping_the_run(core_run: dict[str, Any]):
    trials, outcome = core_run["trials"], core_run["outcome"]
    assert {n: t.status for n, t in trials.items()} == {
        "baseline": "finished",
        "prompt": "finished",
        "boom": "failed",
        "lora": "finished",
        "dpo-sft": "finished",
    }
    assert "loss diverged" in (trials["boom"].error or "")
    assert set(outcome.failed) == {"boom"} and "loss diverged" in outcome.failed["boom"]
    after_boom = [n for n, t in trials.items() if t.started_at > trials["boom"].finished_at]
    assert after_boom and all(trials[n].status == "finished" for n in after_boom)  # the trials after the failure ran
    assert core_run["run"].status == "failed"  # one trial failed; the run says so
    store = core_run["store"]
    for name in ("baseline", "prompt", "lora", "dpo-sft"):
        evals = store.evaluations(trials[name].id)
        assert sorted(s.name for _, s in evals) == ["tiny_json", "tiny_mc"]
        assert all(ev.n_items == 3 for ev, _ in evals)
    assert store.evaluations(trials["boom"].id) == []
    prompt_eval = next(ev for ev, s in store.evaluations(trials["prompt"].id) if s.name == "tiny_json")
    assert "Answer with JSON." in store.item_rows(prompt_eval.id)[0]["prompt"]


@pytest.mark.slow
def test_trial_artifacts_curves_and_manifest(core_run: dict[str, Any], env: dict[str, Any]):
    store, lora = core_run["store"], core_run["trials"]["lora"]
    assert lora.config["r"] == 4 and lora.config["lr"] == 1e-2 and lora.arm_type == "lora"
    steps = store.train_steps(lora.id)
    assert [s.step for s in steps][-1] == 2
    assert all(
        s.loss is not None and s.lr is not None and s.tokens_per_second is not None and s.peak_memory_gib for s in steps
    )
    assert lora.train_seconds and lora.peak_memory_gib and lora.final_loss is not None
    folder = Path(lora.folder)
    log = [json.loads(line) for line in (folder / "train_log.jsonl").read_text().splitlines()]
    assert {"step", "loss", "lr", "grad_norm", "tokens_per_second", "peak_memory_gib"} <= set(log[0])
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["data"]["train"]["sha256"] == file_sha256(env["train"])
    assert manifest["data"]["preference"]["sha256"] == file_sha256(env["prefs"])
    assert manifest["seed"] == 0 and manifest["status"] == "finished"
    assert manifest["arm"]["r"] == 4 and manifest["resolved_plan"]["arms"][3]["name"] == "lora"
    assert {"torch", "transformers", "peft", "trl"} <= set(manifest["versions"])
    assert "git_sha" in manifest and manifest["device"] == "cpu" and manifest["device_name"]
    assert manifest["suites"]["tiny_json"]
    assert "adapter/adapter_config.json" in manifest["artifacts"]
    assert (folder / "adapter" / "adapter_model.safetensors").exists()


@pytest.mark.slow
def test_dpo_continues_the_sft_adapter(core_run: dict[str, Any]):
    from safetensors.torch import load_file

    trials = core_run["trials"]
    dpo_dir, lora_dir = Path(trials["dpo-sft"].folder) / "adapter", Path(trials["lora"].folder) / "adapter"
    dpo_cfg = json.loads((dpo_dir / "adapter_config.json").read_text())
    assert dpo_cfg["r"] == 4  # the SFT adapter's rank, not the dpo arm's default 16: it continued that adapter
    dpo_w, lora_w = load_file(dpo_dir / "adapter_model.safetensors"), load_file(lora_dir / "adapter_model.safetensors")
    assert dpo_w.keys() == lora_w.keys()
    assert any(not (dpo_w[k] == lora_w[k]).all() for k in dpo_w)  # and DPO moved it
    assert core_run["store"].train_steps(trials["dpo-sft"].id)


@pytest.mark.slow
def test_plan_report_lists_every_arm_that_did_not_beat_the_baseline(core_run: dict[str, Any], tmp_path: Path):
    from harness.analysis import write_run_report

    json_path, md_path = write_run_report(core_run["store"], str(core_run["run"].id), tmp_path)
    report = json.loads(json_path.read_text())
    assert report["device"]["name"] and report["versions"]["torch"] and report["date"]
    by_name = {t["trial"]: t for t in report["trials"]}
    assert by_name["lora"]["train_seconds"] and by_name["lora"]["peak_memory_gib"]
    assert by_name["baseline"]["metrics"]["tiny_json"]["exact_match"]["n"] == 3
    verdicts = {v["trial"]: v for v in report["verdicts"]}
    assert set(verdicts) == {"prompt", "boom", "lora", "dpo-sft"}
    # a random tiny model beats nothing: every arm gets its explicit line
    assert set(report["did_not_beat_baseline"]) == set(verdicts)
    assert "trial failed" in verdicts["boom"]["reason"]
    md = md_path.read_text()
    for name in verdicts:
        assert f"**{name} (" in md and "did NOT beat the baseline" in md
    comp = next(
        c
        for c in report["comparisons"]
        if c["trial"] == "lora" and c["suite"] == "tiny_json" and c["metric"] == "exact_match"
    )
    assert comp["ci_low"] is not None and comp["n"] == 3


def test_a_failing_trial_is_recorded_and_the_next_one_runs(env: dict[str, Any], tiny_model_dir: Path):
    """A real diverging loss (full fine-tune at lr=100) fails its trial with the reason; the run goes on."""
    arms = [train_arm("boom", "full", lr=100.0, max_steps=3), {"name": "baseline", "type": "baseline"}]
    plan = write_plan(
        env["root"] / "fail.yaml", tiny_model_dir, arms, train=env["train"], name="fail", suites=["tiny_json"]
    )
    store = Store(str(env["root"] / "fail.db"))
    outcome = Runner(store, quiet(), runs_dir=env["root"] / "runs").run(plan)
    trials = {t.name: t for t in store.trials(outcome.run_id)}
    assert trials["boom"].status == "failed" and "loss diverged at step" in (trials["boom"].error or "")
    assert trials["baseline"].status == "finished" and trials["baseline"].started_at > trials["boom"].started_at
    assert outcome.failed.keys() == {"boom"} and outcome.finished == ["baseline"]
    assert store.get_run(outcome.run_id).status == "failed"
    assert store.train_steps(trials["boom"].id) == []  # no curve for a trial that did not finish training
    assert not (Path(trials["boom"].folder) / "adapter").exists()


# --- bad input: refused before any training, with file, line and field -----------------------------
def refused(env: dict[str, Any], model: Path, arms: list[dict[str, Any]], **extra: Any) -> UserError:
    plan = write_plan(
        env["root"] / "bad.yaml",
        model,
        arms,
        train=extra.pop("train", env["train"]),
        prefs=extra.pop("prefs", env["prefs"]),
        **extra,
    )
    store = Store(str(env["root"] / "bad.db"))
    before = len(store.runs())
    with pytest.raises(UserError) as info:
        Runner(store, quiet(), device="cpu", runs_dir=env["root"] / "bad-runs").run(plan)
    assert len(store.runs()) == before  # nothing was started
    return info.value


def test_max_length_beyond_the_model_context(env: dict[str, Any], tiny_model_dir: Path):
    err = refused(env, tiny_model_dir, [{"name": "b", "type": "baseline"}, train_arm("lora", max_length=4096)])
    assert err.field == "arms[1].max_length" and err.line == 13 and "context (512 tokens)" in str(err)


def test_a_trial_that_does_not_fit_the_memory_estimate(env: dict[str, Any], tiny_model_dir: Path):
    arms = [{"name": "b", "type": "baseline"}, {"name": "lora", "type": "lora", "batch_size": 64}]
    err = refused(env, tiny_model_dir, arms, memory_gib=0.05)
    assert err.field == "arms[1]" and err.line == 9 and "GiB of GPU memory by the estimate" in str(err)
    assert "gradient_checkpointing" in str(err)


def test_sweep_trials_point_at_their_arm(env: dict[str, Any], tiny_model_dir: Path):
    arms = [{"name": "b", "type": "baseline"}, {"name": "lora", "type": "lora"}]
    err = refused(env, tiny_model_dir, arms, memory_gib=2.0, sweep={"arm": "lora", "params": {"batch_size": [2, 512]}})
    assert err.field == "arms[1]" and "lora-batch_size512" in str(err)


def test_qlora_needs_cuda(env: dict[str, Any], tiny_model_dir: Path):
    err = refused(env, tiny_model_dir, [train_arm("q", "qlora")])
    assert err.field == "arms[0].type" and "CUDA" in str(err)


def test_more_gpus_per_trial_than_there_are(env: dict[str, Any], tiny_model_dir: Path):
    err = refused(env, tiny_model_dir, [train_arm("l", gpus_per_trial=2)])
    assert err.field == "arms[0].gpus_per_trial" and "2 GPUs" in str(err)


def test_unknown_suite_and_missing_embedding_model(env: dict[str, Any], tiny_model_dir: Path):
    err = refused(env, tiny_model_dir, [{"name": "b", "type": "baseline"}], suites=["tiny_json", "nope"])
    assert err.field == "suites[1]" and "unknown suite 'nope'" in str(err)
    err = refused(env, tiny_model_dir, [{"name": "r", "type": "rag", "embedding_model": "no-such-encoder"}])
    assert err.field == "arms[0].embedding_model" and err.line == 9


def test_wrong_data_format_for_the_arm(env: dict[str, Any], tiny_model_dir: Path):
    err = refused(env, tiny_model_dir, [train_arm("d", "dpo")], prefs=env["train"])
    assert str(err.file) == str(env["train"]) and err.line == 1 and "preference rows" in str(err)
    err = refused(env, tiny_model_dir, [train_arm("l")], train=env["prefs"])
    assert str(err.file) == str(env["prefs"]) and "preference data" in str(err)


def test_unknown_only_trial(env: dict[str, Any], tiny_model_dir: Path):
    plan = write_plan(
        env["root"] / "only.yaml", tiny_model_dir, [{"name": "b", "type": "baseline"}], train=env["train"]
    )
    with pytest.raises(UserError, match="no trial named x"):
        Runner(Store(str(env["root"] / "only.db")), quiet()).run(plan, only=["x"])


def test_cli_dry_run_prints_trials_with_memory_estimates(env: dict[str, Any], tiny_model_dir: Path):
    arms = [
        {"name": "base", "type": "baseline"},
        {"name": "lora", "type": "lora", "batch_size": 4},
        {"name": "dpo", "type": "dpo", "batch_size": 4},
    ]
    plan = write_plan(
        env["root"] / "dry.yaml",
        tiny_model_dir,
        arms,
        train=env["train"],
        prefs=env["prefs"],
        memory_gib=0.03,
        sweep={"arm": "lora", "params": {"r": [8, 16]}},
    )
    result = subprocess.run(
        [sys.executable, "-m", "harness.cli", "run", str(plan), "--dry-run"],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=os.environ | {"COLUMNS": "200", "OMP_NUM_THREADS": "1"},
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "4 trials" in out and "lora-r8" in out and "lora-r16" in out and "inference only" in out
    assert "GiB" in out and "NO (> 0.0)" in out


def test_cli_bad_plan_exits_2_with_one_line(env: dict[str, Any], tiny_model_dir: Path):
    plan = write_plan(
        env["root"] / "cli-bad.yaml", tiny_model_dir, [train_arm("l", max_length=9999)], train=env["train"]
    )
    result = subprocess.run(
        [sys.executable, "-m", "harness.cli", "run", str(plan), "--store", str(env["root"] / "cli.db")],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
        env=os.environ | {"OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 2
    assert f"{plan}:10: field 'arms[0].max_length'" in result.stderr and "Traceback" not in result.stderr


def test_model_shape_and_memory_estimate(tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from harness.plan import DpoArm, LoraArm

    tiny = model_shape(str(tiny_model_dir))
    assert tiny["hidden_size"] == 64 and tiny["max_position_embeddings"] == 512
    monkeypatch.setenv("TUNEGATE_CACHE", str(tmp_path))
    smol = model_shape("smollm2-135m")  # read from the GGUF file's metadata, no conversion
    assert (smol["hidden_size"], smol["num_hidden_layers"], smol["vocab_size"]) == (576, 30, 49152)
    assert smol["tie_word_embeddings"] is True
    cached = list((tmp_path / "shapes").glob("SmolLM2-135M-Instruct*.json"))  # read once, then from the cache
    assert len(cached) == 1 and json.loads(cached[0].read_text()) == smol == model_shape("smollm2-135m")
    lora = LoraArm(name="l", type="lora", batch_size=8, max_length=256)
    small = memory_estimate(lora, smol)
    wide = memory_estimate(lora.model_copy(update={"batch_size": 32}), smol)
    few = memory_estimate(lora.model_copy(update={"target_modules": ["q_proj", "v_proj"]}), smol)
    assert small.total_gib < wide.total_gib and few.trainable_params < small.trainable_params
    dpo = memory_estimate(DpoArm(name="d", type="dpo", batch_size=4, max_length=256), smol)
    assert abs(dpo.total_gib - small.total_gib) < 0.01  # DPO: chosen + rejected = twice the batch
    assert memory_estimate(lora, None) is None


def test_gpu_plan_smoke_version_keeps_every_trial(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """bench/gpu_plan_report.py --smoke runs the GPU plan's own trials, shrunk for a CPU."""
    from harness.base import TRAINED
    from harness.evaluation import _suite as registry
    from harness.plan import load_plan, trial_arms

    path = Path(run_bench("gpu_plan_report.py", "--smoke-plan", str(tmp_path)).stdout.strip().splitlines()[-1])
    assert path == tmp_path / "plan.yaml"
    monkeypatch.setenv("TUNEGATE_SUITES", str(tmp_path / "suites"))
    smoke, _ = load_plan(path)
    gpu, _ = load_plan(REPO / "examples" / "gpu" / "plan.yaml")
    assert [a.name for a in trial_arms(smoke)] == [a.name for a in trial_arms(gpu)]
    assert all(a.max_steps == 1 and a.batch_size == 2 for a in trial_arms(smoke) if a.type in TRAINED)
    assert smoke.suites == gpu.suites
    assert all(len(registry.load(s).items) == 4 for s in smoke.suites)
    assert Path(smoke.model, "config.json").exists()
