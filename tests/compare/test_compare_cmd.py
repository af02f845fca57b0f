"""``innersight compare``: one technique or --all, demo models, model files and specs."""

from __future__ import annotations

import json

import numpy as np
import pytest

from innersight.cli import main

pytest.importorskip("torch")
pytest.importorskip("keras")


def test_compare_all_on_the_demo_model_from_files_writes_a_report(tmp_path, digits, capsys):
    """The acceptance: `innersight compare --all` on the demo model produces a report. Model A
    is the torch demo CNN from a spec, model B its Keras port saved to a .keras file."""
    from innersight.compare import demo_keras

    keras_file = tmp_path / "digits.keras"
    demo_keras().save(keras_file)
    inputs = tmp_path / "digits.npy"
    np.save(inputs, digits.x_test[:6])
    out = tmp_path / "out"
    code = main(
        ["-q", "compare", "--all", "innersight.compare:demo_torch", str(keras_file), str(inputs),
         "-o", str(out), "--input-shape", "32,32,1"]
    )  # fmt: skip
    assert code == 0
    page = (out / "compare.html").read_text()
    record = json.loads((out / "compare.json").read_text())
    import innersight as ins

    assert set(record["techniques"]) == set(ins.techniques()) and not record["failures"]
    for name, result in record["techniques"].items():
        assert f'id="compare-{name}"' in page and (out / f"{name}.png").is_file()
        assert result["summary"]["rel_l2"] < 1e-4, name  # a port: the same answers
        assert result["metrics"], name
    assert record["models"] == ["torch:Sequential", "keras:digits_cnn"]
    assert capsys.readouterr().out == ""  # -q


def test_compare_one_technique_on_demo_models(tmp_path, capsys):
    out = tmp_path / "sal"
    assert (
        main(
            [
                "compare",
                "grad_cam",
                "demo:torch",
                "demo:keras",
                "-o",
                str(out),
                "--param",
                "layer=relu2",
            ]
        )
        == 0
    )
    files = sorted(p.name for p in out.iterdir())
    assert files == [
        "grad_cam.html",
        "grad_cam.png",
        "grad_cam_a.npz",
        "grad_cam_b.npz",
        "grad_cam_metrics.json",
    ]
    record = json.loads((out / "grad_cam_metrics.json").read_text())
    assert len(record["metrics"]) == 8 and record["summary"]["rel_l2"] < 1e-5
    shown = capsys.readouterr().out
    assert "grad_cam" in shown and "wrote" in shown


def test_layer_b_override_from_the_command_line(tmp_path):
    out = tmp_path / "gc"
    args = ["compare", "grad_cam", "demo:torch", "demo:torch", "-o", str(out), "-q"]
    assert main([*args, "--param", "layer=relu3", "--param", "layer_b=relu2"]) == 0
    record = json.loads((out / "grad_cam_metrics.json").read_text())
    assert record["summary"]["rel_l2"] > 1e-2  # two different layers really were compared


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["compare", "saliency", "demo:torch"], "compare needs TECHNIQUE MODEL_A MODEL_B"),
        (["compare", "--all", "demo:torch"], "compare needs MODEL_A MODEL_B"),
        (["compare", "saliency", "demo:torch", "demo:jax"], "unknown demo model 'demo:jax'"),
        (["compare", "salincy", "demo:torch", "demo:keras"], "did you mean 'saliency'"),
        (
            ["compare", "saliency", "demo:torch", "demo:keras", "--param", "steps=3"],
            "has no parameter 'steps'",
        ),
    ],
)
def test_mistakes_are_explained(tmp_path, capsys, argv, message):
    assert main([*argv, "-o", str(tmp_path / "x")]) == 1
    assert message in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
