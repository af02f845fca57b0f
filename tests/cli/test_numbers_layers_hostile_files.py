"""The command line on issue 10's cases: fractions such as ``--scale 1/127.5``, ``layers`` with
``--input-shape`` on a TorchScript model, and hostile image files (a decompression bomb, a
truncated PNG) refused with one line. Most checks run ``innersight.cli.main`` in-process; one
runs the installed command to see stderr as a user does."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import innersight as ins
from innersight.cli import main
from innersight.cli.common import number
from innersight.cli.params import convert
from tests.loading.pngs import png_bomb

torch = pytest.importorskip("torch")
Image = pytest.importorskip("PIL.Image")

ENV = "INNERSIGHT_MAX_IMAGE_PIXELS"


@pytest.fixture(autouse=True)
def _no_limit_from_the_environment(monkeypatch):
    monkeypatch.delenv(ENV, raising=False)


@pytest.fixture(scope="module")
def files(tmp_path_factory, digits_torch, digits):
    """The digits CNN as TorchScript and as a pickled module; one digit as an 8-bit PNG."""
    d = tmp_path_factory.mktemp("cli_issue10")
    torch.jit.trace(digits_torch, torch.zeros(1, 1, 32, 32)).save(str(d / "digits.pt"))
    torch.save(digits_torch, d / "pickled.pt")
    pixels = (digits.x_test[0, :, :, 0] * 255).round().astype(np.uint8)
    Image.fromarray(pixels, "L").save(d / "digit.png")
    return d


def cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


# -- numbers and fractions ------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "value"),
    [("1/127.5", 1 / 127.5), ("1/255", 1 / 255), ("0.5", 0.5), ("-2", -2.0), ("1e-3", 1e-3),
     (" 3 / 4 ", 0.75), ("2.5/0.5", 5.0), ("-1/4", -0.25)],
)  # fmt: skip
def test_numbers_and_simple_fractions(text, value):
    assert number(text) == value
    assert convert(text, float) == value  # --param takes the same numbers


@pytest.mark.parametrize(
    ("text", "reason"),
    [("abc", "not a number"), ("1/0", "division by zero"), ("1/2/3", "write one fraction a/b"),
     ("nan", "not finite"), ("1/x", "not a number"), ("", "not a number")],
)  # fmt: skip
def test_other_text_is_refused_with_a_valid_example(capsys, text, reason):
    with pytest.raises(SystemExit) as info:
        main(["run", "saliency", "m.pt", "x.png", "--scale", text, "-o", "out"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert f"argument --scale: {text!r} is not a number ({reason}); write e.g. 0.5, 1/255 or " \
        "1/127.5" in err  # fmt: skip
    for example in ("0.5", "1/255", "1/127.5"):  # every example given is accepted
        assert np.isfinite(number(example))


def test_scale_one_over_127_5_maps_8_bit_pixels_to_minus_one_one(capsys, tmp_path, files):
    """The example of docs/cli.md: (x / 127.5 - 1) puts 0..255 into -1..1."""
    out_dir = tmp_path / "o"
    code, _, err = cli(
        capsys, "-q", "run", "occlusion", files / "digits.pt", files / "digit.png",
        "--scale", "1/127.5", "--mean", "1", "-p", "baseline=-1/1", "-p", "window=8",
        "-p", "stride=4", "-o", out_dir,
    )  # fmt: skip
    assert code == 0, err
    ex = ins.Explanation.load(out_dir / "digit_occlusion.npz")
    pixels = np.asarray(Image.open(files / "digit.png"), np.float32)
    np.testing.assert_allclose(ex.inputs[0, :, :, 0], pixels / 127.5 - 1, rtol=0, atol=1e-6)
    assert ex.inputs.min() == -1.0 and ex.inputs.max() > 0.9
    header = json.loads((out_dir / "digit_occlusion.json").read_text())
    assert header["meta"]["cli"]["scale"] == 1 / 127.5
    assert header["params"]["baseline"] == -1.0 and header["params"]["stride"] == [4, 4]


def test_a_fraction_that_is_not_a_number_is_refused_for_a_param(capsys, tmp_path, files):
    argv = ["run", "smoothgrad", files / "digits.pt", files / "digit.png", "-o", tmp_path / "o"]
    code, _, err = cli(capsys, *argv, "-p", "noise=1/0")
    assert code == 1
    assert "--param noise='1/0': expected a number (or a fraction such as 1/127.5)" in err
    code, _, err = cli(capsys, "-q", *argv, "-p", "noise=1/127.5", "-p", "samples=2")
    assert code == 0, err
    header = json.loads((tmp_path / "o" / "digit_smoothgrad.json").read_text())
    assert header["params"]["noise"] == 1 / 127.5


# -- layers --input-shape on TorchScript -----------------------------------------------------------
def test_layers_never_asks_for_an_input_shape_it_was_given(capsys, files):
    code, out, err = cli(capsys, "layers", files / "digits.pt", "--input-shape", "32,32,1")
    assert code == 0, err
    assert out.startswith("torch model Sequential, input (32, 32, 1), 13 layers\n")
    assert "conv1    Conv2d     ?" in out  # shapes unknown ...
    assert "pass --input-shape" not in err  # ... and the note does not ask for what was given
    assert err == (
        "note: output shapes of TorchScript model Sequential cannot be recorded: "
        "TorchScript modules take no hooks, so "
        "--input-shape does not show them either; load the eager model from a "
        "'package.module:callable' spec (with --weights and --input-shape) to see them\n"
    )
    # the advice: the eager model from a spec shows every shape, and no note
    code, out, err = cli(
        capsys, "layers", "innersight.models:digits_cnn", "--input-shape", "32,32,1"
    )
    assert code == 0 and err == ""
    assert "conv1    Conv2d     (32, 32, 16)     160" in out
    assert "logits   Linear     (10)             650" in out


def test_layers_of_a_hookable_model_with_an_input_shape_show_shapes(capsys, files):
    code, out, err = cli(
        capsys, "layers", files / "pickled.pt", "--unsafe", "--input-shape", "32,32,1"
    )
    assert code == 0 and err == ""
    assert "fc1      Linear     (64)          65,600" in out


# -- hostile image files ---------------------------------------------------------------------------
def test_run_refuses_a_decompression_bomb_in_one_line(capsys, tmp_path, files):
    bomb = png_bomb(tmp_path / "bomb.png", 20000, 20000)
    code, out, err = cli(capsys, "run", "saliency", files / "digits.pt", bomb, "-o", tmp_path / "o")
    assert code == 1 and out == ""
    assert err == (
        f"innersight: error: image file {str(bomb)!r} has 400,000,000 pixels, more than the "
        "limit of 89,478,485 (a guard against decompression bombs: small files that decode to "
        f"huge images); if you trust the file, raise the limit: set the environment variable "
        f"{ENV}=400000000 (in Python: load_images(..., max_pixels=400000000))\n"
    )
    assert not (tmp_path / "o").exists()


def test_the_advice_loads_a_bomb_on_purpose(capsys, tmp_path, monkeypatch, files, digits_torch):
    bomb = png_bomb(tmp_path / "wide.png", 2000, 1000)
    monkeypatch.setenv(ENV, "1000000")  # a lowered limit, so that a small image shows it
    argv = ["-q", "run", "saliency", files / "digits.pt", bomb, "--input-shape", "32,32,1"]
    code, _, err = cli(capsys, *argv, "-o", tmp_path / "refused")
    assert code == 1
    assert f"raise the limit: set the environment variable {ENV}=2000000 " in err
    monkeypatch.setenv(ENV, "2000000")  # following the advice
    code, _, err = cli(capsys, *argv, "-o", tmp_path / "o")
    assert code == 0, err
    ex = ins.Explanation.load(tmp_path / "o" / "wide_saliency.npz")
    x = ins.load_images(bomb, size=32, channels=1)  # the same file, read by the Python API
    np.testing.assert_array_equal(ex.inputs, x)
    expected = ins.explain("saliency", digits_torch, x)
    np.testing.assert_allclose(ex.values, expected.values, rtol=1e-4, atol=1e-7)


def test_run_refuses_a_truncated_png_in_one_line(capsys, tmp_path, files):
    data = (files / "digit.png").read_bytes()
    cut = tmp_path / "cut.png"
    cut.write_bytes(data[: len(data) - 30])  # the end of the pixel data is missing
    code, _, err = cli(capsys, "run", "saliency", files / "digits.pt", cut, "-o", tmp_path / "o")
    assert code == 1
    assert err.startswith(f"innersight: error: image file {str(cut)!r} is truncated (Pillow: ")
    assert err.endswith("copy, download or export it again, or leave it out\n")
    assert err.count("\n") == 1


def test_subprocess_bomb_is_one_line_without_a_traceback(tmp_path, files):
    bomb = png_bomb(tmp_path / "bomb.png", 20000, 20000)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    env.pop(ENV, None)
    done = subprocess.run(
        [sys.executable, "-m", "innersight", "run", "saliency", str(files / "digits.pt"),
         str(bomb), "-o", str(tmp_path / "o")],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert done.returncode == 1
    lines = [ln for ln in done.stderr.splitlines() if ln.strip()]
    assert "Traceback" not in done.stderr and "DecompressionBombError" not in done.stderr
    assert lines[-1].startswith(f"innersight: error: image file {str(bomb)!r} has 400,000,000")
    assert len([ln for ln in lines if ln.startswith("innersight: error:")]) == 1
