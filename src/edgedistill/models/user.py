"""The user's own model classes, named in a recipe by import path: ``model: my_pkg.nets:WristNet`` (a module on
``sys.path``) or ``model: ./nets.py:WristNet`` (a Python file, relative to the recipe's folder). Every other key of
the section is a keyword argument of the class's constructor.

Data arguments: a constructor that takes ``in_channels``, ``n_outputs`` (or ``num_classes`` / ``n_classes``) or
``input_size`` and is not given them by the recipe gets them from the data (channels of the view it reads, classes
or regression targets, ``(length,)`` or ``(height, width)``), so one class fits any data set; the note printed when
the class is first built says which were filled.

Security: naming code in a recipe runs that code. A recipe that names ``pkg.mod:Class`` imports ``pkg.mod`` (its
import-time code runs) and calls ``Class(**options)``; one that names ``nets.py:Class`` executes that file. So:

- the module part must be a dotted name of identifiers, and neither the standard library (``sys.stdlib_module_names``)
  nor ``edgedistill`` itself: a recipe cannot reach ``os:system``, ``subprocess:run`` or ``antigravity:...``;
- a file must be a regular ``.py`` file (not a folder, FIFO or device);
- the attribute must be a class that subclasses ``torch.nn.Module``, checked before anything is called;
- ``EDGEDISTILL_NO_USER_CODE=1`` refuses every import path, for a service that runs recipes it does not trust
  (only zoo models are built then).

What is imported is said once per process on stderr (``note: student.model: ...``). A file module is loaded under a
stable name derived from its path (``edgedistill_user_<hash>``) and registered in ``sys.modules``: the same file is
executed once per process, and again only when its bytes change (so what runs is what ``source_identity`` hashed).
A file module imports its sibling files only when their folder is on ``sys.path``: for several files, use a package.
Import-path modules are imported from ``sys.path`` as it is; the working folder is not added.

``source_identity`` hashes the defining file of the class and of its bases outside torch and edgedistill, for cache
keys: an edited class never reuses a teacher trained from the old code (helper modules it imports are not hashed).
"""
from __future__ import annotations

import difflib
import hashlib
import importlib
import importlib.util
import inspect
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, Optional

from edgedistill.errors import UserInputError, short_repr
from edgedistill.paths import regular_file
from edgedistill.recipe_paths import model_file

if TYPE_CHECKING:
    from torch import nn

#: Set to 1 to refuse every model given by import path (a service running recipes it does not trust).
NO_USER_CODE = "EDGEDISTILL_NO_USER_CODE"
#: Constructor arguments filled from the data when the class takes them and the recipe does not set them.
DATA_ARGUMENTS = ("in_channels", "n_outputs", "num_classes", "n_classes", "input_size")

_DOTTED = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_UNEXPECTED = re.compile(r"unexpected keyword argument '(?P<name>[^']+)'")
_ANNOUNCED: set[tuple[str, str]] = set()


@dataclass(frozen=True)
class UserRef:
    """A parsed import path: ``module`` (dotted) or ``file`` (a .py file), and the class ``attr`` in it."""

    text: str
    attr: str
    module: Optional[str] = None
    file: Optional[Path] = None

    @property
    def where(self) -> str:
        return f"file '{self.file}'" if self.file is not None else f"module '{self.module}'"


def parse_ref(name: str, key: str = "model") -> UserRef:
    """Split ``name`` into module or file and class name; the form and the blocked modules are refused here, before
    anything is imported or read."""
    if os.environ.get(NO_USER_CODE, "").strip() not in ("", "0"):
        raise UserInputError(f"{key}: '{short_repr(name, 120)[1:-1]}' names Python code, and {NO_USER_CODE} is set: "
                             "this installation runs no user code from recipes; use a zoo model (edgedistill list models)")
    where, _, attr = name.rpartition(":")
    if not _IDENTIFIER.fullmatch(attr) or not where:
        raise UserInputError(f"{key}: expected a zoo name, 'package.module:Class' or 'path/to/file.py:Class', got "
                             f"{short_repr(name, 120)}")
    file = model_file(name)
    if file is not None:
        return UserRef(name, attr, file=Path(file).expanduser())
    if not _DOTTED.fullmatch(where):
        raise UserInputError(f"{key}: '{short_repr(where, 120)[1:-1]}' is neither a module name (dotted identifiers, "
                             "e.g. my_pkg.nets) nor a Python file ending in .py")
    top = where.split(".")[0]
    if top == "edgedistill":
        raise UserInputError(f"{key}: '{name}' names edgedistill itself; give a zoo model by its name "
                             "(edgedistill list models)")
    if top in sys.stdlib_module_names:
        raise UserInputError(f"{key}: '{name}' names the Python standard library ('{top}'); a model must be your own "
                             "class (a module of your package, or a .py file), so a recipe cannot call library functions")
    return UserRef(name, attr, module=where)


def _import_file(path: Path, key: str) -> ModuleType:
    """Execute ``path`` as a module named after its resolved path, once per content (module docstring)."""
    path = regular_file(path, f"{key}: the file")
    resolved = path.resolve()
    try:
        code = resolved.read_bytes()
    except OSError as exc:
        raise UserInputError(f"{key}: cannot read '{path}' ({exc.strerror or exc})") from None
    digest = hashlib.sha256(code).hexdigest()
    name = "edgedistill_user_" + hashlib.sha256(str(resolved).encode()).hexdigest()[:16]
    loaded = sys.modules.get(name)
    if loaded is not None and getattr(loaded, "__edgedistill_sha256__", None) == digest:
        return loaded
    spec = importlib.util.spec_from_file_location(name, resolved)
    if spec is None:
        raise UserInputError(f"{key}: '{path}' cannot be loaded as a Python module")
    module = importlib.util.module_from_spec(spec)
    module.__edgedistill_sha256__ = digest  # type: ignore[attr-defined]
    sys.modules[name] = module  # before executing: dataclasses and pickling look the module up by name
    try:
        # Compiled from the bytes just hashed: what runs is exactly what source_identity and the run's config record.
        exec(compile(code, str(resolved), "exec"), module.__dict__)  # noqa: S102 - the user's own model file (docstring)
    except Exception as exc:  # noqa: BLE001 - any error in the user's file is the user's input, named
        sys.modules.pop(name, None)
        raise UserInputError(f"{key}: running '{path}' raised {type(exc).__name__}: {_first_line(exc)}") from None
    return module


def _import_module(dotted: str, key: str) -> ModuleType:
    try:
        return importlib.import_module(dotted)
    except ModuleNotFoundError as exc:
        if exc.name and (dotted == exc.name or dotted.startswith(exc.name + ".")):
            raise UserInputError(f"{key}: cannot import module '{dotted}' (is the package installed or on PYTHONPATH? "
                                 "A file can be named directly: ./nets.py:Class)") from None
        raise UserInputError(f"{key}: importing '{dotted}' failed: {_first_line(exc)}") from None
    except Exception as exc:  # noqa: BLE001 - any error in the user's module is the user's input, named
        raise UserInputError(f"{key}: importing '{dotted}' raised {type(exc).__name__}: {_first_line(exc)}") from None


def user_class(name: str, key: str = "model") -> type[nn.Module]:
    """The class ``name`` refers to, imported (or its file executed); refused unless it subclasses nn.Module."""
    from torch import nn

    ref = parse_ref(name, key)
    module = _import_file(ref.file, key) if ref.file is not None else _import_module(str(ref.module), key)
    obj = getattr(module, ref.attr, None)
    if obj is None:
        classes = [n for n, v in vars(module).items() if inspect.isclass(v) and issubclass(v, nn.Module)
                   and getattr(v, "__module__", None) == module.__name__]
        close = difflib.get_close_matches(ref.attr, classes, n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        listed = ", ".join(classes) or "(none)"
        raise UserInputError(f"{key}: {ref.where} has no '{ref.attr}'; its nn.Module classes: {listed}.{hint}")
    if not (inspect.isclass(obj) and issubclass(obj, nn.Module)):
        kind = "a class" if inspect.isclass(obj) else f"a {type(obj).__name__}"
        raise UserInputError(f"{key}: '{ref.attr}' in {ref.where} is {kind}, not a subclass of torch.nn.Module")
    return obj


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__


def _signature(cls: type) -> Optional[inspect.Signature]:
    try:
        return inspect.signature(cls)
    except (TypeError, ValueError):
        return None


def build_user_model(name: str, in_channels: int, n_outputs: int, input_size: tuple[int, ...], key: Optional[str] = None,
                     **knobs: Any) -> nn.Module:
    """``Class(**knobs)`` for the class ``name`` names, with the data arguments it takes filled (module docstring);
    every mistake is a one-line ``UserInputError`` naming ``key.model`` or ``key.<argument>``."""
    from edgedistill.params import signature_params

    where = key or "model"
    cls = user_class(name, f"{where}.model" if key else "model")
    label = f"model '{Path(name).name if model_file(name) else name}'"
    sig = _signature(cls)
    kwargs = dict(knobs)
    filled: dict[str, Any] = {}
    if sig is not None:
        data = {"in_channels": in_channels, "n_outputs": n_outputs, "num_classes": n_outputs, "n_classes": n_outputs,
                "input_size": tuple(input_size)}
        filled = {arg: data[arg] for arg in DATA_ARGUMENTS if arg in sig.parameters and arg not in kwargs}
        kwargs.update(filled)
        init = cls.__init__
        if inspect.isfunction(init):  # the recipe's options, typed by the constructor's annotations or defaults
            signature_params(init, skip=("self",), noun="argument").parse(knobs, where, what=label)
        for p in sig.parameters.values():
            if p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD) and p.name not in kwargs:
                raise UserInputError(f"{where}.{p.name}: {label} needs the argument '{p.name}'; set it in the "
                                     f"recipe's {where} section")
    try:
        model = cls(**kwargs)
    except UserInputError:
        raise
    except Exception as exc:  # noqa: BLE001 - the user's constructor: whatever it raises is named with its options
        unexpected = _UNEXPECTED.search(str(exc)) if isinstance(exc, TypeError) else None
        if unexpected:
            raise UserInputError(f"{where}.{unexpected['name']}: {label} takes no argument "
                                 f"'{unexpected['name']}'") from None
        given = ", ".join(f"{k}={short_repr(v)}" for k, v in kwargs.items()) or "no arguments"
        raise UserInputError(f"{where}: {label} with {given} raised {type(exc).__name__}: {_first_line(exc)}") from None
    _announce(where, name, cls, filled)
    return model


def _announce(where: str, name: str, cls: type, filled: dict[str, Any]) -> None:
    """Say once per process which code a recipe's key ran: importing it is the user's choice, never silent."""
    if (where, name) in _ANNOUNCED:
        return
    _ANNOUNCED.add((where, name))
    origin = inspect.getsourcefile(cls) if inspect.getmodule(cls) is not None else None
    from_data = f"; {', '.join(f'{k}={v}' for k, v in filled.items())} from the data" if filled else ""
    print(f"note: {where}.model: your class {cls.__name__} from {origin or cls.__module__}{from_data}",
          file=sys.stderr, flush=True)


def source_identity(name: str) -> str:
    """sha256 over the bytes of the files defining the class and its bases outside torch, edgedistill and the
    standard library, in method resolution order: an edited class (or base class) gets another cache key."""
    cls = user_class(name, "model")
    digest = hashlib.sha256()
    seen: set[str] = set()
    for base in cls.__mro__:
        top = (getattr(base, "__module__", "") or "").split(".")[0]
        if top in ("torch", "edgedistill", "builtins") or top in sys.stdlib_module_names:
            continue
        try:
            source = inspect.getsourcefile(base)
        except TypeError:  # a class without a file (built in C, or made at run time)
            source = None
        if source is None:
            digest.update(f"{base.__module__}:{base.__qualname__}".encode())
            continue
        if source in seen:
            continue
        seen.add(source)
        try:
            digest.update(hashlib.sha256(Path(source).read_bytes()).digest())
        except OSError as exc:
            raise UserInputError(f"model: cannot read '{source}', the source of {base.__qualname__} "
                                 f"({exc.strerror or exc})") from None
    return digest.hexdigest()
