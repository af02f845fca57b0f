"""``compare``: one technique on two models with the same input space, and how far they agree."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from innersight.api import check_params, explain, get_technique, wrap
from innersight.compare.metrics import embedding_rows, map_metrics
from innersight.compare.result import Comparison
from innersight.core import objectives
from innersight.core.errors import InnersightError, InputError, LayerNotFoundError, summarize_names
from innersight.core.technique import Explanation, Technique

__all__ = ["LAYER_PARAMS", "LayerTranslator", "compare"]

#: Parameters that name layers of the model (translated for model B).
LAYER_PARAMS = ("layer", "layers")
#: Parameters model A resolves (None -> concrete) that model B must run with too, so both
#: explain the same class, filters and image size rather than each its own.
SHARED_RESOLVED = ("target", "filters", "classes", "crop", "size")


class LayerTranslator:
    """Model A's layer names -> model B's: an explicit map, else :func:`innersight.port.layer_map`
    when the models are ports of each other, else the same name when B has it."""

    def __init__(self, a: Any, b: Any, explicit: Mapping[str, str] | None = None) -> None:
        if explicit is not None and not isinstance(explicit, Mapping):
            raise InputError(
                f"layer_map must be a dict {{layer of model A: layer of model B}}, got "
                f"{type(explicit).__name__}"
            )
        self.a, self.b = a, b
        self.explicit = dict(explicit) if explicit is not None else None
        self._auto: dict[str, str] | None = None
        self.why_not_ports = ""
        self.by_name: list[str] = []  # layers paired only because B has the same name

    @property
    def ported(self) -> bool:
        """True when the models are ports of each other (an automatic map exists)."""
        return self.explicit is None and bool(self.mapping())

    def mapping(self) -> dict[str, str]:
        if self.explicit is not None:
            return self.explicit
        if self._auto is None:
            from innersight import port

            try:
                self._auto = port.layer_map(self.a, self.b)
            except InnersightError as err:
                self._auto, self.why_not_ports = {}, str(err)
        return self._auto

    def __call__(self, name: str, *, strict: bool = True) -> str | None:
        mapping = self.mapping()
        if name in mapping:
            return mapping[name]
        names_b = [info.name for info in self.b.layers()]
        if not self.ported and name in names_b:
            if self.explicit is None and name not in self.by_name:
                self.by_name.append(name)
            return name
        if not strict:
            return None
        why = (
            " (the models are ports of each other, and this layer's output has no equal in B: a "
            "pre-activation output whose activation B fuses, or a flattened map that B orders "
            "differently)"
            if self.ported
            else ""
        )
        raise LayerNotFoundError(
            f"layer {name!r} of model A ({self.a.backend} {self.a.name}) has no counterpart in "
            f"model B ({self.b.backend} {self.b.name}){why}; pass layer_b='...' or "
            f"layer_map={{{name!r}: '...'}}; B has {summarize_names(names_b)}"
        )


def _split(tech: Technique, params: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(params for both, overrides for B)``: ``<p>_b`` sets parameter ``p`` of model B only."""
    valid = tech.parameters()
    own, for_b = {}, {}
    for key, value in params.items():
        stem = key[:-2] if key.endswith("_b") else None
        if stem and stem in valid and key not in valid:
            for_b[stem] = value
        else:
            own[key] = value
    check_params(tech, own)
    return own, for_b


def _params_b(
    tech: Technique,
    own: dict[str, Any],
    overrides: dict[str, Any],
    ex_a: Explanation,
    translate: LayerTranslator,
) -> dict[str, Any]:
    valid = tech.parameters()
    params = dict(own)
    for key in SHARED_RESOLVED:
        if key in valid and own.get(key) is None and ex_a.params.get(key) is not None:
            value = ex_a.params[key]
            params[key] = tuple(value) if key == "size" else value
    for key in LAYER_PARAMS:
        value = ex_a.params.get(key, own.get(key))
        if key not in valid or key in overrides or value is None:
            continue
        if key == "layers":
            names = [value] if isinstance(value, str) else list(value)
            pairs = [n for n in names if translate(n, strict=True) is not None]
            if not pairs:
                translate(names[0])  # raises, naming the first layer
            params[key] = [translate(n) for n in pairs]
        else:
            params[key] = translate(str(value))
    params.update(overrides)
    return params


def compare(
    technique: str,
    model_a: Any,
    model_b: Any,
    inputs: Any = None,
    *,
    layer_map: Mapping[str, str] | None = None,
    **params: Any,
) -> Comparison:
    """Run ``technique`` on two models with the same input space and measure their agreement.

    Model A runs first; whatever it resolves (the predicted ``target``, the ``layer`` it picked,
    all ``filters``/``classes``, the image ``size``) is passed to model B, so both explain the
    same thing. Layer parameters are translated for B with ``layer_map``, else with
    :func:`innersight.port.layer_map` when the models are ports of each other, else kept when B
    has a layer of that name.

    Args:
        technique: a technique name (see :func:`innersight.techniques`).
        model_a: the reference model (native or wrapped); relative errors are relative to it.
        model_b: the other model, taking the same inputs.
        inputs: the batch (N, H, W, C), or None for techniques that make their own images.
        layer_map: ``{layer of A: layer of B}``, overriding the automatic translation.
        **params: the technique's parameters, for both models; ``<param>_b=...`` (e.g.
            ``layer_b="features.3"``) sets one for model B alone.

    Returns:
        A :class:`Comparison`: ``metrics`` (one dict per input, per layer for activation grids),
        ``summary()`` (medians), ``to_image()``, ``plot()``, ``to_html()`` and ``save(dir)``.

    Raises:
        InnersightError: bad parameters, a layer with no counterpart, or results that cannot be
            paired (different shapes).
    """
    tech = get_technique(technique)
    own, overrides = _split(tech, dict(params))
    a, b = wrap(model_a), wrap(model_b)
    translate = LayerTranslator(a, b, layer_map)
    ex_a = explain(tech.name, a, inputs, **own)
    params_b = _params_b(tech, own, overrides, ex_a, translate)
    ex_b = explain(tech.name, b, inputs, **params_b)
    if ex_a.kind != ex_b.kind:
        raise InnersightError(
            f"technique {tech.name!r} gave a {ex_a.kind!r} result for model A and {ex_b.kind!r} "
            "for model B; results of different kinds cannot be compared"
        )
    pairing, given = translate, overrides.get("layers")
    if given is not None:  # layers_b=[...]: paired with A's layers in order
        names_b = [given] if isinstance(given, str) else list(given)
        pairing = LayerTranslator(
            a, b, dict(zip(ex_a.params.get("layers", []), names_b, strict=True))
        )
    rows, pairs = _rows(ex_a, ex_b, pairing)
    if ex_a.kind == "image_set":
        _cross_objectives(rows, ex_a, ex_b, a, b)
    return Comparison(
        technique=tech.name,
        kind=ex_a.kind,
        a=ex_a,
        b=ex_b,
        names=_names(a, b),
        metrics=rows,
        params_b={k: v for k, v in tech.own_parameters(params_b).items() if k != "progress"},
        layer_pairs=pairs,
        notes=_notes(translate),
    )


def _notes(translate: LayerTranslator) -> list[str]:
    if not translate.by_name:
        return []
    return [
        f"layers paired by name only ({', '.join(translate.by_name)}): the models are not ports "
        f"of each other ({translate.why_not_ports}), so a same-named layer may compute something "
        "else (e.g. before vs after a fused activation); pass layer_map={...} to pair explicitly"
    ]


def _names(a: Any, b: Any) -> tuple[str, str]:
    na, nb = f"{a.backend}:{a.name}", f"{b.backend}:{b.name}"
    return (f"{na} (A)", f"{nb} (B)") if na == nb else (na, nb)


def _check_shapes(what: str, va: np.ndarray, vb: np.ndarray) -> None:
    if va.shape != vb.shape:
        raise InnersightError(
            f"{what}: model A gave values of shape {va.shape}, model B {vb.shape}; the models must "
            "take the same inputs and produce maps of the same size"
        )


def _grid(ex: Explanation) -> dict[str, np.ndarray]:
    """A layer grid's values, layer by layer."""
    values = ex.values
    if not isinstance(values, Mapping):
        raise TypeError(f"{ex.technique}: a layer grid holds a mapping of layers")
    return dict(values)


def _rows(
    ex_a: Explanation, ex_b: Explanation, translate: LayerTranslator
) -> tuple[list[dict[str, Any]], list[tuple[str, str]]]:
    if ex_a.kind == "layer_grid":
        grid_a, grid_b = _grid(ex_a), _grid(ex_b)
        pairs = [
            (la, lb)
            for la in grid_a
            if (lb := translate(la, strict=True)) is not None and lb in grid_b
        ]
        if not pairs:
            raise InputError(
                f"none of the layers of model A's {ex_a.technique} ({', '.join(grid_a)}) has a "
                "counterpart in model B's; pass layers=[...] with layer_map={...} or layers_b=[...]"
            )
        rows = []
        for la, lb in pairs:
            va, vb = np.asarray(grid_a[la]), np.asarray(grid_b[lb])
            _check_shapes(f"layer {la!r} / {lb!r}", va, vb)
            rows += [
                {"input": i, "layer": la, "layer_b": lb, **map_metrics(va[i], vb[i])}
                for i in range(len(va))
            ]
        return rows, pairs
    va, vb = np.asarray(ex_a.values), np.asarray(ex_b.values)
    _check_shapes(ex_a.technique, va, vb)
    if ex_a.kind == "embedding":
        return embedding_rows(va, vb), []
    centred = ex_a.kind == "image_set"
    return [{"input": i, **map_metrics(va[i], vb[i], centred=centred)} for i in range(len(va))], []


def _objective(ex: Explanation, layer: str | None) -> Any:
    p = ex.params
    if "filters" in p and layer is not None:
        return objectives.Channel(layer, np.asarray(p["filters"]), int(p.get("crop", 0) or 0))
    if "classes" in p:
        return objectives.Logit(np.asarray(p["classes"]))
    return None


def _cross_objectives(
    rows: list[dict[str, Any]], ex_a: Explanation, ex_b: Explanation, a: Any, b: Any
) -> None:
    """Each model's objective on its own image and on the other model's image."""
    obj_a, obj_b = (
        _objective(ex_a, ex_a.params.get("layer")),
        _objective(ex_b, ex_b.params.get("layer")),
    )
    if obj_a is None or obj_b is None:
        return
    img_a, img_b = np.asarray(ex_a.values, np.float32), np.asarray(ex_b.values, np.float32)
    scores = {
        "score_a_img_a": a.value_and_grad(img_a, obj_a)[0],
        "score_a_img_b": a.value_and_grad(img_b, obj_a)[0],
        "score_b_img_b": b.value_and_grad(img_b, obj_b)[0],
        "score_b_img_a": b.value_and_grad(img_a, obj_b)[0],
    }
    units = np.asarray(ex_a.params.get("filters", ex_a.params.get("classes")))
    for i, row in enumerate(rows):
        row["unit"] = int(units[i])
        row.update({k: float(v[i]) for k, v in scores.items()})
        row["cross_a"] = _ratio(row["score_a_img_b"], row["score_a_img_a"])
        row["cross_b"] = _ratio(row["score_b_img_a"], row["score_b_img_b"])


def _ratio(num: float, den: float) -> float:
    return float(num / den) if den != 0 else float("nan")
