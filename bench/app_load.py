"""How fast the Streamlit app loads a large run, against a naive un-paginated render.

    python bench/app_load.py                                   # 10,000 items -> reports/bench/app_load.json
    python bench/app_load.py --items 300 --out /tmp/load.json  # quick check

Builds a synthetic run in a fresh SQLite store through the store's own API: one generate suite of
N items (written as suite.yaml + items.jsonl and loaded by `harness.evaluation.load`), three arms
(baseline, prompt, lora) whose outputs are right for 40%, 55% and 70% of the items, scored by the
real `exact_match` and `json_valid` scorers, saved with `Store.save_evaluation`, plus logged training
steps for the lora arm. Then it times, with Streamlit's AppTest (the app's script run end to end,
no browser), each page's first load (cold caches) and a second load (warm `st.cache_data`).

The peer is the drill-down page written the naive way: every item of the suite, every arm's
output, read with `Store.item_rows` and rendered with no pagination and no cache. The ratio is the
peer's load time over the app's paginated drill-down (cold, and warm).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.append(str(Path(__file__).resolve().parents[1]))  # bench._common from this checkout, PYTHONPATH or not
from bench._common import REPO

ARMS = {"baseline": 0.40, "prompt": 0.55, "lora": 0.70}  # share of items each arm gets right
PAGES = ("overview", "comparison", "drilldown", "training", "safety", "gate")
NAIVE_DRILLDOWN = """
import os
import streamlit as st
from harness.store import Store

store = Store(os.environ["TUNEGATE_STORE"])
run = store.runs()[0]
trials = store.trials(run.id)
st.header("Drill-down (naive)")
rows = {}
for t in trials:
    for ev, suite in store.evaluations(t.id):
        rows[t.name] = {r["item"]: r for r in store.item_rows(ev.id)}
first = rows[trials[0].name]
for key, row in first.items():
    st.markdown(f"**{key}**")
    cols = st.columns(1 + len(trials))
    cols[0].code(row["data"].get("prompt") or "", language=None)
    for col, t in zip(cols[1:], trials):
        r = rows[t.name][key]
        col.code(r["output"], language=None)
        col.caption(" · ".join(f"{m}={v}" for m, v in r["scores"].items()))
"""


def build_store(folder: Path, n_items: int, seed: int = 0) -> tuple[str, float]:
    """A store holding one run with N items scored for three arms; returns (path, seconds to build)."""
    from harness.evaluation import ItemResult, SuiteResult, load
    from harness.scorers import build
    from harness.store import Store

    rng = random.Random(seed)
    suite_dir = folder / "synthetic_extract"
    suite_dir.mkdir(parents=True, exist_ok=True)
    (suite_dir / "suite.yaml").write_text(
        "name: synthetic_extract\nkind: generate\ncategory: task\nscorers: [exact_match, json_valid]\n"
        "primary: exact_match\n"
    )
    names = ["Ana", "Bo", "Chen", "Dara", "Eli", "Fen", "Gus", "Hana", "Ivo", "Jun"]
    cities = ["Oslo", "Pune", "Lima", "Kyiv", "Baku", "Riga", "Doha", "Accra"]
    items = []
    for i in range(n_items):
        name, city, age = rng.choice(names) + f" {i}", rng.choice(cities), rng.randint(18, 90)
        items.append(
            {
                "id": f"item-{i:05d}",
                "prompt": f"Extract name, age and city as compact JSON.\nText: {name}, {age}, lives in {city}.",
                "reference": json.dumps({"name": name, "age": age, "city": city}, separators=(",", ":")),
            }
        )
    (suite_dir / "items.jsonl").write_text("".join(json.dumps(i) + "\n" for i in items))
    suite = load(str(suite_dir))
    scorers = [build("exact_match"), build("json_valid")]
    path = folder / "store.db"
    started = time.perf_counter()
    store = Store(str(path))
    run_id = store.create_run("bench-10k", {"suites": [suite.name]}, "0" * 16, "synthetic-model", str(folder))
    for arm, right in ARMS.items():
        trial = store.ensure_trial(run_id, arm, arm, "lora" if arm == "lora" else arm, {"name": arm, "type": arm})
        results = []
        for item in suite.items:
            ref = str(item.reference)
            out = (
                ref
                if rng.random() < right
                else (ref.replace("}", ", }") if rng.random() < 0.5 else f"Sure! Here is the JSON: {ref}")
            )
            results.append(
                ItemResult(
                    item.id,
                    f"<|im_start|>user\n{item.prompt}<|im_end|>\n",
                    out,
                    {s.name: s(out, item) for s in scorers},
                )
            )
        store.save_evaluation(trial.id, SuiteResult(suite, results, 1.0))
        if arm == "lora":
            store.add_train_steps(
                trial.id,
                [
                    {
                        "step": s,
                        "loss": 2.0 / s,
                        "lr": 2e-4,
                        "grad_norm": 1.0,
                        "tokens_per_second": 900.0,
                        "peak_memory_gib": 3.1,
                    }
                    for s in range(1, 101)
                ],
            )
            store.update_trial(
                trial.id, train_seconds=120.0, tokens_per_second=900.0, peak_memory_gib=3.1, final_loss=0.02
            )
        store.update_trial(trial.id, status="finished")
    store.finish_run(run_id, "finished")
    seconds = time.perf_counter() - started
    store.dispose()
    return str(path), seconds


def timed_run(script: Path, page: str | None, timeout: float) -> tuple[float, int]:
    """Seconds for one full script run under AppTest, and how many elements it produced."""
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(script), default_timeout=timeout)
    if page:
        at.query_params["page"] = page
    started = time.perf_counter()
    at.run()
    seconds = time.perf_counter() - started
    if at.exception:
        raise RuntimeError(f"{script.name} {page}: {[e.message for e in at.exception]}")
    return seconds, _count(at.main)


def _count(block: Any) -> int:
    children = getattr(block, "children", {})
    return len(children) + sum(_count(c) for c in children.values())


def clear_caches() -> None:
    import streamlit as st

    st.cache_data.clear()
    st.cache_resource.clear()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=10_000, help="items in the synthetic suite (default 10000)")
    parser.add_argument("--out", type=Path, default=REPO / "reports" / "bench" / "app_load.json")
    parser.add_argument("--timeout", type=float, default=1200, help="seconds allowed for one page load")
    args = parser.parse_args(argv)
    if args.items < 1:
        parser.error("--items must be at least 1")

    from streamlit.logger import set_log_level

    set_log_level("error")  # AppTest outside a server warns about the missing runtime on every run
    with tempfile.TemporaryDirectory(prefix="tunegate-app-load-") as tmp:
        folder = Path(tmp)
        store_path, build_seconds = build_store(folder, args.items)
        os.environ["TUNEGATE_STORE"] = store_path
        print(f"store with {args.items} items x {len(ARMS)} arms built in {build_seconds:.1f}s", flush=True)
        app = REPO / "app.py"
        timed_run(app, "advisor", args.timeout)  # imports (streamlit, altair, pandas, harness) are not timed
        pages: dict[str, dict[str, float | int]] = {}
        for page in PAGES:
            clear_caches()
            cold, elements = timed_run(app, page, args.timeout)
            warm, _ = timed_run(app, page, args.timeout)
            pages[page] = {"cold_s": round(cold, 3), "warm_s": round(warm, 3), "elements": elements}
            print(f"  app {page:<11} cold {cold:7.2f}s  warm {warm:6.2f}s  ({elements} elements)", flush=True)
        naive = folder / "naive_drilldown.py"
        naive.write_text(NAIVE_DRILLDOWN)
        clear_caches()
        peer_s, peer_elements = timed_run(naive, None, args.timeout)
        print(f"  peer naive drill-down  {peer_s:7.2f}s  ({peer_elements} elements)", flush=True)
        store_mib = Path(store_path).stat().st_size / 2**20
    app_cold, app_warm = pages["drilldown"]["cold_s"], pages["drilldown"]["warm_s"]
    result = {
        "benchmark": "app_load",
        "items": args.items,
        "arms": list(ARMS),
        "store_mib": round(store_mib, 1),
        "build_seconds": round(build_seconds, 2),
        "pages": pages,
        "peer": {
            "name": "naive un-paginated drill-down (Store.item_rows, every item, no cache)",
            "seconds": round(peer_s, 3),
            "elements": peer_elements,
        },
        "ratio_cold": round(peer_s / app_cold, 2),
        "ratio_warm": round(peer_s / app_warm, 2),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "load_average_1m": round(os.getloadavg()[0], 2),
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"naive drill-down / paginated drill-down: {result['ratio_cold']}x (cold), {result['ratio_warm']}x (warm)")
    print(f"written: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
