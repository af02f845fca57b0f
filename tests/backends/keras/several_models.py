"""Keras models with several inputs, extras, token ids and two outputs, with their closed forms.

Backend-neutral (keras.ops only): used by the TensorFlow tests next to this module and by the
Keras-on-torch/JAX sub-suite (tests/backends/keras_backends/suite).
"""

from __future__ import annotations

import keras
import numpy as np

L = keras.layers
IMG, VEC, UNITS, CLASSES = (3, 3, 2), (5,), 4, 2


def relu_two_inputs(seed: int = 0) -> keras.Model:
    """h = relu(Wa flat(a)) + relu(Wb b); out = (h @ W2) * mask (mask: a trailing input)."""
    keras.utils.set_random_seed(seed)
    a, b = keras.Input(IMG, name="img"), keras.Input(VEC, name="vec")
    mask = keras.Input((CLASSES,), name="mask")
    ha = L.Dense(UNITS, activation="relu", use_bias=False, name="fa")(L.Flatten(name="flat")(a))
    hb = L.Dense(UNITS, activation="relu", use_bias=False, name="fb")(b)
    h = L.Add(name="sum")([ha, hb])
    out = L.Dense(CLASSES, use_bias=False, name="head")(h)
    return keras.Model([a, b, mask], L.Multiply(name="masked")([out, mask]), name="two")


def weights(model: keras.Model) -> dict[str, np.ndarray]:
    return {n: np.asarray(model.get_layer(n).get_weights()[0]) for n in ("fa", "fb", "head")}


def closed_form(
    model: keras.Model, a: np.ndarray, b: np.ndarray, mask: np.ndarray, k: int, relu: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(values, d value/d a, d value/d b) of output ``k`` in float64; relu "plain" or "guided"."""
    w = {n: v.astype(np.float64) for n, v in weights(model).items()}
    flat = a.reshape(len(a), -1).astype(np.float64)
    za, zb = flat @ w["fa"], b.astype(np.float64) @ w["fb"]
    h = np.maximum(za, 0) + np.maximum(zb, 0)
    mask = np.broadcast_to(mask, (len(a), CLASSES)).astype(np.float64)
    values = (h @ w["head"])[:, k] * mask[:, k]
    upstream = w["head"][:, k][None] * mask[:, k : k + 1]  # d value / d h, per sample
    if relu == "guided":
        upstream = np.maximum(upstream, 0)
    ga = ((upstream * (za > 0)) @ w["fa"].T).reshape(a.shape)
    gb = (upstream * (zb > 0)) @ w["fb"].T
    return values, ga, gb


def token_model(vocab: int = 11, length: int = 6, dim: int = 3, seed: int = 0) -> keras.Model:
    """Embedding -> GlobalAveragePooling1D -> Dense(2): int32 ids (N, length)."""
    keras.utils.set_random_seed(seed)
    ids = keras.Input((length,), dtype="int32", name="ids")
    e = L.Embedding(vocab, dim, name="emb")(ids)
    out = L.Dense(CLASSES, name="out")(L.GlobalAveragePooling1D(name="pool")(e))
    return keras.Model(ids, out, name="tokens")


def token_closed_form(model: keras.Model, ids: np.ndarray, k: int) -> tuple[np.ndarray, ...]:
    """(values, embedding activations, d value / d activations) of class ``k``, float64."""
    table = np.asarray(model.get_layer("emb").get_weights()[0], np.float64)
    kernel, bias = (np.asarray(w, np.float64) for w in model.get_layer("out").get_weights())
    acts = table[ids]
    values = acts.mean(axis=1) @ kernel[:, k] + bias[k]
    grads = np.broadcast_to(kernel[:, k] / ids.shape[1], acts.shape)
    return values, acts, grads


def two_outputs(seed: int = 0) -> keras.Model:
    """x (4,) -> "main" Dense(3) and "aux" Dense(2, tanh): two outputs."""
    keras.utils.set_random_seed(seed)
    x = keras.Input((4,), name="x")
    h = L.Dense(5, activation="tanh", name="hidden")(x)
    return keras.Model(x, [L.Dense(3, name="main")(h), L.Dense(2, name="aux")(h)], name="twin")
