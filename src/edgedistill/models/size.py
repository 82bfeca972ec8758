"""Parameter counts and storage size: the numbers an edge target's flash/RAM budget is checked against; and the
budget every network must fit before it is built (``check_budget``, on the meta device: no memory is allocated)."""
from __future__ import annotations

from typing import Any, Callable, Optional

import torch
from torch import nn
from torch.nn.parameter import UninitializedParameter

from edgedistill.errors import UserInputError

#: Parameters of any network a recipe builds (teacher, assistant or student): 50 M parameters are 200 MB of fp32
#: weights and ~800 MB with gradients and Adam's two moments, ten times the largest zoo model (resnet32x4, 7.4 M);
#: beyond it a knob is a typo (``width: 100000``) that would allocate gigabytes before failing.
MAX_PARAMS = 50_000_000
#: Values every operation of one forward pass produces for ONE sample (what autograd keeps for backward): 250 M
#: values are 1 GB per sample in fp32, so a batch of 64 would need 64 GB; the zoo on its bundled data stays under 5 M.
MAX_ACTIVATIONS = 250_000_000
#: Layers (submodule registrations while a network is built): the deepest zoo model (wrn_40_2) has 140; building
#: ``depth: 100000`` would take minutes of Python before any size is known, so the meta build stops at this count.
MAX_MODULES = 2_000
# Builds already found within budget in this process: a run builds the same student and teacher once per seed,
# and each meta-device check costs ~0.2 s of Python (2.4 s of a quickstart run's start before this).
_WITHIN_BUDGET: set[tuple[Any, ...]] = set()


#: Verdicts "within budget" kept between processes, in the cache folder: the meta-device forward pass imports torch's
#: symbolic-shape machinery (sympy), ~1.5 s in every process that builds a network (a run and each --jobs worker).
#: Only for the zoo's own builders, keyed by the builder's source file (size and mtime) and the budget constants.
VERDICTS_FILE = "within_budget.json"
_KEPT: Optional[set[str]] = None


def _kept_key(key: Optional[tuple[Any, ...]]) -> Optional[str]:
    import inspect
    import os

    if key is None or not str(getattr(key[0], "__module__", "")).startswith("edgedistill."):
        return None
    try:
        source = os.stat(inspect.getsourcefile(key[0]) or "")
    except (OSError, TypeError):
        return None
    made = (key[0].__module__, key[0].__qualname__, source.st_size, source.st_mtime_ns, MAX_PARAMS, MAX_ACTIVATIONS,
            MAX_MODULES)
    return repr(made + key[1:])


def _kept_verdicts() -> set[str]:
    global _KEPT
    if _KEPT is None:
        from edgedistill.io import read_json
        from edgedistill.paths import default_cache_dir

        try:
            got = read_json(default_cache_dir() / VERDICTS_FILE)
            _KEPT = {v for v in got if isinstance(v, str)} if isinstance(got, list) else set()
        except (OSError, ValueError):  # none yet, or damaged: measured again, and rewritten
            _KEPT = set()
    return _KEPT


def _keep_verdict(kept: Optional[str]) -> None:
    if kept is None or kept in _kept_verdicts():
        return
    from edgedistill.errors import EdgeDistillError
    from edgedistill.io import write_json
    from edgedistill.paths import existing_cache_dir

    _kept_verdicts().add(kept)
    cache = existing_cache_dir()
    if cache is None:  # (checking a model never creates the cache folder: a refused run writes nothing)
        return
    try:
        write_json(cache / VERDICTS_FILE, sorted(_kept_verdicts()))
    except (OSError, EdgeDistillError):  # a read-only cache folder: measured in every process, as before
        pass


class _TooManyModules(Exception):
    pass


def _check_initialised(model: nn.Module) -> None:
    # Lazy layers have no shape until the first forward; counting them would silently report 0.
    if any(isinstance(p, UninitializedParameter) for p in model.parameters()):
        raise UserInputError(
            f"{type(model).__name__} has uninitialised lazy parameters; run one forward pass before sizing it"
        )


#: A module whose weights torch does not hold (an ONNX teacher run by onnxruntime, a teacher given by its recorded
#: outputs) says its size in this attribute: {"params": int | None, "size_kb": float | None}, None where unknown.
SIZE_ATTR = "edgedistill_size"


def count_params(model: nn.Module, trainable_only: bool = False) -> Optional[int]:
    """Number of parameters; shared (tied) parameters are counted once. None for a module of unknown size (a
    teacher given by its outputs): never 0, which a size ordering or a report would read as a tiny model."""
    given = getattr(model, SIZE_ATTR, None)
    if given is not None:
        return 0 if trainable_only else given["params"]
    _check_initialised(model)
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def size_kb(model: nn.Module) -> Optional[float]:
    """KiB of parameters plus buffers (BN statistics included) in the dtypes they are stored in (None: unknown)."""
    given = getattr(model, SIZE_ATTR, None)
    if given is not None:
        return given["size_kb"]
    _check_initialised(model)
    tensors = list(model.parameters()) + list(model.buffers())
    return sum(t.numel() * t.element_size() for t in tensors) / 1024


def describe(model: nn.Module) -> dict[str, Any]:
    """Summary for reports: parameter counts and storage size (no name: callers add the zoo name)."""
    return {
        "params": count_params(model),
        "trainable_params": count_params(model, trainable_only=True),
        "size_kb": None if (kb := size_kb(model)) is None else round(kb, 3),
    }


def _activations(model: nn.Module, x: torch.Tensor) -> int | None:
    """Values the layers of ``model(x)`` output on the meta device (every leaf module's outputs, plus each attention's
    (heads, queries, keys) weight matrix, which no module returns); None when the model cannot run on meta tensors
    (data-dependent code): then only its parameters are bounded here and the real dry run does the rest."""
    total = 0

    def leaf(module: nn.Module, args: Any, out: Any) -> None:
        nonlocal total
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                total += t.numel()

    def attention(module: nn.MultiheadAttention, args: Any, kwargs: Any, out: Any) -> None:
        nonlocal total
        q, k = (args + (kwargs.get("query"), kwargs.get("key")))[:2] if len(args) < 2 else args[:2]
        if isinstance(q, torch.Tensor) and isinstance(k, torch.Tensor):
            batch = q.shape[0] if module.batch_first else q.shape[1]
            total += batch * module.num_heads * q.shape[-2 if module.batch_first else 0] * k.shape[-2 if module.batch_first else 0]

    hooks = []
    for module in model.modules():
        if isinstance(module, nn.MultiheadAttention):
            hooks.append(module.register_forward_hook(attention, with_kwargs=True))
        elif not any(True for _ in module.children()):
            hooks.append(module.register_forward_hook(leaf))
    try:
        with torch.no_grad():
            model(x)
    except Exception:  # noqa: BLE001 - data-dependent code cannot run on meta; the real dry run still checks it
        return None
    finally:
        for h in hooks:
            h.remove()
    return total


def check_budget(factory: Callable[..., nn.Module], in_channels: int, n_outputs: int, input_size: tuple[int, ...],
                 knobs: dict[str, Any], where: str, name: str) -> None:
    """Build ``factory`` on the meta device (shapes only, no memory) and refuse it, naming ``where`` and its knobs,
    when it has more than ``MAX_PARAMS`` parameters or one sample's forward pass more than ``MAX_ACTIVATIONS``."""
    from torch.nn.modules.module import register_module_module_registration_hook

    key: Optional[tuple[Any, ...]] = (factory, in_channels, n_outputs, tuple(input_size), repr(sorted(knobs.items())))
    try:
        if key in _WITHIN_BUDGET:
            return
    except TypeError:  # an unhashable factory (a user's callable object): checked every time
        key = None
    kept = _kept_key(key)
    if kept is not None and kept in _kept_verdicts():
        _WITHIN_BUDGET.add(key)
        return
    given = ", ".join(f"{k}={v!r}" for k, v in knobs.items()) or "default options"
    registered = 0

    def count(module: nn.Module, name: str, submodule: nn.Module) -> None:
        nonlocal registered
        registered += 1
        if registered > MAX_MODULES:
            raise _TooManyModules

    handle = register_module_module_registration_hook(count)
    try:
        with torch.device("meta"):
            model = factory(in_channels, n_outputs, tuple(input_size), **knobs)
    except _TooManyModules:
        raise UserInputError(f"{where}: model '{name}' with {given} would have more than {MAX_MODULES:,} layers "
                             "(submodules); make it shallower") from None
    except RuntimeError as exc:
        if "overflow" in str(exc):  # a tensor too large to even describe: far over any budget
            raise UserInputError(f"{where}: model '{name}' with {given} would have more than 2^63 parameters; the "
                                 f"budget is {MAX_PARAMS:,} (make it narrower or shallower)") from None
        return  # the real build reports it with its message; only size is judged here
    except Exception:  # noqa: BLE001 - the real build reports a bad knob with its message; only size is judged here
        return
    finally:
        handle.remove()
    if any(isinstance(p, UninitializedParameter) for p in model.parameters()):
        return  # lazy layers have no size before a forward pass; the real build and dry run size them
    params = sum(p.numel() for p in model.parameters())
    if params > MAX_PARAMS:
        raise UserInputError(f"{where}: model '{name}' with {given} would have {params:,} parameters; the budget is "
                             f"{MAX_PARAMS:,} (make it narrower or shallower)")
    acts = _activations(model, torch.zeros((1, in_channels, *input_size), device="meta"))
    if acts is not None and acts > MAX_ACTIVATIONS:
        raise UserInputError(f"{where}: model '{name}' with {given} on inputs of shape {(in_channels, *input_size)} "
                             f"would compute {acts:,} values per sample; the budget is {MAX_ACTIVATIONS:,} (a smaller "
                             "model, or shorter windows: data.window)")
    if key is not None:
        _WITHIN_BUDGET.add(key)
        _keep_verdict(kept)
