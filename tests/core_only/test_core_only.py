"""The core-only job: innersight with numpy and pluggy only runs its techniques and its
conformance suite, imports no framework, and skips (never errors on) what needs one."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from importlib import metadata

import pytest

from tests.core_only import optional

pytest_plugins = ["pytester"]

FRAMEWORKS = ("torch", "tensorflow", "keras", "jax")

#: What ``make test-core`` installs: innersight, the example plugin, numpy, pluggy, pytest and
#: pytest's own dependencies, and the venv's pip/setuptools.
CORE_DISTRIBUTIONS = {
    "innersight",
    "innersight-example-plugin",
    "numpy",
    "pluggy",
    "pytest",
    "iniconfig",
    "packaging",
    "pygments",
    "pip",
    "setuptools",
}

CORE_RUN = """
import json, sys
import numpy as np
import innersight
from innersight import testing

reference = testing.reference_model("conv")
x = np.random.default_rng(0).random((3, 12, 12, 3), dtype=np.float32)
small = {
    "occlusion": {"window": 5, "stride": 4},
    "filter_maximization": {"steps": 3},
    "class_maximization": {"steps": 3},
    "smoothgrad": {"samples": 2},
    "integrated_gradients": {"steps": 4},
}
# The embeddings' PCA and t-SNE are scikit-learn's (the innersight[embeddings] extra).
names = [name for name in innersight.techniques() if name != "embeddings"]
report = testing.check_all_techniques(reference, x, params=small, names=names)
testing.check_adapter(reference, x)
print(json.dumps({"report": report, "modules": sorted(sys.modules)}))
"""


def test_the_core_job_installs_nothing_optional():
    if not os.environ.get("INNERSIGHT_CORE_ONLY"):
        pytest.skip("checks the environment of the core-only job (make test-core)")
    installed = {dist.metadata["Name"].lower() for dist in metadata.distributions()}
    assert installed <= CORE_DISTRIBUTIONS, sorted(installed - CORE_DISTRIBUTIONS)
    found = [name for name in sorted(optional.OPTIONAL) if importlib.util.find_spec(name)]
    assert found == ["innersight_example_plugin"]


def test_techniques_and_conformance_run_without_importing_a_framework():
    """Every technique (the embeddings need scikit-learn) passes its conformance checks on the
    numpy reference, and the reference adapter passes the backend checks, in a process that
    imports no framework."""
    out = subprocess.run(
        [sys.executable, "-c", CORE_RUN], capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.splitlines()[-1])
    passed = [name for name, status in result["report"].items() if status == "passed"]
    assert {"saliency", "occlusion", "grad_cam", "integrated_gradients"} <= set(passed)
    assert len(passed) >= 9, result["report"]
    imported = {module.split(".")[0] for module in result["modules"]}
    assert imported.isdisjoint(FRAMEWORKS), sorted(imported & set(FRAMEWORKS))


# -- the skipping plugin ------------------------------------------------------------------------
FAKE = "innersight_fake_framework"

CONFTEST = """
from tests.core_only.optional import SkipMissingOptional


def pytest_configure(config):
    config.pluginmanager.register(SkipMissingOptional(), "skip-missing-optional")
"""


@pytest.fixture
def fake_optional(monkeypatch):
    """An optional package that is not installed, as torch is in the core-only job."""
    assert importlib.util.find_spec(FAKE) is None
    monkeypatch.setattr(optional, "OPTIONAL", optional.OPTIONAL | {FAKE})


def test_missing_module_is_only_an_optional_package_that_is_absent(fake_optional):
    def error(name: str) -> ModuleNotFoundError:
        return ModuleNotFoundError(f"No module named {name!r}", name=name)

    assert optional.missing_module(error(f"{FAKE}.nn")).name == f"{FAKE}.nn"
    assert optional.missing_module(error("innersight_misspelt")) is None  # not optional
    assert optional.missing_module(error("numpy")) is None  # installed
    try:
        try:
            raise error(FAKE)
        except ImportError as err:
            raise ImportError("install it with pip install 'innersight[fake]'") from err
    except ImportError as wrapped:  # a library's "install the extra" error
        assert optional.missing_module(wrapped).name == FAKE


def test_what_imports_a_missing_optional_package_is_skipped_with_the_reason(
    pytester, fake_optional
):
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(
        test_module_level=f"import {FAKE}\n\ndef test_never_runs():\n    pass\n",
        test_in_tests=(
            "import pytest\n\n"
            f"@pytest.fixture\ndef model():\n    import {FAKE}.nn\n\n"
            "def test_fixture(model):\n    pass\n\n"
            f"def test_body():\n    import {FAKE}\n\n"
            "def test_runs():\n    pass\n\n"
            "def test_misspelt():\n    import innersight_misspelt\n"
        ),
    )
    pytester.mkpydir("needs_fake").joinpath("conftest.py").write_text(f"import {FAKE}\n")
    pytester.path.joinpath("needs_fake", "test_in_dir.py").write_text("def test_x():\n    pass\n")
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider", "-rfs")
    result.assert_outcomes(passed=1, failed=1, skipped=4)
    result.stdout.fnmatch_lines_random(
        [
            f"SKIPPED [[]1[]] test_module_level.py:1: needs {FAKE}, which is not installed",
            f"SKIPPED [[]1[]] test_in_tests.py:5: needs {FAKE}, which is not installed",
            f"SKIPPED [[]1[]] test_in_tests.py:11: needs {FAKE}, which is not installed",
            f"SKIPPED [[]1[]] needs_fake/conftest.py:1: needs {FAKE}, which is not installed",
            "E   * ModuleNotFoundError: No module named 'innersight_misspelt'",
            "FAILED test_in_tests.py::test_misspelt - ModuleNotFoundError*",
        ]
    )
