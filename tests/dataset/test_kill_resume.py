"""A run killed mid-way loses at most the shards being written: killing the whole process and
resuming, and killing one worker process of the pool (which the engine replaces)."""

from __future__ import annotations

import functools
import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

import innersight as ins
from tests.dataset import helpers

torch = pytest.importorskip("torch")
pytest.importorskip("pyarrow")

ROOT = Path(__file__).resolve().parents[2]


def _recorded(out: Path) -> int:
    try:
        return len(json.loads((out / "manifest.json").read_text())["shards"])
    except (OSError, ValueError, KeyError):
        return 0


def _files(out: Path) -> dict[str, tuple[int, int]]:
    """Each shard file's (inode, mtime): a rewritten file changes both."""
    return {
        p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in (out / "shards").glob("part-*")
    }


def test_killed_process_resumes_without_losing_or_repeating_ids(digits, tmp_path):
    x = digits.x_test[:96]
    np.save(tmp_path / "x.npy", x)
    out = tmp_path / "out"
    script = (
        "import functools, torch, innersight as ins\n"
        "from tests.dataset import helpers\n"
        f"ins.explain_dataset('saliency', functools.partial(helpers.slow_digits, 0.1), "
        f"{str(tmp_path / 'x.npy')!r}, out={str(out)!r}, batch_size=8, progress=False)\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), *sys.path])}
    child = subprocess.Popen([sys.executable, "-c", script], env=env, cwd=tmp_path)
    try:
        assert helpers.wait_for(lambda: _recorded(out) >= 3 or child.poll() is not None, 120)
        assert child.poll() is None, "the run ended before it could be killed"
        child.send_signal(signal.SIGKILL)
    finally:
        child.kill()
        child.wait(30)
    kept = json.loads((out / "manifest.json").read_text())
    done_before = {s["file"].split("/")[1] for s in kept["shards"]}
    assert 3 <= len(done_before) < 12 and not kept["complete"]
    before = _files(out)

    run = ins.explain_dataset(
        "saliency",
        functools.partial(helpers.slow_digits, 0.1),
        tmp_path / "x.npy",
        out=out,
        batch_size=8,
        progress=False,
    )
    after = _files(out)
    assert all(after[name] == before[name] for name in done_before)  # skipped, not rewritten
    assert len(after) == 12 and run.complete and run.verify() == []
    ids = run.ids()
    assert ids == [str(i) for i in range(96)]  # none missing, none twice
    assert not [p for p in out.rglob("*") if ".tmp-" in p.name]
    expected = ins.explain("saliency", helpers.digits("torch"), x).values
    np.testing.assert_allclose(run.to_numpy(), expected, rtol=1e-6, atol=1e-6)


def test_killed_worker_process_loses_only_its_shard(digits, tmp_path):
    x = digits.x_test[:80]
    out = tmp_path / "out"
    result: dict[str, object] = {}

    def go() -> None:
        try:
            result["run"] = ins.explain_dataset(
                "saliency",
                functools.partial(helpers.slow_digits, 0.1),
                x,
                out=out,
                batch_size=8,
                workers=2,
                progress=False,
            )
        except BaseException as err:  # reported by the assertion below
            result["error"] = err

    earlier = set(helpers.children(os.getpid()))
    thread = threading.Thread(target=go)
    thread.start()
    try:
        assert helpers.wait_for(lambda: _recorded(out) >= 2 or not thread.is_alive(), 180)
        ours = set(helpers.children(os.getpid())) - earlier  # this run's pool, nothing else
        workers = [p for p in sorted(ours) if "spawn_main" in helpers.cmdline(p)]
        assert workers and thread.is_alive(), "no worker process to kill, or the run ended"
        os.kill(workers[0], signal.SIGKILL)
    finally:
        thread.join(300)
    assert "error" not in result, result.get("error")
    run = result["run"]
    assert run.ids() == [str(i) for i in range(80)] and len(run.manifest.shards) == 10
    np.testing.assert_allclose(
        run.to_numpy(),
        ins.explain("saliency", helpers.digits("torch"), x).values,
        rtol=1e-6,
        atol=1e-6,
    )
    again = ins.explain_dataset(
        "saliency",
        functools.partial(helpers.slow_digits, 0.1),
        x,
        out=out,
        batch_size=8,
        progress=False,
    )
    assert again.ids() == run.ids()  # every shard complete: nothing redone
