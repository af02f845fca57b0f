"""Timing helpers and the forward floor of the reference model, shared by the benchmark cases."""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

BATCHES = (1, 2, 4, 8, 16, 32, 64)
FLOOR_SHAPE = (150, 150, 3)  # the seeds' convnet


def median_time(fn: Callable[[], object], repeats: int = 3, warmup: int = 1) -> float:
    """Median wall time of ``fn()`` over ``repeats`` calls after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def interleaved(fns: dict[str, Callable[[], object]], rounds: int = 15) -> dict[str, float]:
    """Median wall time of each function, called in turn (one call of each per round, after two
    untimed calls of each): on a shared machine a change of load hits all of them alike."""
    for fn in fns.values():
        fn()
        fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(t) for name, t in times.items()}


@dataclass
class Row:
    """One line of the results table."""

    case: str
    backend: str
    seconds: float
    reference: float | None = None
    reference_name: str = ""
    goal: float | None = None
    notes: str = ""
    extra: dict[str, float] = field(default_factory=dict)
    #: the median of per-round ratios, where they were measured round by round
    measured_ratio: float | None = None

    @property
    def ratio(self) -> float | None:
        if self.measured_ratio is not None:
            return self.measured_ratio
        return None if not self.reference else self.seconds / self.reference


def machine() -> str:
    """A one-line description of this machine and the software versions."""
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    parts = [
        f"{os.cpu_count()} CPUs ({cpu})",
        f"Python {platform.python_version()}",
        f"torch {torch.__version__} (threads {torch.get_num_threads()})",
    ]
    if torch.cuda.is_available():
        parts.append(f"GPU {torch.cuda.get_device_name(0)}")
    try:
        import keras
        import tensorflow as tf

        parts.append(f"TensorFlow {tf.__version__}, Keras {keras.__version__}")
    except ImportError:
        parts.append("no TensorFlow/Keras")
    parts.append(f"numpy {np.__version__}")
    parts.append(f"GLIBC_TUNABLES={'set' if os.environ.get('GLIBC_TUNABLES') else 'unset'}")
    return ", ".join(parts)


def torch_forward(model: object) -> Callable[[np.ndarray], object]:
    """The fastest plain torch forward we know: channels_last, inference mode, on the model's
    device; numpy in and numpy out (the input's host-to-device copy and the output's way back
    are part of any numpy-boundary pipeline, and make GPU timings synchronous)."""
    import copy

    import torch

    fast = copy.deepcopy(model).to(memory_format=torch.channels_last).eval()
    device = next(fast.parameters()).device

    def run(x: np.ndarray) -> object:
        with torch.inference_mode():
            t = (
                torch.from_numpy(x)
                .to(device)
                .permute(0, 3, 1, 2)
                .contiguous(memory_format=torch.channels_last)
            )
            return fast(t).cpu().numpy()

    return run


def keras_forward(model: object) -> Callable[[np.ndarray], object]:
    """A traced tf.function forward with a None batch axis (no retracing per batch size)."""
    import tensorflow as tf

    spec = tf.TensorSpec((None, *model.input_shape[1:]), tf.float32)  # type: ignore[attr-defined]
    fn = tf.function(lambda x: model(x, training=False), input_signature=[spec])  # type: ignore[operator]
    return lambda x: fn(x).numpy()


def per_image(forward: Callable[[np.ndarray], object], batch: int, images: int = 128) -> float:
    """Seconds per image of ``forward`` at ``batch``, over about ``images`` images (warm)."""
    x = np.random.default_rng(0).random((batch, *FLOOR_SHAPE), dtype=np.float32)
    reps = max(2, images // batch)
    forward(x)
    t0 = time.perf_counter()
    for _ in range(reps):
        forward(x)
    return (time.perf_counter() - t0) / (reps * batch)


#: Batch sizes whose floor is always timed besides the best of the throughput scan: the scan
#: runs once, and on a shared machine its pick can be a size that a load spike favoured.
FLOOR_BATCHES = (8, 16)


def floor_batches(best: int) -> tuple[int, ...]:
    """The batch sizes a bracketed floor is timed at: the scan's best and :data:`FLOOR_BATCHES`."""
    return tuple(sorted({best, *FLOOR_BATCHES}))


@dataclass
class Bracketed:
    """Per-round times of a call and of its floor, timed right around it."""

    seconds: list[float] = field(default_factory=list)
    floor: list[float] = field(default_factory=list)
    #: the batch size whose forward gave each round's floor
    floor_batch: list[int] = field(default_factory=list)

    @property
    def ratios(self) -> list[float]:
        return [s / f for s, f in zip(self.seconds, self.floor, strict=True)]

    def row(self, case: str, backend: str, goal: float | None, notes: str = "") -> Row:
        """A table row: median time, median floor, the median of the per-round ratios."""
        rounds = ", ".join(f"{r:.2f}" for r in self.ratios)
        if self.floor_batch:
            notes = f"{notes}; floor at batch {', '.join(map(str, self.floor_batch))}"
        return Row(
            case,
            backend,
            statistics.median(self.seconds),
            statistics.median(self.floor),
            "floor",
            goal,
            f"{notes}; ratio per round: {rounds}".lstrip("; "),
            measured_ratio=statistics.median(self.ratios),
        )


def bracketed(
    run: Callable[[], object],
    forward: Callable[[np.ndarray], object],
    batch: int | tuple[int, ...],
    images: int,
    rounds: int = 3,
) -> Bracketed:
    """Times ``run()`` against its floor, ``images`` forwards of ``forward`` at the fastest
    of the batch sizes ``batch``.

    The floor of each round is timed right before and right after ``run()`` (at every size)
    and the fastest kept: on a shared machine the load changes within seconds, and a floor
    measured minutes earlier would compare two different machines. One untimed ``run()``
    comes first.
    """
    batches = (batch,) if isinstance(batch, int) else batch
    run()
    out = Bracketed()
    for _ in range(rounds):
        before = {b: per_image(forward, b) for b in batches}
        t0 = time.perf_counter()
        run()
        out.seconds.append(time.perf_counter() - t0)
        best = min((min(before[b], per_image(forward, b)), b) for b in batches)
        out.floor.append(images * best[0])
        out.floor_batch.append(best[1])
    return out


def best_throughput(
    forward: Callable[[np.ndarray], object], shape: tuple[int, ...]
) -> tuple[float, int]:
    """Images per second of ``forward`` at its best batch size in :data:`BATCHES`, and that size."""
    rng = np.random.default_rng(0)
    best = (0.0, 1)
    for batch in BATCHES:
        x = rng.random((batch, *shape), dtype=np.float32)
        reps = max(2, 64 // batch)
        t = median_time(lambda x=x, reps=reps: [forward(x) for _ in range(reps)], repeats=3) / reps
        best = max(best, (batch / t, batch))
    return best
