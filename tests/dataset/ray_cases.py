"""The Ray engine's cases. Run only by :mod:`tests.dataset.test_ray`, inside a private network
namespace (``INNERSIGHT_RAY_NETNS=1``); the file name keeps pytest from collecting it otherwise.

Each case compares the Ray engine with the local engine on the same inputs: same ids, same
numbers. Ray is started once for the module (2 CPUs, no dashboard) and shut down after it.
"""

from __future__ import annotations

import functools
import ipaddress
import os
import signal
import threading
from pathlib import Path

import numpy as np
import pytest

import innersight as ins
from tests.dataset import helpers

if os.environ.get("INNERSIGHT_RAY_NETNS") != "1":  # pragma: no cover - guarded by test_ray.py
    pytest.skip(
        "run through tests/dataset/test_ray.py (a private network namespace)",
        allow_module_level=True,
    )

ray = pytest.importorskip("ray")
torch = pytest.importorskip("torch")

FACTORY = functools.partial(helpers.digits, "torch")


@pytest.fixture(scope="module", autouse=True)
def cluster():
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    if started:
        ray.shutdown()


@pytest.fixture(scope="module")
def data():
    from innersight.models import digits_data

    split = digits_data()
    return split.x_test[:96], split.y_test[:96]


def _listening() -> list[str]:
    """Local addresses of every listening TCP socket in this network namespace."""
    found = []
    for name, width in (("tcp", 8), ("tcp6", 32)):
        with open(f"/proc/net/{name}") as f:
            for line in f.read().splitlines()[1:]:
                fields = line.split()
                if fields[3] == "0A":  # LISTEN
                    found.append(_address(fields[1].split(":")[0], width))
    return found


def _address(hexaddr: str, width: int) -> str:
    raw = bytes.fromhex(hexaddr)
    # /proc/net prints each 32-bit word in host (little-endian) order.
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    addr = ipaddress.ip_address(words)
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return str(addr.ipv4_mapped)
    return str(addr)


def test_ray_equals_local_and_listens_on_loopback_only(data, tmp_path):
    x, y = data
    remote = ins.explain_dataset(
        "saliency",
        FACTORY,
        (x, y),
        out=tmp_path / "ray",
        engine="ray",
        workers=2,
        batch_size=16,
        progress=False,
    )
    listeners = _listening()
    assert listeners, "Ray should be listening on some port"
    for addr in listeners:
        assert ipaddress.ip_address(addr).is_loopback, (
            f"a Ray socket listens on {addr}: {listeners}"
        )
    local = ins.explain_dataset(
        "saliency", FACTORY, (x, y), out=tmp_path / "local", batch_size=16, progress=False
    )
    assert remote.ids() == local.ids() == [str(i) for i in range(96)]
    for column in ("values", "score"):
        np.testing.assert_allclose(
            remote.to_numpy(column=column), local.to_numpy(column=column), rtol=1e-6, atol=1e-6
        )
    for column in ("target", "prediction", "label"):
        np.testing.assert_array_equal(remote.to_numpy(column=column), local.to_numpy(column=column))
    assert remote.manifest.info["engine"] == "ray"


def test_killed_actor_loses_only_its_shard_and_resume_skips_the_rest(data, tmp_path):
    x, _ = data
    out = tmp_path / "out"
    slow = functools.partial(helpers.slow_digits, 0.1)
    result: dict[str, object] = {}

    def go() -> None:
        try:
            result["run"] = ins.explain_dataset(
                "saliency", slow, x, out=out, engine="ray", workers=2, batch_size=8, progress=False
            )
        except BaseException as err:
            result["error"] = err

    thread = threading.Thread(target=go)
    thread.start()
    killed = None
    try:

        def ready() -> bool:
            return (out / "manifest.json").is_file() and len(
                list((out / "shards").glob("part-*"))
            ) >= 2

        assert helpers.wait_for(lambda: ready() or not thread.is_alive(), 240)
        # Ray may run an actor in a worker process it started earlier: found by its title.
        actors = [p for p in helpers.children(os.getpid()) if "RayWorker" in helpers.cmdline(p)]
        assert actors and thread.is_alive(), "no actor to kill, or the run ended"
        killed = actors[0]
        os.kill(killed, signal.SIGKILL)
    finally:
        thread.join(300)
    assert "error" not in result, result.get("error")
    assert killed not in helpers.children(os.getpid())
    run = result["run"]
    assert run.ids() == [str(i) for i in range(96)] and run.verify() == []
    stamps = {p.name: p.stat().st_mtime_ns for p in (out / "shards").glob("part-*")}
    again = ins.explain_dataset(
        "saliency", slow, x, out=out, engine="ray", workers=2, batch_size=8, progress=False
    )
    assert {p.name: p.stat().st_mtime_ns for p in (out / "shards").glob("part-*")} == stamps
    local = ins.explain("saliency", helpers.digits("torch"), x).values
    np.testing.assert_allclose(again.to_numpy(), local, rtol=1e-6, atol=1e-6)


def test_ray_dataset_source_equals_local(data, tmp_path):
    x, y = data
    ds = ray.data.from_items(
        [{"id": f"d{i}", "image": x[i], "label": int(y[i])} for i in range(len(x))]
    )
    remote = ins.explain_dataset(
        "grad_cam",
        FACTORY,
        ds,
        out=tmp_path / "ray",
        engine="ray",
        workers=2,
        batch_size=32,
        progress=False,
    )
    batches = [
        ([f"d{i}" for i in range(k, k + 32)], x[k : k + 32], y[k : k + 32])
        for k in range(0, 96, 32)
    ]
    local = ins.explain_dataset(
        "grad_cam", FACTORY, batches, out=tmp_path / "local", batch_size=32, progress=False
    )
    ids = local.ids()
    assert sorted(remote.ids()) == sorted(ids) and len(set(remote.ids())) == 96
    np.testing.assert_allclose(remote.to_numpy(ids), local.to_numpy(ids), rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(remote.to_numpy(ids, "label"), y)


def test_embedding_on_ray_equals_local(data, tmp_path):
    x, y = data
    kwargs = dict(
        method="pca", components=6, batch_size=24, projector=50, quality_samples=60, progress=False
    )
    remote = ins.embed_dataset(
        FACTORY, (x, y), out=tmp_path / "ray", engine="ray", workers=2, **kwargs
    )
    local = ins.embed_dataset(FACTORY, (x, y), out=tmp_path / "local", **kwargs)
    assert remote.ids() == local.ids()
    for column in ("x", "y", "pca"):
        np.testing.assert_allclose(
            remote.to_numpy(column=column), local.to_numpy(column=column), rtol=1e-5, atol=1e-5
        )
    a, b = remote.summary()["embedding"], local.summary()["embedding"]
    assert a["trustworthiness"] == pytest.approx(b["trustworthiness"], abs=1e-6)
    assert Path(remote.out / "projector" / "sprite.png").is_file()
