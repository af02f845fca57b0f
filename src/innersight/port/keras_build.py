"""Building a functional Keras model (channels-last input) from the neutral chain.

A conv/dense op fuses its activation (``activation=``) when the source did, or when the torch
source named the activation module ``<name>_<activation>`` (what :mod:`.torch_build` writes);
otherwise the activation is its own ``Activation`` layer with the source's name. Padding Keras'
``"same"`` cannot express becomes a ``ZeroPadding2D`` named ``<name>_pad``.
"""

from __future__ import annotations

from typing import Any

from innersight.port.ir import Chain, Op, same_pads, unsupported

__all__ = ["build_keras", "keras_name"]


def keras_name(name: str, used: set[str]) -> str:
    """A valid, unique Keras layer name close to ``name`` ('.' and '/' become '_')."""
    base = name.replace(".", "_").replace("/", "_") or "layer"
    out, i = base, 1
    while out in used:
        out, i = f"{base}_{i}", i + 1
    used.add(out)
    return out


def build_keras(chain: Chain, name: str | None = None) -> Any:
    """A functional ``keras.Model`` computing the chain (inference behaviour by default)."""
    import keras

    used: set[str] = set()
    inputs = keras.Input(chain.input_shape)
    x, loads = inputs, []
    for i, op in enumerate(chain.ops):
        for layer, weights in _keras_layers(op, chain, i, used):
            x = layer(x)
            if weights is not None:
                loads.append((layer, weights))
    model = keras.Model(inputs, x, name=keras_name(name or chain.model_name, set()))
    for layer, weights in loads:
        layer.set_weights(weights)
    return model


def _keras_layers(op: Op, chain: Chain, index: int, used: set[str]) -> list[tuple[Any, Any]]:
    from keras import layers as L

    n = op.names
    main = keras_name(op.name, used)
    if op.kind in ("conv", "dense"):
        return _keras_linear(op, chain, index, used, main)
    if op.kind == "pool":
        cls = L.MaxPooling2D if op.attrs["mode"] == "max" else L.AveragePooling2D
        padding = _keras_padding(op, chain, index, op.attrs["size"], (1, 1))
        if padding is None:
            raise unsupported(
                op,
                chain,
                f"its padding {op.attrs['pads']} (top, bottom, left, right) is "
                "neither 'valid' nor Keras' 'same' for this input size",
                "use padding=0 or an input size where the padding equals 'same'",
            )
        layer = cls(op.attrs["size"], op.attrs["strides"], padding=padding, name=main)
        return [(layer, None)]
    if op.kind == "gap":
        if op.attrs["keepdims"] or "main" not in n or n.get("flat") == f"{op.name}_flatten":
            return [(L.GlobalAveragePooling2D(keepdims=op.attrs["keepdims"], name=main), None)]
        flat = L.Flatten(name=keras_name(n["flat"], used))
        return [(L.GlobalAveragePooling2D(keepdims=True, name=main), None), (flat, None)]
    if op.kind == "bn":
        w = op.weights
        layer = L.BatchNormalization(epsilon=op.attrs["epsilon"], name=main)
        return [(layer, [w["gamma"], w["beta"], w["mean"], w["var"]])]
    simple = {
        "dropout": lambda: L.Dropout(op.attrs["rate"], name=main),
        "flatten": lambda: L.Flatten(name=main),
        "identity": lambda: L.Identity(name=main),
        "act": lambda: L.Activation(op.attrs["fn"], name=main),
        "pad": lambda: L.ZeroPadding2D(_pairs(op.attrs["pads"]), name=main),
    }
    return [(simple[op.kind](), None)]


def _pairs(pads: tuple[int, ...]) -> tuple[tuple[int, int], tuple[int, int]]:
    return (pads[0], pads[1]), (pads[2], pads[3])


def _keras_padding(op: Op, chain: Chain, index: int, kernel: Any, dilation: Any) -> str | None:
    pads = tuple(op.attrs["pads"])
    if not any(pads):
        return "valid"
    hw = chain.in_shape(index)[:2]
    return "same" if pads == same_pads(hw, kernel, op.attrs["strides"], dilation) else None


def _keras_linear(op: Op, chain: Chain, index: int, used: set[str], main: str) -> list[Any]:
    from keras import layers as L

    out: list[tuple[Any, Any]] = []
    act = op.act
    fuse = act is not None and op.names.get("act") in (op.name, f"{op.name}_{act}")
    w = op.weights  # already in Keras layout and Keras' flatten order
    weights = [w["kernel"], w["bias"]] if op.attrs["use_bias"] else [w["kernel"]]
    common = {"use_bias": op.attrs["use_bias"], "activation": act if fuse else None, "name": main}
    if op.kind == "dense":
        out.append((L.Dense(op.attrs["units"], **common), weights))
    else:
        a = op.attrs
        if a["dilation"] != (1, 1) and a["strides"] != (1, 1):
            raise unsupported(
                op,
                chain,
                f"Keras does not support strides {a['strides']} together with "
                f"dilation {a['dilation']}",
                "use one of them",
            )
        padding = _keras_padding(op, chain, index, a["kernel"], a["dilation"])
        if padding is None:
            pad_name = keras_name(op.names.get("pad", f"{op.name}_pad"), used)
            out.append((L.ZeroPadding2D(_pairs(a["pads"]), name=pad_name), None))
        conv = L.Conv2D(
            a["filters"],
            a["kernel"],
            strides=a["strides"],
            padding=padding or "valid",
            dilation_rate=a["dilation"],
            groups=a["groups"],
            **common,
        )
        out.append((conv, weights))
    if act is not None and not fuse:
        out.append((L.Activation(act, name=keras_name(op.names["act"], used)), None))
    return out
