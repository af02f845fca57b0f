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

    @property
    def ratio(self) -> float | None:
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


def best_throughput(
    forward: Callable[[np.ndarray], object], shape: tuple[int, ...]
) -> tuple[float, int]:
    """Images per second of ``forward`` at its best batch size in :data:`BATCHES`, and that size."""
    rng = np.random.default_rng(0)
    best = (0.0, 1)
    for batch in BATCHES:
        x = rng.random((batch, *shape), dtype=np.float32)
        reps = max(2, 64 // batch)
        t = median_time(lambda: [forward(x) for _ in range(reps)], repeats=3) / reps
        best = max(best, (batch / t, batch))
    return best
