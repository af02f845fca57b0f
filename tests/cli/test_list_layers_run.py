"""`innersight list | layers | run` end to end on the demo digits CNN saved to real files.

Most checks call ``innersight.cli.main(argv)`` in-process (a subprocess pays ~5 s of imports);
a few run the installed command in a subprocess for exit codes and stderr as a user sees them.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

import innersight as ins
from innersight.cli import main
from innersight.core.manager import PluginFailure, PluginInfo

torch = pytest.importorskip("torch")
Image = pytest.importorskip("PIL.Image")


@pytest.fixture(scope="module")
def files(tmp_path_factory, digits_torch, digits):
    """TorchScript, pickled module, dynamic-batch .pt2, three digit PNGs, a .npy, class names."""
    d = tmp_path_factory.mktemp("cli")
    torch.jit.trace(digits_torch, torch.zeros(1, 1, 32, 32)).save(str(d / "digits.pt"))
    torch.save(digits_torch, d / "pickled.pt")
    program = torch.export.export(
        digits_torch,
        (torch.zeros(2, 1, 32, 32),),
        dynamic_shapes=({0: torch.export.Dim("batch")},),
    )
    torch.export.save(program, str(d / "digits.pt2"))
    (d / "imgs").mkdir()
    for i in range(2):  # 16x16 RGB PNGs: gray + resize happen in load_images
        small = digits.x_test[i, ::2, ::2, 0]
        rgb = np.repeat((small * 255).round().astype(np.uint8)[..., None], 3, axis=-1)
        Image.fromarray(rgb, "RGB").save(d / "imgs" / f"digit{i}.png")
    np.save(d / "batch.npy", digits.x_test[:2])
    (d / "classes.txt").write_text("\n".join(f"digit-{k}" for k in range(10)) + "\n")
    return d


@pytest.fixture(scope="module")
def keras_file(tmp_path_factory, digits_keras):
    path = tmp_path_factory.mktemp("keras") / "digits.keras"
    digits_keras.save(path)
    return path


def cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def _outputs(folder, name, technique):
    stem = folder / f"{name}_{technique}"
    assert stem.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    header = json.loads(stem.with_suffix(".json").read_text())
    return ins.Explanation.load(stem.with_suffix(".npz")), header


# -- list / layers -----------------------------------------------------------------------------
def test_list_techniques_backends_and_failures(capsys, monkeypatch):
    pm = ins.get_plugin_manager()
    broken = PluginFailure(
        PluginInfo("broken_plugin", "broken-dist", "1.2"), "import", "ImportError: x"
    )
    monkeypatch.setattr(pm, "failures", [*pm.failures, broken])
    code, out, _ = cli(capsys, "list")
    assert code == 0
    version = ins.__version__
    for name, tech in ins.techniques().items():
        line = next(ln for ln in out.splitlines() if ln.startswith(name + " "))
        info = pm.provider(name)
        assert tech.summary in line and info.name in line and info.distribution in line
    saliency = next(ln for ln in out.splitlines() if ln.startswith("saliency "))
    assert saliency.split()[-3:] == ["innersight.plugins.saliency", "innersight", version]
    assert "Backends (3):" in out
    for backend in ("torch", "keras", "function"):
        row = next(
            ln for ln in out.splitlines() if ln.startswith(f"innersight.backends.{backend} ")
        )
        assert row.split() == [f"innersight.backends.{backend}", "innersight", version]
    assert "Plugins that failed to load (" in out
    assert "broken_plugin  broken-dist 1.2  import  ImportError: x" in out


def test_layers_keras_torch_spec_and_torchscript(capsys, keras_file, files):
    code, out, _ = cli(capsys, "layers", keras_file)
    assert code == 0
    assert "keras model digits_cnn, input (32, 32, 1), 9 layers" in out
    assert "conv1    Conv2D        (32, 32, 16)     160" in out
    assert "logits   Dense         (10)             650" in out
    assert "total parameters: 89,546" in out
    code, out, _ = cli(capsys, "layers", "innersight.models:digits_cnn", "--input-shape", "32,32,1")
    assert code == 0
    assert "relu2    ReLU       (16, 16, 32)       0" in out
    assert "total parameters: 89,546" in out
    code, out, err = cli(capsys, "layers", files / "digits.pt")
    assert code == 0 and "total parameters: 89,546" in out
    # TorchScript takes no hooks: --input-shape would not help, the eager model would
    assert "TorchScript model" in err and "pass --input-shape" not in err
    code, out, err = cli(capsys, "layers", "innersight.models:digits_cnn")
    assert "pass --input-shape H,W,C to see them" in err
    code, _, err = cli(capsys, "-q", "layers", files / "digits.pt")
    assert err == ""


# -- run ---------------------------------------------------------------------------------------
def test_run_keras_on_a_folder_matches_the_api(capsys, tmp_path, keras_file, files, digits_keras):
    out_dir = tmp_path / "out"
    code, out, err = cli(
        capsys, "-q", "run", "saliency", keras_file, files / "imgs", "-o", out_dir,
        "--param", "reduce_channels=mean", "--classes", files / "classes.txt",
    )  # fmt: skip
    assert code == 0, err
    assert out == ""
    assert sorted(p.name for p in out_dir.iterdir()) == sorted(
        f"digit{i}_saliency.{ext}" for i in range(2) for ext in ("json", "npz", "png")
    )
    for i in range(2):
        x = ins.load_images(files / "imgs" / f"digit{i}.png", model=digits_keras)
        assert x.shape == (1, 32, 32, 1)
        expected = ins.explain("saliency", digits_keras, x, reduce_channels="mean")
        ex, header = _outputs(out_dir, f"digit{i}", "saliency")
        np.testing.assert_allclose(ex.values, expected.values, rtol=1e-5, atol=1e-7)
        np.testing.assert_array_equal(ex.inputs, x)
        assert header["params"] == {"target": expected.meta["target"], "reduce_channels": "mean"}
        meta = header["meta"]
        assert meta["cli"]["params"] == {"reduce_channels": "mean"}
        assert meta["cli"]["input"] == f"digit{i}"
        assert meta["target_names"] == [f"digit-{expected.meta['target'][0]}"]
        assert meta["backend"] == "keras" and "keras" in meta["versions"]
        assert set(meta["timings"]) == {"load_model", "load_inputs", "explain"}


def test_run_torchscript_with_params_and_target(capsys, tmp_path, files, digits_torch):
    out_dir = tmp_path / "sg"
    code, out, err = cli(
        capsys, "run", "smoothgrad", files / "digits.pt", files / "batch.npy", "-o", out_dir,
        "--target", "3,digit-7", "--classes", files / "classes.txt",
        "--param", "samples=4", "-p", "noise=1/10", "-p", "seed=3", "-p", "magnitude=yes",
    )  # fmt: skip
    assert code == 0, err
    assert "batch_0: target 3 ('digit-3')" in out and "batch_1: target 7 ('digit-7')" in out
    x = np.load(files / "batch.npy")
    for i, target in enumerate((3, 7)):
        ex, header = _outputs(out_dir, f"batch_{i}", "smoothgrad")
        params = {"target": target, "samples": 4, "noise": 0.1, "seed": 3, "magnitude": True}
        expected = ins.explain("smoothgrad", digits_torch, x[i : i + 1], **params)
        np.testing.assert_allclose(ex.values, expected.values, rtol=1e-4, atol=1e-6)
        assert header["meta"]["cli"]["params"] == {**params, "target": [3, 7]}
        for key in ("samples", "noise", "seed", "magnitude"):
            assert header["params"][key] == params[key]
        assert header["meta"]["target"] == [target]


def test_run_pt2_and_spec_forms(capsys, tmp_path, files, digits_torch):
    code, _, err = cli(
        capsys,
        "-q",
        "run",
        "saliency",
        files / "digits.pt2",
        files / "batch.npy",
        "-o",
        tmp_path / "a",
    )
    assert code == 0, err
    x = np.load(files / "batch.npy")
    ex, _ = _outputs(tmp_path / "a", "batch_1", "saliency")
    np.testing.assert_allclose(
        ex.values, ins.explain("saliency", digits_torch, x[1:]).values, rtol=1e-4, atol=1e-7
    )
    # the spec form builds a torch model, which declares no input size: --input-shape gives it
    code, _, err = cli(
        capsys, "-q", "run", "saliency", "innersight.models:digits_cnn", files / "imgs" / "digit0.png",
        "--input-shape", "32,32,1", "--scale", "1/255", "--mean", "0.5", "--std", "0.25", "-o", tmp_path / "b",
    )  # fmt: skip
    assert code == 0, err
    ex, header = _outputs(tmp_path / "b", "digit0", "saliency")
    plain = ins.load_images(files / "imgs" / "digit0.png", channels=1, size=32)
    np.testing.assert_allclose(ex.inputs, (plain - 0.5) / 0.25, rtol=1e-5, atol=1e-6)
    assert header["meta"]["cli"]["input_shape"] == [32, 32, 1]


def test_output_folder_is_protected(capsys, tmp_path, files):
    out_dir = tmp_path / "o"
    out_dir.mkdir()
    (out_dir / "mine.txt").write_text("keep me")
    argv = ["run", "saliency", files / "digits.pt", files / "batch.npy", "-o", out_dir]
    code, _, err = cli(capsys, *argv)
    assert code == 1
    assert (
        "output folder" in err and "already holds 1 file(s) (mine.txt)" in err and "--force" in err
    )
    assert sorted(p.name for p in out_dir.iterdir()) == ["mine.txt"]
    code, _, err = cli(capsys, "-q", *argv, "--force")
    assert code == 0, err
    assert (out_dir / "mine.txt").read_text() == "keep me"
    assert (out_dir / "batch_0_saliency.npz").exists()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["run", "salency", "{pt}", "{npy}", "-o", "{out}"],
            r"no technique named 'salency'.*did you mean 'saliency'",
        ),
        (
            ["run", "saliency", "{pt}", "{npy}", "-o", "{out}", "-p", "reduce=max"],
            r"no parameter 'reduce'; valid parameters: target, reduce_channels",
        ),
        (
            ["run", "occlusion", "{pt}", "{npy}", "-o", "{out}", "-p", "window=big"],
            r"--param window='big': expected an integer or 2 comma-separated",
        ),
        (
            ["run", "saliency", "{dir}/missing.pt", "{npy}", "-o", "{out}"],
            r"model file '.*missing.pt' does not exist",
        ),
        (
            ["layers", "{dir}/pickled.pt"],
            r"not a TorchScript archive but a pickled torch file.*--unsafe",
        ),
        (
            ["run", "saliency", "{pt}", "{dir}/classes.txt", "-o", "{out}"],
            r"'.*classes.txt' is not an image that Pillow can read",
        ),
        (
            [
                "run",
                "saliency",
                "{pt}",
                "{npy}",
                "-o",
                "{out}",
                "--target",
                "cat",
                "--classes",
                "{dir}/classes.txt",
            ],
            r"--target 'cat' is not a class index nor a name in --classes",
        ),
        (
            ["run", "saliency", "{pt}", "{npy}", "-o", "{out}", "--target", "1,2,3"],
            r"--target has 3 classes for 2 inputs",
        ),
        (
            [
                "run",
                "saliency",
                "innersight.models:digits_cnn",
                "{dir}/imgs/digit0.png",
                "-o",
                "{out}",
            ],
            r"expected input\[1, 3, 16, 16\] to have 1 channels.*inputs were read as \(16, 16, 3\); pass --input-shape H,W,C",
        ),
        (["run", "saliency", "{pt}", "-o", "{out}"], r"technique 'saliency' needs inputs"),
    ],
)
def test_user_errors_exit_1_with_a_message(capsys, tmp_path, files, argv, message):
    subst = {
        "pt": files / "digits.pt",
        "npy": files / "batch.npy",
        "out": tmp_path / "o",
        "dir": files,
    }
    code, _, err = cli(capsys, *[a.format(**subst) for a in argv])
    assert code == 1
    assert err.startswith("innersight: error: ")
    assert re.search(message, err), err
    assert "Traceback" not in err


def test_pickled_model_with_unsafe(capsys, files):
    code, out, err = cli(
        capsys, "layers", files / "pickled.pt", "--unsafe", "--input-shape", "32,32,1"
    )
    assert code == 0, err
    assert "fc1      Linear     (64)          65,600" in out


def test_usage_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as info:
        main(["explode"])
    assert info.value.code == 2
    assert "invalid choice: 'explode'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        main(["run", "saliency", "m.pt", "--scale", "abc", "-o", "x"])
    assert info.value.code == 2
    assert "'abc' is not a number" in capsys.readouterr().err


# -- the real command in a subprocess -----------------------------------------------------------
def _command(*argv, cwd=None):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.run(
        [sys.executable, "-m", "innersight", *map(str, argv)],
        capture_output=True, text=True, env=env, cwd=cwd, timeout=120,
    )  # fmt: skip


def test_subprocess_list_and_unknown_command():
    done = _command("list")
    assert done.returncode == 0, done.stderr
    assert "saliency" in done.stdout and "Backends" in done.stdout
    done = _command("frobnicate")
    assert done.returncode == 2 and "invalid choice: 'frobnicate'" in done.stderr


def test_subprocess_run_and_refused_pickle(tmp_path, files):
    done = _command(
        "run",
        "saliency",
        files / "digits.pt",
        files / "imgs",
        "--input-shape",
        "32,32,1",
        "-o",
        tmp_path / "o",
    )
    assert done.returncode == 0, done.stderr
    assert "digit1: target" in done.stdout
    assert len(list((tmp_path / "o").iterdir())) == 6
    done = _command("run", "saliency", files / "pickled.pt", files / "imgs", "-o", tmp_path / "p")
    assert done.returncode == 1
    assert "innersight: error:" in done.stderr and "--unsafe" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "p").exists()


def test_run_set_techniques_get_all_inputs_and_generators_are_named_once(
    capsys, tmp_path, digits, digits_torch
):
    np.save(tmp_path / "set.npy", digits.x_test[:20])
    code, _, err = cli(
        capsys, "-q", "run", "embeddings", "innersight.models:digits_cnn", tmp_path / "set.npy",
        "--input-shape", "32,32,1", "-p", "method=pca", "-o", tmp_path / "emb",
    )  # fmt: skip
    assert code == 0, err
    ex = ins.Explanation.load(tmp_path / "emb" / "embeddings.npz")
    direct = ins.explain("embeddings", digits_torch, digits.x_test[:20], method="pca")
    np.testing.assert_allclose(np.abs(ex.values), np.abs(direct.values), rtol=1e-4, atol=1e-4)
    code, _, err = cli(
        capsys, "-q", "run", "class_maximization", "innersight.models:digits_cnn",
        "--input-shape", "32,32,1", "-p", "classes=3", "-p", "steps=4", "-o", tmp_path / "cls",
    )  # fmt: skip
    assert code == 0, err
    assert sorted(p.name for p in (tmp_path / "cls").iterdir()) == [
        "class_maximization.json",
        "class_maximization.npz",
        "class_maximization.png",
    ]
