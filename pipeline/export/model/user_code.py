"""Import the user's own modules before a model is loaded, so their registered Keras classes deserialise."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

from mcdrop.pipeline.export.errors import ExportError
from mcdrop.serving.errors import InvalidArgument

IMPORT_HINT = (
    "If the model uses your own layers, pass the module or .py file that defines them (registered with "
    "@keras.saving.register_keras_serializable) with --import MODULE_OR_FILE."
)


def import_user_code(target: str) -> ModuleType:
    """Import a module by dotted name, or a ``.py`` file by path (its folder goes on ``sys.path``, so it can
    import its neighbours).

    Raises:
        InvalidArgument: no such module or file.
        ExportError: the module raised while being imported.
    """
    path = Path(target)
    is_file = target.endswith(".py") or path.is_file() or "/" in target
    if is_file and not path.is_file():
        raise InvalidArgument(f"--import {target}: no such file. Expected a Python module name or a .py file.")
    try:
        if is_file:
            return _import_file(path.resolve())
        return importlib.import_module(target)
    except ModuleNotFoundError as exc:
        if not is_file and exc.name is not None and target.startswith(exc.name):
            raise InvalidArgument(
                f"--import {target}: no module named {exc.name!r}. Expected an importable module name or a .py file."
            ) from exc
        raise ExportError(f"Importing {target} failed: {type(exc).__name__}: {exc}") from exc
    except (InvalidArgument, ExportError):
        raise
    except Exception as exc:
        raise ExportError(f"Importing {target} failed: {type(exc).__name__}: {exc}") from exc


def _import_file(path: Path) -> ModuleType:
    name = f"mcdrop_user_{path.stem}_{abs(hash(str(path))):x}"
    if name in sys.modules:
        return sys.modules[name]
    if str(path.parent) not in sys.path:
        sys.path.insert(0, str(path.parent))
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise InvalidArgument(f"--import {path}: cannot be imported as a Python file.")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module
