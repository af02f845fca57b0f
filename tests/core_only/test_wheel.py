"""What a user installs: the wheel builds without a warning, carries its licence and no test
fixture."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import zipfile
from importlib import metadata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _setuptools_version() -> tuple[int, ...]:
    try:
        return tuple(int(p) for p in re.findall(r"\d+", metadata.version("setuptools"))[:2])
    except metadata.PackageNotFoundError:
        return (0,)


def test_the_wheel_builds_without_warnings_and_declares_its_license(tmp_path):
    if _setuptools_version() < (77,):
        pytest.skip("needs setuptools>=77 (PEP 639 licence fields), as pyproject.toml says")
    source = tmp_path / "source"
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / name, source / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info")
    shutil.copytree(ROOT / "src", source / "src", ignore=ignore)
    pip = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index"]
    out = subprocess.run(
        [*pip, "-w", str(tmp_path / "dist"), str(source)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    log = out.stdout + out.stderr
    assert out.returncode == 0, log[-3000:]
    assert not re.findall(r"(?i)warning|deprecat", log), log[-3000:]
    (wheel,) = (tmp_path / "dist").glob("innersight-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        meta = zf.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
        shipped = zf.read(next(n for n in names if n.endswith(".dist-info/licenses/LICENSE")))
    assert "License-Expression: Apache-2.0" in meta.splitlines()
    assert "License-File: LICENSE" in meta.splitlines()
    assert shipped == (ROOT / "LICENSE").read_bytes()
    assert "innersight/models/spec.py" in names
    assert not [n for n in names if "demo_models" in n]  # the tests' small net stays in tests/
    assert b"Apache License\n                           Version 2.0, January 2004" in shipped
