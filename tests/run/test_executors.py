"""Executors: which trial gets which devices (fake GPU lists, no GPU needed), the worker and
`accelerate launch` commands, a real process pool writing one store concurrently, and Ray."""

from __future__ import annotations

import json
import os
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from harness.base import UserError
from harness.run import (
    DevicePool,
    PoolExecutor,
    RayExecutor,
    Runner,
    SerialExecutor,
    TrialJob,
    TrialResult,
    WorkerExecutor,
    longest_first,
    make_executor,
    outcome_from_store,
    parse_gpus,
    phases,
    ray_gpus,
    worker_command,
    worker_env,
)
from harness.store import Store
from tests.support.tiny_plans import tiny_env, train_arm, write_data, write_plan


def quiet() -> Console:
    return Console(width=120, file=open(os.devnull, "w"))


# --- devices and commands -------------------------------------------------------------------------
def test_parse_gpus(monkeypatch: pytest.MonkeyPatch):
    assert parse_gpus(None) is None and parse_gpus("all") is None
    assert parse_gpus("none") == [] and parse_gpus("cpu") == []
    assert parse_gpus("0,2,3") == ["0", "2", "3"]
    monkeypatch.setattr("harness.run._devices.visible_gpus", lambda: ["4", "5", "6"])
    assert parse_gpus("2") == ["4", "5"]  # a count takes the first visible ones, as CUDA_VISIBLE_DEVICES names them
    with pytest.raises(UserError, match="asked for 4 GPUs but 3"):
        parse_gpus("4")
    with pytest.raises(UserError) as info:
        parse_gpus("0,x")
    assert info.value.field == "--gpus"


def test_worker_command_for_one_process_and_for_data_parallel():
    single = worker_command("/runs/r/t/unit.json", 1, python="/venv/bin/python")
    assert single == ["/venv/bin/python", "-m", "harness.run", "/runs/r/t/unit.json"]
    ddp = worker_command("/runs/r/t/unit.json", 4, port=29611, python="/venv/bin/python")
    assert ddp[:3] == ["/venv/bin/python", "-m", "accelerate.commands.launch"]
    assert ddp[ddp.index("--num_processes") + 1] == "4" and "--multi_gpu" in ddp
    assert ddp[ddp.index("--main_process_port") + 1] == "29611"
    assert ddp[-3:] == ["-m", "harness.run", "/runs/r/t/unit.json"] and "--cpu" not in ddp
    eight = worker_command("u.json", 8)
    assert eight[eight.index("--num_processes") + 1] == "8"
    assert int(eight[eight.index("--main_process_port") + 1]) > 0  # a free port, so concurrent trials never clash


def test_worker_env_pins_devices():
    env = worker_env(["2", "3"], base={"PATH": "/bin", "CUDA_VISIBLE_DEVICES": "0,1,2,3"})
    assert env["CUDA_VISIBLE_DEVICES"] == "2,3" and env["PATH"] == "/bin"
    assert worker_env([], base={})["CUDA_VISIBLE_DEVICES"] == ""
    assert "CUDA_VISIBLE_DEVICES" not in worker_env(None, base={})
    assert worker_env(["0"], base={}, threads=4)["OMP_NUM_THREADS"] == "4"  # its share of the cores
    assert worker_env(["0"], base={"OMP_NUM_THREADS": "2"}, threads=4)["OMP_NUM_THREADS"] == "2"  # the user's wins
    assert "OMP_NUM_THREADS" not in worker_env(["0"], base={})


def test_unit_round_trips_as_json():
    unit = TrialJob("sqlite:////x/s.db", 3, "lora-r8", "/runs/x/lora-r8", 2, None)
    assert TrialJob.from_json(unit.to_json()) == unit


def test_make_executor_picks_by_devices(store: Store):
    assert isinstance(make_executor("local", store=store, console=quiet(), devices=[]), SerialExecutor)
    workers = make_executor("local", store=store, console=quiet(), devices=["0", "1"], trials_per_gpu=2)
    assert (
        isinstance(workers, WorkerExecutor)
        and [w.slot for w in workers.workers] == ["gpu0.0", "gpu1.0", "gpu0.1", "gpu1.1"]
        and workers.max_gpus_per_trial() == 2
    )
    cpu_workers = make_executor("workers", store=store, console=quiet(), devices=[], trials_per_gpu=3)
    assert isinstance(cpu_workers, WorkerExecutor) and len(cpu_workers.workers) == 3
    pool = make_executor("process", store=store, console=quiet(), devices=["0", "1", "2"])
    assert isinstance(pool, PoolExecutor) and pool.max_gpus_per_trial() == 3
    cpu_pool = make_executor("process", store=store, console=quiet(), devices=[])
    assert isinstance(cpu_pool, PoolExecutor) and cpu_pool.devices == ["cpu0"]
    assert worker_env(["cpu0"], {})["CUDA_VISIBLE_DEVICES"] == ""
    with pytest.raises(UserError) as info:
        make_executor("slurm", store=store, console=quiet(), devices=[])
    assert info.value.field == "--executor"


# --- scheduling with fake device lists --------------------------------------------------------------
class FakeLaunch:
    """Stands in for the worker process: records which devices each trial got and what else was running."""

    def __init__(self, seconds: float = 0.15) -> None:
        self.seconds = seconds
        self.lock = threading.Lock()
        self.held: set[str] = set()
        self.log: list[dict[str, Any]] = []
        self.ended: dict[str, float] = {}

    def __call__(self, unit: TrialJob, ids: list[str]) -> TrialResult:
        with self.lock:
            assert not self.held & set(ids), f"{unit.trial} got devices {ids} that are in use ({self.held})"
            self.held |= set(ids)
            self.log.append(
                {"trial": unit.trial, "ids": ids, "start": time.perf_counter(), "concurrent": sorted(self.held)}
            )
        time.sleep(self.seconds)
        with self.lock:
            self.held -= set(ids)
            self.ended[unit.trial] = time.perf_counter()
        return TrialResult(unit.trial, "finished")


def units(sizes: list[int]) -> list[TrialJob]:
    return [TrialJob("sqlite:///x.db", 1, f"t{i}", f"/tmp/t{i}", k) for i, k in enumerate(sizes)]


def test_pool_runs_one_trial_per_gpu_and_never_shares_a_device(store: Store):
    launch = FakeLaunch()
    done: list[TrialResult] = []
    PoolExecutor(store, quiet(), ["0", "1", "2", "3"], launch=launch).run(units([1] * 8), done.append)
    assert sorted(r.trial for r in done) == [f"t{i}" for i in range(8)]
    assert all(len(r["ids"]) == 1 for r in launch.log)
    assert max(len(r["concurrent"]) for r in launch.log) == 4  # four at once on four GPUs
    assert sorted(r["ids"][0] for r in launch.log[:4]) == ["0", "1", "2", "3"]


def test_multi_gpu_trials_get_disjoint_device_sets_in_submission_order(store: Store):
    launch = FakeLaunch()
    sizes = [2, 1, 1, 2, 4, 1, 3]
    done: list[TrialResult] = []
    PoolExecutor(store, quiet(), ["0", "1", "2", "3"], launch=launch).run(units(sizes), done.append)
    got = {r["trial"]: r["ids"] for r in launch.log}
    assert {t: len(ids) for t, ids in got.items()} == {f"t{i}": k for i, k in enumerate(sizes)}
    assert all(len(set(ids)) == len(ids) for ids in got.values())
    assert got["t0"] == ["0", "1"] and got["t1"] == ["2"] and got["t2"] == ["3"]
    four = next(r for r in launch.log if r["trial"] == "t4")
    assert four["concurrent"] == ["0", "1", "2", "3"]  # the 4-GPU trial ran alone
    # first come, first served: t5 needs one GPU and one was free while t4 waited for all four,
    # yet it started only after t4 (and so did t6)
    starts = {r["trial"]: r["start"] for r in launch.log}
    assert starts["t5"] > launch.ended["t4"] and starts["t6"] > launch.ended["t4"]
    assert starts["t4"] > max(launch.ended[t] for t in ("t0", "t1", "t2", "t3"))


def test_device_pool_refuses_impossible_requests():
    pool = DevicePool(["0", "1"])
    with pytest.raises(ValueError, match="needs 3 devices"):
        pool.acquire(3, pool.ticket())
    with pytest.raises(ValueError):
        DevicePool([])


def test_dependent_dpo_trials_run_in_a_later_phase(tmp_path: Path):
    from harness.plan import load_plan

    train, prefs = write_data(tmp_path)
    path = write_plan(
        tmp_path / "p.yaml",
        "smollm2-135m",
        [train_arm("dpo", "dpo", from_arm="lora-r4"), train_arm("lora"), {"name": "b", "type": "baseline"}],
        train=train,
        prefs=prefs,
        suites=["json_extract"],
        sweep={"arm": "lora", "params": {"r": [4, 8]}},
    )
    plan, _ = load_plan(path)
    us = [TrialJob("u", 1, name, "/f") for name in ("dpo", "lora-r4", "lora-r8", "b")]
    assert [[u.trial for u in p] for p in phases(us, plan)] == [["lora-r4", "lora-r8", "b"], ["dpo"]]


def test_trials_are_handed_out_longest_first(tmp_path: Path):
    from harness.plan import load_plan, trial_arms

    train, prefs = write_data(tmp_path)
    arms = [
        {"name": "b", "type": "baseline"},
        {"name": "r", "type": "rag", "k": 1},
        train_arm("short", max_steps=2),
        train_arm("long", max_steps=9),
        train_arm("dpo", "dpo", from_arm="short", max_steps=1),
    ]
    path = write_plan(tmp_path / "p.yaml", "smollm2-135m", arms, train=train, prefs=prefs, suites=["json_extract"])
    plan, _ = load_plan(path)
    by_name = {a.name: a for a in trial_arms(plan)}
    us = [TrialJob("u", 1, a["name"], "/f", after="short" if a["name"] == "dpo" else None) for a in arms]
    # the trial DPO continues first (its follower waits on it), then trained arms by steps, retrieval, the rest
    assert [u.trial for u in longest_first(us, by_name)] == ["short", "long", "dpo", "r", "b"]
    # steps from the data: 3 epochs of 40 rows at batch 2 (60 steps) outrank max_steps 9; of 2 rows (3 steps), not
    epochs = TrialJob("u", 1, "epochs", "/f")
    by_name["epochs"] = by_name["long"].model_copy(update={"name": "epochs", "max_steps": None, "epochs": 3.0})
    assert [u.trial for u in longest_first([us[3], epochs], by_name, {"train": 40})] == ["epochs", "long"]
    assert [u.trial for u in longest_first([us[3], epochs], by_name, {"train": 2})] == ["long", "epochs"]


def test_a_worker_that_dies_before_recording_is_marked_failed(store: Store, tmp_path: Path):
    run_id = store.create_run("r", {}, "h", "m", "")
    trial = store.ensure_trial(run_id, "t", "t", "lora", {})
    store.update_trial(trial.id, status="running")
    log = tmp_path / "worker.log"
    log.write_text("loading\nRuntimeError: CUDA error: an illegal memory access\n")
    unit = TrialJob(store.url, run_id, "t", str(tmp_path))
    result = outcome_from_store(store, unit, "worker exited with code -9", log)
    assert result.status == "failed" and "code -9" in (result.error or "") and "illegal memory" in (result.error or "")
    assert store.get_trial(f"{run_id}/t").status == "failed"
    store.update_trial(trial.id, status="finished")
    assert outcome_from_store(store, unit, "x").status == "finished"  # a recorded outcome is kept


# --- real workers ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Any:
    yield from tiny_env(tmp_path_factory.mktemp("executors"), items=2, rows=4, one_thread=True)


def check_run(store: Store, run_id: int, names: set[str]) -> dict[str, Any]:
    trials = {t.name: t for t in store.trials(run_id)}
    assert {n: t.status for n, t in trials.items()} == {n: "finished" for n in names}, {
        n: (t.status, t.error) for n, t in trials.items()
    }
    manifests = {n: json.loads((Path(t.folder) / "manifest.json").read_text()) for n, t in trials.items()}
    for t in trials.values():
        assert sorted(s.name for _, s in store.evaluations(t.id)) == ["tiny_json", "tiny_mc"]
        assert (Path(t.folder) / "worker.log").exists()
    assert store.get_run(run_id).status == "finished"
    return manifests


@pytest.mark.slow
def test_process_pool_pins_each_worker_to_its_device(env: dict[str, Any], tiny_model_dir: Path):
    """Two fake GPU ids on a CPU machine: two worker processes at once, each with its own
    CUDA_VISIBLE_DEVICES, both writing to one SQLite store."""
    plan = write_plan(
        env["root"] / "pool.yaml",
        tiny_model_dir,
        [{"name": "baseline", "type": "baseline"}, train_arm("lora", r=4)],
        train=env["train"],
        name="pool",
    )
    store = Store(str(env["root"] / "pool.db"))
    outcome = Runner(store, quiet(), runs_dir=env["root"] / "runs").run(plan, gpus=["0", "1"], executor="process")
    manifests = check_run(store, outcome.run_id, {"baseline", "lora"})
    assert {m["cuda_visible_devices"] for m in manifests.values()} == {"0", "1"}
    trials = {t.name: t for t in store.trials(outcome.run_id)}
    # both processes were up at once: each started (its 'start' phase is its age when its trial began) before the
    # other's trial ended (their trials' own intervals may not overlap: a tiny baseline can end while the other
    # process is still importing)
    spawned = {
        n: datetime.fromisoformat(t.started_at).timestamp() - manifests[n]["phases"]["start"] for n, t in trials.items()
    }
    assert spawned["lora"] < datetime.fromisoformat(trials["baseline"].finished_at).timestamp()
    assert spawned["baseline"] < datetime.fromisoformat(trials["lora"].finished_at).timestamp()
    assert (Path(trials["lora"].folder) / "unit.json").exists()


def test_ray_tasks_ask_for_a_share_of_a_gpu_or_whole_gpus():
    assert [ray_gpus(1, k) for k in (1, 2, 4)] == [1.0, 0.5, 0.25]
    assert ray_gpus(2, 4) == 2.0 and ray_gpus(1, 0) == 1.0


@pytest.mark.slow
def test_ray_executor_runs_trials_as_ray_tasks(env: dict[str, Any], tiny_model_dir: Path):
    ray = pytest.importorskip("ray")
    plan = write_plan(
        env["root"] / "ray.yaml",
        tiny_model_dir,
        [{"name": "baseline", "type": "baseline"}, train_arm("lora", r=4)],
        train=env["train"],
        name="ray",
    )
    store = Store(str(env["root"] / "ray.db"))
    # one GPU declared to Ray (this machine may have none): two one-GPU trials share it, a half each, as
    # --trials-per-gpu 2 asks; on a machine without CUDA they then run on the CPU
    ray.init(num_cpus=2, num_gpus=1, include_dashboard=False, log_to_driver=False)
    try:
        executor = RayExecutor(store, quiet(), trials_per_gpu=2)
        assert executor.max_gpus_per_trial() == 1
        outcome = Runner(store, quiet(), runs_dir=env["root"] / "runs").run(plan, executor="ray", trials_per_gpu=2)
        pids = {t.name: t for t in store.trials(outcome.run_id)}
    finally:
        ray.shutdown()
    manifests = check_run(store, outcome.run_id, {"baseline", "lora"})
    assert pids["lora"].train_seconds and len(store.train_steps(pids["lora"].id)) == 1
    assert all(m["device"] == "cpu" for m in manifests.values())


def test_gpus_per_trial_beyond_what_one_trial_can_get(env: dict[str, Any], tiny_model_dir: Path):
    """The same check runs for the local executors (visible GPUs) and for Ray (the largest node's GPUs)."""
    from harness.plan import load_plan
    from harness.run import check_gpus_per_trial

    path = write_plan(
        env["root"] / "big.yaml",
        tiny_model_dir,
        [{"name": "b", "type": "baseline"}, train_arm("lora", gpus_per_trial=4)],
        train=env["train"],
    )
    plan, doc = load_plan(path)
    check_gpus_per_trial(plan, doc, plan.arms, 4)
    with pytest.raises(UserError) as info:
        check_gpus_per_trial(plan, doc, plan.arms, 2)
    assert info.value.field == "arms[1].gpus_per_trial" and info.value.line == 13 and "4 GPUs but 2" in str(info.value)


@pytest.mark.slow
def test_data_parallel_trial_goes_through_accelerate_launch(env: dict[str, Any], tiny_model_dir: Path):
    """gpus_per_trial: 2 on two (fake) GPU ids: `accelerate launch --num_processes 2` starts two ranks
    (on this CPU machine they train over gloo); both train, rank 0 alone records the trial."""
    plan = write_plan(
        env["root"] / "ddp.yaml",
        tiny_model_dir,
        [train_arm("lora", r=4, max_steps=2, gpus_per_trial=2)],
        train=env["train"],
        name="ddp",
    )
    store = Store(str(env["root"] / "ddp.db"))
    outcome = Runner(store, quiet(), runs_dir=env["root"] / "runs").run(plan, gpus=["0", "1"])
    manifests = check_run(store, outcome.run_id, {"lora"})
    assert manifests["lora"]["world_size"] == 2 and manifests["lora"]["cuda_visible_devices"] == "0,1"
    log = (Path(store.trials(outcome.run_id)[0].folder) / "worker.log").read_text()
    assert "accelerate.commands.launch --num_processes 2" in log
    assert log.count("training") >= 2  # each rank ran the training loop
    lora = store.trials(outcome.run_id)[0]
    assert [s.step for s in store.train_steps(lora.id)] == [1, 2]  # recorded once, by rank 0
