"""A Keras model whose own call fails, reported as an innersight error naming the model.

The adapter runs the user's model as ``model.predict`` does on its backend: inside a
``tf.function`` (TensorFlow graph mode), under ``jax.jit`` (JAX), or eagerly (torch). Some models
run eagerly but not there: a layer name TensorFlow refuses as a scope name (``"fc (head)"``), a
layer whose ``call`` raises, an op that fails at run time, Python control flow on a traced JAX
value. Those failures are the model's, not innersight's: :func:`model_call` turns them into a
:class:`ModelCallError` whose one-line message names the model and the cause (the original
exception is chained as ``__cause__``, and ``innersight --debug`` shows its traceback).
innersight's own errors pass through unchanged, and so do ``KeyboardInterrupt`` and running out
of memory (TensorFlow's ``ResourceExhaustedError``, torch's ``OutOfMemoryError``, XLA's
``RESOURCE_EXHAUSTED``).

Code that catches the original kind of error keeps working: the error raised is also an instance
of the built-in exception class the original derives from (a ``ValueError`` raised by a layer
gives a ``ModelCallError`` that is a ``ValueError`` too).
"""

from __future__ import annotations

import contextlib
import re
import sys
from collections.abc import Iterator

from innersight.core.errors import InnersightError

__all__ = ["ModelCallError", "model_call"]

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_SCOPE = re.compile(r"'([^']*)' is not a valid scope name")


class ModelCallError(InnersightError):
    """The user's model raised when innersight ran it; ``__cause__`` holds the original error."""


_KINDS: dict[type, type] = {}


def _builtin_base(kind: type) -> type | None:
    for base in kind.__mro__:
        if base.__module__ == "builtins" and base not in (Exception, BaseException, object):
            return base
    return None


def _first_arg(self: BaseException) -> str:
    return str(self.args[0]) if self.args else ""


def _error(kind: type, message: str) -> ModelCallError:
    """A ModelCallError that is also an instance of ``kind``'s built-in exception class."""
    base = _builtin_base(kind)
    if base is not None and base not in _KINDS:
        try:
            mixed = type("ModelCallError", (ModelCallError, base), {"__module__": __name__})
            setattr(mixed, "__str__", _first_arg)  # noqa: B010 (a method on a made-up class)
            mixed(message)  # some built-ins (UnicodeError, ...) need other arguments
            _KINDS[base] = mixed
        except TypeError:
            _KINDS[base] = ModelCallError
    error: ModelCallError = _KINDS.get(base, ModelCallError)(message)  # type: ignore[arg-type]
    return error


def _cause(err: BaseException) -> str:
    """The essential line(s) of an error, without Keras' call banner or TF's node traceback."""
    text = _ANSI.sub("", getattr(err, "message", None) or str(err))
    text = text.split("Arguments received by", 1)[0]
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    lines = [ln for ln in lines if not ln.startswith("Exception encountered when calling")]
    if _is_tf_op_error(err):
        # graph execution errors: "Detected at node ... defined at", a traceback, then the cause
        lines = [ln for ln in lines if not ln.startswith(("File ", "Graph execution error"))]
        lines = [re.sub(r"\s*\[\[\{\{node .*", "", ln) for ln in lines[-2:]]
    return " ".join(ln for ln in lines if ln) or type(err).__name__


def _is_tf_op_error(err: BaseException) -> bool:
    tf = sys.modules.get("tensorflow")
    return tf is not None and isinstance(err, tf.errors.OpError)


def _out_of_memory(err: BaseException) -> bool:
    """Running out of memory on any backend: reported as it is, never as the model's fault."""
    if isinstance(err, MemoryError):
        return True
    tf, torch = sys.modules.get("tensorflow"), sys.modules.get("torch")
    if tf is not None and isinstance(err, tf.errors.ResourceExhaustedError):
        return True
    oom = getattr(torch, "OutOfMemoryError", None)
    if oom is not None and isinstance(err, oom):
        return True
    return type(err).__name__ in ("XlaRuntimeError", "JaxRuntimeError") and (
        "RESOURCE_EXHAUSTED" in str(err)
    )


_RUNS_AS = {
    "tensorflow": "in graph mode (tf.function)",
    "jax": "compiled with jax.jit",
    "torch": "eagerly on torch",
}


def _advice(cause: str, backend: str) -> str:
    scope = _SCOPE.search(cause)
    if scope is not None:
        return (
            f"TensorFlow refuses the layer name {scope.group(1)!r} in graph mode: give that layer "
            "a name of letters, digits and _ . - / only where the model is built (the model "
            "fails in model.predict too)"
        )
    how = _RUNS_AS.get(backend, f"on the {backend} backend")
    return (
        f"innersight runs the model {how}, as model.predict does: check that model.predict(x) "
        "works on the same inputs"
    )


@contextlib.contextmanager
def model_call(model_name: str, backend: str = "tensorflow") -> Iterator[None]:
    """Re-raise failures of the model's own call as :class:`ModelCallError`.

    Args:
        model_name: named in the message.
        backend: the Keras backend the model runs on; picks the advice.
    """
    try:
        yield
    except InnersightError:
        raise
    except Exception as err:
        if _out_of_memory(err):
            raise
        cause = _cause(err)
        raise _error(
            type(err),
            f"Keras model {model_name!r} failed when innersight ran it: {type(err).__name__}: "
            f"{cause}. {_advice(cause, backend)}",
        ) from err
