"""The wheel works on its own: built from this checkout, installed into a fresh venv outside it, and run as the
`tunegate` console script from another folder — `eval` on a local model folder with a bundled suite stores its
results, `app --help` answers, and the bundled suites are read from the installed package, not the checkout.

The new venv sees no checkout: no --system-site-packages, PYTHONPATH unset, and the already-installed
dependencies reached through a .pth line naming this interpreter's site-packages folder. A path line in a .pth
file only adds that folder to sys.path (the .pth files inside it are not run), so the editable install's finder
(`__editable__*tunegate*`) stays inactive; the test asserts that `harness` comes from the installed wheel."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from tests.support import REPO

pytestmark = pytest.mark.slow

# What the build reads (pyproject.toml, setup.py's build hook, harness/bundled.py): copied to tmp and built
# there, because setuptools builds in place and would leave build/ and *.egg-info in the checkout.
BUILD_INPUTS = ("pyproject.toml", "setup.py", "README.md", "harness", "advisor", "suites", "examples")
NOT_BUNDLED = ("generate.py",)  # suites/*/generate.py made the items; setup.py leaves them (and make_*.py) out
BUNDLED = {"suites": "suites", "demo": "examples/demo"}  # harness/bundled.py's table


def run(cmd: list[str], cwd: Path, env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, (
        f"{cmd} exited {result.returncode}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    )
    return result


def expected_files() -> set[str]:
    """Every file the wheel must hold, from the checkout: the packages' modules and data, the bundled folders."""
    tracked = subprocess.run(
        ["git", "ls-files", "harness", "advisor", *BUNDLED.values()],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    out: set[str] = set()
    for path in tracked:
        if not (REPO / path).exists() or "__pycache__" in path:
            continue  # deleted in the working tree, not yet committed
        for name, folder in BUNDLED.items():
            if path.startswith(folder + "/"):
                if Path(path).name not in NOT_BUNDLED and not Path(path).name.startswith("make_"):
                    out.add(f"harness/_bundled/{name}/{path.removeprefix(folder + '/')}")
                break
        else:
            if path.endswith((".py", ".yaml", ".ini", ".mako")):
                out.add(path)
    return out


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    src, dist = tmp_path_factory.mktemp("src"), tmp_path_factory.mktemp("dist")
    for name in BUILD_INPUTS:
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(source, src / name)
    run(
        [sys.executable, "-m", "pip", "wheel", ".", "--no-deps", "--no-build-isolation", "-w", str(dist), "-q"],
        cwd=src,
        env=os.environ | {"PIP_NO_INPUT": "1"},
    )
    [built] = dist.glob("tunegate-*.whl")
    return built


@pytest.fixture(scope="module")
def venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv outside the checkout with the wheel installed and the dependencies made visible."""
    root = tmp_path_factory.mktemp("venv") / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", str(root)], cwd=root.parent, env=clean_env(root.parent))
    python = root / "bin" / "python"
    run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index", "-q", str(wheel)],
        cwd=root.parent,
        env=clean_env(root.parent),
    )
    site = Path(
        run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
            cwd=root.parent,
            env=clean_env(root.parent),
        ).stdout.strip()
    )
    deps = dict.fromkeys([sysconfig.get_path("purelib"), sysconfig.get_path("platlib")])  # ordered, no repeats
    # the dependency folder may live inside the checkout (make puts .venv there); it must not hold the project itself
    assert not any((Path(d) / name).exists() for d in deps for name in ("harness", "advisor")), (
        "the dependencies must not contain the project's own packages"
    )
    (site / "tunegate_test_deps.pth").write_text("".join(f"{d}\n" for d in deps))
    return root


def clean_env(home: Path) -> dict[str, str]:
    """This environment without anything that points into the checkout."""
    leaks = ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "TUNEGATE_STORE", "TUNEGATE_SUITES")
    env = {k: v for k, v in os.environ.items() if k not in leaks}
    return env | {
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "TUNEGATE_CACHE": str(home / "cache"),
        "PIP_NO_INPUT": "1",
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
    }


def test_the_wheel_holds_the_code_the_bundled_data_and_the_package_data(wheel: Path):
    names = set(zipfile.ZipFile(wheel).namelist())
    missing = expected_files() - names
    assert not missing, f"not in the wheel: {sorted(missing)}"
    assert {
        "advisor/rules.yaml",
        "harness/store/migrations/alembic.ini",
        "harness/store/migrations/script.py.mako",
        "harness/_bundled/demo/plan.yaml",
        "harness/_bundled/suites/json_extract/suite.yaml",
    } <= names
    assert not [n for n in names if n.startswith(("tests/", "bench/", "reports/", "runs/")) or "__pycache__" in n]
    entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    assert "tunegate = harness.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()


def test_the_installed_package_is_the_wheel_not_the_checkout(venv: Path, tmp_path: Path):
    script = (
        "import harness, harness.bundled as b, advisor; "
        "print(harness.__file__); print(b.suites_dir()); print(b.demo_dir()); print(advisor.__file__)"
    )
    out = run([str(venv / "bin" / "python"), "-c", script], cwd=tmp_path, env=clean_env(tmp_path)).stdout.split()
    site = venv.resolve() / "lib"
    for path in map(Path, out):
        assert path.resolve().is_relative_to(site) and not path.resolve().is_relative_to(REPO), path
    harness_file, suites, demo, _ = map(Path, out)
    assert suites == harness_file.parent / "_bundled" / "suites" and (suites / "json_extract" / "items.jsonl").is_file()
    assert (demo / "plan.yaml").is_file()


def test_the_console_script_evaluates_a_local_model_from_another_folder(
    venv: Path, tiny_model_dir: Path, tmp_path: Path
):
    tunegate = venv / "bin" / "tunegate"
    assert tunegate.read_text().splitlines()[0] == f"#!{venv / 'bin' / 'python'}"  # the new venv's own script
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = clean_env(tmp_path) | {"PATH": f"{venv / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}"}
    db = tmp_path / "x.db"
    result = run(
        [str(tunegate), "eval", str(tiny_model_dir), "--suite", "json_extract", "--store", f"sqlite:///{db}"],
        cwd=elsewhere,
        env=env,
        timeout=600,
    )
    assert "Traceback" not in result.stderr

    from harness.store import Store

    store = Store(str(db))
    [run_row] = store.runs()
    [trial] = store.trials(run_row.id)
    [(evaluation, suite)] = store.evaluations(trial.id)
    n = len((REPO / "suites" / "json_extract" / "items.jsonl").read_text().splitlines())
    assert suite.name == "json_extract" and evaluation.n_items == n
    assert len(store.item_rows(evaluation.id)) == n and store.metrics(evaluation.id)["exact_match"].n == n
    store.dispose()

    app = run([str(tunegate), "app", "--help"], cwd=elsewhere, env=env)
    assert "Usage" in app.stdout and "--store" in app.stdout
