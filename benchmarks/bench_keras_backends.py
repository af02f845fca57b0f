"""Saliency and occlusion on the seeds' convnet on each Keras 3 backend, against that backend's
own floor: the fastest plain way to run the same model on it, without innersight.

    python benchmarks/bench_keras_backends.py [--backends tensorflow,torch,jax] [--json out.json]

Keras fixes its backend at import, so each backend runs in its own process (this script with
``--child BACKEND``); the parent prints one table. Floors, per backend:

* TensorFlow: a ``tf.function`` with a None batch axis around ``model(x, training=False)`` (and a
  ``GradientTape`` inside it for the gradient).
* torch: the Keras-on-torch model called eagerly, under ``torch.no_grad()`` (and
  ``torch.autograd.grad`` w.r.t. the input for the gradient).
* JAX: ``jax.jit`` of ``model.stateless_call`` on variable values taken once (and ``jax.grad`` of
  it for the gradient), compiled before timing.

Rows: ``saliency`` on one 150x150 photo (goal <= 1.1x the floor's forward+backward) and
``occlusion`` 15x15 windows, stride 8, on one photo (goal <= 1.1x the time the floor takes for
the same number of forwards at its best batch size, as in benchmarks/run.py). Calls are repeated
and the median is kept; on a shared machine only ratios measured in one run mean anything.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from timing import median_time  # noqa: E402

SHAPE = (150, 150, 3)
BATCHES = (8, 16, 32, 64)
BACKENDS = ("tensorflow", "torch", "jax")


def image() -> np.ndarray:
    """A real photo (scikit-learn's sample image of a temple) at 150x150, values 0..1."""
    from PIL import Image
    from sklearn.datasets import load_sample_images

    photo = load_sample_images().images[0]
    small = Image.fromarray(photo).resize(SHAPE[:2], Image.BILINEAR)
    return (np.asarray(small, np.float32) / 255.0)[None]


def positions(size: int, window: int, stride: int) -> int:
    """Window positions along one axis, with the extra edge-aligned window innersight adds."""
    count = (size - window) // stride + 1
    return count + (1 if (count - 1) * stride + window < size else 0)


# -- the floors, one pair per backend ---------------------------------------------------------
def tensorflow_floor(model: Any) -> tuple[Callable[..., Any], Callable[..., Any]]:
    import tensorflow as tf

    spec = tf.TensorSpec((None, *SHAPE), tf.float32)
    forward = tf.function(lambda x: model(x, training=False), input_signature=[spec])

    @tf.function(input_signature=[spec])
    def grad(t: Any) -> Any:
        with tf.GradientTape() as tape:
            tape.watch(t)
            score = tf.reduce_sum(model(t, training=False)[:, 0])
        return tape.gradient(score, t)

    return (lambda x: forward(x).numpy()), (lambda x: grad(x).numpy())


def torch_floor(model: Any) -> tuple[Callable[..., Any], Callable[..., Any]]:
    import torch

    def forward(x: np.ndarray) -> Any:
        with torch.no_grad():
            return model(torch.from_numpy(x), training=False).numpy()

    def grad(x: np.ndarray) -> Any:
        t = torch.from_numpy(x).requires_grad_(True)
        (g,) = torch.autograd.grad(model(t, training=False)[:, 0].sum(), [t])
        return g.numpy()

    return forward, grad


def jax_floor(model: Any) -> tuple[Callable[..., Any], Callable[..., Any]]:
    import jax

    tv = [v.value for v in model.trainable_variables]
    ntv = [v.value for v in model.non_trainable_variables]

    def call(x: Any) -> Any:
        return model.stateless_call(tv, ntv, x, training=False)[0]

    forward = jax.jit(call)
    grad = jax.jit(jax.grad(lambda x: call(x)[:, 0].sum()))
    return (lambda x: np.asarray(forward(x))), (lambda x: np.asarray(grad(x)))


def best_throughput(forward: Callable[[np.ndarray], Any]) -> tuple[float, int]:
    """Images per second of ``forward`` at its best batch size in :data:`BATCHES`."""
    rng = np.random.default_rng(0)
    best = (0.0, 1)
    for batch in BATCHES:
        x = rng.random((batch, *SHAPE), dtype=np.float32)
        reps = max(2, 64 // batch)
        t = median_time(lambda x=x, reps=reps: [forward(x) for _ in range(reps)], repeats=3) / reps
        best = max(best, (batch / t, batch))
    return best


def child(backend: str, repeats: int) -> list[dict[str, Any]]:
    """The rows of one backend (runs in a process whose Keras uses ``backend``)."""
    if backend != "tensorflow":
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    with contextlib.suppress(ImportError):
        import torch  # noqa: F401  (before TensorFlow, whenever both may load)
    import keras

    import innersight as ins
    from innersight.models import seed_convnet

    assert keras.backend.backend() == backend, keras.backend.backend()
    model = seed_convnet("keras")
    forward, grad = {"tensorflow": tensorflow_floor, "torch": torch_floor, "jax": jax_floor}[
        backend
    ](model)
    x = image()
    floor_grad = median_time(lambda: grad(x), repeats=repeats)
    saliency = median_time(lambda: ins.explain("saliency", model, x, target=0), repeats=repeats)
    ips, batch = best_throughput(forward)
    n = positions(SHAPE[0], 15, 8) * positions(SHAPE[1], 15, 8) + 1
    occlusion = median_time(
        lambda: ins.explain("occlusion", model, x, target=0, window=15, stride=8, progress=False),
        repeats=max(2, repeats // 3),
    )
    return [
        {"case": "saliency, 1 image", "backend": backend, "seconds": saliency,
         "floor": floor_grad, "floor_name": "fwd+bwd", "goal": 1.1},
        {"case": "occlusion 15x15/8, 1 image", "backend": backend, "seconds": occlusion,
         "floor": n / ips, "floor_name": f"{n} forwards at batch {batch}", "goal": 1.1},
    ]  # fmt: skip


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| case | Keras backend | innersight | floor | ratio | goal |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['case']} | {r['backend']} | {r['seconds'] * 1e3:.1f} ms | "
            f"{r['floor'] * 1e3:.1f} ms ({r['floor_name']}) | "
            f"{r['seconds'] / r['floor']:.2f}x | <= {r['goal']}x |"
        )
    return "\n".join(lines)


def measure(backends: list[str], repeats: int) -> list[dict[str, Any]]:
    """The rows of every backend, each measured in its own process (``benchmarks/run.py``
    calls this for its ``keras_backends`` case); a backend that fails is reported and left out."""
    rows: list[dict[str, Any]] = []
    for backend in backends:
        env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3"}
        cmd = [sys.executable, __file__, "--child", backend, "--repeats", str(repeats)]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        found = [ln for ln in proc.stdout.splitlines() if ln.startswith("ROWS ")]
        if proc.returncode or not found:
            print(f"{backend}: failed\n{proc.stderr[-3000:]}", file=sys.stderr)
            continue
        rows.extend(json.loads(found[-1][5:]))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backends", default=",".join(BACKENDS))
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--json", type=Path, help="also write the rows here")
    parser.add_argument("--child", choices=BACKENDS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print("ROWS " + json.dumps(child(args.child, args.repeats)))
        return 0
    rows = measure(args.backends.split(","), args.repeats)
    print(table(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0 if rows else 1


if __name__ == "__main__":
    raise SystemExit(main())
