"""innersight's conformance suite and pure-numpy reference model, shipped for third parties.

Backend authors run every check on their adapter; plugin authors run their technique on the
reference adapter (no framework needed)::

    from innersight import testing

    testing.check_adapter(my_model, x)                 # wraps with innersight.wrap
    @testing.parametrize_with_checks({"mine": build})  # one pytest test per check
    def test_conformance(adapter, check):
        check(adapter)
    testing.check_technique(MyTechnique(), testing.reference_model(), x, target=0)
    report = testing.check_all_techniques(adapter, x)  # {name: "passed" | "skipped: ..."}
    testing.check_train_mode_preserved(model.train(), x, technique="saliency")
    testing.check_several_inputs(adapter, (a, b), lambda a, b: model(a, b))  # tuple inputs
    testing.check_native_inputs(adapter, tensor)       # tensors in and out, left unchanged

Every ``check_*`` returns None on success and raises :class:`ConformanceError` (an
``AssertionError``) with a message that says what was expected, what came back and where.
Importing this package imports neither torch nor TensorFlow.
"""

from __future__ import annotations

from innersight.testing.checks import ConformanceError, ConformanceWarning
from innersight.testing.checks_adapter import (
    check_inputs_not_mutated,
    check_layers,
    check_protocol,
    check_taps,
    check_unknown_layer,
)
from innersight.testing.checks_gradients import check_gradients, check_layer_gradients
from innersight.testing.checks_inputs import (
    check_native_inputs,
    check_several_inputs,
    check_with_inputs,
)
from innersight.testing.checks_metric import check_metric
from innersight.testing.checks_reference import check_matches_reference
from innersight.testing.checks_state import (
    check_state_preserved,
    default_injector,
    keras_injector,
    reference_injector,
    torch_injector,
)
from innersight.testing.checks_suite import (
    ADAPTER_CHECKS,
    AdapterCase,
    AdapterCheck,
    check_adapter,
)
from innersight.testing.checks_technique import check_all_techniques, check_technique
from innersight.testing.parametrize import parametrize_with_checks
from innersight.testing.reference import SMALL_NET_LAYOUT, ReferenceAdapter, ReferenceNetwork
from innersight.testing.reference_models import reference_model
from innersight.testing.state import Snapshot, diff, snapshot
from innersight.testing.train_mode import check_train_mode_preserved

__all__ = [
    "ADAPTER_CHECKS",
    "SMALL_NET_LAYOUT",
    "AdapterCase",
    "AdapterCheck",
    "ConformanceError",
    "ConformanceWarning",
    "ReferenceAdapter",
    "ReferenceNetwork",
    "Snapshot",
    "check_adapter",
    "check_all_techniques",
    "check_gradients",
    "check_inputs_not_mutated",
    "check_layer_gradients",
    "check_layers",
    "check_matches_reference",
    "check_metric",
    "check_native_inputs",
    "check_protocol",
    "check_several_inputs",
    "check_state_preserved",
    "check_taps",
    "check_technique",
    "check_train_mode_preserved",
    "check_unknown_layer",
    "check_with_inputs",
    "default_injector",
    "diff",
    "keras_injector",
    "parametrize_with_checks",
    "reference_injector",
    "reference_model",
    "snapshot",
    "torch_injector",
]
