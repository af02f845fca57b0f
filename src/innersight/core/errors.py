"""One exception hierarchy for every mistake a user can make.

Every error innersight raises for a user mistake derives from :class:`InnersightError`, and its
message says what was received, what was expected and what to do next.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = [
    "BackendNotFoundError",
    "CapabilityError",
    "InnersightError",
    "InnersightWarning",
    "InputError",
    "LayerNotFoundError",
    "MissingDependencyError",
    "ObjectiveError",
    "PluginConflictError",
    "PluginError",
    "PluginLoadError",
    "TechniqueNotFoundError",
    "did_you_mean",
]


class InnersightError(Exception):
    """Root of every error innersight raises for a user mistake."""


class InnersightWarning(UserWarning):
    """A result that is computed but may not mean what the user expects (e.g. guided
    backpropagation on a model without ReLUs is the plain gradient). The message says why and
    what to do; filter with ``warnings.simplefilter("ignore", InnersightWarning)``."""


class PluginLoadError(InnersightError):
    """A plugin could not be imported or registered (raised in strict mode only)."""


class PluginConflictError(InnersightError):
    """Two plugins provide a technique (or renderer) under the same name."""


class PluginError(InnersightError):
    """A third-party plugin failed while running, or returned a malformed result.

    Not a user mistake but a bug (or a limitation) of the plugin named in the message, which
    also names its distribution and version so the report reaches the right people. The
    plugin's original exception, when there is one, is chained as ``__cause__``. Built-in
    techniques' own bugs are not wrapped: they surface as the exception they are.
    """


class BackendNotFoundError(InnersightError):
    """No installed backend adapter accepts the given model."""


class CapabilityError(InnersightError):
    """The adapter lacks a capability that a technique or option requires."""


class MissingDependencyError(InnersightError, ImportError):
    """An optional package that a technique needs is not installed (the message names the
    ``pip install`` that adds it)."""


class LayerNotFoundError(InnersightError, KeyError):
    """A layer name does not exist in the model."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class TechniqueNotFoundError(InnersightError, KeyError):
    """No registered technique has the requested name."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class ObjectiveError(InnersightError):
    """An objective is malformed or does not fit the model (bad index, wrong layer kind)."""


class InputError(InnersightError, ValueError):
    """An input array or parameter has the wrong type, shape, dtype or value."""


def did_you_mean(name: str, candidates: Iterable[str], *, limit: int = 3) -> str:
    """Return ``"; did you mean 'x'?"`` for the closest candidates, or ``""`` when none is close."""
    matches = difflib.get_close_matches(str(name), list(candidates), n=limit, cutoff=0.6)
    if not matches:
        return ""
    quoted = " or ".join(repr(m) for m in matches)
    return f"; did you mean {quoted}?"


def summarize_names(names: Iterable[str], noun: str = "layers", *, limit: int = 12) -> str:
    """``"3 layers: a, b, c"`` style listing that stays short for big models."""
    names = list(names)
    shown = ", ".join(names[:limit])
    more = f", ... ({len(names) - limit} more)" if len(names) > limit else ""
    return f"{len(names)} {noun}: {shown}{more}"
