"""``load_model``: a native torch or Keras model from a file or a ``package.module:callable`` spec.

Only formats that do not execute pickled code are read by default: Keras ``.keras`` (safe
mode), TorchScript archives, ``torch.export`` programs (``.pt2``) and weights through
``torch.load(weights_only=True)``. Pickled torch files need ``allow_pickle=True`` (``--unsafe``):
unpickling runs arbitrary code from the file.
"""

from __future__ import annotations

import contextlib
import importlib
import re
import sys
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from innersight.core.errors import InputError, did_you_mean, summarize_names
from innersight.loading.weights import apply_weights, first_line

__all__ = ["MODEL_SUFFIXES", "is_spec", "load_model"]

KERAS_SUFFIXES = (".keras", ".h5", ".hdf5")
TORCH_SUFFIXES = (".pt", ".pth", ".ts")
MODEL_SUFFIXES = (*KERAS_SUFFIXES, *TORCH_SUFFIXES, ".pt2")
_SPEC = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_][\w.]*")
_FORMATS = (
    "a Keras .keras/.h5 file, a TorchScript .pt, a torch.export .pt2, or a spec "
    "'package.module:callable' that builds the model (with weights=... for its weights)"
)


def is_spec(source: str | Path) -> bool:
    """True for ``package.module:callable`` (and not an existing file)."""
    text = str(source)
    return bool(_SPEC.fullmatch(text)) and not Path(text).exists()


def load_model(
    source: str | Path,
    *,
    weights: str | Path | None = None,
    allow_pickle: bool = False,
    **options: Any,
) -> Any:
    """Load a native model (torch ``nn.Module`` or ``keras.Model``) for :func:`innersight.wrap`.

    Args:
        source: a file (``.keras``/``.h5`` Keras model, ``.pt`` TorchScript, ``.pt2``
            ``torch.export`` program) or a spec ``"package.module:callable"`` whose callable
            builds the model (called with ``**options``; the current directory is importable).
        weights: weights to load into the model: a torch ``state_dict`` file (read with
            ``weights_only=True``, loaded strictly) or a Keras ``.weights.h5`` file.
        allow_pickle: allow pickled torch files (a whole pickled module or ``torch.load``
            without ``weights_only``). Unpickling runs code from the file: trusted files only.
        **options: keyword arguments for a spec's callable.

    Raises:
        InputError: missing, corrupt or unsupported file; bad spec; weights that do not fit.
    """
    if is_spec(source):
        model = _from_spec(str(source), options)
    else:
        if options:
            raise InputError(
                f"options {sorted(options)} apply only to a spec 'package.module:callable' "
                f"(they are passed to the callable); {str(source)!r} is a file"
            )
        model = _from_file(_existing(source), allow_pickle)
    if weights is not None:
        apply_weights(model, weights, allow_pickle=allow_pickle)
    return model


def _existing(source: str | Path) -> Path:
    path = Path(source).expanduser()
    if path.is_file():
        return path
    if path.is_dir():
        raise InputError(
            f"model {str(source)!r} is a directory; pass a model file: {_FORMATS} "
            "(SavedModel directories are not supported: re-save as .keras)"
        )
    text = str(source)
    if path.suffix.lower() in MODEL_SUFFIXES:
        raise InputError(f"model file {text!r} does not exist; check the path")
    if ":" in text and not re.match(r"[A-Za-z]:[\\/]", text):
        raise InputError(
            f"model spec {text!r} is malformed; write 'package.module:callable' with one colon, "
            "e.g. 'innersight.models:digits_cnn'"
        )
    if path.suffix.lower() in _OTHER_FORMATS:
        raise InputError(
            f"model file {text!r} does not exist, and {path.suffix} files are not a format "
            f"innersight loads; pass {_FORMATS}"
        )
    if re.fullmatch(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)+", text):
        raise InputError(
            f"{text!r} is neither an existing model file nor a spec: a spec separates the module "
            "from the callable with a colon, e.g. 'innersight.models:digits_cnn'"
        )
    raise InputError(f"model {text!r} does not exist; pass {_FORMATS}")


# Model formats of other tools: a missing file with one of these names is a path mistake.
_OTHER_FORMATS = frozenset({".onnx", ".pb", ".tflite", ".pth", ".pkl", ".bin", ".safetensors"})


def _from_file(path: Path, allow_pickle: bool) -> Any:
    name = path.name.lower()
    if name.endswith(".weights.h5"):
        raise InputError(
            f"{path.name!r} holds Keras weights only, not a model; pass a spec that builds the "
            f"model and this file as its weights (--weights {path.name})"
        )
    if name.endswith(KERAS_SUFFIXES):
        return _load_keras(path, allow_pickle)
    if name.endswith(".pt2"):
        return _load_exported(path)
    if name.endswith(TORCH_SUFFIXES):
        return _load_torch(path, allow_pickle)
    raise InputError(
        f"cannot tell the format of model file {path.name!r} from its extension "
        f"{path.suffix or '(none)'!r}; supported: {', '.join(MODEL_SUFFIXES)}. Pass {_FORMATS}"
    )


def _import_keras() -> Any:
    with contextlib.suppress(ImportError):  # torch before TensorFlow: the other order crashes
        import torch  # noqa: F401
    try:
        import keras  # type: ignore[import-untyped,unused-ignore]
    except ImportError as err:
        raise InputError(
            "reading a Keras model needs keras and TensorFlow: pip install 'innersight[keras]'"
        ) from err
    return keras


def _import_torch() -> Any:
    try:
        import torch
    except ImportError as err:
        raise InputError(
            "reading a torch model needs torch: pip install 'innersight[torch]'"
        ) from err
    return torch


def _load_keras(path: Path, allow_pickle: bool) -> Any:
    if path.suffix.lower() == ".keras":
        _zip_names(
            path, "keras"
        )  # a damaged archive gets a clear message, not Keras' "File not found"
    keras = _import_keras()
    try:
        return keras.saving.load_model(str(path), safe_mode=not allow_pickle, compile=False)
    except Exception as err:
        hint = ""
        if "safe_mode" in str(err) or "lambda" in str(err).lower():
            hint = "; it holds Python code (a Lambda layer): if you trust it, pass --unsafe"
        elif "custom" in str(err).lower() or "Could not locate" in str(err):
            hint = "; it uses custom layers: build it with a spec 'package.module:callable' instead"
        raise InputError(
            f"could not read Keras model {path.name!r}: {first_line(err)}{hint or _CORRUPT}"
        ) from err


_CORRUPT = "; the file may be truncated or corrupt, or saved by an incompatible version"


def _zip_names(path: Path, kind: str) -> list[str] | None:
    """The archive's member names; None for a torch file that is a legacy (non-zip) pickle."""
    try:
        with zipfile.ZipFile(path) as archive:
            return archive.namelist()
    except (zipfile.BadZipFile, OSError) as err:
        with path.open("rb") as f:
            head = f.read(4)
        if head.startswith(b"PK"):
            raise InputError(
                f"{path.name!r} is a damaged zip archive ({err}); the file may be truncated or "
                "corrupt: save or download it again"
            ) from err
        if kind == "torch" and head.startswith(b"\x80"):
            return None
        what = "a .keras archive" if kind == "keras" else "a TorchScript archive or torch.save file"
        raise InputError(
            f"{path.name!r} is not {what} (it starts with {head!r}); the file may be corrupt or "
            f"of another format: pass {_FORMATS}"
        ) from err


def _load_torch(path: Path, allow_pickle: bool) -> Any:
    torch = _import_torch()
    names = _zip_names(path, "torch")
    scripted = names is not None and any(
        "/code/__torch__" in n or n.endswith("/constants.pkl") for n in names
    )
    if scripted:
        try:
            return torch.jit.load(str(path), map_location="cpu")
        except Exception as err:
            raise InputError(
                f"could not read TorchScript model {path.name!r}: {first_line(err)}{_CORRUPT}"
            ) from err
    if not allow_pickle:
        raise InputError(
            f"{path.name!r} is not a TorchScript archive but a pickled torch file (torch.save of "
            "a module or state_dict); loading it would run code from the file. Save the model "
            "with torch.jit.script(model).save(...) or torch.export, or pass a spec "
            "'package.module:callable' with this file as --weights (state_dict), or, if you "
            "trust the file, --unsafe (allow_pickle=True)"
        )
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=False)
    except Exception as err:
        raise InputError(f"could not read {path.name!r}: {first_line(err)}{_CORRUPT}") from err
    if isinstance(obj, torch.nn.Module):
        return obj.eval()
    what = "a state_dict" if isinstance(obj, Mapping) else f"a {type(obj).__name__}"
    raise InputError(
        f"{path.name!r} holds {what}, not a model; pass a spec 'package.module:callable' that "
        f"builds the model, with this file as its weights (--weights {path.name})"
    )


def _load_exported(path: Path) -> Any:
    torch = _import_torch()
    try:
        program = torch.export.load(str(path))
        module = program.module()
    except Exception as err:
        raise InputError(
            f"could not read torch.export program {path.name!r}: {first_line(err)}{_CORRUPT}"
        ) from err
    _check_dynamic_batch(program, path)
    return module


def _check_dynamic_batch(program: Any, path: Path) -> None:
    """innersight runs batches; a program exported for one fixed batch size cannot take them."""
    for node in program.graph.nodes:
        if node.op != "placeholder" or node.name not in program.graph_signature.user_inputs:
            continue
        shape = getattr(node.meta.get("val"), "shape", None)
        if shape and isinstance(shape[0], int):
            raise InputError(
                f"torch.export program {path.name!r} was exported for a fixed batch size of "
                f"{shape[0]} (input shape {tuple(shape)}); innersight runs batches. Re-export "
                "with a dynamic batch axis: torch.export.export(model, (x,), dynamic_shapes="
                "({0: torch.export.Dim('batch')},))"
            )


def _from_spec(spec: str, options: Mapping[str, Any]) -> Any:
    module_name, _, attr_path = spec.partition(":")
    module = _import_module(module_name, spec)
    target: Any = module
    for part in attr_path.split("."):
        if not hasattr(target, part):
            names = [
                n
                for n, v in vars(module).items()
                if not n.startswith("_") and callable(v) and not isinstance(v, type(sys))
            ]
            raise InputError(
                f"model spec {spec!r}: module {module_name!r} has no attribute {attr_path!r}; "
                f"{summarize_names(sorted(names), 'callables')}{did_you_mean(attr_path, names)}"
            )
        target = getattr(target, part)
    if not callable(target):
        raise InputError(
            f"model spec {spec!r} names a {type(target).__name__}, not a callable; name a "
            "function or class that builds the model"
        )
    try:
        model = target(**options)
    except TypeError as err:
        raise InputError(f"model spec {spec!r} could not be called: {err}") from err
    if not _is_model(model):
        raise InputError(
            f"model spec {spec!r} returned {type(model).__module__}.{type(model).__name__}, "
            "expected a torch nn.Module or a Keras model"
        )
    return model


def _import_module(name: str, spec: str) -> Any:
    added = "" not in sys.path and str(Path.cwd()) not in sys.path
    if added:  # like `python -m`: modules in the current directory are importable
        sys.path.insert(0, str(Path.cwd()))
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as err:
        raise InputError(
            f"model spec {spec!r}: cannot import module {name!r} ({err}); check the spelling, "
            "install its package, or run from the directory that holds it"
        ) from err
    finally:
        if added:
            sys.path.remove(str(Path.cwd()))


def _is_model(obj: Any) -> bool:
    torch, keras = sys.modules.get("torch"), sys.modules.get("keras")
    if torch is not None and isinstance(obj, torch.nn.Module):
        return True
    return keras is not None and isinstance(obj, getattr(keras, "Model", ()))
