from __future__ import annotations

import os
from io import StringIO
from pathlib import Path

import psutil
from rich.console import Console

from advisor.hardware import probe_hardware


def test_probe_reports_this_machine(tmp_path: Path) -> None:
    hw = probe_hardware(tmp_path / "not" / "made" / "yet")
    assert hw.disk_path == str(tmp_path.resolve()) and hw.disk_free_gib > 0
    assert hw.cpu_count == os.cpu_count()
    assert hw.ram_gib == round(psutil.virtual_memory().total / 1024**3, 1)
    assert 0 < hw.ram_available_gib <= hw.ram_gib


def test_gpus_agree_with_torch() -> None:
    import torch

    hw = probe_hardware()
    assert hw.gpu_count == (torch.cuda.device_count() if torch.cuda.is_available() else 0)
    assert hw.torch_version == torch.__version__
    assert hw.min_vram_gib == min((g.memory_gib for g in hw.gpus), default=0.0)
    out = StringIO()
    hw.render(Console(file=out, width=200))
    assert ("no GPU" in out.getvalue()) == (hw.gpu_count == 0)
