"""The driver's GPU queries through NVML (harness/_nvml.py): which GPUs CUDA would see, mapped from
CUDA_VISIBLE_DEVICES onto NVML's records by CUDA's rules, and the fall back to torch wherever NVML cannot answer
(as on this machine, which has no NVIDIA driver)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest

from harness._nvml import NvmlGpu, nvml_gpus, select_visible, visible_nvml_gpus
from harness.model._load import default_device
from harness.plan._schema import Plan
from harness.run._capacity import free_memory_gib
from harness.run._devices import visible_gpus
from harness.run._preflight import gpu_capacity_gib
from tests.support import REPO

GIB = 1024**3
GPUS = [
    NvmlGpu(0, "GPU-aacf9dcc-783f", "NVIDIA H200", 140 * GIB, 100 * GIB),
    NvmlGpu(1, "GPU-02598f70-14df", "NVIDIA H200", 140 * GIB, 90 * GIB),
    NvmlGpu(2, "GPU-0259aaaa-0000", "NVIDIA H100", 80 * GIB, 70 * GIB),
]


def seen(
    cuda_visible_devices: str | None, order: str | None = "PCI_BUS_ID", gpus: list[NvmlGpu] = GPUS
) -> dict[str, int] | None:
    """select_visible as {id as spelled: NVML index}."""
    out = select_visible(gpus, cuda_visible_devices, order)
    return None if out is None else {k: g.index for k, g in out.items()}


def test_unset_means_every_gpu_in_nvml_order() -> None:
    assert seen(None) == {"0": 0, "1": 1, "2": 2}


def test_indices_keep_their_order_and_spelling() -> None:
    assert seen("1,0") == {"1": 1, "0": 0}
    assert seen(" 2 , 0") == {"2": 2, "0": 0}


def test_uuids_and_unique_uuid_prefixes() -> None:
    assert seen("GPU-02598f70-14df,GPU-aacf9dcc-783f") == {"GPU-02598f70-14df": 1, "GPU-aacf9dcc-783f": 0}
    assert seen("GPU-aacf") == {"GPU-aacf": 0}
    assert seen("GPU-0259") == {}, "a prefix of two GPUs' UUIDs names none, and ends the list"


def test_uuids_map_whatever_the_device_order() -> None:
    assert seen("GPU-02598f70-14df", order=None) == {"GPU-02598f70-14df": 1}


def test_the_first_invalid_entry_ends_the_list() -> None:
    assert seen("0,7,1") == {"0": 0}
    assert seen("7,0") == {}
    assert seen("GPU-aacf,GPU-ffff,GPU-0259") == {"GPU-aacf": 0}
    assert seen("GPU-aacf,1") == {"GPU-aacf": 0}, "the first entry decides: UUIDs, so an index ends the list"


def test_a_gpu_named_twice_leaves_none() -> None:
    assert seen("1,0,1") == {}
    assert seen("GPU-aacf,GPU-aacf9dcc") == {}


def test_empty_means_no_gpu() -> None:
    assert seen("") == {}
    assert seen(" ") == {}


def test_indices_under_another_device_order_are_not_mapped() -> None:
    for order in (None, "FASTEST_FIRST"):
        assert seen(None, order) is None
        assert seen("1,0", order) is None
    assert seen("0", None, GPUS[:1]) == {"0": 0}, "one GPU: every order is the same"


def test_what_cuda_reads_otherwise_is_left_to_torch() -> None:
    assert seen("MIG-4f0e7a1c-aaaa") is None
    assert seen("1gpu,0") is None, "CUDA reads '1gpu' as 1"
    assert seen("0,,1") is None
    mig = [GPUS[0], NvmlGpu(1, "GPU-02598f70-14df", "NVIDIA H200", 140 * GIB, 90 * GIB, mig=True)]
    assert seen("0", gpus=mig) is None


def test_without_nvml_every_query_gives_torchs_answer() -> None:
    """No NVIDIA driver here: NVML does not start (with nvidia-ml-py installed, nvmlInit fails with an NVMLError;
    without it, the import does), so the queries ask torch, which sees no GPU."""
    if importlib.util.find_spec("pynvml") is not None:
        import pynvml

        try:
            pynvml.nvmlInit()
        except pynvml.NVMLError:
            pass
        else:
            pytest.skip("NVML works on this machine")
    assert nvml_gpus() is None and visible_nvml_gpus() is None
    assert visible_gpus() == []
    assert free_memory_gib(["0"]) == 0.0
    assert default_device() == "cpu"
    plan = Plan.model_validate(
        {"name": "p", "arms": [{"name": "base", "type": "baseline"}], "suites": ["json_extract"]}
    )
    assert gpu_capacity_gib(plan) is None


def run_python(code: str) -> str:
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_asking_nvml_does_not_import_torch() -> None:
    out = run_python(
        "import sys\n"
        "import harness.model._load, harness.run._devices, harness.run._preflight\n"
        "import harness.run._provenance, harness.run._workers\n"
        "import harness.run._capacity, harness.run._dispatch\n"
        "from harness._nvml import visible_nvml_gpus\n"
        "visible_nvml_gpus()\n"
        "print('torch' in sys.modules)"
    )
    assert out == "False"


def test_a_fresh_process_without_nvml_falls_back_to_torch() -> None:
    if nvml_gpus() is not None:
        pytest.skip("NVML works on this machine")
    out = run_python(
        "import sys\nfrom harness.model._load import default_device\nprint(default_device(), 'torch' in sys.modules)"
    )
    assert out == "cpu True"
