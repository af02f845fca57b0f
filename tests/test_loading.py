"""load_model, load_images and load_class_names on real files written in the test."""

from __future__ import annotations

import sys

import numpy as np
import pytest

import innersight as ins
from innersight.loading import load_class_names, load_images, load_model, read_inputs
from innersight.models.digits import resize_matrix

torch = pytest.importorskip("torch")
Image = pytest.importorskip("PIL.Image")


@pytest.fixture(scope="module")
def torch_files(tmp_path_factory, digits_torch):
    """The demo digits CNN saved as TorchScript, state_dict, pickled module and .pt2."""
    d = tmp_path_factory.mktemp("torch_models")
    torch.jit.trace(digits_torch, torch.zeros(1, 1, 32, 32)).save(str(d / "digits.pt"))
    torch.save(digits_torch.state_dict(), d / "state.pt")
    torch.save(digits_torch, d / "pickled.pt")
    batch = torch.export.Dim("batch")
    program = torch.export.export(
        digits_torch, (torch.zeros(2, 1, 32, 32),), dynamic_shapes=({0: batch},)
    )
    torch.export.save(program, str(d / "digits.pt2"))
    return d


def _logits(model, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(x.transpose(0, 3, 1, 2).copy())).numpy()


X = np.random.default_rng(0).random((3, 32, 32, 1), dtype=np.float32)


# -- models ------------------------------------------------------------------------------------
def test_torchscript_pt2_and_spec_compute_the_eager_model(torch_files, digits_torch):
    expected = _logits(digits_torch, X)
    scripted = load_model(torch_files / "digits.pt")
    assert isinstance(scripted, torch.jit.ScriptModule)
    np.testing.assert_allclose(_logits(scripted, X), expected, rtol=1e-5, atol=1e-5)
    exported = load_model(str(torch_files / "digits.pt2"))  # batch of 3 through a dynamic axis
    np.testing.assert_allclose(_logits(exported, X), expected, rtol=1e-5, atol=1e-5)
    # an untrained build + the trained state_dict is the trained model
    spec = load_model(
        "innersight.models:digits_cnn", pretrained=False, weights=torch_files / "state.pt"
    )
    np.testing.assert_array_equal(_logits(spec, X), expected)
    assert ins.wrap(spec).backend == "torch"


def test_pickled_torch_files_need_allow_pickle(torch_files, digits_torch):
    with pytest.raises(ins.InputError, match=r"pickled torch file.*--unsafe \(allow_pickle=True\)"):
        load_model(torch_files / "pickled.pt")
    model = load_model(torch_files / "pickled.pt", allow_pickle=True)
    np.testing.assert_array_equal(_logits(model, X), _logits(digits_torch, X))
    with pytest.raises(
        ins.InputError, match=r"holds a state_dict, not a model.*--weights state.pt"
    ):
        load_model(torch_files / "state.pt", allow_pickle=True)


def test_state_dict_mismatch_lists_keys(torch_files, tmp_path):
    state = torch.load(torch_files / "state.pt", weights_only=True)
    state["extra.bias"] = state.pop("logits.bias")
    torch.save(state, tmp_path / "renamed.pt")
    with pytest.raises(
        ins.InputError, match=r"missing keys: logits\.bias; unexpected keys: extra\.bias"
    ):
        load_model("innersight.models:digits_cnn", weights=tmp_path / "renamed.pt")
    with pytest.raises(
        ins.InputError,
        match=r"shapes differ: conv1\.weight: file \[16, 1, 3, 3\], model \[32, 3, 3, 3\]",
    ):
        load_model("innersight.models:seed_convnet", weights=torch_files / "state.pt")
    with pytest.raises(ins.InputError, match="weights file 'nope.pt' does not exist"):
        load_model("innersight.models:digits_cnn", weights="nope.pt")


def test_export_with_fixed_batch_is_refused(tmp_path):
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 2))
    torch.export.save(torch.export.export(net, (torch.zeros(1, 2, 2, 1),)), str(tmp_path / "f.pt2"))
    with pytest.raises(ins.InputError, match=r"fixed batch size of 1 .*Dim\('batch'\)"):
        load_model(tmp_path / "f.pt2")


def test_keras_files_and_keras_spec_with_weights(tmp_path, digits_keras):
    digits_keras.save(tmp_path / "digits.keras")
    digits_keras.save_weights(tmp_path / "digits.weights.h5")
    expected = digits_keras.predict(X, verbose=0)
    loaded = load_model(tmp_path / "digits.keras")
    np.testing.assert_allclose(loaded.predict(X, verbose=0), expected, rtol=1e-6)
    assert ins.wrap(loaded).input_shape == (32, 32, 1)
    spec = load_model(
        "innersight.models:digits_cnn",
        backend="keras",
        pretrained=False,
        weights=tmp_path / "digits.weights.h5",
    )
    np.testing.assert_allclose(spec.predict(X, verbose=0), expected, rtol=1e-6)
    with pytest.raises(ins.InputError, match="holds Keras weights only, not a model"):
        load_model(tmp_path / "digits.weights.h5")
    with pytest.raises(ins.InputError, match="could not load Keras weights 'digits.weights.h5'"):
        load_model(
            "innersight.models:seed_convnet",
            backend="keras",
            weights=tmp_path / "digits.weights.h5",
        )


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("missing.keras", r"model file 'missing.keras' does not exist"),
        ("model.onnx", r"model file 'model.onnx' does not exist, and .onnx files are not a format"),
        ("innersight.models.digits_cnn", r"neither an existing model file nor a spec.*colon"),
        ("a:b:c", r"malformed; write 'package.module:callable'"),
        ("no_such_module_xyz:build", r"cannot import module 'no_such_module_xyz'"),
        ("innersight.models:digits_cnnn", r"no attribute 'digits_cnnn'.*did you mean 'digits_cnn'"),
        ("innersight.models:DIGITS_CLASSES", r"names a tuple, not a callable"),
        (
            "innersight.models:digits_data",
            r"returned innersight.models.digits.Split, expected a torch nn.Module or a Keras model",
        ),
    ],
)
def test_bad_sources(source, message):
    with pytest.raises(ins.InputError, match=message):
        load_model(source)


def test_corrupt_and_unknown_files(tmp_path, torch_files):
    (tmp_path / "trunc.pt").write_bytes((torch_files / "digits.pt").read_bytes()[:3000])
    (tmp_path / "junk.keras").write_bytes(b"hello world")
    (tmp_path / "model.onnx").write_bytes(b"\x08\x01")
    cases = {
        "trunc.pt": r"'trunc.pt' is a damaged zip archive.*truncated or corrupt",
        "junk.keras": r"'junk.keras' is not a .keras archive \(it starts with b'hell'\)",
        "model.onnx": r"cannot tell the format of model file 'model.onnx'.*'.onnx'.*\.keras",
    }
    for name, message in cases.items():
        with pytest.raises(ins.InputError, match=message):
            load_model(tmp_path / name)
    with pytest.raises(ins.InputError, match="is a directory"):
        load_model(tmp_path)
    with pytest.raises(ins.InputError, match=r"options \['backend'\] apply only to a spec"):
        load_model(torch_files / "digits.pt", backend="keras")


def test_spec_from_the_current_directory(tmp_path, monkeypatch):
    (tmp_path / "my_net_for_loading.py").write_text(
        "import torch\n\ndef build(width=3):\n    return torch.nn.Linear(2, width)\n"
    )
    monkeypatch.chdir(tmp_path)
    path_before = list(sys.path)
    model = load_model("my_net_for_loading:build", width=5)
    assert model.out_features == 5
    assert sys.path == path_before


# -- images ------------------------------------------------------------------------------------
def _png(path, array, mode):
    Image.fromarray(array, mode).save(path)
    return path


def test_png_grayscale_scaled_by_default(tmp_path):
    pixels = np.arange(48, dtype=np.uint8).reshape(6, 8) * 5
    x = load_images(_png(tmp_path / "g.png", pixels, "L"))
    assert x.dtype == np.float32 and x.shape == (1, 6, 8, 1)
    np.testing.assert_allclose(x[0, ..., 0], pixels / 255.0, rtol=1e-6)
    y = load_images(tmp_path / "g.png", scale=1.0, mean=10.0, std=2.0)
    np.testing.assert_allclose(y[0, ..., 0], (pixels - 10.0) / 2.0, rtol=1e-6)


def test_rgb_to_gray_and_gray_to_rgb(tmp_path):
    rgb = np.random.default_rng(1).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    _png(tmp_path / "c.png", rgb, "RGB")
    gray = load_images(tmp_path / "c.png", channels=1, scale=1.0)
    luma = rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114
    np.testing.assert_allclose(gray[0, ..., 0], luma, rtol=1e-5)
    _png(tmp_path / "g.png", rgb[..., 0], "L")
    back = load_images(tmp_path / "g.png", channels=3)
    assert back.shape == (1, 5, 7, 3)
    for c in range(3):
        np.testing.assert_allclose(back[0, ..., c], rgb[..., 0] / 255.0, rtol=1e-6)


def test_resized_to_the_models_input_and_channels(tmp_path, digits_torch):
    """An 8x8 RGB image for the 32x32x1 digits CNN: gray, then bilinear between pixel centres
    (innersight.models.digits.resize_matrix, an independent implementation)."""
    rgb = np.random.default_rng(2).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    _png(tmp_path / "small.png", rgb, "RGB")
    adapter = ins.wrap(digits_torch, input_shape=(32, 32, 1))
    x = load_images(tmp_path / "small.png", model=adapter)
    assert x.shape == (1, 32, 32, 1)
    luma = (rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114) / 255.0
    m = resize_matrix(8, 32)
    np.testing.assert_allclose(x[0, ..., 0], m @ luma @ m.T, atol=1e-5)
    with pytest.raises(ins.InputError, match="size=.*not an image size"):
        load_images(tmp_path / "small.png", size=(0, 3))


def test_folder_sorted_images_only_and_names(tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    for name, value in (("b", 20), ("a", 10), ("c", 30)):
        _png(folder / f"{name}.png", np.full((4, 4), value, np.uint8), "L")
    (folder / "notes.txt").write_text("not an image")
    _png(tmp_path / "a.png", np.full((4, 4), 40, np.uint8), "L")
    x, names = read_inputs([folder, tmp_path / "a.png"], scale=1.0)
    assert names == ["a", "b", "c", "a-2"]
    np.testing.assert_array_equal(x[:, 0, 0, 0], [10, 20, 30, 40])
    (tmp_path / "empty").mkdir()
    with pytest.raises(ins.InputError, match="folder .*empty' holds no image files"):
        load_images(tmp_path / "empty")


def test_arrays_npy_npz_unscaled_with_mean_std(tmp_path):
    batch = np.random.default_rng(3).random((2, 5, 5, 3), dtype=np.float32)
    np.save(tmp_path / "batch.npy", batch)
    np.save(tmp_path / "one.npy", batch[0])
    np.savez(tmp_path / "many.npz", x=batch, labels=np.arange(2))
    mean, std = [0.1, 0.2, 0.3], [0.5, 0.25, 2.0]
    x, names = read_inputs(
        [tmp_path / "batch.npy", tmp_path / "one.npy", tmp_path / "many.npz"], mean=mean, std=std
    )
    assert names == ["batch_0", "batch_1", "one", "many_0", "many_1"]
    expected = (np.concatenate([batch, batch[:1], batch]) - mean) / std
    np.testing.assert_allclose(x, expected, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(
        load_images(tmp_path / "one.npy", scale=2.0), batch[:1] * 2, rtol=1e-6
    )
    with pytest.raises(ins.InputError, match="mean has 2 values for images with 3 channels"):
        load_images(tmp_path / "one.npy", mean=[0.1, 0.2])
    np.savez(tmp_path / "ambiguous.npz", a=batch, b=batch)
    with pytest.raises(ins.InputError, match=r"holds arrays \['a', 'b'\]"):
        load_images(tmp_path / "ambiguous.npz")
    np.save(tmp_path / "chw.npy", batch.transpose(0, 3, 1, 2)[:, :, :, :4].repeat(2, axis=3))
    with pytest.raises(ins.InputError, match=r"looks channels-first .*transpose\(0, 2, 3, 1\)"):
        load_images(tmp_path / "chw.npy")


def test_not_an_image_and_size_mismatch(tmp_path):
    (tmp_path / "readme.png").write_text("I am text")
    with pytest.raises(
        ins.InputError, match=r"'.*readme.png' is not an image that Pillow can read"
    ):
        load_images(tmp_path / "readme.png")
    with pytest.raises(ins.InputError, match=r"input '.*nothing.png' does not exist"):
        load_images(tmp_path / "nothing.png")
    _png(tmp_path / "a.png", np.zeros((4, 4), np.uint8), "L")
    _png(tmp_path / "b.png", np.zeros((6, 6), np.uint8), "L")
    with pytest.raises(ins.InputError, match=r"different sizes \(a 4x4, b 6x6\)"):
        load_images([tmp_path / "a.png", tmp_path / "b.png"])
    assert load_images([tmp_path / "a.png", tmp_path / "b.png"], size=5).shape == (2, 5, 5, 1)


def test_class_names(tmp_path):
    (tmp_path / "c.txt").write_text(" cat \ndog\n\n\n")
    assert load_class_names(tmp_path / "c.txt") == ["cat", "dog"]
    (tmp_path / "gap.txt").write_text("cat\n\ndog\n")
    with pytest.raises(ins.InputError, match=r"empty line\(s\) \[2\]"):
        load_class_names(tmp_path / "gap.txt")
    (tmp_path / "empty.txt").write_text("\n")
    with pytest.raises(ins.InputError, match="is empty"):
        load_class_names(tmp_path / "empty.txt")
    with pytest.raises(ins.InputError, match="does not exist"):
        load_class_names(tmp_path / "none.txt")
