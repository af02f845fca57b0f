"""``embeddings`` of a text model from its token ids (N, T): the same map as the twin model fed
the looked-up embedding vectors (N, T, D) as a float sequence, on torch and on Keras."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
keras = pytest.importorskip("keras")

from torch import nn  # noqa: E402

import innersight as ins  # noqa: E402

VOCAB, T, D = 50, 12, 8


class _Text(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.embed = nn.Embedding(VOCAB, D)
        self.fc1 = nn.Linear(D, 16)
        self.act = nn.ReLU()
        self.fc2 = nn.Linear(16, 3)

    def head(self, vectors: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(vectors.mean(1))))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(ids))


class _Vectors(nn.Module):
    """The same network fed the embedding vectors (shares the text model's layers)."""

    def __init__(self, text: _Text) -> None:
        super().__init__()
        self.fc1, self.act, self.fc2 = text.fc1, text.act, text.fc2

    def forward(self, vectors: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(vectors.mean(1))))


def _keras_pair() -> tuple[keras.Model, keras.Model, np.ndarray]:
    keras.utils.set_random_seed(0)
    embed = keras.layers.Embedding(VOCAB, D, name="embed")
    pool = keras.layers.GlobalAveragePooling1D(name="pool")
    fc1 = keras.layers.Dense(16, activation="relu", name="fc1")
    fc2 = keras.layers.Dense(3, name="fc2")
    ids_in = keras.Input((T,), dtype="int32")
    text = keras.Model(ids_in, fc2(fc1(pool(embed(ids_in)))))
    vec_in = keras.Input((T, D))
    vectors = keras.Model(vec_in, fc2(fc1(pool(vec_in))))
    return text, vectors, np.asarray(embed.embeddings)


@pytest.fixture(scope="module")
def ids() -> np.ndarray:
    return np.random.default_rng(0).integers(0, VOCAB, (40, T))


@pytest.mark.parametrize("method", ["pca", "tsne"])
@pytest.mark.parametrize("backend", ["torch", "keras"])
def test_token_ids_embed_like_their_embedding_vectors(backend, method, ids):
    if backend == "torch":
        text = _Text().eval()
        vectors, table = _Vectors(text).eval(), text.embed.weight.detach().numpy()
    else:
        text, vectors, table = _keras_pair()
    labels = ids[:, 0] % 3
    kw = {"labels": labels, "method": method, "perplexity": 5.0, "seed": 3}
    ours = ins.explain("embeddings", text, ids, **kw)
    twin = ins.explain("embeddings", vectors, table[ids].astype(np.float32), **kw)
    assert ours.meta["layer"] == twin.meta["layer"]
    assert ours.meta["n_features"] == 16 and ours.meta["n_samples"] == len(ids)
    np.testing.assert_allclose(ours.values, twin.values, rtol=1e-4, atol=1e-4)
    assert ours.meta["knn_accuracy"] == twin.meta["knn_accuracy"]


@pytest.mark.parametrize("backend", ["torch", "keras"])
def test_token_ids_beyond_the_vocabulary_are_refused_and_the_advice_works(backend, ids):
    """torch's own IndexError (the model's embedding lookup) and Keras' check before the run
    both become an InputError naming the id; clipping the ids, as advised, runs."""
    model = _Text().eval() if backend == "torch" else _keras_pair()[0]
    bad = ids.copy()
    bad[0, 0] = VOCAB + 5
    with pytest.raises(ins.InputError, match=rf"{VOCAB + 5}.*np\.clip\(ids, 0, vocab - 1\)"):
        ins.explain("embeddings", model, bad)
    ex = ins.explain("embeddings", model, np.clip(bad, 0, VOCAB - 1))
    assert ex.values.shape == (len(ids), 2)


@pytest.mark.parametrize("backend", ["torch", "keras"])
def test_a_data_set_of_token_ids_is_refused_and_the_advice_works(backend, ids):
    """Batches of ids from an iterator would reach the float input check; the error says to
    pass them as one array, and that call gives the map of the whole set."""
    import re

    model = _Text().eval() if backend == "torch" else _keras_pair()[0]
    y = ids[:, 0] % 3
    batches = [(ids[:20], y[:20]), (ids[20:], y[20:])]
    with pytest.raises(ins.InputError, match="token ids") as err:
        ins.explain("embeddings", model, iter(batches))
    assert re.search(r"np\.concatenate\(id_batches\)", str(err.value))
    id_batches, label_batches = [b[0] for b in batches], [b[1] for b in batches]
    ex = ins.explain(
        "embeddings", model, np.concatenate(id_batches), labels=np.concatenate(label_batches)
    )
    assert ex.values.shape == (len(ids), 2) and ex.meta["labels"] == y.tolist()
