"""docs/from-captum.md, run: every row of its table is a Captum call and an innersight call
that must agree (within 1e-5 of the largest value) on the page's setup models.

The page is the one list: a row is added there (``| what | Captum | innersight | note |``)
and becomes a test here; the test fails when the table is missing or a row has no call.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from innersight.core import Explanation

pytest.importorskip("captum")
torch = pytest.importorskip("torch")

PAGE = Path(__file__).resolve().parents[2] / "docs" / "from-captum.md"
MARKER = "<!-- captum-table"
TOLERANCE = 1e-5


def setup_code(text: str) -> str:
    """The page's first ```python block (its setup)."""
    match = re.search(r"```python\n(.*?)```", text, re.S)
    assert match, f"{PAGE.name} has no ```python setup block"
    return match.group(1)


def table_rows(text: str) -> list[tuple[str, str, str]]:
    """``(what, captum call, innersight call)`` of each row after the marker."""
    body = text[text.index(MARKER) :].splitlines()[1:]
    rows = []
    for line in body:
        if not line.startswith("|"):
            if rows:
                break
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells[0] in ("what", "---"):
            continue
        calls = [re.fullmatch(r"`(.*)`", c) for c in cells[1:3]]
        assert all(calls), f"row {cells[0]!r}: each call is one `code` cell"
        rows.append((cells[0], calls[0].group(1), calls[1].group(1)))  # type: ignore[union-attr]
    return rows


TEXT = PAGE.read_text()
ROWS = table_rows(TEXT)


@pytest.fixture(scope="module")
def namespace() -> dict[str, Any]:
    ns: dict[str, Any] = {}
    exec(compile(setup_code(TEXT), str(PAGE), "exec"), ns)
    return ns


def as_arrays(result: Any) -> tuple[np.ndarray, ...]:
    values = result.values if isinstance(result, Explanation) else result
    parts = values if isinstance(values, tuple) else (values,)
    return tuple(np.asarray(p.detach().numpy() if hasattr(p, "detach") else p) for p in parts)


def test_the_table_covers_the_typical_calls():
    names = " ".join(r[1] for r in ROWS)
    for captum in (
        "Saliency",
        "InputXGradient",
        "IntegratedGradients",
        "NoiseTunnel",
        "GradientShap",
        "Occlusion",
        "FeatureAblation",
        "KernelShap",
        "Lime",
        "LayerGradCam",
        "GuidedGradCam",
        "LayerConductance",
        "NeuronGradient",
        "additional_forward_args",
        "internal_batch_size",
        "feature_mask",
    ):
        assert captum in names, captum


@pytest.mark.parametrize(("what", "captum", "ours"), ROWS, ids=[r[0] for r in ROWS])
def test_row_agrees_with_captum(namespace, what, captum, ours):
    ns = dict(namespace)
    inputs = {k: v.clone() for k, v in ns.items() if isinstance(v, torch.Tensor)}
    theirs = as_arrays(eval(captum, ns))
    got = as_arrays(eval(ours, ns))
    assert len(got) == len(theirs), what
    for mine, peer in zip(got, theirs, strict=True):
        assert mine.shape == peer.shape, f"{what}: {mine.shape} vs Captum {peer.shape}"
        scale = max(float(np.abs(peer).max()), 1e-12)
        assert np.abs(mine - peer).max() <= TOLERANCE * scale, what
    for name, before in inputs.items():  # the user's tensors are not changed
        assert torch.equal(ns[name], before) and ns[name].grad is None, name
