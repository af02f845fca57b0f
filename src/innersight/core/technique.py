"""Technique (what plugins implement) and Explanation (the one result type)."""

from __future__ import annotations

import inspect
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from innersight.core.errors import InputError

if TYPE_CHECKING:
    from innersight.core.adapter import ModelAdapter
    from innersight.core.presets import PresetContext

__all__ = [
    "COMMON_PARAMETERS",
    "INPUT_KINDS",
    "Explanation",
    "Technique",
    "Values",
    "resolve_target",
]

Values = np.ndarray | dict[str, np.ndarray] | tuple[np.ndarray, ...]
KINDS = ("heatmap", "layer_grid", "image_set", "embedding")
#: Every input kind a technique may declare in :attr:`Technique.input_kinds`.
INPUT_KINDS = ("image", "sequence", "tabular", "tokens", "several")


#: Parameters every technique accepts, with the same meaning everywhere. A technique that
#: declares one in ``explain`` gets it; one that does not ignores it (no progress bar to show,
#: no randomness to seed), so a loop can pass ``progress=False`` to every technique.
COMMON_PARAMETERS: dict[str, inspect.Parameter] = {
    "progress": inspect.Parameter(
        "progress", inspect.Parameter.KEYWORD_ONLY, default=None, annotation="ProgressArg"
    ),
    "seed": inspect.Parameter(
        "seed", inspect.Parameter.KEYWORD_ONLY, default=0, annotation="int | None"
    ),
}


class Technique:
    """Base class of every technique, built-in or third-party.

    Subclasses set ``name`` (snake_case), ``summary`` and ``requires`` (capabilities) and
    implement ``explain(model, inputs, *, ...)`` with keyword-only, typed, defaulted parameters:
    the CLI and the report read them from the signature. ``model`` is a ModelAdapter and
    ``inputs`` a validated float32 channels-last batch of a kind in :attr:`input_kinds`
    (several inputs arrive packed as (N, D) rows, token ids as their integers, both with an
    adapter derived for them). Never import a framework here.

    What front ends need beyond ``explain`` is owned here too, so that a third-party technique
    behaves in reports and comparisons exactly as a built-in does: :meth:`presets` (parameter
    sets per profile), :attr:`order` (where its section goes), :attr:`accepts_datasets`
    (a report gives it the labelled data set) and :meth:`missing_capabilities`.
    """

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    requires: ClassVar[frozenset[str]] = frozenset()
    #: False for techniques that create their inputs (filter/class maximization).
    needs_inputs: ClassVar[bool] = True
    #: True when ``explain`` also takes a data set (an iterable of batches) as ``inputs``;
    #: ``innersight.explain`` then passes it through unvalidated and the technique reads it.
    #: Reports run such a technique on their labelled data set, not on their inputs.
    accepts_datasets: ClassVar[bool] = False
    #: Sort key of the technique's section in reports and comparisons (then the name);
    #: built-ins use 10..100, so a plugin's 1000 comes after them.
    order: ClassVar[int] = 1000
    #: The kinds of input ``explain`` handles (:data:`INPUT_KINDS`): ``"image"`` (N, H, W, C)
    #: floats, ``"sequence"`` (N, L, C) floats, ``"tabular"`` (N, F) floats, ``"tokens"``
    #: (N, T) integer ids (reaching the model unchanged; layer techniques attribute at an
    #: embedding layer), ``"several"`` (a tuple of inputs, which ``innersight.explain`` packs
    #: side by side into one (N, D) float batch and unpacks into one map per input).
    #: ``innersight.explain`` refuses the other kinds with a CapabilityError naming the
    #: techniques that take them.
    input_kinds: ClassVar[frozenset[str]] = frozenset({"image", "sequence", "tabular"})
    #: Parameters whose tuple value gives one value per input when several inputs are
    #: explained (``baseline=(0.0, "mean")``, ``feature_mask=(mask_a, mask_b)``). Each element
    #: is resolved for its own input (a name containing "baseline" through
    #: :func:`~innersight.core.baselines.resolve_baseline`; arrays broadcast to that input's
    #: sample or batch shape) and packed like the inputs; a single value applies to every
    #: input. Only meaningful with ``"several"`` in :attr:`input_kinds`.
    per_input_parameters: ClassVar[tuple[str, ...]] = ()

    # Declared with ``*args``/``**params`` so that subclasses' keyword-only signatures
    # (``explain(self, model, inputs, *, target=None, ...)``) are valid overrides.
    def explain(
        self, model: ModelAdapter, inputs: Any, /, *args: Any, **params: Any
    ) -> Explanation:
        """Run the technique on ``inputs`` and return an :class:`Explanation`."""
        raise NotImplementedError

    def presets(self, ctx: PresetContext) -> dict[str, Any]:
        """Parameters for ``ctx.profile`` (see :mod:`innersight.core.presets`); default none.

        Return only parameters ``explain`` takes; a value of None is left out. The user's
        parameters always win over these.
        """
        return {}

    def parameters(self) -> dict[str, inspect.Parameter]:
        """The keyword-only parameters of ``explain`` by name, then the common ones
        (:data:`COMMON_PARAMETERS`) it does not declare."""
        own = _own_parameters(type(self))
        return {**own, **{k: v for k, v in COMMON_PARAMETERS.items() if k not in own}}

    def own_parameters(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """``params`` without the common parameters ``explain`` does not declare."""
        declared = _declared_names(type(self))
        return {k: v for k, v in params.items() if k in declared or k not in COMMON_PARAMETERS}

    def run(self, model: ModelAdapter, inputs: Any, **params: Any) -> Explanation:
        """``explain`` with the common parameters it does not declare left out."""
        return self.explain(model, inputs, **self.own_parameters(params))

    def missing_capabilities(self, adapter: ModelAdapter) -> list[str]:
        """The capabilities in ``requires`` that ``adapter`` lacks, sorted."""
        from innersight.core.adapter import missing_capabilities

        return missing_capabilities(self.requires, adapter)

    def __repr__(self) -> str:
        return f"<Technique {self.name!r}: {self.summary}>"


_SIGNATURES: dict[type, inspect.Signature] = {}


def _signature(cls: type) -> inspect.Signature:
    """``inspect.signature(cls.explain)``, looked up once per class (``inspect`` is slow
    enough to matter per call)."""
    sig = _SIGNATURES.get(cls)
    if sig is None:
        sig = _SIGNATURES[cls] = inspect.signature(cls.explain)  # type: ignore[attr-defined]
    return sig


def _declared_names(cls: type) -> frozenset[str]:
    return frozenset(_signature(cls).parameters)


def _own_parameters(cls: type) -> dict[str, inspect.Parameter]:
    params = _signature(cls).parameters.values()
    return {p.name: p for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY}


@dataclass(repr=False)
class Explanation:
    """The result of a technique: raw values plus everything needed to reproduce them.

    Attributes:
        technique: name of the technique that produced it.
        kind: picks the renderer: ``heatmap`` (N, H, W) or (N, H, W, C); ``layer_grid``
            (a mapping layer -> (N, H, W, C)); ``image_set`` (K, H, W, C); ``embedding`` (N, 2).
        values: raw numbers, never pre-normalised. Several inputs (a tuple) give a tuple of
            maps, one per input in that input's shape (:meth:`part` picks one).
        inputs: the (validated, copied) inputs, a tuple of them for several inputs, or None for
            techniques that generate images.
        params: the parameters the technique ran with.
        meta: backend, model, layer, target, seed, versions, timings, technique-specific facts.
    """

    technique: str
    kind: str
    values: Values
    inputs: np.ndarray | tuple[np.ndarray, ...] | None = None
    params: dict[str, Any] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        if isinstance(self.values, dict):
            return len(next(iter(self.values.values()))) if self.values else 0
        if isinstance(self.values, tuple):
            return int(np.shape(self.values[0])[0]) if self.values else 0
        return int(np.shape(self.values)[0])

    @property
    def several(self) -> bool:
        """True when the values are a tuple: one map per input of a several-input model."""
        return isinstance(self.values, tuple)

    def part(self, i: int) -> Explanation:
        """The Explanation of input ``i`` alone (its map and its inputs), for an explanation of
        several inputs: ``ex.part(1).to_image()`` renders the second input's map."""
        if not isinstance(self.values, tuple):
            raise InputError(
                f"part({i}) picks one input of an explanation of several inputs; this "
                f"{self.technique!r} explanation has one input: use it as it is"
            )
        if not -len(self.values) <= i < len(self.values):
            raise InputError(f"part({i}): this explanation has {len(self.values)} inputs")
        inputs = self.inputs[i] if isinstance(self.inputs, tuple) else self.inputs
        meta = {**self.meta, "input_index": i % len(self.values)}
        return Explanation(self.technique, self.kind, self.values[i], inputs, self.params, meta)

    # -- rendering --------------------------------------------------------------------------
    def to_image(self, **options: Any) -> np.ndarray:
        """Render to an (H, W, 3) uint8 array with the renderer registered for ``kind``."""
        from innersight.core.manager import get_plugin_manager
        from innersight.core.render import render

        return render(self, get_plugin_manager().renderer(self.kind), **options)

    def to_pil(self, **options: Any) -> Any:
        """Render to a ``PIL.Image`` (needs Pillow: ``pip install innersight[viz]``)."""
        from innersight.core.render import to_pil

        return to_pil(self.to_image(**options))

    def plot(self, ax: Any = None, **options: Any) -> Any:
        """Show the rendering in a matplotlib Figure (returned) or on ``ax``."""
        from innersight.core.render import plot

        return plot(self, ax=ax, **options)

    def _repr_png_(self) -> bytes:
        from innersight.core.render import png_bytes

        return png_bytes(self.to_image())

    def _repr_html_(self) -> str:
        """Jupyter: the rendered picture with a caption (technique, backend, model)."""
        import base64
        import html

        data = base64.b64encode(self._repr_png_()).decode("ascii")
        caption = html.escape(self._caption())
        return (
            f'<figure style="margin:0"><img src="data:image/png;base64,{data}" alt="{caption}">'
            f"<figcaption>{caption}</figcaption></figure>"
        )

    def __repr__(self) -> str:
        return f"<Explanation {self._caption()}>"

    def _caption(self) -> str:
        values = self.values
        if isinstance(values, Mapping):
            shapes = ", ".join(f"{k}: {np.shape(v)}" for k, v in values.items())
        elif isinstance(values, tuple):
            shapes = "(" + ", ".join(str(np.shape(v)) for v in values) + ")"
        else:
            shapes = str(np.shape(values))
        where = " ".join(str(self.meta[k]) for k in ("backend", "model") if k in self.meta)
        return f"{self.technique} ({self.kind}) values {shapes}" + (f" on {where}" if where else "")

    # -- persistence ------------------------------------------------------------------------
    def save(self, path: str | Path, **options: Any) -> Path:
        """Write ``.png`` (rendered), ``.npz`` (raw values + JSON metadata) or ``.json``.

        A ``.png`` name containing ``{layer}`` (e.g. ``"grids/act_{layer}.png"``) writes one
        picture per entry of a mapping-valued explanation (an activation grid: one per layer),
        ``{layer}`` replaced by the entry's name (characters other than letters, digits,
        ``.``, ``-`` and ``_`` become ``_``); it returns the folder they are in.
        """
        path = Path(path)
        suffix = path.suffix.lower()
        if "{layer}" in path.name:
            return self._save_per_layer(path, **options)
        path.parent.mkdir(parents=True, exist_ok=True)
        if suffix == ".png":
            from innersight.core.render import png_bytes

            path.write_bytes(png_bytes(self.to_image(**options)))
        elif suffix == ".npz":
            arrays = _flatten_values(self.values)
            if isinstance(self.inputs, tuple):
                arrays.update({f"inputs#{i}": x for i, x in enumerate(self.inputs)})
            elif self.inputs is not None:
                arrays["inputs"] = self.inputs
            arrays["__meta__"] = np.frombuffer(self._header().encode(), dtype=np.uint8)
            np.savez_compressed(path, **arrays)  # type: ignore[arg-type]
        elif suffix == ".json":
            path.write_text(self._header(indent=2))
        elif suffix == ".gif" and "frames" in self.meta:
            from innersight.core.render import save_gif

            save_gif(self, path, **options)
        else:
            raise InputError(f"cannot save {path.name!r}: use a .png, .npz or .json file name")
        return path

    def _save_per_layer(self, path: Path, **options: Any) -> Path:
        if not isinstance(self.values, Mapping) or path.suffix.lower() != ".png":
            raise InputError(
                f"cannot save {path.name!r}: a '{{layer}}' file name writes one .png per layer "
                "of a mapping-valued explanation (an activation grid); this one is "
                f"{self.kind!r}, so use a plain .png, .npz or .json name"
            )
        from innersight.core.render import png_bytes

        path.parent.mkdir(parents=True, exist_ok=True)
        for key in self.values:
            safe = re.sub(r"[^A-Za-z0-9._-]", "_", str(key))
            target = path.with_name(path.name.replace("{layer}", safe))
            target.write_bytes(png_bytes(self.to_image(layers=[key], **options)))
        return path.parent

    @classmethod
    def load(cls, path: str | Path) -> Explanation:
        """Read an Explanation written by ``save(... .npz)``."""
        with np.load(Path(path), allow_pickle=False) as data:
            header = json.loads(bytes(data["__meta__"]).decode())
            arrays = {k: data[k] for k in data.files if k != "__meta__"}
        inputs: np.ndarray | tuple[np.ndarray, ...] | None = arrays.pop("inputs", None)
        if "inputs#0" in arrays:
            inputs = _numbered(arrays, "inputs#")
        if "values" in arrays:
            values: Values = arrays["values"]
        elif "values#0" in arrays:
            values = _numbered(arrays, "values#")
        else:
            values = {k[len("values/") :]: v for k, v in arrays.items() if k.startswith("values/")}
            values = {k: values[k] for k in header.get("value_keys", values)}
        return cls(
            technique=header["technique"],
            kind=header["kind"],
            values=values,
            inputs=inputs,
            params=header.get("params", {}),
            meta=header.get("meta", {}),
        )

    def _header(self, indent: int | None = None) -> str:
        head: dict[str, Any] = {"technique": self.technique, "kind": self.kind}
        if isinstance(self.values, dict):
            head["value_keys"] = list(self.values)
        head["params"] = to_jsonable(self.params)
        head["meta"] = to_jsonable({k: v for k, v in self.meta.items() if k != "frames"})
        return json.dumps(head, indent=indent, sort_keys=False)


def _flatten_values(values: Values) -> dict[str, np.ndarray]:
    if isinstance(values, Mapping):
        return {f"values/{k}": np.asarray(v) for k, v in values.items()}
    if isinstance(values, tuple):
        return {f"values#{i}": np.asarray(v) for i, v in enumerate(values)}
    return {"values": np.asarray(values)}


def _numbered(arrays: dict[str, np.ndarray], prefix: str) -> tuple[np.ndarray, ...]:
    """``prefix0``, ``prefix1``, ... popped from ``arrays`` as a tuple (several inputs)."""
    out: list[np.ndarray] = []
    while f"{prefix}{len(out)}" in arrays:
        out.append(arrays.pop(f"{prefix}{len(out)}"))
    return tuple(out)


def to_jsonable(obj: Any) -> Any:
    """Numpy scalars and arrays to plain Python; anything else unknown to its repr."""
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return obj.tolist() if obj.size <= 10_000 else f"<array {obj.shape} {obj.dtype}>"
    if isinstance(obj, np.generic):
        return obj.item()
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    return repr(obj)


def resolve_target(model: ModelAdapter, inputs: np.ndarray, target: Any) -> np.ndarray:
    """Per-sample target classes: the predicted class where ``target`` is None.

    Accepts an int, one int per sample, or None. Range errors are raised by the adapter as
    ObjectiveError when the objective is evaluated.
    """
    from innersight.core.objectives import per_sample

    if target is None:
        return np.asarray(model.predict_classes(inputs), dtype=np.int64)
    return per_sample(target, len(inputs), what="target")


def check_reduction(how: Any, allowed: tuple[str | None, ...]) -> None:
    """InputError unless ``how`` (a ``reduce_channels`` value) is one of ``allowed``."""
    if how not in allowed:
        names = ", ".join(repr(a) for a in allowed if a is not None)
        raise InputError(
            f"reduce_channels={how!r} is unknown; use {names}"
            + (" or None" if None in allowed else "")
        )


def reduce_channels(values: np.ndarray, how: str | None, *, absolute: bool = False) -> np.ndarray:
    """``(N, H, W, C) -> (N, H, W)`` (images) or ``(N, L, C) -> (N, L)`` (sequences) by
    ``"max"``, ``"mean"`` or ``"sum"`` over channels, the last axis.

    None keeps the channels; arrays without a channel axis (``(N, D)`` vectors) pass unchanged.
    ``absolute=True`` reduces ``|values|`` (the same numbers as ``np.abs`` first, without an
    absolute copy of the whole batch). Validate ``how`` first with :func:`check_reduction`.
    """
    if how is None or values.ndim < 3:
        return np.abs(values) if absolute else values
    channels = values.shape[-1]
    if channels > 16:
        v = np.abs(values) if absolute else values
        if how == "max":
            return v.max(axis=-1)
        return v.sum(axis=-1) if how == "sum" else v.mean(axis=-1)
    # Few channels (images): fold them one by one into a copy of the first. numpy's reduction
    # over a short last axis is ~60x slower (0.97 ms vs 15 us on a 150x150x3 gradient).
    out = np.array(values[..., 0], dtype=np.result_type(values.dtype, np.float32))
    part = None
    if absolute:
        np.abs(out, out=out)
        part = np.empty_like(out)
    fold = np.maximum if how == "max" else np.add
    for c in range(1, channels):
        fold(out, values[..., c] if part is None else np.abs(values[..., c], out=part), out=out)
    return out / channels if how == "mean" else out
