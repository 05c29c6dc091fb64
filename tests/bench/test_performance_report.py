"""reports/PERFORMANCE.md is generated from the result files under reports/ by bench/performance_report.py: the
committed page must be exactly what the script writes from the committed files, so a result file changed or added
without regenerating the page fails here."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from tests.support import REPO
from tests.support.bench import run_bench

SCRIPT = REPO / "bench" / "performance_report.py"


def copy_reports(tmp_path: Path) -> Path:
    reports = tmp_path / "reports"
    for folder in ("perf", "gpu", "bench"):
        shutil.copytree(REPO / "reports" / folder, reports / folder, ignore=shutil.ignore_patterns("*.db", "*.log"))
    return reports


def test_the_committed_page_is_what_the_script_writes(tmp_path: Path) -> None:
    out = tmp_path / "PERFORMANCE.md"
    run_bench("performance_report.py", "--out", str(out))
    committed = (REPO / "reports" / "PERFORMANCE.md").read_text(encoding="utf-8")
    assert out.read_text(encoding="utf-8") == committed, (
        "reports/PERFORMANCE.md is out of date with the files under reports/: run python bench/performance_report.py"
    )
    run_bench("performance_report.py", "--check")


def test_a_changed_result_changes_the_page_and_check_fails(tmp_path: Path) -> None:
    reports = copy_reports(tmp_path)
    shutil.copy(REPO / "reports" / "PERFORMANCE.md", reports / "PERFORMANCE.md")
    path = reports / "perf" / "train_throughput.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    data["vs_best_stock"]["throughput_ratio"] = 9.876
    path.write_text(json.dumps(data), encoding="utf-8")
    check = subprocess.run(
        [sys.executable, str(SCRIPT), "--reports", str(reports), "--check"], capture_output=True, text=True, cwd=REPO
    )
    assert check.returncode == 1, check.stderr
    assert "out of date" in check.stderr
    run_bench("performance_report.py", "--reports", str(reports))
    assert "9.88× the tokens/s" in (reports / "PERFORMANCE.md").read_text(encoding="utf-8")


def test_a_new_result_file_is_listed_with_its_device_and_date(tmp_path: Path) -> None:
    reports = copy_reports(tmp_path)
    new = {
        "bench": "new_bench",
        "date": "2026-12-02T10:00:00+00:00",
        "device": {"name": "Some GPU"},
        "versions": {"torch": "9.9.9"},
    }
    (reports / "bench" / "new_bench.json").write_text(json.dumps(new), encoding="utf-8")
    run_bench("performance_report.py", "--reports", str(reports))
    page = (reports / "PERFORMANCE.md").read_text(encoding="utf-8")
    assert "| `bench/new_bench.json` | new_bench | Some GPU | 2026-12-02 10:00 | torch 9.9.9 |" in page


def test_a_file_that_is_not_json_is_one_line_and_exit_2(tmp_path: Path) -> None:
    reports = copy_reports(tmp_path)
    (reports / "perf" / "broken.json").write_text('{"bench": "x",\n  "date": }\n', encoding="utf-8")
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--reports", str(reports)], capture_output=True, text=True, cwd=REPO
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "broken.json:2: not valid JSON" in lines[0], result.stderr
    assert "Traceback" not in result.stderr


def test_a_dpo_section_merged_into_the_main_training_file_is_the_one_shown(tmp_path: Path) -> None:
    reports = copy_reports(tmp_path)
    main, dpo = reports / "perf" / "train_throughput.json", reports / "perf" / "train_throughput_dpo.json"
    data = json.loads(main.read_text(encoding="utf-8"))
    data["dpo"] = json.loads(dpo.read_text(encoding="utf-8"))["dpo"]
    data["dpo"]["1b"]["runs"]["ours"]["real_tokens_per_second"] = 98765.0
    main.write_text(json.dumps(data), encoding="utf-8")
    run_bench("performance_report.py", "--reports", str(reports))
    page = (reports / "PERFORMANCE.md").read_text(encoding="utf-8")
    assert "## DPO (`reports/perf/train_throughput.json`)" in page
    assert "## DPO (`reports/perf/train_throughput_dpo.json`)" not in page
    assert "98,765" in page
    earlier = page.split("Earlier runs of the DPO bench", 1)[1].split("\n\n", 2)[1]
    assert "| `perf/train_throughput_dpo.json` | 1b |" in earlier
