"""``innersight run ... --dataset DIR`` and the report's summary of a DatasetRun."""

from __future__ import annotations

import numpy as np
import pytest

import innersight as ins
from innersight.cli import build_parser, main
from innersight.cli.dataset_cmd import add_dataset_arguments, run_dataset
from innersight.report import build_report, dataset_report
from innersight.report.dataset import _entropy, worst_rows
from tests.dataset import helpers

torch = pytest.importorskip("torch")
pytest.importorskip("pyarrow")
pytest.importorskip("PIL")


@pytest.fixture(scope="module")
def files(tmp_path_factory, digits_torch, digits):
    root = tmp_path_factory.mktemp("cli")
    torch.jit.trace(digits_torch, torch.zeros(1, 1, 32, 32)).save(str(root / "digits.pt"))
    ids = helpers.write_digit_folder(root / "imgs", digits.x_test[:40], digits.y_test[:40])
    (root / "imgs" / "7" / "broken.png").write_text("not an image")
    return root, ids


def cli(capsys, *argv) -> tuple[int, str, str]:
    """``innersight run ... --dataset``: through main() once run_cmd dispatches --dataset,
    else the same arguments parsed by the run parser and given to run_dataset."""
    argv = [str(a) for a in argv]
    parser = build_parser()
    run_parser = next(a for a in parser._subparsers._actions if hasattr(a, "choices") and a.choices)
    run_parser = run_parser.choices["run"]
    if "--dataset" in run_parser._option_string_actions:
        code = main(argv)
    else:
        add_dataset_arguments(run_parser)
        try:
            code = run_dataset(parser.parse_args(argv))
        except ins.InnersightError as err:
            print(f"innersight: error: {err}", file=__import__("sys").stderr)
            code = 1
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_explains_a_folder_and_resumes(files, capsys, tmp_path, digits_torch):
    root, ids = files
    out = tmp_path / "out"
    argv = [
        "run",
        "saliency",
        root / "digits.pt",
        "--dataset",
        root / "imgs",
        "-o",
        out,
        "--batch-size",
        "16",
    ]
    code, stdout, stderr = cli(capsys, *argv)
    assert code == 0, stderr
    assert "saliency: 40 of 41 inputs in 3 shard(s), 1 failed" in stdout
    assert "accuracy on the labels: 100.00%" in stdout
    run = ins.DatasetRun(out)
    expected = ins.explain(
        "saliency", digits_torch, ins.load_images([root / "imgs" / i for i in ids])
    )
    np.testing.assert_allclose(run.to_numpy(ids), expected.values, rtol=1e-6, atol=1e-6)
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*.parquet")}
    code, stdout, _ = cli(capsys, *argv)
    assert code == 0 and {p: p.stat().st_mtime_ns for p in out.rglob("*.parquet")} == stamps
    code, _, stderr = cli(capsys, *argv, "--force")
    assert code == 1 and "--force does not apply to --dataset" in stderr


def test_cli_embeds_with_params(files, capsys, tmp_path):
    root, _ = files
    spec = "innersight.models:digits_cnn"  # layer taps need the eager model, not TorchScript
    code, _stdout, stderr = cli(
        capsys,
        "run",
        "embeddings",
        spec,
        "--dataset",
        root / "imgs",
        "-o",
        tmp_path / "emb",
        "--param",
        "method=pca",
        "--param",
        "components=5",
        "-q",
    )
    assert code == 0, stderr
    run = ins.DatasetRun(tmp_path / "emb")
    assert run.kind == "embed" and run.to_numpy(column="pca").shape == (40, 5)
    code, _, stderr = cli(
        capsys,
        "run",
        "embeddings",
        spec,
        "--dataset",
        root / "imgs",
        "-o",
        tmp_path / "emb2",
        "--param",
        "steps=3",
    )
    assert code == 1 and "embeddings of a data set take --param layer, method" in stderr


@pytest.fixture(scope="module")
def explained(tmp_path_factory, digits_torch, digits):
    out = tmp_path_factory.mktemp("report") / "run"
    x = digits.x_test[:60].copy()
    x[2, 0, 0, 0] = np.nan
    return ins.explain_dataset(
        "saliency", digits_torch, (x, digits.y_test[:60]), out=out, batch_size=16, progress=False
    )


def test_worst_rows_match_a_brute_force_ranking(explained):
    values = explained.to_numpy()
    ids = explained.ids()
    entropy = _entropy(values)
    brute = [ids[i] for i in np.argsort(-entropy, kind="stable")[:5]]
    assert [i for i, _ in worst_rows(explained, "entropy", 5)] == brute
    scores = explained.to_numpy(column="score")
    assert [i for i, _ in worst_rows(explained, "score", 3)] == [
        ids[i] for i in np.argsort(scores)[:3]
    ]
    picked = worst_rows(explained, lambda v: v.max(axis=(1, 2)), 2)
    assert [i for i, _ in picked] == [ids[i] for i in np.argsort(-values.max(axis=(1, 2)))[:2]]


def test_report_shows_a_dataset_run(explained, digits_torch, digits):
    report = dataset_report(explained, metric="entropy", worst=4)
    html = report.to_html()
    view = report.datasets[0]
    assert dict(view.facts)["inputs"] == 60 and dict(view.facts)["failed"] == 1
    assert view.failures == [
        (
            "inputs contain 1 NaN or Inf value(s) (the first at index (0, 0, 0, 0)); clean or clip them first, e.g. np.nan_to_num(x)",
            1,
        )
    ]
    assert [f.caption.split(":")[0] for f in view.figures] == [
        i for i, _ in worst_rows(explained, "entropy", 4)
    ]
    labels = digits.y_test[:60][[i != 2 for i in range(60)]]
    counts = {c: n for c, _, n, _ in view.classes}
    assert counts == {
        str(k): int(v) for k, v in zip(*np.unique(labels, return_counts=True), strict=True)
    }
    assert "worst by entropy" in html and "data set 1" in html
    with_model = build_report(
        digits_torch, digits.x_test[:2], techniques=["saliency"], runs=[explained]
    )
    assert len(with_model.datasets) == 1 and 'href="#dataset-0"' in with_model.to_html()
    with pytest.raises(ins.InputError, match="metric='wrong' needs labels"):
        dataset_report(
            ins.explain_dataset(
                "saliency",
                digits_torch,
                digits.x_test[:8],
                out=explained.out.parent / "nolabels",
                progress=False,
            ),
            metric="wrong",
        )
