"""Batch planning under a memory budget, and progress reporting, for long work.

Perturbation and optimisation techniques run many forwards. They hand their work to
:meth:`BatchPlanner.map`, which splits it into chunks that fit the memory budget and, with
``batch_size="auto"``, picks the fastest chunk size by timing the first real chunks (no extra
forwards are spent on probing: each candidate size runs twice, and its second, warm call is
timed) and remembers the answer per model and input shape. A call whose work runs out before
every candidate was timed leaves its probe to the next call with the same key, which resumes
it: a short first call does not fix the size for every later one. On CPUs bigger batches are not
always faster, so no fixed size is right for every model.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from typing import Any

import numpy as np

from innersight.core.errors import InputError

__all__ = [
    "BatchPlanner",
    "Progress",
    "ProgressArg",
    "bytes_per_sample",
    "default_budget",
    "parse_bytes",
]

ProgressArg = bool | None | Callable[[int, int], Any]
_UNITS = {"": 1, "b": 1, "k": 2**10, "kb": 2**10, "m": 2**20, "mb": 2**20, "g": 2**30, "gb": 2**30}


def parse_bytes(text: str | int) -> int:
    """``"512MB"`` -> 536870912; ints pass through."""
    if isinstance(text, int):
        return text
    m = re.fullmatch(r"\s*([0-9.]+)\s*([a-zA-Z]*)\s*", str(text))
    if not m or m.group(2).lower() not in _UNITS:
        raise InputError(f"memory budget {text!r} is not a size; write e.g. 512MB or 2GB")
    return int(float(m.group(1)) * _UNITS[m.group(2).lower()])


def default_budget() -> int:
    """``INNERSIGHT_MEMORY_BUDGET`` if set, else a quarter of free memory, between 256 MB and
    2 GB."""
    env = os.environ.get("INNERSIGHT_MEMORY_BUDGET")
    if env:
        return parse_bytes(env)
    try:
        avail = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        avail = 4 * 2**30
    return int(min(2 * 2**30, max(256 * 2**20, avail // 4)))


def bytes_per_sample(
    input_shape: Sequence[int | None] | None,
    layer_shapes: Sequence[Sequence[int | None]] = (),
    *,
    grads: bool = False,
) -> int:
    """Rough float32 working set of one sample: input plus every layer output (x3 with grads)."""

    def size(shape: Sequence[int | None] | None) -> int:
        return int(np.prod([d or 1 for d in shape])) if shape else 1

    total = size(input_shape) + sum(size(s) for s in layer_shapes)
    return 4 * total * (3 if grads else 1)


class BatchPlanner:
    """Chunks work under a memory budget and learns the fastest batch size per model and shape.

    Args:
        budget_bytes: peak working-set budget for one chunk (default :func:`default_budget`).
        max_batch: upper bound on any chunk.
        candidates: chunk sizes tried by ``batch_size="auto"``.
        timed_calls: warm calls timed per candidate (the fastest counts): 2 or more resist a
            load spike on a shared machine, at the price of a longer probe.
    """

    #: key -> the chosen size, or the probe of a call that ran out of work before it finished
    _cache: OrderedDict[Hashable, int | _Probe] = OrderedDict()
    _cache_size = 256
    _lock = threading.Lock()

    def __init__(
        self,
        budget_bytes: int | None = None,
        *,
        max_batch: int = 64,
        candidates: Sequence[int] = (8, 16, 32, 64),
        timed_calls: int = 1,
    ) -> None:
        self.budget_bytes = default_budget() if budget_bytes is None else int(budget_bytes)
        self.max_batch = int(max_batch)
        self.candidates = tuple(int(c) for c in candidates)
        self.timed_calls = max(1, int(timed_calls))

    def fit(self, per_sample: int) -> int:
        """The largest batch whose working set stays within the budget (at least 1)."""
        return int(max(1, min(self.max_batch, self.budget_bytes // max(1, per_sample))))

    def map(
        self,
        fn: Callable[[int, int], np.ndarray],
        total: int,
        *,
        per_sample: int,
        batch_size: int | str = "auto",
        key: Hashable = None,
        progress: ProgressArg = None,
        desc: str = "",
    ) -> np.ndarray:
        """Evaluate ``fn(start, stop)`` over ``range(total)`` in chunks; concatenate the results.

        ``fn`` must return an array whose first axis has ``stop - start`` entries.
        """
        cap = self.fit(per_sample)
        chosen, probe = self._plan(batch_size, cap, key)
        size = min(chosen or cap, cap)
        results: list[np.ndarray] = []
        start = 0
        with Progress(total, desc, progress) as bar:
            while start < total:
                if probe is not None and probe.done:
                    size, probe = probe.best(), None
                    self._store(key, size)
                step = size if probe is None else probe.step(total - start)
                stop = min(total, start + step)
                results.append(self._chunk(fn, start, stop, probe))
                bar.update(stop - start)
                start = stop
        if probe is not None:  # out of work mid-probe: the next call with this key resumes it
            self._store(key, probe.best() if probe.done else probe)
        return np.concatenate(results, axis=0)

    def _plan(
        self, batch_size: int | str, cap: int, key: Hashable
    ) -> tuple[int | None, _Probe | None]:
        """``(size, None)`` for a fixed or remembered size, else ``(None, probe)``: the
        unfinished probe of an earlier call with this key (resumed), or a fresh one."""
        fixed = self._fixed_size(batch_size, cap)
        if fixed:
            return fixed, None
        found = self._lookup(key)
        if isinstance(found, int):
            return found, None
        if found is not None and found.limit(cap):
            return None, found
        if found is not None and found.timings:  # no size left under this budget
            self._store(key, found.best())
            return found.best(), None
        sizes = [c for c in self.candidates if c <= cap] or [cap]
        return None, _Probe(sizes, timed=self.timed_calls)

    @staticmethod
    def _chunk(
        fn: Callable[[int, int], np.ndarray], start: int, stop: int, probe: _Probe | None
    ) -> np.ndarray:
        """``fn(start, stop)``, checked, timed for the probe when one is running."""
        t0 = time.perf_counter()
        out = np.asarray(fn(start, stop))
        elapsed = time.perf_counter() - t0
        if out.shape[:1] != (stop - start,):
            raise RuntimeError(f"batch function returned {out.shape} for {stop - start} items")
        if probe is not None:
            probe.record(stop - start, elapsed)
        return out

    @staticmethod
    def _fixed_size(batch_size: int | str, cap: int) -> int | None:
        if batch_size == "auto":
            return None
        if (
            isinstance(batch_size, bool)
            or not isinstance(batch_size, (int, np.integer))
            or batch_size < 1
        ):
            raise InputError(f"batch_size must be a positive int or 'auto', got {batch_size!r}")
        return int(batch_size)

    @classmethod
    def _lookup(cls, key: Hashable) -> int | _Probe | None:
        """The size remembered for ``key``, or its unfinished probe (taken out: one caller
        resumes it; a concurrent caller starts its own)."""
        if key is None:
            return None
        with cls._lock:
            found = cls._cache.get(key)
            if isinstance(found, _Probe):
                del cls._cache[key]
            elif found is not None:
                cls._cache.move_to_end(key)
            return found

    @classmethod
    def _store(cls, key: Hashable, size: int | _Probe) -> None:
        if key is None:
            return
        with cls._lock:
            cls._cache[key] = size
            cls._cache.move_to_end(key)
            while len(cls._cache) > cls._cache_size:
                cls._cache.popitem(last=False)

    @classmethod
    def clear_cache(cls) -> None:
        with cls._lock:
            cls._cache.clear()


class _Probe:
    """Times candidate chunk sizes with the real work: each size runs twice and only the
    second, warm call counts (``timed`` warm calls, the fastest counting, where asked; the
    first call of a new batch shape pays for oneDNN primitive
    creation, tracing and first-touch allocations: timing it favoured whichever size came
    first). Sizes go in ascending order; probing stops at the first size that is
    :attr:`SLOWER` times slower per item than the best so far (per-item time is U-shaped in
    the batch size on CPUs: past the best it only grows), which spares the largest, slowest
    sizes where small batches win (a plain process without malloc tunables)."""

    #: A size this much slower per item than the best so far ends the probing.
    SLOWER = 1.3

    def __init__(self, sizes: Sequence[int], timed: int = 1) -> None:
        self.sizes = sorted(set(sizes))
        self.timed = timed  # warm calls timed per size; the fastest counts
        self.timings: dict[int, float] = {}  # size -> seconds per item, warm
        self._runs = 0  # calls of the current size so far

    @property
    def done(self) -> bool:
        return not self.sizes

    @property
    def size(self) -> int:
        return self.sizes[0]

    def step(self, remaining: int) -> int:
        """The next chunk's size: the size being timed when ``remaining`` items hold a whole
        chunk of it, else the best size so far (a short chunk would teach nothing, and the
        next call resumes the probe: calls of the same work keep the same chunks)."""
        return self.size if self.size <= remaining else self.best()

    def limit(self, cap: int) -> bool:
        """Drop the sizes above ``cap`` (a smaller budget); False when none is left to try."""
        kept = [s for s in self.sizes if s <= cap]
        if kept[:1] != self.sizes[:1]:
            self._runs = 0  # the size being timed was dropped
        self.sizes = kept
        return bool(kept)

    def record(self, items: int, seconds: float) -> None:
        """One chunk of ``items`` took ``seconds``; a short last chunk teaches nothing."""
        if self.done or items != self.size:
            return
        self._runs += 1
        if self._runs < 2:  # the warm-up call of this size
            return
        per_item = min(seconds / items, self.timings.get(self.size, np.inf))
        self.timings[self.size] = per_item
        if self._runs <= self.timed:
            return
        self._runs = 0
        self.sizes.pop(0)
        if per_item > self.SLOWER * min(self.timings.values()):
            self.sizes.clear()

    def best(self) -> int:
        """The fastest size per item (ties: the larger); the first size when none was timed."""
        if not self.timings:
            return self.sizes[0] if self.sizes else 1
        return min(self.timings, key=lambda s: (self.timings[s], -s))


class Progress:
    """A progress bar: tqdm on a terminal or in Jupyter, silent otherwise, or a callback.

    ``tqdm.auto`` draws a text bar on a terminal and the widget bar in a Jupyter notebook
    (where stderr is no terminal, so a terminal check alone would show nothing).

    Args:
        total: number of work items.
        desc: label shown before the bar.
        progress: ``None`` (a bar when stderr is a terminal or the code runs in a Jupyter
            kernel), ``True``, ``False``, or a callable receiving ``(done, total)`` after every
            chunk.
    """

    def __init__(self, total: int, desc: str = "", progress: ProgressArg = None) -> None:
        self.total, self.desc, self.done = int(total), desc, 0
        self._callback = progress if callable(progress) else None
        on_screen = progress is None and (sys.stderr.isatty() or self.in_notebook())
        show = on_screen or progress is True
        self._bar: Any = None
        if show:  # tqdm is optional
            try:
                from tqdm.auto import tqdm  # type: ignore[import-untyped,unused-ignore]

                self._bar = tqdm(total=self.total, desc=desc or None, leave=False)
            except ImportError:
                self._bar = _TextBar(self.total, desc)

    @staticmethod
    def in_notebook() -> bool:
        """True inside a Jupyter (IPython) kernel: ipykernel is loaded and the running IPython
        shell has a kernel. False in a plain interpreter that merely imported ipykernel, and in
        terminal IPython (which has a TTY of its own)."""
        if "ipykernel" not in sys.modules:
            return False
        get_ipython = getattr(sys.modules.get("IPython"), "get_ipython", None)
        try:
            shell = get_ipython() if callable(get_ipython) else None
        except Exception:  # a half-initialised IPython is no notebook to draw in
            return False
        return getattr(shell, "kernel", None) is not None

    def note(self, message: str) -> None:
        """A one-line remark about the work (e.g. which default was chosen): written above the
        bar when one is shown, and logged to the ``innersight`` logger at INFO either way."""
        logging.getLogger("innersight").info("%s", message)
        if self._bar is not None:
            text = f"{self.desc}: {message}" if self.desc else message
            self._bar.write(text, file=sys.stderr)

    def update(self, n: int) -> None:
        self.done += n
        if self._bar is not None:
            self._bar.update(n)
        if self._callback is not None:
            self._callback(self.done, self.total)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _TextBar:
    """Fallback bar on stderr when tqdm is not installed."""

    def __init__(self, total: int, desc: str) -> None:
        self.total, self.desc, self.done = total, desc, 0

    def write(self, message: str, file: Any = None) -> None:
        out = file or sys.stderr
        out.write(f"\r{message}\n")
        out.flush()

    def update(self, n: int) -> None:
        self.done += n
        frac = self.done / max(1, self.total)
        bar = "#" * int(30 * frac)
        sys.stderr.write(f"\r{self.desc} [{bar:<30}] {self.done}/{self.total}")
        sys.stderr.flush()

    def close(self) -> None:
        sys.stderr.write("\n")
