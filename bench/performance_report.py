"""Writes reports/PERFORMANCE.md from the measured results committed under reports/ (reports/perf/*.json,
reports/gpu/*.json and *.xml, reports/bench/*.json), so the page cannot disagree with them.

    python bench/performance_report.py                       # rewrite reports/PERFORMANCE.md
    python bench/performance_report.py --check               # exit 1 if the committed page is out of date
    python bench/performance_report.py --reports DIR --out F # another reports folder, another page

Every number on the page is read from a field of one of those files; the text between the tables says what a
bench measures and how, never a number. `tests/bench/test_performance_report.py` regenerates the page and compares
it with the committed one, so a changed or added result file without a regenerated page fails the tests. A file
the page has no section for is still listed, with its device, versions and date, under "The result files".
A file that is not valid JSON is refused with one line naming it, exit 2.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = ("perf", "gpu", "bench")
VERSION_KEYS = ("torch", "transformers", "trl", "peft")
MAIN_TRAIN = "perf/train_throughput.json"
DPO_FILE = "perf/train_throughput_dpo.json"


class BadResult(Exception):
    """A result file that cannot be read: the message is the one line the command prints."""


# ---------------------------------------------------------------- formatting


def num(x: float | int | None, digits: int = 0) -> str:
    if x is None:
        return "—"
    if isinstance(x, int):
        return f"{x:,}"
    return f"{x:,.{digits}f}"


def value(x: float) -> str:
    """A measured value against its target, to four significant digits."""
    return f"{x:.4g}"


def ratio(x: float | None, digits: int = 2) -> str:
    return "—" if x is None else f"{x:.{digits}f}×"


def pct(x: float | None, digits: int = 1) -> str:
    return "—" if x is None else f"{100 * x:.{digits}f}%"


def signed(x: float) -> str:
    return f"{x:+.3f}"


def day(stamp: str | None) -> str:
    """An ISO timestamp as `YYYY-MM-DD HH:MM` UTC (the files record UTC)."""
    if not stamp:
        return "—"
    return stamp.replace("T", " ")[:16]


def table(header: Iterable[str], rows: Iterable[Iterable[Any]], align: str = "") -> list[str]:
    """A Markdown table; `align` has one letter per column, `l` or `r` (default: first left, the rest right)."""
    header = list(header)
    align = align or "l" + "r" * (len(header) - 1)
    rule = ["---:" if a == "r" else "---" for a in align]
    out = ["| " + " | ".join(header) + " |", "| " + " | ".join(rule) + " |"]
    out += ["| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |" for row in rows]
    return out + [""]


def met(flag: bool | None) -> str:
    return {True: "met", False: "**missed**", None: "—"}[flag]


# ---------------------------------------------------------------- reading


def load(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise BadResult(f"{path}:{e.lineno}: not valid JSON: {e.msg}") from None


def device_of(data: dict[str, Any]) -> str:
    dev = data.get("device")
    if isinstance(dev, str):
        return dev
    if isinstance(dev, dict):
        name = dev.get("name") or ", ".join(dev.get("names") or []) or dev.get("type", "")
        count = dev.get("count")
        return f"{count}× {name}" if count and count > 1 else name
    if "cpus" in data:
        return f"CPU ({data['cpus']} cores)"
    return "—"


def date_of(data: dict[str, Any]) -> str | None:
    return data.get("date") or data.get("created_at") or (data.get("run") or {}).get("created_at")


def versions_of(data: dict[str, Any]) -> dict[str, str]:
    found = data.get("versions") if isinstance(data.get("versions"), dict) else data
    return {k: str(found[k]) for k in VERSION_KEYS if isinstance(found.get(k), str)}


def junit_counts(path: Path) -> dict[str, Any]:
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as e:
        raise BadResult(f"{path}:{e.position[0]}: not valid JUnit XML: {e}") from None
    suite = root if root.tag == "testsuite" else root.find("testsuite")
    if suite is None:
        raise BadResult(f"{path}: no <testsuite> element")
    counts = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
    return counts | {"date": suite.get("timestamp"), "names": [c.get("name") for c in suite.iter("testcase")]}


# ---------------------------------------------------------------- sections


def files_section(results: dict[str, Any], junit: dict[str, dict[str, Any]]) -> list[str]:
    out = [
        "## The result files",
        "",
        "Each file records its device, library versions and date; the sections above are read from them.",
        "",
    ]
    rows = []
    for name, data in results.items():
        if not isinstance(data, dict):
            rows.append((f"`{name}`", "—", "—", "—", "—"))
            continue
        v = versions_of(data)
        rows.append(
            (
                f"`{name}`",
                data.get("bench") or data.get("benchmark") or "—",
                device_of(data),
                day(date_of(data)),
                ", ".join(f"{k} {v[k]}" for k in VERSION_KEYS if k in v) or "—",
            )
        )
    for name, counts in junit.items():
        rows.append((f"`{name}`", "pytest (JUnit)", "—", day(counts["date"]), "—"))
    return out + table(("file", "bench", "device", "date (UTC)", "versions"), rows, "lllll")


def train_section(data: dict[str, Any]) -> list[str]:
    s, model = data["settings"], data["model"]
    out = [
        "## Training throughput",
        "",
        f"`bench/train_throughput.py` (`reports/{MAIN_TRAIN}`, {device_of(data)}): a Llama shape of "
        f"{num(model['parameters'] / 1e9, 2)}B parameters, LoRA r{s['r']} on all linear layers, micro-batch "
        f"{s['batch']}, length ≤{s['max_length']}, bf16, {s['steps']} steps of which the first {s['warmup']} are "
        "left out; every configuration in the same process on the same data, weights and order. "
        "The MFU counts `" + data["mfu_formula"].split(":")[0] + "` against the device's peak "
        f"({num(data['device']['peak_bf16_flops'] / 1e12)} TFLOPS bf16).",
        "",
    ]
    sections = data.get("sections_run") or {}
    if sections:
        out += ["When each section ran:", ""]
        out += table(
            ("section", "date (UTC)", "seconds"),
            ((k, day(v["date"]), num(v["seconds"])) for k, v in sections.items()),
            "llr",
        )
    best = data["vs_best_stock"]["peer"]
    rows = []
    for name, run in data["runs"].items():
        if run.get("error") or not run.get("real_tokens_per_second"):
            continue
        label = f"`{name}`" + (" (best stock)" if name == best else "")
        rows.append((label, num(run["real_tokens_per_second"]), num(run["peak_memory_gib"], 2), pct(run["mfu"])))
    out += table(("run", "real tok/s", "peak GiB", "MFU"), rows)
    failed = [(n, r["error"]) for n, r in data["runs"].items() if r.get("error")]
    if failed:
        out += ["Configurations that failed and were recorded as such:", ""]
        out += [f"- `{n}`: {err.splitlines()[0][:160]}" for n, err in failed] + [""]
    vs = data["vs_best_stock"]
    vs_defaults = data["runs"][vs["ours"]]["real_tokens_per_second"] / data["runs"]["peer"]["real_tokens_per_second"]
    out += [
        f"**tunegate's default (`{vs['ours']}`) against the best stock configuration (`{vs['peer']}`)**: "
        f"{ratio(vs['throughput_ratio'])} the tokens/s at {ratio(vs['peak_memory_ratio'])} the peak memory, "
        f"losses {pct(vs['loss_rel_diff'], 3)} apart on the same tokens. Against TRL's defaults (`peer`): "
        f"{ratio(vs_defaults, 1)}.",
        "",
    ]
    for group, targets in data.get("targets", {}).items():
        out += [f"Targets (`targets.{group}`):", ""]
        out += table(
            ("measure", "value", "target", ""),
            ((k, value(t["value"]), t["target"], met(t["met"])) for k, t in targets.items()),
            "lrrl",
        )
    out += [
        "What makes the default fast (each switch is turned off in its own `ours-no-*` run above):",
        "",
        "- **Overlapped steps** (`harness/model/_overlap.py`, `FastPath.overlap`, on by default for SFT; "
        "`TUNEGATE_OVERLAP=0` turns them off): the data collator works out packing and labelled positions on the "
        "host, TRL's chunked loss head picks positions by index, and the step's metrics and loss log stay on the "
        "device and are read one step late from non-blocking copies, so the CPU and GPU work at once instead of "
        "taking turns. Every logged row equals TRL's own (`tests/model/test_overlap.py`).",
        "- **CUDA graphs** over the decoder layers (`harness/model/_graphs.py`; `TUNEGATE_CUDA_GRAPHS=0` turns them "
        "off, `=always` graphs every length untimed): each packed micro-batch is padded to one of a few lengths and "
        "the layers' forward and backward replay as one graph per length. Each padded length is first timed eagerly; "
        "lengths bound by the device (`gpu_bound`) stay eager, since a graph would only add padding.",
        "- **Liger's kernels** where they pay (`DEFAULT_LIGER_KERNELS`; the table below).",
        "",
    ]
    liger = data.get("liger_per_kernel")
    if liger:
        out += [
            f"**Liger's kernels, one at a time** against ours without Liger (`{liger['baseline']}`); a kernel "
            f"pays at ≥{ratio(liger['threshold'])} with the loss within 1%:",
            "",
        ]
        out += table(
            ("kernel", "tok/s vs none", "peak memory vs none", "pays"),
            (
                (
                    k,
                    ratio(v["throughput_ratio_vs_none"]),
                    ratio(v["peak_memory_ratio_vs_none"]),
                    "yes" if v["pays"] else "no",
                )
                for k, v in liger["kernels"].items()
            ),
            "lrrl",
        )
    why = data.get("why_peer_is_slow")
    if why:
        out += ["**Why TRL's defaults are slow on this data** (`why_peer_is_slow`): " + why["what"] + ".", ""]
        out += table(
            ("variant", "real tok/s", "padding share", "loss-token share", "template share"),
            (
                (
                    f"`{k}`",
                    num(v.get("real_tokens_per_second")),
                    pct(v.get("padding_share")),
                    pct(v.get("loss_token_share")),
                    pct(v.get("template_share")),
                )
                for k, v in why["variants"].items()
            ),
        )
    out += profile_table(data)
    s8 = data.get("shape_8b")
    if s8:
        st = s8["settings"]
        out += [
            f"**At the Llama-3-8B shape** (`shape_8b`, {num(s8['parameters'] / 1e9, 2)}B parameters, random "
            f"weights, {st['steps']} steps of {st['batch']} rows, the first {st['warmup']} left out; the best "
            f"stock peer is `{s8['best_stock_from']}`, its peak memory our budget):",
            "",
        ]
        rows = []
        for method in ("lora", "qlora"):
            if method not in s8:
                continue
            runs, vs8 = s8[method]["runs"], s8[method]["vs_best_stock"]
            rows.append(
                (
                    method,
                    num(runs["peer"]["real_tokens_per_second"]),
                    num(runs[vs8["peer"]]["real_tokens_per_second"]),
                    num(runs[vs8["ours"]]["real_tokens_per_second"]),
                    ratio(vs8["throughput_ratio"]),
                    f"{ratio(vs8['peak_memory_ratio'])} ({num(runs[vs8['ours']]['peak_memory_gib'], 2)} GiB)",
                    pct(runs[vs8["ours"]]["mfu"]),
                )
            )
        out += table(
            (
                "",
                "TRL defaults tok/s",
                "best stock tok/s",
                "tunegate tok/s",
                "vs best stock",
                "peak memory vs best stock",
                "tunegate MFU",
            ),
            rows,
        )
    return out


def main_dpo_file(results: dict[str, Any]) -> str | None:
    """The file whose `dpo` section the DPO part of the page shows: the main training file once a lease merged the
    DPO bench into it (`gpu_session.sh dpomain`), else `perf/train_throughput_dpo.json`."""
    for name in (MAIN_TRAIN, DPO_FILE):
        if isinstance(results.get(name), dict) and results[name].get("dpo"):
            return name
    return None


def dpo_section(data: dict[str, Any], key: str) -> list[str]:
    """The `dpo` section of the file `reports/KEY`."""
    shapes = data.get("dpo")
    if not shapes:
        return []
    out = [
        f"## DPO (`reports/{key}`)",
        "",
        f"`bench/train_throughput.py --sections dpo` on {device_of(data)} ("
        + ", ".join(f"{name} {day(s.get('date') or data.get('date'))}" for name, s in shapes.items())
        + "): LoRA DPO on "
        "the same preference pairs, weights, order, steps and seed, in one process: TRL's `DPOTrainer` at its "
        "defaults (`peer`), then stock flags added one at a time to the last configuration that ran (a flag that "
        "fails is listed with its error), then ours (`harness/model/_dpo.py`) within the best stock "
        "configuration's peak memory, with the reference switched off inside the step (`adapter_off`) and computed "
        "up front (`precomputed`). Throughput is real (non-padding) tokens per second of the measured steps; "
        "`median step` is the ratio of the two runs' median seconds per real token over those steps (`step_rates`), "
        "which a few steps doing work once per run (a CUDA graph captured for a new padded length) do not move. The "
        'differences row "stock against stock" is the floor for the loss and reward-accuracy columns: two TRL '
        "configurations run one after the other (one flag apart, unless one between them failed), on the same "
        "pairs, weights and seed, differ by that much, because in bf16 "
        "the DPO loss is a difference of log-probabilities summed over long sequences, which any change of kernels "
        "moves, and a step's reward accuracy over a few pairs moves in whole pairs.",
        "",
    ]
    out += [f"How this file was made: {data['note']}.", ""] if data.get("note") else []
    for name, s in shapes.items():
        st, runs, best = s["settings"], s["runs"], s["best_stock"]
        out += [
            f"**{name}** ({num(s['parameters'] / 1e9, 2)}B parameters, {st['batch']} pairs a step, "
            f"{st['steps']} steps, max_length {st['max_length']}; best stock: `{best}`):",
            "",
        ]
        out += table(
            ("run", "reference", "real tok/s", "pairs/s", "peak GiB", "error"),
            (
                (
                    f"`{k}`",
                    (r.get("config") or {}).get("reference", "") or "",
                    *(
                        ("—", "—", "—")
                        if r.get("error")
                        else (
                            num(r["real_tokens_per_second"]),
                            num((r.get("metrics", {}).get("pairs_per_second") or [None])[0], 2),
                            num(r["peak_memory_gib"], 2),
                        )
                    ),
                    (r.get("error") or "")[:120],
                )
                for k, r in runs.items()
            ),
            "llrrrl",
        )
        ours = [k for k in runs if k.startswith("ours") and not runs[k].get("error")]
        comps = s.get("comparisons", {})
        rows = []
        for k in ours:
            c = comps.get(f"{k}_vs_{best}", {})
            if "throughput_ratio" in c:
                rows.append(
                    (
                        f"`{k}` ({runs[k]['config'].get('reference')})",
                        ratio(c["throughput_ratio"]),
                        ratio((c.get("step_rates") or {}).get("throughput_ratio_median_step")),
                        ratio(c["peak_memory_ratio"]),
                        pct(c["loss_rel_diff"], 2),
                        pct(c["reward_accuracy_rel_diff"], 0),
                    )
                )
        spread = s.get("stock_spread") or {}
        loss, acc = spread.get("loss_rel_diff"), spread.get("reward_accuracy_rel_diff")
        if loss and acc:
            rows.append(
                (
                    "stock against stock (configurations run one after the other)",
                    "",
                    "",
                    "",
                    span(loss, 2),
                    span(acc, 0),
                )
            )
        out += table(
            (
                f"against `{best}`",
                "throughput",
                "median step",
                "peak memory",
                "loss difference",
                "reward-accuracy difference",
            ),
            rows,
            "lrrrrr",
        )
        targets = s.get("targets") or {}
        if targets:
            out += [
                f"Issue targets as the run recorded them for `ours` "
                f"({runs['ours']['config'].get('reference')} reference): "
                + "; ".join(
                    f"{k} {value(t['value'])} (target {t['target']}: {met(t['met'])})" for k, t in targets.items()
                )
                + ".",
                "",
            ]
            bound = (targets.get("throughput_ratio") or {}).get("bounded_by")
            out += [f"What bounds the throughput target here: {bound}.", ""] if bound else []
            out += within_stock_spread(s, targets)
            out += default_reference_since(s, best)
        if s.get("profiles"):
            out += dpo_profile_table(s["profiles"])
    return out


def earlier_dpo_section(results: dict[str, Any], main: str) -> list[str]:
    """The DPO bench's other files (`perf/train_throughput_dpo*.json` other than `main`, profiles aside), one row
    per shape."""
    rows = []
    for name, data in sorted(results.items()):
        if name == main or not name.startswith("perf/train_throughput_dpo") or name.endswith("_profile.json"):
            continue
        for shape, s in (data.get("dpo") or {}).items():
            vs, ours = s.get("vs_best_stock") or {}, (s.get("runs") or {}).get("ours") or {}
            rows.append(
                (
                    f"`{name}`",
                    shape,
                    day(s.get("date") or data.get("date")),
                    device_of(data),
                    f"`{vs.get('peer')}`",
                    (ours.get("config") or {}).get("reference") or "—",
                    ratio(vs.get("throughput_ratio")),
                    ratio((vs.get("step_rates") or {}).get("throughput_ratio_median_step")),
                    ratio(vs.get("peak_memory_ratio")),
                )
            )
    if not rows:
        return []
    return [
        "Earlier runs of the DPO bench, kept for comparison (each file's `derived_after_the_run` and shape dates say "
        "how it was made):",
        "",
    ] + table(
        (
            "file",
            "shape",
            "date (UTC)",
            "device",
            "best stock",
            "ours' reference",
            "throughput",
            "median step",
            "memory",
        ),
        rows,
        "llllllrrr",
    )


def default_reference_since(shape: dict[str, Any], best: str) -> list[str]:
    """A run whose `ours` used the precomputed reference for a single pass over its pairs predates the current
    default (`harness.model._dpo.default_reference`: the adapter switched off when a run makes one pass)."""
    st, runs = shape["settings"], shape["runs"]
    one_pass = st["steps"] * st["batch"] <= shape.get("pairs", 0)
    other = shape.get("comparisons", {}).get(f"ours-adapter-off_vs_{best}", {})
    if not (one_pass and (runs.get("ours", {}).get("config") or {}).get("reference") == "precomputed" and other):
        return []
    return [
        "This shape's `ours` used the precomputed reference, the default when it ran; a run that goes over its pairs "
        "once now gets `adapter_off` (`harness/model/_dpo.py: default_reference`), the `ours-adapter-off` row: "
        f"{ratio(other.get('throughput_ratio'))} at {ratio(other.get('peak_memory_ratio'))} memory.",
        "",
    ]


def span(band: dict[str, float], digits: int) -> str:
    """A stock-against-stock band as 'a to b', or one value where a single pair of configurations made it."""
    lo, hi = pct(band["min"], digits), pct(band["max"], digits)
    return lo if lo == hi else f"{lo} to {hi}"


def within_stock_spread(shape: dict[str, Any], targets: dict[str, Any]) -> list[str]:
    """Whether ours' loss and reward-accuracy differences lie inside the stock-against-stock spread."""
    spread = shape.get("stock_spread") or {}
    said = []
    for key, label, digits in (("loss_rel_diff", "loss", 2), ("reward_accuracy_rel_diff", "reward-accuracy", 0)):
        got, band = (targets.get(key) or {}).get("value"), spread.get(key)
        if got is None or not band:
            continue
        where = "below" if got < band["min"] else "within" if got <= band["max"] else "**above**"
        said.append(f"its {label} difference {pct(got, digits)} is {where} their {span(band, digits)}")
    return [f"Against the stock-against-stock floor, {', '.join(said)}.", ""] if said else []


def dpo_profile_table(profiles: dict[str, Any]) -> list[str]:
    """The torch.profiler summary of the profiled DPO runs: where each step's device time goes."""

    def syncs(t: dict[str, Any]) -> float:
        counts = t.get("syncs_per_step") or {}
        return sum(counts.get(k, 0) for k in ("cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaEventSynchronize"))

    def top(t: dict[str, Any]) -> str:
        return ", ".join(f"{short(k['name'])} {pct(k['share'], 0)}" for k in (t.get("kernels") or [])[:3])

    return table(
        (
            "profiled run",
            "kernel ms/step",
            "device busy",
            "kernel launches/step",
            "graph launches/step",
            "host syncs/step",
            "largest kernels (share of kernel time)",
        ),
        (
            (
                f"`{name}`",
                num(t["kernel_ms_per_step"]),
                pct(t["device_busy_share"], 0),
                num(t["kernel_launches_per_step"]),
                num(t["graph_launches_per_step"]),
                num(syncs(t), 1),
                top(t),
            )
            for name, t in profiles.items()
            if "kernel_ms_per_step" in t
        ),
        "lrrrrrl",
    )


def short(kernel: str) -> str:
    """A kernel's name without its template arguments: `vectorized_elementwise_kernel<8, ...>(...)` -> its head."""
    head = kernel.split("<", 1)[0].split("(", 1)[0].removeprefix("void ").strip().rsplit("::", 1)[-1] or kernel[:40]
    if "elementwise_kernel" in head:  # which elementwise op: the first functor or kernel named in its arguments
        inner = re.findall(r"at::native::(\w+)", kernel.split("<", 1)[-1])
        what = next((w for w in inner if "elementwise" not in w and w not in ("memory", "detail")), None)
        head = f"{head} ({what})" if what else head
    return f"`{head}`"


def dpo_profile_section(data: dict[str, Any], key: str) -> list[str]:
    """A separate profiled run of the DPO bench (`--dpo-profile`, the file `reports/KEY`), its measured rows beside
    the main file's."""
    out = []
    for name, s in (data.get("dpo") or {}).items():
        if not s.get("profiles"):
            continue
        vs = s.get("vs_best_stock") or {}
        steps = next(iter(s["profiles"].values())).get("steps")
        out += [
            f"**{name}, profiled** (`reports/{key}`, {device_of(data)}, "
            f"{day(data.get('date'))}: the same shape and settings again with `--dpo-profile`; its own rows give "
            f"ours {ratio(vs.get('throughput_ratio'))} the best stock configuration's tokens/s at "
            f"{ratio(vs.get('peak_memory_ratio'))} its memory). torch.profiler over {steps} "
            "steps of the best stock configuration and of ours; both run several times slower while profiled, so "
            "the columns say where the work goes, not how fast it runs:",
            "",
        ]
        out += dpo_profile_table(s["profiles"])
    return out


def earlier_train_section(results: dict[str, Any]) -> list[str]:
    rows = []
    for name, data in results.items():
        if name == MAIN_TRAIN or not isinstance(data, dict) or data.get("bench") != "train_throughput":
            continue
        if not data.get("runs") or "ours" not in data["runs"]:
            continue
        ours, vs = data["runs"]["ours"], data.get("vs_best_stock") or {}
        rows.append(
            (
                f"`{name}`",
                day(data["date"]),
                device_of(data),
                num(ours["real_tokens_per_second"]),
                f"`{vs['peer']}`" if vs else "—",
                ratio(vs.get("throughput_ratio")),
                pct(ours.get("mfu")),
            )
        )
    if not rows:
        return []
    return [
        "## Earlier training-bench runs",
        "",
        "The same bench at earlier commits, kept for comparison (each file's `runs` and `sections_run` say "
        "what ran then).",
        "",
    ] + table(("file", "date (UTC)", "device", "`ours` tok/s", "best stock", "vs best stock", "MFU"), rows, "lllrlrr")


def profile_section(data: dict[str, Any]) -> list[str]:
    scaling = data.get("scaling")
    if not scaling:
        return []
    out = [
        "## Step time against tokens per step (`reports/perf/train_profile.json`)",
        "",
        f"A line fitted to step time over micro-batches of {', '.join(map(str, scaling['batches']))} rows "
        f"({scaling['steps']} steps each, the first {scaling['warmup']} left out):",
        "",
    ]
    return out + table(
        ("run", "fixed ms a step", "ms per 1k tokens", "R²", "points"),
        (
            (f"`{k}`", num(f["intercept_ms_per_step"], 1), num(f["ms_per_1k_tokens"], 2), num(f["r2"], 2), f["points"])
            for k, f in scaling["fits"].items()
        ),
    )


def qlora_section(data: dict[str, Any]) -> list[str]:
    q = data.get("qlora_8b")
    if not q:
        return []
    target = data["targets"]["qlora_8b"]["peak_memory_ratio"]
    out = [
        "## QLoRA at the Llama-3-8B shape (`reports/perf/qlora_8b.json`)",
        "",
        f"{device_of(data)}, {num(q['parameters'] / 1e9, 2)}B parameters: QLoRA's peak memory is "
        f"{pct(q['peak_memory_ratio'], 0)} of bf16 LoRA's (target ≤{pct(target['target'], 0)}: "
        f"{met(target['met'])}), at {ratio(q['throughput_ratio'])} LoRA's tokens/s.",
        "",
    ]
    return out + table(
        ("run", "real tok/s", "peak GiB"),
        ((f"`{k}`", num(r["real_tokens_per_second"]), num(r["peak_memory_gib"], 2)) for k, r in q["runs"].items()),
    )


def eval_section(data: dict[str, Any]) -> list[str]:
    out = [
        "## Evaluation throughput (`reports/perf/eval_throughput.json`)",
        "",
        f"`bench/eval_throughput.py` on {device_of(data)}, model `{data['model']}`: batched generation against a "
        "per-item `generate` loop, and log-likelihood scoring against lm-eval's Hugging Face backend, in each "
        "dtype. In bf16, batching changes rounding, so outputs may differ from the loop's.",
        "",
    ]
    rows = []
    for dtype, d in data["dtypes"].items():
        g, ll = d["generation"], d["loglikelihood"]
        rows.append(
            (
                dtype,
                ratio(g["speedup"], 1),
                f"{g['identical']}/{g['items']}",
                ratio(ll["speedup"]),
                f"{ll['within_tolerance']}/{ll['requests']}",
                f"{ll['max_abs_diff']:.2g}",
            )
        )
    out += table(
        (
            "dtype",
            "generation vs loop",
            "identical outputs",
            "log-likelihood vs lm-eval",
            "within tolerance",
            "max abs diff",
        ),
        rows,
    )
    out += table(
        ("check", "passed", "detail"),
        ((c["name"], "yes" if c["passed"] else "**no**", c["detail"]) for c in data["checks"]),
        "lll",
    )
    return out


def invariance_section(data: dict[str, Any]) -> list[str]:
    out = [
        "## Batch-invariant evaluation (`reports/perf/eval_invariance.json`)",
        "",
        f"`bench/eval_invariance.py` on {device_of(data)}, model `{data['model']}` ({data['dtype']}) and two LoRA "
        "adapters, on the GPU plan's suites: every item scored alone (the reference) and again beside other items "
        "(7 at a time, the suite's own batch, device-sized, both adapters together, four processes at once on one "
        "GPU), compared bit for bit. Speed: the 64 prompts and 48 new tokens of `bench/eval_throughput.py`.",
        "",
    ]
    out += table(
        ("", "compared", "differing"),
        (
            ("outputs (invariant mode)", num(data["outputs_compared"]), num(data["outputs_differing"])),
            ("log-likelihoods (invariant mode)", num(data["loglik_compared"]), num(data["loglik_differing"])),
        )
        + tuple(
            (
                f"fast mode, {name}: outputs / log-likelihoods",
                f"{num(d['outputs_compared'])} / {num(d['loglik_compared'])}",
                f"{num(d['outputs_differing'])} / {num(d['loglik_differing'])}",
            )
            for name, d in data["fast_mode"].items()
        ),
    )
    speed = data["tokens_per_second"]
    out += table(
        ("path", "output tokens/s"),
        [(name.replace("_", " "), num(value)) for name, value in speed.items()],
    )
    out += [
        f"Invariant path: {ratio(data['speedup_vs_current_bf16'], 1)} the committed bf16 figure of "
        f"`eval_throughput.json` ({num(data['committed_bf16_tokens_per_second'])} tokens/s, "
        f"{data['committed_bf16_device']}), {ratio(data['speedup_vs_fast_same_run'], 1)} today's fast path "
        f"measured in the same run.",
        "",
    ]
    sustained = data["speed"].get("sustained")
    if sustained:
        out += table(
            ("repeated back to back", "seconds", "output tokens/s", "GPU utilisation mean (NVML)", "samples"),
            [
                (
                    name.replace("_", " "),
                    f"{d['seconds']:.1f}",
                    num(d["output_tokens_per_second"]),
                    pct(d["gpu_utilization"]["mean"]),
                    num(d["gpu_utilization"]["samples"]),
                )
                for name, d in sustained.items()
            ],
        )
    else:
        out += [
            f"Mean GPU utilisation while the invariant path generated: {pct(data['gpu_utilization_mean'])} "
            f"(NVML: {data['speed']['gpu_utilization_invariant']['samples']} samples over the "
            f"{data['speed']['seconds']['invariant']:.2f} s it took, too short for NVML's averaging window).",
            "",
        ]
    return out


def sweep_section(data: dict[str, Any]) -> list[str]:
    paths = data["paths"]
    out = [
        "## Sweep throughput (`reports/perf/sweep_throughput.json`)",
        "",
        f"`bench/sweep_throughput.py`: the whole GPU plan (`examples/gpu/plan.yaml`) through `tunegate run`, "
        "once by one fresh process per trial with each suite's own batch size (the peer) and once by the default "
        "GPU path (persistent workers keeping the base model loaded, longest trials first, device-sized "
        f"evaluation batches). How measured: {data['how_measured']}",
        "",
    ]
    label = {"peer": "per-trial process (peer)", "workers": "persistent workers (default)"}
    out += table(
        ("path", "wall s", "GPU utilisation mean", "busy samples"),
        (
            (
                label.get(k, k),
                num(p["wall_seconds"]),
                pct(p["gpu_utilization"]["mean"]),
                pct(p["gpu_utilization"]["busy_fraction"], 0),
            )
            for k, p in paths.items()
        ),
    )
    numerics = data.get("eval_numerics")
    why = (
        f"both paths scored with `--eval-numerics {numerics}`"
        if numerics
        else "scored before batch-invariant evaluation existed: in bf16 batch composition changes rounding"
    )
    by_trial = data.get("outputs_differing_by_trial")
    where = (
        " All of them in " + ", ".join(f"`{t}` ({n})" for t, n in by_trial.items()) + "; every other trial identical."
        if by_trial
        else ""
    )
    return out + [
        f"Speed-up {ratio(data['speedup'])}; gate verdicts identical: "
        f"{'yes' if data['verdicts_identical'] else '**no**'}; {data['outputs_differing']} of "
        f"{num(data['outputs_compared'])} per-item outputs differ ({why}).{where}",
        "",
    ]


def earlier_sweep_section(data: dict[str, Any], key: str, when: str) -> list[str]:
    paths = data["paths"]
    by_trial = data.get("outputs_differing_by_trial")
    where = (" (" + ", ".join(f"`{t}` {n}" for t, n in by_trial.items()) + ")") if by_trial else ""
    return [
        f"{when} (`reports/{key}`, {device_of(data)}, "
        f"{day(data['date'])}): peer {num(paths['peer']['wall_seconds'])} s, default path "
        f"{num(paths['workers']['wall_seconds'])} s, speed-up {ratio(data['speedup'])}; "
        f"{data['outputs_differing']} of {num(data['outputs_compared'])} outputs differed{where}. "
        f"{data.get('how_measured', '')}",
        "",
    ]


def multi_gpu_section(data: dict[str, Any], profile: dict[str, Any] | None) -> list[str]:
    out = [
        "## Multi-GPU (`reports/gpu/multi_gpu.json`)",
        "",
        f"`bench/multi_gpu.py` on {device_of(data)}, {data['device']['host_cpus']} host cores. When each part ran:",
        "",
    ]
    out += table(("part", "date (UTC)"), ((k, day(v)) for k, v in (data.get("sections_date") or {}).items()), "ll")
    out += table(
        ("measure", "value", "target", ""),
        ((k, value(t["value"]), t["target"], met(t["met"])) for k, t in data["targets"].items()),
        "lrrl",
    )
    ddp = data["parts"].get("ddp")
    if ddp:
        st = ddp["settings"]
        out += [
            f"**One LoRA trial data parallel** (`gpus_per_trial: 2`, accelerate/DDP) at a "
            f"{num(ddp['model']['parameters'] / 1e9, 2)}B Llama shape, global batch {st['global_batch']}, "
            f"{st['steps']} optimizer steps, on the same tokens:",
            "",
        ]
        out += table(
            ("trial", "tokens/s", "train s", "peak GiB"),
            (
                (k, num(t["tokens_per_second"]), num(t["train_seconds"], 1), num(t["peak_memory_gib"], 1))
                for k, t in ddp["trials"].items()
            ),
        )
        out += [
            f"{ratio(data['ddp_speedup'])} over the whole training time ({ratio(data['ddp_speedup_steady'])} "
            f"after the first steps); loss curves {pct(data['loss_curve_rel_diff'], 4)} apart on average.",
            "",
        ]
        if profile and profile.get("ddp_speedup") is not None:
            out += [
                f"The profiled run in `reports/gpu/multi_gpu_ddp_profile.json` ({day(profile['date'])}), "
                f"taken before the fixes the profile led to (no graph padding for device-bound lengths, no "
                f"host sync for the FLOP count under DDP), measured {ratio(profile['ddp_speedup'])}.",
                "",
            ]
    an = data.get("sweep_analysis")
    if an:
        keys = (
            "wall_seconds",
            "before_first_trial_seconds",
            "trials_span_seconds",
            "after_last_trial_seconds",
            "trial_seconds_total",
            "slots",
            "bound_seconds",
        )
        out += [
            "**The GPU plan on one GPU and on two** (persistent workers; `sweep_analysis`, from the trial records):",
            "",
        ]
        out += table(
            ("", "one GPU", "two GPUs"),
            ((k, num(an[k]["one_gpu"], 1), num(an[k]["two_gpus"], 1)) for k in keys if k in an),
        )
        out += [
            f"Measured {ratio(an['measured_speedup'])}; with these trial durations no schedule on two GPUs beats "
            f"{ratio(an['best_possible_speedup'])} (`best_possible_speedup`). {an['reading']}",
            "",
        ]
    ray = data["parts"].get("ray")
    if ray:
        out += [
            f"**Ray**, the whole plan as Ray tasks on the same host against the local executor: "
            f"{num(ray['wall_seconds']['ray'], 1)} s by Ray, {num(ray['wall_seconds']['local'], 1)} s locally; "
            f"statuses identical: {'yes' if ray['statuses_identical'] else '**no**'}, "
            f"{ray['verdicts_compared']} verdicts identical: {'yes' if ray['verdicts_identical'] else '**no**'}; "
            f"{ray['outputs_differing']} of {num(ray['outputs_compared'])} per-item outputs differ (generation "
            "on a GPU is not bit-identical across processes, whichever executor starts them).",
            "",
        ]
    return out


def one_gpu_sweeps_section(results: dict[str, Any]) -> list[str]:
    rows = []
    for name, data in results.items():
        if not name.startswith("gpu/sweep_") or not isinstance(data, dict) or "paths" not in data:
            continue
        for path, p in data["paths"].items():
            rows.append(
                (
                    f"`{name}`",
                    day(data["date"]),
                    f"{data['device']['host_cpus']}",
                    f"`{path}`",
                    num(p["wall_seconds"], 1),
                    pct((p.get("gpu_utilization") or {}).get("mean")),
                    data.get("how_measured", ""),
                )
            )
    if not rows:
        return []
    return [
        "## The GPU plan on one GPU",
        "",
        "The default path alone on one GPU; `workers-no-spare` and the spare-worker run differ by "
        "`--spare-workers` (off by default).",
        "",
    ] + table(
        ("file", "date (UTC)", "host cores", "path", "wall s", "GPU utilisation mean", "how measured"), rows, "llrlrrl"
    )


def worker_section(data: dict[str, Any]) -> list[str]:
    keys = list(data["alone"])
    out = [
        "## Worker start-up (`reports/gpu/worker_startup.json`)",
        "",
        f"`bench/worker_startup.py`: one worker's start-up alone and with {data['processes']} starting at once "
        f"({data['device']}, {data['cpus']} cores), seconds per phase:",
        "",
    ]
    return out + table(
        ("phase", "alone", f"slowest of {data['processes']}", "ratio"),
        ((k, num(data["alone"][k], 2), num(data["slowest_together"][k], 2), ratio(data["ratio"][k])) for k in keys),
    )


def memory_section(data: dict[str, Any]) -> list[str]:
    rows = data["rows"]
    by: dict[tuple[str, str], list[float]] = {}
    for r in rows:
        by.setdefault((r["model"], r["method"]), []).append(r["ratio"])
    out = [
        "## Training-memory estimator (`reports/gpu/memory_table.json`)",
        "",
        f"The estimate against the measured peak ({data['note']}) on {data['device']}, {len(rows)} "
        f"configurations; estimate / measured ranges from {min(r['ratio'] for r in rows):.2f} to "
        f"{max(r['ratio'] for r in rows):.2f} (target within ±20%). Per row: `reports/gpu/memory_table.md`.",
        "",
    ]
    return out + table(
        ("model", "method", "configurations", "lowest ratio", "highest ratio"),
        ((m, meth, len(v), f"{min(v):.3f}", f"{max(v):.3f}") for (m, meth), v in by.items()),
        "llrrr",
    )


def plan_section(data: dict[str, Any]) -> list[str]:
    task = ("json_extract", "exact_match")
    retention = ("general_knowledge", "choice_accuracy")
    safety = ("safety_harmful", "refusal")
    comps = {(c["trial"], c["suite"], c["metric"]): c for c in data["comparisons"]}

    def value(t: dict[str, Any], suite: str, metric: str) -> str:
        m = t["metrics"].get(suite, {}).get(metric)
        return num(m["value"], 3) if m else "—"

    def delta(t: dict[str, Any], suite: str, metric: str) -> str:
        c = comps.get((t["trial"], suite, metric))
        return f"{signed(c['delta'])} [{signed(c['ci_low'])}, {signed(c['ci_high'])}]" if c else "—"

    out = [
        "## The GPU plan's results (`reports/gpu/plan_run.json`)",
        "",
        f"`examples/gpu/plan.yaml` on {device_of(data)} (the store itself: `reports/gpu/plan_run.db`, the app's "
        f"screenshots are taken from it). Each arm against the baseline on the same held-out items, with paired 95% "
        f"intervals: `{task[0]}` {task[1]} (the task), `{retention[0]}` {retention[1]} (retention) and "
        f"`{safety[0]}` {safety[1]} (safety):",
        "",
    ]
    rows = [
        (
            f"`{t['trial']}`",
            t["type"],
            value(t, *task),
            delta(t, *task),
            delta(t, *retention),
            value(t, *safety),
            num(t["train_seconds"], 1),
            num(t["peak_memory_gib"], 2),
        )
        for t in data["trials"]
    ]
    out += table(
        ("trial", "arm", task[1], "Δ task, 95% CI", "Δ retention, 95% CI", safety[1], "train s", "peak GiB"),
        rows,
        "llrllrrr",
    )
    scored = [t for t in data["trials"] if t["metrics"].get(task[0], {}).get(task[1])]
    best = max(scored, key=lambda t: t["metrics"][task[0]][task[1]]["value"])
    moved = [
        c["trial"]
        for c in data["comparisons"]
        if (c["suite"], c["metric"]) == retention and (c["ci_low"] > 0 or c["ci_high"] < 0)
    ]
    beat = sum(v["beat_baseline"] for v in data["verdicts"])
    return out + [
        f"{beat} of {len(data['verdicts'])} candidates beat the baseline on the primary metric; the highest "
        f"{task[1]} is `{best['trial']}`'s ({num(best['metrics'][task[0]][task[1]]['value'], 3)}). Arms whose "
        f"change in {retention[0]} has a 95% interval that excludes zero: "
        f"{', '.join(f'`{m}`' for m in moved) if moved else 'none'}.",
        "",
    ]


def profile_table(data: dict[str, Any]) -> list[str]:
    profiles = data.get("profiles")
    if not profiles:
        return []
    out = [
        "**Where a step's time goes** (`profiles`: torch.profiler over a few steps of each run; host-device "
        "synchronisations are the waits the overlapped steps remove):",
        "",
    ]
    return out + table(
        (
            "run",
            "wall ms a step",
            "device busy",
            "kernel launches a step",
            "graph replays a step",
            "`cudaStreamSynchronize` a step",
        ),
        (
            (
                f"`{k}`",
                num(p["wall_ms_per_step"], 1),
                pct(p["device_busy_share"], 0),
                num(p["kernel_launches_per_step"]),
                num(p["graph_launches_per_step"], 1),
                num(p["syncs_per_step"].get("cudaStreamSynchronize"), 1),
            )
            for k, p in profiles.items()
        ),
    )


def app_section(data: dict[str, Any]) -> list[str]:
    out = [
        "## App load (`reports/bench/app_load.json`)",
        "",
        f"`bench/app_load.py`: each page of the Streamlit app on a store of {num(data['items'])} items "
        f"({data['store_mib']} MiB; CPU, {data['cpus']} cores), cold and warm, against {data['peer']['name']} "
        f"({num(data['peer']['seconds'], 1)} s): {ratio(data['ratio_cold'], 1)} cold, "
        f"{ratio(data['ratio_warm'], 1)} warm.",
        "",
    ]
    return out + table(
        ("page", "cold s", "warm s", "elements"),
        ((k, num(p["cold_s"], 2), num(p["warm_s"], 2), p["elements"]) for k, p in data["pages"].items()),
    )


def junit_section(junit: dict[str, dict[str, Any]]) -> list[str]:
    out = []
    for name, c in junit.items():
        out += [
            f"## CUDA tests under pytest (`reports/{name}`)",
            "",
            f"`bash bench/gpu_session.sh pytest` on a GPU host ({day(c['date'])}): {c['tests']} tests, "
            f"{c['failures']} failures, {c['errors']} errors, {c['skipped']} skipped.",
            "",
        ]
    return out


SECTIONS: list[tuple[str, Callable[[dict[str, Any]], list[str]]]] = [
    (MAIN_TRAIN, train_section),
    ("perf/qlora_8b.json", qlora_section),
    ("perf/train_profile.json", profile_section),
    ("perf/eval_throughput.json", eval_section),
    ("perf/eval_invariance.json", invariance_section),
    ("perf/sweep_throughput.json", sweep_section),
    ("gpu/worker_startup.json", worker_section),
    ("gpu/memory_table.json", memory_section),
    ("gpu/plan_run.json", plan_section),
    ("bench/app_load.json", app_section),
]


def render(reports: Path) -> str:
    results: dict[str, Any] = {}
    junit: dict[str, dict[str, Any]] = {}
    for folder in FOLDERS:
        for path in sorted((reports / folder).glob("*.json")):
            results[f"{folder}/{path.name}"] = load(path)
        for path in sorted((reports / folder).glob("*.xml")):
            junit[f"{folder}/{path.name}"] = junit_counts(path)
    out = [
        "# Performance",
        "",
        "<!-- Generated by `python bench/performance_report.py` from the files under reports/; do not edit. -->",
        "",
        "What the benches in `bench/` measured, read from the result files committed under `reports/`. Every "
        "ratio names its peer, measured in the same run on the same device. Regenerate this page with "
        "`python bench/performance_report.py` after adding or changing a result file; "
        "`tests/bench/test_performance_report.py` fails while it is out of date. How to run on GPUs and what "
        "each bench does: [docs/gpu.md](../docs/gpu.md), [bench/README.md](../bench/README.md).",
        "",
    ]
    for name, section in SECTIONS:
        if isinstance(results.get(name), dict):
            out += section(results[name])
            if name == MAIN_TRAIN:
                out += earlier_train_section(results)
                dpo = main_dpo_file(results)
                if dpo:
                    out += dpo_section(results[dpo], dpo)
                    out += earlier_dpo_section(results, dpo)
                    for key, found in sorted(results.items()):
                        if key.startswith("perf/train_throughput_dpo") and key.endswith("_profile.json"):
                            out += dpo_profile_section(found, key)
            if name == "perf/sweep_throughput.json":
                for key, when in (
                    (
                        "perf/sweep_throughput_together.json",
                        "Before DPO training was deterministic on CUDA (its per-sequence sums used `index_add`, "
                        "whose atomic adds land in no fixed order; `harness/model/_dpo.py` now sums each row as one "
                        "reduction), both paths at the same time on one GPU",
                    ),
                    ("perf/sweep_throughput_fast_numerics.json", "Before batch-invariant evaluation"),
                ):
                    if isinstance(results.get(key), dict):
                        out += earlier_sweep_section(results[key], key, when)
                multi, profile = results.get("gpu/multi_gpu.json"), results.get("gpu/multi_gpu_ddp_profile.json")
                if isinstance(multi, dict):
                    out += multi_gpu_section(multi, profile if isinstance(profile, dict) else None)
                out += one_gpu_sweeps_section(results)
    out += junit_section(junit)
    out += files_section(results, junit)
    while out and out[-1] == "":
        out.pop()
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reports", type=Path, default=ROOT / "reports", help="the folder of result files")
    ap.add_argument("--out", type=Path, help="the page to write (default: REPORTS/PERFORMANCE.md)")
    ap.add_argument("--check", action="store_true", help="write nothing; exit 1 if the page differs")
    args = ap.parse_args(argv)
    out = args.out or args.reports / "PERFORMANCE.md"
    try:
        text = render(args.reports)
    except BadResult as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.check:
        if not out.exists() or out.read_text(encoding="utf-8") != text:
            print(f"{out} is out of date: run python bench/performance_report.py", file=sys.stderr)
            return 1
        return 0
    out.write_text(text, encoding="utf-8")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
