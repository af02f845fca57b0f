"""The Ray engine's tests, run in one subprocess inside a private network namespace.

Outside a namespace of its own, Ray binds its services to the machine's own non-loopback
address. ``unshare -rn`` gives the subprocess a network namespace with only a loopback device,
so no Ray socket can be reached from (or reach) anything else; the suite in
:mod:`tests.dataset.ray_cases` also asserts that every listening socket is on 127.0.0.0/8.
One subprocess pays Ray's start (~3 s) and the actors' imports once for all cases.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CASES = Path(__file__).with_name("ray_cases.py")
LIMIT = 480  # seconds for the whole suite, Ray's start and shutdown included


def _namespace_or_skip() -> None:
    pytest.importorskip("ray")
    pytest.importorskip("pyarrow")
    pytest.importorskip("torch")
    missing = [tool for tool in ("unshare", "ip") if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"the Ray tests need {' and '.join(missing)} for a private network namespace")
    probe = subprocess.run(
        ["unshare", "-rn", "sh", "-c", "ip link set lo up"], capture_output=True, text=True
    )
    if probe.returncode != 0:
        pytest.skip(
            f"this environment forbids private network namespaces (unshare -rn: "
            f"{probe.stderr.strip() or probe.returncode}); Ray is not tested outside one"
        )


def test_ray_engine_suite_in_a_private_network_namespace():
    _namespace_or_skip()
    scratch = tempfile.mkdtemp(prefix="isray-")  # short: Ray's socket paths must fit 107 bytes
    try:
        _run_suite(scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _run_suite(scratch: str) -> None:
    command = (
        f"ip link set lo up && exec {sys.executable} -m pytest -q -p no:cacheprovider "
        f"-o python_files=ray_cases.py --rootdir {ROOT} {CASES}"
    )
    paths = [str(ROOT), *(p for p in sys.path if p)]
    env = {
        **os.environ,
        "INNERSIGHT_RAY_NETNS": "1",
        "PYTHONPATH": os.pathsep.join(paths),
        "RAY_TMPDIR": scratch,  # sessions, logs and sockets of this run only
        "RAY_USAGE_STATS_ENABLED": "0",
    }
    child = subprocess.Popen(
        ["unshare", "-rn", "sh", "-c", command],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        output, _ = child.communicate(timeout=LIMIT)
    except subprocess.TimeoutExpired:
        os.killpg(child.pid, signal.SIGKILL)  # the session holds Ray's processes too
        output, _ = child.communicate()
        pytest.fail(f"the Ray suite ran past {LIMIT} s:\n{output[-6000:]}")
    assert child.returncode == 0, output[-8000:]
    assert " passed" in output and "skipped" not in output.splitlines()[-1], output[-3000:]
