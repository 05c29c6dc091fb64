"""Persistent workers and shared evaluation on the CPU (the same code paths the GPU default takes): a worker
process is reused across trials and keeps its base model loaded, two workers share one device, a crashed worker
is replaced and its trial recorded as failed, and several adapters scored in one mixed batch give exactly the
per-item results of scoring each alone."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model

from harness.base import UserError
from harness.evaluation import evaluate, evaluate_adapters, load
from harness.model import load_model
from harness.run import Runner, auto_trials_per_gpu, parse_trials_per_gpu
from harness.run._trial import out_of_memory
from harness.store import Store
from tests.support.tiny_plans import tiny_env, train_arm, write_plan

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Any:
    yield from tiny_env(tmp_path_factory.mktemp("workers"), items=3, rows=4, one_thread=True)


def quiet() -> Any:
    from rich.console import Console

    return Console(file=open(os.devnull, "w"), width=120)  # noqa: SIM115 - closed with the process


def manifests(store: Store, run_id: int) -> dict[str, dict[str, Any]]:
    return {t.name: json.loads((Path(t.folder) / "manifest.json").read_text()) for t in store.trials(run_id)}


def item_outputs(store: Store, run_id: int) -> dict[tuple[str, str, str], tuple[str, dict[str, float | None]]]:
    """(trial, suite, item) -> (output, scores), for comparing two runs of the same plan item by item."""
    out = {}
    for t in store.trials(run_id):
        for ev, suite in store.evaluations(t.id):
            for row in store.item_rows(ev.id):
                out[(t.name, suite.name, row["item"])] = (row["output"], row["scores"])
    return out


def test_trials_per_gpu_auto_from_memory_cores_and_cap():
    assert auto_trials_per_gpu(free_gib=80, per_trial_gib=30, cpus=16, n_gpus=1) == 2  # memory bound
    assert auto_trials_per_gpu(free_gib=139, per_trial_gib=2, cpus=16, n_gpus=1) == 4  # the cap
    assert auto_trials_per_gpu(free_gib=139, per_trial_gib=2, cpus=4, n_gpus=2) == 2  # cores per GPU
    assert auto_trials_per_gpu(free_gib=4, per_trial_gib=30, cpus=16, n_gpus=1) == 1  # never below one
    assert parse_trials_per_gpu("auto") is None and parse_trials_per_gpu("3") == 3
    with pytest.raises(UserError, match="trials-per-gpu"):
        parse_trials_per_gpu("0")


def test_out_of_memory_is_recognised_on_gpu_and_cpu():
    assert out_of_memory(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    assert out_of_memory(MemoryError())
    assert out_of_memory(RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory"))
    assert not out_of_memory(RuntimeError("shape mismatch"))


@pytest.mark.slow
def test_one_worker_runs_every_trial_and_reads_the_model_once(env: dict[str, Any], tiny_model_dir: Path):
    plan = write_plan(
        env["root"] / "reuse.yaml",
        tiny_model_dir,
        [
            {"name": "baseline", "type": "baseline"},
            {"name": "prompt", "type": "prompt", "k_shot": 1},
            train_arm("lora", r=4),
        ],
        train=env["train"],
        name="reuse",
    )
    store = Store(str(env["root"] / "reuse.db"))
    outcome = Runner(store, quiet(), runs_dir=env["root"] / "runs").run(plan, executor="workers", trials_per_gpu=1)
    assert sorted(outcome.finished) == ["baseline", "lora", "prompt"], outcome.failed
    found = manifests(store, outcome.run_id)
    assert len({m["process"]["pid"] for m in found.values()}) == 1 != os.getpid()  # one worker, not this process
    assert sorted(m["process"]["trials_before"] for m in found.values()) == [0, 1, 2]
    last = max(found.values(), key=lambda m: m["process"]["trials_before"])
    assert last["process"]["model_reads_from_disk"] == {str(tiny_model_dir): 1}  # kept loaded, copied per trial
    assert sum(m["phases"]["start"] > 0 for m in found.values()) == 1  # only the first trial paid the imports
    first = min(found.values(), key=lambda m: m["process"]["trials_before"])["phases"]
    # ... split into the worker's imports and its wait for the driver's first job
    assert first["start_imports"] > 0 and first["start_waiting"] >= 0
    assert first["start_imports"] + first["start_waiting"] == pytest.approx(first["start"], abs=0.05)
    assert all("start_imports" not in m["phases"] for m in found.values() if m["process"]["trials_before"])
    # started before the run had a folder, the worker's own log moved into it with its first trial
    assert (Path(store.get_run(outcome.run_id).folder) / "workers" / "cpu.0.log").is_file()
    assert list((env["root"] / "runs" / ".workers").glob("*.log")) == []


@pytest.mark.slow
def test_two_workers_share_one_device(env: dict[str, Any], tiny_model_dir: Path):
    plan = write_plan(
        env["root"] / "share.yaml",
        tiny_model_dir,
        [{"name": "baseline", "type": "baseline"}, train_arm("lora", r=4)],
        train=env["train"],
        name="share",
    )
    store = Store(str(env["root"] / "share.db"))
    outcome = Runner(store, quiet(), runs_dir=env["root"] / "runs").run(
        plan, executor="workers", gpus=["0"], trials_per_gpu=2
    )
    assert sorted(outcome.finished) == ["baseline", "lora"], outcome.failed
    found = manifests(store, outcome.run_id)
    assert len({m["process"]["pid"] for m in found.values()}) == 2
    assert {m["cuda_visible_devices"] for m in found.values()} == {"0"}
    trials = {t.name: t for t in store.trials(outcome.run_id)}
    assert trials["baseline"].started_at < trials["lora"].finished_at
    assert trials["lora"].started_at < trials["baseline"].finished_at  # they ran at the same time


@pytest.mark.slow
def test_a_crashed_worker_is_replaced_and_its_trial_recorded_failed(env: dict[str, Any], tiny_model_dir: Path):
    """kill -9 the worker while it trains the first trial: that trial fails with the reason, a fresh worker runs
    the next one, and a resume reruns only the failed trial."""
    plan = write_plan(
        env["root"] / "crash.yaml",
        tiny_model_dir,
        [train_arm("victim", r=4, max_steps=400), {"name": "baseline", "type": "baseline"}],
        train=env["train"],
        name="crash",
    )
    store = Store(str(env["root"] / "crash.db"))
    killed: list[int] = []

    def kill_when_training() -> None:
        deadline = time.time() + 300
        while time.time() < deadline and not killed:
            for t in store.trials(store.runs()[0].id) if store.runs() else []:
                if t.name == "victim" and t.status == "running" and (Path(t.folder) / "worker.log").exists():
                    for pid in _children_running("harness.run", "--serve"):
                        os.kill(pid, signal.SIGKILL)
                        killed.append(pid)
            time.sleep(0.2)

    killer = threading.Thread(target=kill_when_training, daemon=True)
    killer.start()
    outcome = Runner(store, quiet(), runs_dir=env["root"] / "runs").run(plan, executor="workers", trials_per_gpu=1)
    killer.join(timeout=5)
    assert killed
    assert outcome.finished == ["baseline"]
    assert "worker process died (exit code -9)" in outcome.failed["victim"]
    trials = {t.name: t for t in store.trials(outcome.run_id)}
    assert trials["victim"].status == "failed" and trials["baseline"].status == "finished"
    baseline = json.loads((Path(trials["baseline"].folder) / "manifest.json").read_text())
    assert baseline["process"]["pid"] not in killed  # a fresh worker ran it


def _children_running(*words: str) -> list[int]:
    import psutil

    return [p.pid for p in psutil.Process().children(recursive=True) if all(w in " ".join(p.cmdline()) for w in words)]


def _random_adapter(model: Any, folder: Path, seed: int) -> Path:
    """A LoRA adapter with non-zero random weights (so each one changes the outputs differently)."""
    torch.manual_seed(seed)
    peft_model = get_peft_model(
        model, LoraConfig(r=4, lora_alpha=64, target_modules="all-linear", init_lora_weights=False)
    )
    peft_model.save_pretrained(str(folder))
    peft_model.unload()
    return folder


def test_mixed_adapter_evaluation_equals_scoring_each_alone(env: dict[str, Any], tiny_model_dir: Path, tmp_path: Path):
    model, tok = load_model(str(tiny_model_dir), "cpu")
    folders = [_random_adapter(model, tmp_path / f"a{k}", seed=k) for k in range(3)]
    suites = [load("tiny_json"), load("tiny_mc")]
    alone = {}
    for k, folder in enumerate(folders):
        base, tok = load_model(str(tiny_model_dir), "cpu")
        one = PeftModel.from_pretrained(base, str(folder)).eval()
        alone[k] = {s.name: evaluate(one, tok, s) for s in suites}
    base, tok = load_model(str(tiny_model_dir), "cpu")
    shared = PeftModel.from_pretrained(base, str(folders[0]), adapter_name="a0")
    for k, folder in enumerate(folders[1:], start=1):
        shared.load_adapter(str(folder), adapter_name=f"a{k}")
    shared.eval()
    for suite in suites:
        together = evaluate_adapters(shared, tok, suite, ["a0", "a1", "a2"])
        for k in range(3):
            mine, theirs = together[f"a{k}"], alone[k][suite.name]
            assert [(r.item_id, r.output, r.scores) for r in mine.items] == [
                (r.item_id, r.output, r.scores) for r in theirs.items
            ]
            assert mine.metrics == theirs.metrics
    outputs = {k: tuple(r.output for r in alone[k]["tiny_json"].items) for k in range(3)}
    assert len(set(outputs.values())) > 1  # the adapters really differ, so the check above has teeth


@pytest.mark.slow
def test_shared_evaluation_in_a_run_matches_the_per_trial_path(env: dict[str, Any], tiny_model_dir: Path):
    """The same plan run serially (each trial scored alone) and with workers (the two LoRA trials trained, then
    scored together): every item's output and scores are identical, and the run says the pass was shared."""
    arms = [
        {"name": "baseline", "type": "baseline"},
        train_arm("lora-a", r=4, lr=5e-3, max_steps=2),
        train_arm("lora-b", r=8, lr=1e-2, max_steps=2),
    ]
    serial_plan = write_plan(env["root"] / "alone.yaml", tiny_model_dir, arms, train=env["train"], name="alone")
    shared_plan = write_plan(env["root"] / "together.yaml", tiny_model_dir, arms, train=env["train"], name="together")
    store = Store(str(env["root"] / "compare.db"))
    runner = Runner(store, quiet(), runs_dir=env["root"] / "runs")
    alone = runner.run(serial_plan, executor="local")
    together = runner.run(shared_plan, executor="workers", trials_per_gpu=1, shared_eval=True)
    assert not alone.failed and not together.failed
    found = manifests(store, together.run_id)
    assert found["lora-a"]["phases"]["shared_eval_with"] == 2 == found["lora-b"]["phases"]["shared_eval_with"]
    assert "shared_eval_with" not in found["baseline"]["phases"]
    assert item_outputs(store, alone.run_id) == item_outputs(store, together.run_id)


def serving_children() -> list[Any]:
    import psutil

    return [c for c in psutil.Process().children(recursive=True) if "--serve" in " ".join(c.cmdline())]


@pytest.mark.slow
def test_warm_workers_start_before_the_checks_and_are_adopted_or_stopped(
    env: dict[str, Any], tiny_model_dir: Path, tmp_path: Path
):
    from harness.run._workers import WarmWorkers, WorkerExecutor

    # the checks refuse the plan (an unknown suite): the workers started for it are stopped
    bad = write_plan(
        tmp_path / "bad.yaml",
        tiny_model_dir,
        [train_arm("lora", r=4)],
        train=env["train"],
        suites=["tiny_json", "no_such_suite"],
    )
    store = Store(str(tmp_path / "warm.db"))
    with pytest.raises(UserError, match="no_such_suite"):
        Runner(store, quiet(), runs_dir=tmp_path / "runs").run(bad, executor="workers", trials_per_gpu=2)
    assert serving_children() == []
    logs = tmp_path / "runs" / ".workers"  # where they logged their start-up; ended cleanly: no log left
    assert logs.is_dir() and list(logs.glob("cpu.*.log")) == []
    # a run that needs fewer workers than were started adopts the first and stops the other
    warm = WarmWorkers([], 2, tmp_path / "logs")
    pids = {slot: w.proc.pid for slot, w in warm.idle.items()}
    executor = WorkerExecutor(store, quiet(), [], 1, warm)
    assert [w.slot for w in executor.workers] == ["cpu.0"] and executor.workers[0].proc.pid == pids["cpu.0"]
    assert warm.idle == {} and [c.pid for c in serving_children()] == [pids["cpu.0"]]
    assert [p.name for p in (tmp_path / "logs").iterdir()] == [f"cpu.0-{os.getpid()}.log"]
    executor.close()
    assert serving_children() == []


@pytest.mark.slow
def test_a_continuing_trial_starts_once_its_parent_has_trained_not_when_it_is_scored(
    env: dict[str, Any], tiny_model_dir: Path
):
    plan = write_plan(
        env["root"] / "chain.yaml",
        tiny_model_dir,
        [train_arm("lora", r=4), train_arm("dpo-sft", "dpo", from_arm="lora", lr=1e-3)],
        train=env["train"],
        prefs=env["prefs"],
        name="chain",
    )
    store = Store(str(env["root"] / "chain.db"))
    outcome = Runner(store, quiet(), runs_dir=env["root"] / "runs").run(plan, executor="workers", trials_per_gpu=2)
    assert sorted(outcome.finished) == ["dpo-sft", "lora"], outcome.failed
    trials = {t.name: t for t in store.trials(outcome.run_id)}
    parent = manifests(store, outcome.run_id)["lora"]
    assert trials["dpo-sft"].started_at < trials["lora"].finished_at  # it did not wait for the parent's scores
    assert parent["phases"]["eval:tiny_json"] > 0  # which came after its training
    child = manifests(store, outcome.run_id)["dpo-sft"]
    assert child["training"]["init_adapter"] == str(Path(trials["lora"].folder) / "adapter")


@pytest.mark.slow
def test_a_continuing_trial_goes_ahead_of_the_trials_still_queued(env: dict[str, Any], tiny_model_dir: Path):
    """One worker: the DPO trial that continues the LoRA trial is queued when the LoRA trial has trained, ahead of
    the baseline queued from the start (the chain is the sweep's longest path)."""
    plan = write_plan(
        env["root"] / "ahead.yaml",
        tiny_model_dir,
        [
            {"name": "baseline", "type": "baseline"},
            train_arm("lora", r=4),
            train_arm("dpo-sft", "dpo", from_arm="lora", lr=1e-3),
        ],
        train=env["train"],
        prefs=env["prefs"],
        name="ahead",
        suites=["tiny_json"],
    )
    store = Store(str(env["root"] / "ahead.db"))
    outcome = Runner(store, quiet(), runs_dir=env["root"] / "runs").run(plan, executor="workers", trials_per_gpu=1)
    assert sorted(outcome.finished) == ["baseline", "dpo-sft", "lora"], outcome.failed
    started = {t.name: t.started_at for t in store.trials(outcome.run_id)}
    assert started["lora"] < started["dpo-sft"] < started["baseline"], started


def test_the_driver_side_of_a_run_does_not_import_torch():
    """The driver (the CLI, the runner, the worker pool) starts fast: torch, transformers and TRL load only in the
    worker processes that run trials."""
    import subprocess
    import sys

    code = (
        "import sys, harness.cli, harness.run._runner, harness.run._workers, harness.run._dispatch; "
        "print(sorted(m for m in ('torch', 'transformers', 'trl', 'peft') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert done.stdout.strip() == "[]", done.stdout


def _blocked(dispatch: Any, worker: Any) -> tuple[threading.Thread, list[Any]]:
    """`next_for(worker)` in a thread; the list gets its answer. Joined briefly: still alive means it waits."""
    got: list[Any] = []
    thread = threading.Thread(target=lambda: got.append(dispatch.next_for(worker)), daemon=True)
    thread.start()
    thread.join(0.3)
    return thread, got


def test_dispatch_gives_continuing_trials_to_a_spare_only_while_the_queue_holds_the_slots():
    from harness.run._dispatch import Dispatch
    from harness.run._workers import Worker

    slot, spare = Worker("cpu.0", []), Worker("cpu.spare0", [], spare=True)
    dispatch = Dispatch([("trial", ["A"]), ("trial", ["B"])], [slot], [spare])
    assert dispatch.next_for(slot) == ("trial", ["A"])
    waiting, got = _blocked(dispatch, spare)
    assert waiting.is_alive() and got == []  # a queued trial is not a spare's
    dispatch.follow([("trial", ["F"])])  # A has trained: F continues it, the slot is busy
    waiting.join(5)
    assert got == [("trial", ["F"])]
    dispatch.done(slot, [])
    assert dispatch.next_for(slot) == ("trial", ["B"])
    dispatch.done(spare, [])
    dispatch.done(slot, [])
    assert dispatch.next_for(slot) is None and dispatch.next_for(spare) is None


def test_dispatch_prefers_a_free_slot_when_the_queue_is_empty_and_the_least_busy_device():
    from harness.run._dispatch import Dispatch
    from harness.run._workers import Worker

    gpu0a, gpu0b, gpu1a = Worker("gpu0.0", ["0"]), Worker("gpu0.1", ["0"]), Worker("gpu1.0", ["1"])
    spare = Worker("gpu0.spare0", ["0"], spare=True)
    dispatch = Dispatch([("trial", ["A"])], [gpu0a, gpu0b, gpu1a], [spare])
    assert dispatch.next_for(gpu0a) == ("trial", ["A"])  # GPU 0 now runs one trial
    waiters = {w.slot: _blocked(dispatch, w) for w in (gpu0b, spare, gpu1a)}
    dispatch.follow([("trial", ["F"])])
    waiters["gpu1.0"][0].join(5)
    # the queue is empty: a slot, not the spare; of the free slots, the one on the GPU running nothing
    assert waiters["gpu1.0"][1] == [("trial", ["F"])]
    assert waiters["gpu0.1"][1] == [] and waiters["gpu0.spare0"][1] == []
    dispatch.done(gpu0a, [])
    dispatch.done(gpu1a, [])
    for thread, _got in waiters.values():
        thread.join(5)
        assert not thread.is_alive()
    assert waiters["gpu0.1"][1] == [None] and waiters["gpu0.spare0"][1] == [None]


def test_spare_workers_only_on_gpus_for_continuing_trials_where_memory_fits_one_more():
    from harness.run._capacity import spare_workers

    assert spare_workers(["0", "1"], 4, continuing=1, free_gib=139, per_trial_gib=2) == 1
    assert spare_workers(["0", "1"], 4, continuing=3, free_gib=139, per_trial_gib=2) == 2  # one per GPU at most
    assert spare_workers(["0"], 4, continuing=0, free_gib=139, per_trial_gib=2) == 0  # nothing continues
    assert spare_workers([], 1, continuing=1, free_gib=0, per_trial_gib=2) == 0  # CPU workers
    assert spare_workers(["0"], 2, continuing=1, free_gib=80, per_trial_gib=30) == 0  # memory fits 2 only


@pytest.mark.slow
def test_a_continuing_trial_runs_on_a_spare_worker_while_its_parent_is_scored(
    env: dict[str, Any], tiny_model_dir: Path
):
    """One slot and one spare: the DPO trial starts on the spare once the LoRA trial has trained (the slot is busy
    scoring it); the baseline waits for the slot."""
    plan = write_plan(
        env["root"] / "spare.yaml",
        tiny_model_dir,
        [
            {"name": "baseline", "type": "baseline"},
            train_arm("lora", r=4),
            train_arm("dpo-sft", "dpo", from_arm="lora", lr=1e-3),
        ],
        train=env["train"],
        prefs=env["prefs"],
        name="spare",
        suites=["tiny_json"],
    )
    store = Store(str(env["root"] / "spare.db"))
    outcome = Runner(store, quiet(), runs_dir=env["root"] / "runs").run(
        plan, executor="workers", trials_per_gpu=1, spares=1
    )
    assert sorted(outcome.finished) == ["baseline", "dpo-sft", "lora"], outcome.failed
    trials = {t.name: t for t in store.trials(outcome.run_id)}
    pids = {name: m["process"]["pid"] for name, m in manifests(store, outcome.run_id).items()}
    assert trials["dpo-sft"].started_at < trials["lora"].finished_at <= trials["baseline"].started_at
    assert pids["dpo-sft"] != pids["lora"] == pids["baseline"]
    assert serving_children() == []


@pytest.mark.slow
def test_worker_startup_bench_times_each_stage_alone_and_together(tmp_path: Path):
    """bench/worker_startup.py on the CPU: every stage timed in a fresh interpreter, alone and two at once, and the
    modules that dominate the imports named (the GPU run is committed as reports/gpu/worker_startup.json)."""
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[2]
    out = tmp_path / "startup.json"
    subprocess.run(
        [
            sys.executable,
            str(repo / "bench" / "worker_startup.py"),
            "--processes",
            "2",
            "--model",
            "",
            "--out",
            str(out),
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "CUDA_VISIBLE_DEVICES": ""},
    )
    report = json.loads(out.read_text())
    stages = ("imports", "trl", "cuda", "model")
    assert report["alone"]["imports"] > 0 and all(report["alone"][s] >= 0 for s in stages)
    assert len(report["together"]) == 2 and report["slowest_together"]["imports"] > 0
    assert report["ratio"]["imports"] == round(report["slowest_together"]["imports"] / report["alone"]["imports"], 2)
    assert report["top_imports"][0]["module"] == "harness.run._trial"
    committed = json.loads((repo / "reports" / "gpu" / "worker_startup.json").read_text())
    assert committed["device"].startswith("NVIDIA H") and committed["processes"] == 8


def test_spare_workers_option_reads_auto_or_a_count():
    from harness.run import parse_spare_workers

    assert parse_spare_workers("auto") is None and parse_spare_workers("0") == 0 and parse_spare_workers("2") == 2
    with pytest.raises(UserError, match="spare-workers"):
        parse_spare_workers("-1")
