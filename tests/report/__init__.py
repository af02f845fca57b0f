"""Tests of the HTML report. ``small_report`` builds a quick report of the trained digits CNN in
torch and Keras (every installed technique, few steps); ``parse`` reads a report's tags."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from html.parser import HTMLParser
from typing import Any

import innersight as ins

#: Quick parameters so a full report of the digits models takes seconds.
FAST: dict[str, dict[str, Any]] = {
    "smoothgrad": {"samples": 2},
    "integrated_gradients": {"steps": 4},
    "filter_maximization": {"steps": 3, "filters": [0, 1, 2]},
    "class_maximization": {"steps": 3, "classes": [0, 1, 2]},
    "embeddings": {"method": "pca"},
}


def fast_params() -> dict[str, dict[str, Any]]:
    installed = ins.techniques()
    return {k: v for k, v in FAST.items() if k in installed}


@contextlib.contextmanager
def one_torch_thread() -> Iterator[None]:
    """Tiny models run much faster on one torch thread on a busy 2-core machine."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def small_report(n_inputs: int = 3, dataset_size: int = 60, **kwargs: Any) -> Any:
    """Every installed technique on the digits CNN in torch and Keras, side by side."""
    import torch  # noqa: F401  (before TensorFlow)

    from innersight.models import DIGITS_CLASSES, digits_cnn, digits_data
    from innersight.report import build_report

    data = digits_data()
    models = {"torch": digits_cnn("torch"), "keras": digits_cnn("keras")}
    options: dict[str, Any] = {
        "labels": data.y_test[:n_inputs],
        "class_names": DIGITS_CLASSES,
        "dataset": (data.x_test[:dataset_size], data.y_test[:dataset_size]),
        "params": fast_params(),
        "progress": False,
    }
    options.update(kwargs)
    with one_torch_thread():
        return build_report(models, data.x_test[:n_inputs], **options)


class Tags(HTMLParser):
    """Every start tag of a document as ``(tag, {attr: value})``, and the text."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def parse(document: str) -> Tags:
    tags = Tags()
    tags.feed(document)
    tags.close()
    return tags
