"""The demo: every installed technique on the trained digits CNN, in PyTorch and in Keras.

``innersight demo -o out`` (and ``make demo``) writes ``out/demo/report.html``, one report with
the two models side by side in every section, and ``out/demo/<backend>_<technique>.png`` per
technique. The models are :func:`innersight.models.digits_cnn` with the shipped weights; the
inputs are held-out test digits (one per class 0..7) and the embeddings show the whole held-out
set coloured by label. The report ends with the section "How faithful is each technique on this
model" (deletion, insertion and randomization on the first :data:`DEMO_EVALUATE_INPUTS` inputs).
Parameters are chosen so the demo runs in well under a minute on a laptop CPU (see
:data:`DEMO_PARAMS`).
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from innersight.core.batching import ProgressArg
from innersight.core.errors import InputError

if TYPE_CHECKING:
    from innersight.report import Report

__all__ = ["DEMO_EVALUATE_INPUTS", "DEMO_PARAMS", "DemoResult", "demo_inputs", "run_demo"]

BACKENDS = ("torch", "keras")
#: Per-technique parameters of the demo, on top of the report's quick defaults; entries for
#: techniques that are not installed are ignored. PCA, not t-SNE: t-SNE of the 450 held-out
#: digits separates the classes better but costs ~15 s of CPU, too much for a 2-minute demo.
#: Integrated gradients with a fixed rule: the faithfulness section's randomization metric runs
#: each technique again per randomised layer, and the adaptive rule would cost ~4x as much there.
DEMO_PARAMS: dict[str, dict[str, Any]] = {
    "embeddings": {"method": "pca"},
    "integrated_gradients": {"method": "riemann_trapezoid"},
}
#: Inputs per technique that the faithfulness section scores (of the ``n_inputs`` explained).
DEMO_EVALUATE_INPUTS = 4


@dataclass
class DemoResult:
    """Where the demo wrote its files, and what it measured."""

    folder: Path
    report_path: Path
    images: list[Path]
    accuracies: dict[str, float]
    seconds: float
    report: Report
    failures: list[str] = field(default_factory=list)


def demo_inputs(x: np.ndarray, y: np.ndarray, n: int = 8) -> np.ndarray:
    """Indices of ``n`` held-out digits: the first of each class 0, 1, ... (then repeats)."""
    per_class = [np.flatnonzero(y == label) for label in np.unique(y)]
    order = [
        int(idx[rank])
        for rank in range(max((len(idx) for idx in per_class), default=0))
        for idx in per_class
        if rank < len(idx)
    ]
    if len(order) < n:
        raise InputError(f"the demo explains {n} inputs but the data set holds {len(order)}")
    return np.asarray(order[:n])


def load_models() -> dict[str, Any]:
    """The trained digits CNN in every demo backend (torch is imported before TensorFlow)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import torch  # noqa: F401  (torch before TensorFlow: the other order can crash)

    from innersight.models import digits_cnn

    with _quiet_native_stderr():
        import keras  # noqa: F401  (TensorFlow's start-up lines, e.g. oneDNN's, go nowhere)
    return {backend: digits_cnn(backend) for backend in BACKENDS}


@contextlib.contextmanager
def _quiet_native_stderr() -> Iterator[None]:
    """Native code's writes to file descriptor 2 are dropped meanwhile. TensorFlow 2.21 logs
    its start-up lines through absl before reading ``TF_CPP_MIN_LOG_LEVEL``, so the variable
    alone no longer keeps the demo's output clean. Python exceptions still propagate."""
    import sys

    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def run_demo(
    out: str | Path = "out",
    *,
    n_inputs: int = 8,
    progress: ProgressArg = None,
    echo: Callable[[str], Any] = print,
    force: bool = False,
) -> DemoResult:
    """Build the demo report and PNGs under ``out/demo``; returns where they are.

    Args:
        out: the output folder; files go to ``out/demo``. The demo's own files from an earlier
            run are replaced; any other file there makes it refuse unless ``force``.
        n_inputs: how many held-out digits to explain.
        progress: the report's progress (None: a bar on a terminal).
        echo: where status lines go (``print``; a no-op to stay quiet).
        force: write even when ``out/demo`` holds files the demo did not make (never deletes).
    """
    start = time.perf_counter()
    _check_folder(Path(out).expanduser() / "demo", force=force)
    with _single_torch_thread():
        return _run(out, n_inputs, progress, echo, start)


def _check_folder(folder: Path, *, force: bool) -> None:
    """Refuse to write into a folder holding files that are not the demo's own."""
    if force or not folder.is_dir():
        return
    own = re.compile(r"report\.html|(torch|keras)_[a-z0-9_]+\.png")
    foreign = sorted(p.name for p in folder.iterdir() if not own.fullmatch(p.name))
    if foreign:
        shown = ", ".join(foreign[:5]) + (" ..." if len(foreign) > 5 else "")
        raise InputError(
            f"{str(folder)!r} holds files the demo did not write ({shown}); the demo would mix "
            "its files with them. Use another -o folder, or pass --force (nothing is deleted)"
        )


@contextlib.contextmanager
def _single_torch_thread() -> Iterator[None]:
    """One torch intra-op thread while the demo runs (restored after). The digits CNN is tiny:
    torch's thread pool costs far more than it saves on it (measured on 2 busy cores: class
    maximization 24 s with 2 threads, 1.5 s with 1), while Keras is unaffected."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _run(
    out: str | Path,
    n_inputs: int,
    progress: ProgressArg,
    echo: Callable[[str], Any],
    start: float,
) -> DemoResult:
    from innersight.api import techniques
    from innersight.models import DIGITS_CLASSES, digits_data
    from innersight.report import build_report

    folder = Path(out).expanduser() / "demo"
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise InputError(f"cannot create demo folder {str(folder)!r}: {err}") from err
    models = load_models()
    data = digits_data()
    picks = demo_inputs(data.x_test, data.y_test, n_inputs)
    installed = techniques()
    echo(
        f"running {len(installed)} techniques on {len(models)} models: "
        f"{', '.join(sorted(installed))}"
    )
    report = build_report(
        models,
        data.x_test[picks],
        labels=data.y_test[picks],
        input_names=[f"test #{i}" for i in picks],
        class_names=DIGITS_CLASSES,
        dataset=(data.x_test, data.y_test),
        params={k: v for k, v in DEMO_PARAMS.items() if k in installed},
        seed=0,
        progress=progress,
        title="innersight demo: the digits CNN in PyTorch and Keras",
        evaluate=True,
        evaluate_inputs=DEMO_EVALUATE_INPUTS,
    )
    report_path = report.write(folder / "report.html")
    images, failures = [], []
    for section in report.sections:
        for run in section.runs:
            if run.explanation is not None:
                path = folder / f"{run.model}_{section.technique}.png"
                images.append(run.explanation.save(path))
            elif run.status == "error":
                failures.append(f"{section.technique} on {run.model}: {run.message}")
    accuracies = {m.key: float(m.accuracy or 0.0) for m in report.models}
    return DemoResult(
        folder=folder,
        report_path=report_path,
        images=images,
        accuracies=accuracies,
        seconds=time.perf_counter() - start,
        report=report,
        failures=failures,
    )
