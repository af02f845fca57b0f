"""explain_dataset on the local engine: the same numbers as innersight.explain, bad inputs
recorded and skipped, the output-folder policy, resume, and DatasetRun's readers."""

from __future__ import annotations

import functools

import numpy as np
import pytest

import innersight as ins
from innersight.dataset import DatasetRun, ImageFolder
from tests.dataset import helpers

torch = pytest.importorskip("torch")
pytest.importorskip("pyarrow")
Image = pytest.importorskip("PIL.Image")


@pytest.fixture(scope="module")
def folder(tmp_path_factory, digits):
    """40 digit PNGs in class folders, plus four bad files (a bomb, a truncated PNG, a text
    file named .png, and an RGB image of the wrong size)."""
    root = tmp_path_factory.mktemp("digits")
    ids = helpers.write_digit_folder(root, digits.x_test[:40], digits.y_test[:40])
    helpers.png_bomb(root / "1" / "bomb.png")
    good = (root / ids[0]).read_bytes()
    (root / "2" / "truncated.png").write_bytes(good[: len(good) // 2])
    (root / "3" / "notes.png").write_text("not an image")
    Image.new("RGB", (20, 20), (9, 9, 9)).save(root / "4" / "small.png")
    return root, ids


def test_folder_equals_explain_and_records_bad_files(folder, digits_torch, digits, tmp_path):
    root, ids = folder
    run = ins.explain_dataset(
        "saliency", digits_torch, root, out=tmp_path / "out", batch_size=16, progress=False
    )
    assert run.ids() == ids  # sorted relative paths; the bad files are not rows
    expected = ins.explain("saliency", digits_torch, ins.load_images([root / i for i in ids]))
    np.testing.assert_allclose(run.to_numpy(), expected.values, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(run.to_numpy(column="target"), expected.meta["target"])
    np.testing.assert_allclose(run.to_numpy(column="score"), expected.meta["score"], rtol=1e-6)
    failed = dict(run.failures())
    assert sorted(failed) == ["1/bomb.png", "2/truncated.png", "3/notes.png", "4/small.png"]
    assert (
        "shape (20, 20, 3) differs from the run's input shape (32, 32, 1)" in failed["4/small.png"]
    )
    summary = run.summary()
    assert (summary["inputs"], summary["done"], summary["failed"]) == (44, 40, 4)
    assert summary["labels"] == {
        str(k): v for k, v in zip(*np.unique(digits.y_test[:40], return_counts=True), strict=True)
    }
    np.testing.assert_array_equal(run.inputs(ids[:3]), ins.load_images([root / i for i in ids[:3]]))
    labels = np.asarray([int(i.split("/")[0]) for i in ids])  # the class folders
    assert summary["accuracy"] == pytest.approx(
        np.mean(np.asarray(expected.meta["target"]) == labels)
    )


def test_bad_arrays_are_skipped_and_counted(digits_torch, digits, tmp_path):
    x = digits.x_test[:30].copy()
    x[3, 5, 5, 0] = np.nan
    x[7, 0, 0, 0] = np.inf
    wide = np.zeros((2, 32, 40, 1), np.float32)  # wrong shape, in a batch of its own
    batches = [
        ([f"a{i}" for i in range(30)], x),
        (["w0", "w1"], wide),
    ]
    run = ins.explain_dataset(
        "grad_cam", digits_torch, iter(batches), out=tmp_path / "o", batch_size=8, progress=False
    )
    keep = [i for i in range(30) if i not in (3, 7)]
    assert run.ids() == [f"a{i}" for i in keep]
    expected = ins.explain("grad_cam", digits_torch, x[keep])
    np.testing.assert_allclose(run.to_numpy(), expected.values, rtol=1e-6, atol=1e-6)
    reasons = dict(run.failures())
    assert set(reasons) == {"a3", "a7", "w0", "w1"}
    assert "NaN or Inf" in reasons["a3"] and "shape (32, 40, 1) differs" in reasons["w0"]
    assert run.summary()["failed"] == 4


def test_reading_back_by_id_in_any_order(digits_torch, digits, tmp_path):
    x, y = digits.x_test[:50], digits.y_test[:50]
    run = ins.explain_dataset(
        "saliency", digits_torch, (x, y), out=tmp_path / "o", batch_size=16, progress=False
    )
    expected = ins.explain("saliency", digits_torch, x).values
    pick = ["41", "0", "17", "33"]
    np.testing.assert_allclose(run.to_numpy(pick), expected[[41, 0, 17, 33]], rtol=1e-6, atol=1e-6)
    batches = list(run.iter_batches(["id", "label"], batch_size=7))
    assert max(len(b["id"]) for b in batches) == 7
    assert np.concatenate([b["label"] for b in batches]).tolist() == y.tolist()
    frame = run.to_table(["id", "prediction"]).to_pandas()
    assert frame["id"].tolist() == [str(i) for i in range(50)]
    reread = DatasetRun(tmp_path / "o")
    assert len(reread) == 50 and reread.verify() == []
    with pytest.raises(ins.InputError, match="no input has this id"):
        run.to_numpy(["nope"])


def test_out_with_foreign_files_is_refused(digits_torch, digits, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(
        ins.InputError, match=r"holds 1 file\(s\) that no data-set run made \(notes.txt\)"
    ) as err:
        ins.explain_dataset("saliency", digits_torch, digits.x_test[:8], out=out, progress=False)
    assert "Pass an empty or new folder" in str(err.value)
    assert (out / "notes.txt").read_text() == "mine" and sorted(p.name for p in out.iterdir()) == [
        "notes.txt"
    ]
    run = ins.explain_dataset(  # the advice: a new folder
        "saliency", digits_torch, digits.x_test[:8], out=tmp_path / "new", progress=False
    )
    assert len(run) == 8


def test_another_run_in_out_is_refused_unless_resume_false(digits_torch, digits, tmp_path):
    x = digits.x_test[:20]
    ins.explain_dataset("saliency", digits_torch, x, out=tmp_path / "o", progress=False)
    with pytest.raises(
        ins.InputError, match=r"records another run \(.*technique: \"saliency\" -> \"grad_cam\""
    ) as err:
        ins.explain_dataset("grad_cam", digits_torch, x, out=tmp_path / "o", progress=False)
    assert "resume=False" in str(err.value)
    run = ins.explain_dataset(
        "grad_cam", digits_torch, x, out=tmp_path / "o", resume=False, progress=False
    )
    assert run.technique == "grad_cam"
    np.testing.assert_allclose(
        run.to_numpy(), ins.explain("grad_cam", digits_torch, x).values, rtol=1e-6, atol=1e-6
    )


def test_resume_skips_complete_shards_and_redoes_a_corrupt_one(digits_torch, digits, tmp_path):
    x = digits.x_test[:40]
    out = tmp_path / "o"
    first = ins.explain_dataset("saliency", digits_torch, x, out=out, batch_size=10, progress=False)
    files = sorted((out / "shards").iterdir())
    assert len(files) == 4
    before = {p.name: p.stat().st_mtime_ns for p in files}
    with open(files[2], "r+b") as f:  # flip a byte: the checksum no longer matches
        f.seek(100)
        byte = f.read(1)
        f.seek(100)
        f.write(bytes([byte[0] ^ 0xFF]))
    calls = []
    again = ins.explain_dataset(
        "saliency", digits_torch, x, out=out, batch_size=10, progress=lambda d, t: calls.append(d)
    )
    after = {p.name: p.stat().st_mtime_ns for p in sorted((out / "shards").iterdir())}
    changed = [name for name in before if before[name] != after[name]]
    assert changed == [files[2].name]
    assert again.verify() == [] and again.ids() == first.ids()
    np.testing.assert_allclose(
        again.to_numpy(), ins.explain("saliency", digits_torch, x).values, rtol=1e-6, atol=1e-6
    )


def test_model_as_spec_and_factory_give_the_same_rows(digits, tmp_path):
    x = digits.x_test[:12]
    a = ins.explain_dataset(
        "saliency",
        functools.partial(helpers.digits, "torch"),
        x,
        out=tmp_path / "a",
        progress=False,
    )
    b = ins.explain_dataset(
        "saliency", "innersight.models:digits_cnn", x, out=tmp_path / "b", progress=False
    )
    assert (
        a.manifest.fingerprint["model"]["weights_sha256"]
        == b.manifest.fingerprint["model"]["weights_sha256"]
    )
    np.testing.assert_array_equal(a.to_numpy(), b.to_numpy())


def test_image_folder_options_resize_and_scale(folder, digits_torch, tmp_path):
    root, ids = folder
    source = ImageFolder(root, size=(32, 32), channels=1, scale=1 / 255, mean=0.5, std=0.5)
    run = ins.explain_dataset("saliency", digits_torch, source, out=tmp_path / "o", progress=False)
    x = ins.load_images([root / i for i in ids], size=32, channels=1, mean=0.5, std=0.5)
    np.testing.assert_allclose(
        run.to_numpy(ids), ins.explain("saliency", digits_torch, x).values, rtol=1e-6, atol=1e-6
    )
    assert "4/small.png" in run.ids()  # resized to 32x32 and converted to one channel
    assert sorted(dict(run.failures())) == ["1/bomb.png", "2/truncated.png", "3/notes.png"]


def test_arguments_are_checked_with_advice(digits_torch, digits, tmp_path):
    x = digits.x_test[:4]
    with pytest.raises(ins.InputError, match="use innersight.embed_dataset"):
        ins.explain_dataset("embeddings", digits_torch, x, out=tmp_path / "a")
    with pytest.raises(
        ins.InputError, match="engine='spark' is unknown; use one of 'local', 'ray'"
    ):
        ins.explain_dataset("saliency", digits_torch, x, out=tmp_path / "b", engine="spark")
    with pytest.raises(ins.InputError, match="dtype uint8; .* x.astype"):
        ins.explain_dataset(
            "saliency", digits_torch, (x * 255).astype(np.uint8), out=tmp_path / "c"
        )
    with pytest.raises(ins.InputError, match="a list of targets cannot follow"):
        ins.explain_dataset("saliency", digits_torch, x, out=tmp_path / "d", target=[1, 2, 3, 4])
    run = ins.explain_dataset(
        "saliency",
        digits_torch,
        (x, digits.y_test[:4]),
        out=tmp_path / "e",
        target="label",
        progress=False,
    )
    np.testing.assert_array_equal(run.to_numpy(column="target"), digits.y_test[:4])


def test_parquet_of_encoded_images_and_of_arrays(folder, digits_torch, digits, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    root, ids = folder
    blobs = [(root / i).read_bytes() for i in ids[:20]] + [b"\x89PNG broken"]
    names = [f"img{k}" for k in range(21)]
    pq.write_table(
        pa.table({"id": names, "image": blobs, "label": list(range(21))}), tmp_path / "png.parquet"
    )
    run = ins.explain_dataset(
        "saliency", digits_torch, tmp_path / "png.parquet", out=tmp_path / "a", progress=False
    )
    x = ins.load_images([root / i for i in ids[:20]])
    np.testing.assert_allclose(
        run.to_numpy(names[:20]),
        ins.explain("saliency", digits_torch, x).values,
        rtol=1e-6,
        atol=1e-6,
    )
    assert [i for i, _ in run.failures()] == ["img20"] and run.summary()["failed"] == 1
    np.testing.assert_allclose(run.inputs(names[:3]), x[:3])  # read again from the file

    tensors = pa.FixedShapeTensorArray.from_numpy_ndarray(digits.x_test[:24])
    pq.write_table(pa.table({"x": tensors}), tmp_path / "arr.parquet")
    np.savez(tmp_path / "arr.npz", images=digits.x_test[:24], labels=digits.y_test[:24])
    expected = ins.explain("saliency", digits_torch, digits.x_test[:24]).values
    for name in ("arr.parquet", "arr.npz"):
        run = ins.explain_dataset(
            "saliency",
            digits_torch,
            tmp_path / name,
            out=tmp_path / name.replace(".", "-"),
            progress=False,
        )
        assert run.ids() == [str(i) for i in range(24)]
        np.testing.assert_allclose(run.to_numpy(), expected, rtol=1e-6, atol=1e-6)
    assert run.to_numpy(column="label").tolist() == digits.y_test[:24].tolist()


def test_importing_innersight_loads_neither_ray_nor_pyarrow():
    import subprocess
    import sys

    code = (
        "import sys, innersight as ins\n"
        "assert ins.explain_dataset and ins.DatasetRun and ins.embed_dataset\n"
        "print([m for m in ('ray', 'pyarrow') if m in sys.modules])\n"
    )
    env = {"PYTHONPATH": ":".join(p for p in sys.path if p)}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
