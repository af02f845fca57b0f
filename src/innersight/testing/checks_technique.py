"""Technique checks: what every technique, built-in or third-party, must get right."""

from __future__ import annotations

import inspect
import json
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from innersight.core import capability_message
from innersight.core.errors import InnersightError
from innersight.core.markers import hookimpl
from innersight.core.technique import KINDS, Explanation, Technique, to_jsonable
from innersight.testing.checks import (
    ConformanceError,
    assert_close,
    fail,
    native_model,
    pick_layers,
    sample_inputs,
)
from innersight.testing.state import diff, snapshot

__all__ = ["check_all_techniques", "check_technique"]


class _TemporaryPlugin:
    """Registers one Technique object for the duration of a check."""

    def __init__(self, technique: Technique) -> None:
        self.technique = technique

    @hookimpl
    def innersight_register_techniques(self) -> list[Technique]:
        return [self.technique]


@contextmanager
def _registered(technique: Technique | str) -> Iterator[Technique]:
    from innersight.api import get_technique
    from innersight.core.manager import get_plugin_manager

    if isinstance(technique, str):
        yield get_technique(technique)
        return
    if not isinstance(technique, Technique):
        raise ConformanceError(
            f"check_technique: expected a Technique or a name, got {type(technique).__name__}"
        )
    manager = get_plugin_manager()
    known = manager.techniques().get(technique.name)
    if known is not None:
        if type(known) is not type(technique):
            fail(
                f"check_technique({technique.name!r})",
                f"another technique ({type(known).__qualname__}) is registered under this name",
            )
        yield technique
        return
    key = f"innersight.testing:{technique.name}"
    manager.register(_TemporaryPlugin(technique), key, distribution="innersight.testing")
    try:
        yield technique
    finally:
        manager.unregister(key)


def _values(ex: Explanation) -> dict[str, np.ndarray]:
    if isinstance(ex.values, Mapping):
        return {str(k): np.asarray(v) for k, v in ex.values.items()}
    return {"values": np.asarray(ex.values)}


def _known_kinds() -> set[str]:
    from innersight.core.manager import get_plugin_manager

    return set(KINDS) | set(get_plugin_manager().renderers())


def _check_explanation(c: str, tech: Technique, ex: Any, x: np.ndarray | None) -> None:
    if not isinstance(ex, Explanation):
        fail(c, f"returned {type(ex).__name__}, expected an Explanation")
    if ex.technique != tech.name:
        fail(c, f"Explanation.technique is {ex.technique!r}, expected {tech.name!r}")
    if ex.kind not in _known_kinds():
        fail(
            c,
            f"Explanation.kind {ex.kind!r} has no renderer; known kinds: {sorted(_known_kinds())}",
        )
    values = _values(ex)
    if not values:
        fail(c, "Explanation.values is an empty mapping")
    for key, arr in values.items():
        if arr.dtype.kind not in "fiub":
            fail(c, f"values[{key!r}] has dtype {arr.dtype}; expected numbers")
        if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
            fail(c, f"values[{key!r}] contains NaN/Inf")
        if tech.needs_inputs and x is not None and (arr.ndim == 0 or arr.shape[0] != len(x)):
            fail(
                c,
                f"values[{key!r}] has shape {arr.shape}: "
                f"expected one entry per input ({len(x)}, ...)",
            )
    if ex.inputs is not None and x is not None:
        assert_close(c, "Explanation.inputs (vs. the inputs given)", ex.inputs, x, rtol=0, atol=0)


def _explain(
    c: str, tech: Technique, adapter: Any, x: np.ndarray | None, params: dict[str, Any]
) -> Any:
    import innersight

    try:
        return innersight.explain(tech.name, adapter, x, **params)
    except InnersightError as err:
        fail(c, f"raised {type(err).__name__}: {err}")
    except Exception as err:
        fail(c, f"crashed with {type(err).__name__}: {err}")


def _direct(
    c: str, tech: Technique, adapter: Any, x: np.ndarray | None, params: dict[str, Any]
) -> Any:
    try:
        result = tech.run(adapter, x, **params)
    except Exception as err:
        fail(c, f"crashed when called directly with {type(err).__name__}: {err}")
    if not isinstance(result, Explanation):
        fail(c, f"returned {type(result).__name__} when called directly, expected an Explanation")
    return result


def check_technique(
    technique: Technique | str, adapter: Any = None, x: Any = None, /, **params: Any
) -> None:
    """Run a technique through ``innersight.explain`` and hold it to the Technique contract.

    Args:
        technique: a registered technique's name, or a Technique object (registered for the
            duration of the check when it is not yet).
        adapter: the adapter to run on (default: ``reference_model("conv")``).
        x: inputs (default: 3 noise samples; none for techniques with ``needs_inputs=False``).
        **params: the technique's parameters (``seed=0`` is added: every technique takes it).

    Verifies: the adapter has the technique's ``requires``; ``explain`` returns an Explanation
    with the technique's name and a renderable ``kind``, finite numeric values with one entry
    per input (for ``needs_inputs``), ``inputs`` equal to ``x``; a second, direct call
    ``technique.run(adapter, batch, **params)`` gives the same values (determinism) and
    leaves ``batch`` unchanged (as ``explain`` leaves ``x``); the model's state snapshot is
    unchanged;
    ``save(.npz)`` + ``Explanation.load`` round-trips technique, kind, values, inputs and
    params; the rendering (when a renderer for the kind is registered) is an (H, W, 3) uint8.
    """
    from innersight.testing.reference_models import reference_model

    adapter = reference_model("conv") if adapter is None else adapter
    with _registered(technique) as tech:
        c = f"check_technique({tech.name!r})"
        lacking = capability_message(f"technique {tech.name!r}", tech.requires, adapter)
        if lacking is not None:
            fail(c, lacking)
        if x is None and tech.needs_inputs:
            x = sample_inputs(adapter, 3, seed=0)
        params.setdefault("seed", 0)  # a common parameter: every technique takes it
        first, second = _two_runs(c, tech, adapter, x, params)
        _check_deterministic(c, first, second)
        _check_roundtrip(c, first)
        _check_render(c, first)


def _two_runs(
    c: str, tech: Technique, adapter: Any, x: Any, params: dict[str, Any]
) -> tuple[Explanation, Explanation]:
    """One run through ``innersight.explain``, one direct (as other techniques, the CLI and
    reports may call it): neither may change its inputs nor the model."""
    x32 = None if x is None else np.array(x, dtype=np.float32)
    model = native_model(adapter)
    before, x_before = snapshot(model), None if x is None else np.array(x, copy=True)
    first = _explain(c, tech, adapter, x, params)
    _check_explanation(c, tech, first, x32)
    if x_before is not None and np.asarray(x).tobytes() != x_before.tobytes():
        fail(c, "mutated the caller's inputs in place through innersight.explain")
    direct = None if x32 is None else x32.copy()  # called directly, it gets the batch itself
    second = _direct(c, tech, adapter, direct, params)
    if direct is not None and x32 is not None and direct.tobytes() != x32.tobytes():
        fail(
            c,
            f"mutated its inputs in place ({int(np.sum(direct != x32))} entries changed); "
            "copy the batch before changing it",
        )
    changes = diff(before, snapshot(model))
    if changes:
        fail(c, "left the model changed:\n  " + "\n  ".join(changes[:15]))
    return first, second


def _check_deterministic(c: str, first: Explanation, second: Explanation) -> None:
    for key, arr in _values(first).items():
        again = _values(second).get(key)
        if (
            again is None
            or again.shape != arr.shape
            or not np.allclose(again, arr, rtol=1e-6, atol=1e-7)
        ):
            fail(
                c,
                f"is not deterministic: values[{key!r}] differ between two runs with the same "
                "inputs and parameters (take a `seed` parameter and use it)",
            )


def _check_roundtrip(c: str, ex: Explanation) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = ex.save(Path(tmp) / "explanation.npz")
            loaded = Explanation.load(path)
        except Exception as err:
            fail(c, f"save(.npz)/Explanation.load failed: {type(err).__name__}: {err}")
    if (loaded.technique, loaded.kind) != (ex.technique, ex.kind):
        fail(
            c,
            f"load(save()) gives technique/kind {(loaded.technique, loaded.kind)}, "
            f"expected {(ex.technique, ex.kind)}",
        )
    want, got = _values(ex), _values(loaded)
    if list(got) != list(want):
        fail(c, f"load(save()) gives value keys {list(got)}, expected {list(want)}")
    for key in want:
        if got[key].dtype != want[key].dtype or not np.array_equal(got[key], want[key]):
            fail(c, f"load(save()) changed values[{key!r}] ({want[key].dtype} -> {got[key].dtype})")
    same_inputs = (
        ex.inputs is None
        if loaded.inputs is None
        else ex.inputs is not None and np.array_equal(ex.inputs, loaded.inputs)
    )
    if not same_inputs:
        fail(c, "load(save()) does not give back the inputs")
    if loaded.params != json.loads(json.dumps(to_jsonable(ex.params))):
        fail(c, f"load(save()) gives params {loaded.params}, expected {ex.params}")


def _check_render(c: str, ex: Explanation) -> None:
    from innersight.core.manager import get_plugin_manager

    if ex.kind not in get_plugin_manager().renderers():
        return
    try:
        image = ex.to_image()
    except Exception as err:
        fail(c, f"rendering a {ex.kind!r} explanation failed: {type(err).__name__}: {err}")
    if not (
        isinstance(image, np.ndarray)
        and image.dtype == np.uint8
        and image.ndim == 3
        and image.shape[2] == 3
    ):
        fail(
            c,
            f"rendering gives {getattr(image, 'dtype', type(image))} "
            f"{getattr(image, 'shape', '')}, "
            "expected an (H, W, 3) uint8 image",
        )


def check_all_techniques(
    adapter: Any = None,
    x: Any = None,
    /,
    *,
    params: Mapping[str, Mapping[str, Any]] | None = None,
    names: Iterable[str] | None = None,
) -> dict[str, str]:
    """:func:`check_technique` for every registered technique (or those in ``names``).

    Techniques whose ``requires`` the adapter lacks are skipped, as are techniques with a
    parameter without default that neither ``params[name]`` gives nor the check can fill
    (``layer`` is filled with the deepest spatial layer).

    Returns:
        ``{name: "passed" | "skipped: <why>"}`` (the one check that returns something).

    Raises:
        ConformanceError: listing every technique that failed, with its message.
    """
    import innersight
    from innersight.testing.reference_models import reference_model

    adapter = reference_model("conv") if adapter is None else adapter
    x = sample_inputs(adapter, 3, seed=0) if x is None else x
    registry = innersight.techniques()
    wanted = sorted(registry) if names is None else sorted(set(names))
    unknown = [n for n in wanted if n not in registry]
    if unknown:
        raise ConformanceError(
            f"check_all_techniques: no registered technique named {unknown[0]!r}; "
            f"registered: {', '.join(sorted(registry)) or 'none'}"
        )
    report: dict[str, str] = {}
    failures = []
    for name in wanted:
        kwargs = dict((params or {}).get(name, {}))
        skip = _skip_reason(registry[name], adapter, x, kwargs)
        if skip is not None:
            report[name] = f"skipped: {skip}"
            continue
        try:
            check_technique(registry[name], adapter, x, **kwargs)
            report[name] = "passed"
        except ConformanceError as err:
            report[name] = "failed"
            failures.append(str(err))
    if failures:
        summary = ", ".join(f"{k}: {v}" for k, v in report.items())
        raise ConformanceError(
            f"{len(failures)} technique(s) fail:\n- " + "\n- ".join(failures) + f"\n({summary})"
        )
    return report


def _skip_reason(tech: Technique, adapter: Any, x: Any, kwargs: dict[str, Any]) -> str | None:
    """Why ``tech`` cannot be checked on ``adapter`` with ``kwargs`` (a ``layer`` it needs is
    filled in); None when it can."""
    missing = tech.missing_capabilities(adapter)
    if missing:
        return f"the adapter lacks {', '.join(missing)}"
    needed = [
        k
        for k, p in tech.parameters().items()
        if p.default is inspect.Parameter.empty and k not in kwargs
    ]
    if "layer" in needed:
        kwargs["layer"] = pick_layers(adapter, np.asarray(x, np.float32)).spatial
        needed.remove("layer")
    if needed:
        return f"parameters without defaults: {', '.join(needed)} (pass params=)"
    return None
