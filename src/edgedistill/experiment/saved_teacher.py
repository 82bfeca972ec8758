"""A saved teacher (``teacher: {load: PATH}``): weights of a zoo or import-path model, or a program that carries
its own architecture (TorchScript, a ``torch.export`` ``.pt2``, ONNX). It is evaluated and distilled from, never
trained (docs/models.md).

The format is read from the file's content (zip member names, leading bytes), the suffix only breaking a tie, and
nothing is unpickled beyond tensors: weights load with ``weights_only=True`` (engine/checkpoint.py); programs load
through their own loaders, which rebuild a graph of tensor operations, not Python objects. A file that only
``pickle`` could read (``torch.save(model)``) is refused with what to save instead, because unpickling a file runs
whatever code it names.

A program gives only its outputs: its layers are not the Python modules feature losses hook, so a program teacher
carries ``edgedistill_outputs_only`` (what it is) and models/taps.py refuses a tap on it with that text.
"""
from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from torch import nn

from edgedistill.config import TeacherConfig
from edgedistill.data.dataset import DataInfo
from edgedistill.engine import checkpoint as ckpt
from edgedistill.errors import UserInputError
from edgedistill.paths import regular_file

#: What to do with a file that only pickle could read (a whole model saved with torch.save(model)).
SAVE_INSTEAD = ("save model.state_dict() and give 'model:' (its class) with load:, or save a program: "
                "torch.jit.save, torch.export.save or ONNX (docs/models.md)")
#: Where a full checkpoint keeps the weights, in the order they are looked for.
STATE_KEYS = ("state_dict", "model_state_dict", "networks.student")
#: Format names as reports and messages give them.
PROGRAMS = {"torchscript": "TorchScript", "export": "torch.export (.pt2)", "onnx": "ONNX"}
ARTICLES = {"torchscript": "a", "export": "a", "onnx": "an"}


def load_teacher(cfg: TeacherConfig, info: DataInfo, key: str, view: str) -> nn.Module:
    """The teacher saved at ``cfg.load``, ready to evaluate on ``view`` (checked to give ``(batch, n_outputs)``)."""
    path, kind = _source(cfg, key)
    shape = tuple(info.views.get(view, info.input_shape))
    if kind == "weights":
        return _weights_teacher(cfg, info, key, path, shape)
    net = _program(path, kind, shape, key)
    check_outputs(net, shape, info.n_outputs, f"{key}.load '{path}'")
    return net


def _source(cfg: TeacherConfig, key: str) -> tuple[Path, str]:
    """The file and its format, with ``model`` given exactly when the format needs it (weights do, programs not)."""
    path = Path(str(cfg.load))
    regular_file(path, f"{key}.load")
    kind = detect_format(path, key)
    if kind == "weights" and cfg.model is None:
        _read_weights(path, f"{key}.load")  # a pickled whole model is refused for what it is first
        raise UserInputError(f"{key}.model: '{path}' holds weights (a state_dict), which need the model they belong "
                             "to: add model: <zoo name or import path> and its options")
    if kind != "weights" and cfg.model is not None:
        raise UserInputError(f"{key}.model: '{path}' is {ARTICLES[kind]} {PROGRAMS[kind]} program, which carries its "
                             "own architecture; remove 'model' (and its options), or give weights to load into model")
    return path, kind


def detect_format(path: Path, key: str) -> str:
    """"weights" (a torch.save file: state_dict or checkpoint), "torchscript", "export" (.pt2) or "onnx", from the
    file's content; anything else is a ``UserInputError`` naming ``key`` and the file."""
    with open(path, "rb") as fh:
        head = fh.read(8)
    if zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as archive:
                members = {name.split("/", 1)[-1] for name in archive.namelist()}
        except (zipfile.BadZipFile, OSError, ValueError) as exc:
            raise UserInputError(f"{key}.load: '{path}' is a damaged zip archive ({exc})") from None
        if "archive_format" in members:
            return "export"
        if "constants.pkl" in members or any(m.startswith("code/") for m in members):
            return "torchscript"
        if "data.pkl" in members:
            return "weights"
        hint = "; a .npz of the teacher's outputs goes in outputs:, not load:" if path.suffix == ".npz" else ""
        raise UserInputError(f"{key}.load: '{path}' is a zip archive but not a torch.save, TorchScript or torch.export "
                             f"file{hint}")
    if head.startswith(b"PK"):
        raise UserInputError(f"{key}.load: '{path}' starts like a zip archive but cannot be read as one: truncated?")
    if head[:1] == b"\x80":  # a pickle: torch.save's legacy (non-zip) format; weights-only loading decides the rest
        return "weights"
    if head[:1] == b"\x08" or path.suffix.lower() == ".onnx":  # an ONNX ModelProto starts with its ir_version field
        return "onnx"
    raise UserInputError(f"{key}.load: '{path}' is none of the formats a saved teacher can be: weights (torch.save of a "
                         "state_dict or checkpoint), TorchScript (torch.jit.save), torch.export (.pt2) or ONNX")


# -- weights of cfg.model ---------------------------------------------------------------------------------------------
def _weights_teacher(cfg: TeacherConfig, info: DataInfo, key: str, path: Path, shape: tuple[int, ...]) -> nn.Module:
    from edgedistill.models import build_model

    model = build_model(str(cfg.model), shape[0], info.n_outputs, tuple(shape[1:]), key=key, **cfg.kwargs)
    model.edgedistill_loaded = load_weights(model, path, f"{key}.load", SAVE_INSTEAD)  # type: ignore[assignment]
    return model


def load_weights(model: nn.Module, path: Path, key: str, hint: str = ckpt.RESAVE) -> str:
    """Load the weights a file holds for ``model`` (a plain state_dict, or one inside a checkpoint: ``find_state_dict``;
    a prefix stripped where that makes the keys fit: ``strip_prefix``), weights-only; returns where they came from,
    in words. Serves ``teacher.load`` and every ``checkpoint`` key (``key`` names the one a message is about;
    ``hint`` is what a message about an unreadable file tells the user to do)."""
    state, where = _read_weights(path, key, hint)
    state, prefix = strip_prefix(state, set(model.state_dict()))
    source = f"{key} '{path}'" + (f" (key '{where}')" if where else "") + (
        f" (prefix '{prefix}' stripped)" if prefix else "")
    ckpt.load_state_dict_checked(model, state, source)
    return source


def _read_weights(path: Path, key: str, hint: str = SAVE_INSTEAD) -> tuple[dict[str, Any], str]:
    """The state_dict in a weights-only torch file and where it was in it (``find_state_dict``)."""
    try:
        obj = ckpt.load(path, hint=hint)
    except UserInputError as exc:
        raise UserInputError(f"{key}: {exc}") from None
    return find_state_dict(obj, f"{key} '{path}'")


def find_state_dict(obj: dict[str, Any], source: str) -> tuple[dict[str, Any], str]:
    """The weights in a loaded file and where they were (``""`` for a plain state_dict): under ``state_dict``
    (Lightning), ``model_state_dict`` or ``networks.student`` (this toolkit's run checkpoints)."""
    if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return obj, ""
    for where in STATE_KEYS:
        found: Any = obj
        for part in where.split("."):
            found = found.get(part) if isinstance(found, dict) else None
        if isinstance(found, dict) and found and all(isinstance(v, torch.Tensor) for v in found.values()):
            return found, where
    keys = ", ".join(repr(k) for k in list(obj)[:8]) or "nothing"
    raise UserInputError(f"{source}: holds {keys}, not a state_dict (names -> tensors) nor one under "
                         f"{', '.join(repr(k) for k in STATE_KEYS)}")


def strip_prefix(state: dict[str, Any], wanted: set[str]) -> tuple[dict[str, Any], str]:
    """``state`` with the one leading prefix (``model.``, ``net.``, ``module.``, ``model.module.``...) removed whose
    stripped keys are exactly the model's, and that prefix (``""`` when the keys fit as they are or no prefix makes
    them fit: then loading names the first key that does not)."""
    if set(state) == wanted:
        return state, ""
    prefixes = sorted({".".join(k.split(".")[:i]) + "." for k in state for i in range(1, k.count(".") + 1)}, key=len)
    for prefix in prefixes:
        stripped = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        if set(stripped) == wanted:
            return stripped, prefix
    return state, ""


# -- programs ---------------------------------------------------------------------------------------------------------
def _program(path: Path, kind: str, shape: tuple[int, ...], key: str) -> nn.Module:
    if kind == "onnx":
        return OnnxTeacher(path, shape, key)
    return ProgramTeacher(_load_program(path, kind, key), f"loaded from {PROGRAMS[kind]} file '{path.name}'",
                          trainable_modes=kind == "torchscript")


def _load_program(path: Path, kind: str, key: str) -> nn.Module:
    try:
        if kind == "torchscript":
            return torch.jit.load(str(path), map_location="cpu")
        return torch.export.load(str(path)).module()
    except Exception as exc:  # noqa: BLE001 - any loader failure is a bad file for the user
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise UserInputError(f"{key}.load: '{path}' is not a readable {PROGRAMS[kind]} file ({first}); re-save it with "
                             f"{'torch.jit.save' if kind == 'torchscript' else 'torch.export.save'}") from None


class ProgramTeacher(nn.Module):
    """A TorchScript or ``torch.export`` program as a teacher: float outputs, and train/eval switching that an
    exported program does not support (its mode is the one it was exported in: export it in eval mode)."""

    def __init__(self, program: nn.Module, outputs_only: str, trainable_modes: bool) -> None:
        super().__init__()
        self.program = program
        self.edgedistill_outputs_only = outputs_only
        self._trainable_modes = trainable_modes

    def train(self, mode: bool = True) -> "ProgramTeacher":
        self.training = mode
        if self._trainable_modes:
            self.program.train(mode)
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.program(x).float()


def _onnx_size(path: Path) -> dict[str, Any]:
    """Parameters (elements of the graph's initializers) and KiB of an ONNX file, for reports and size orderings."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    params = sum(int(np.prod(t.dims)) if t.dims else 1 for t in graph.initializer)
    return {"params": params, "size_kb": path.stat().st_size / 1024}


class OnnxTeacher(nn.Module):
    """An ONNX model run by onnxruntime (CPU, one thread per operator: the machine's other cores stay with the data
    loading and the student). It takes a torch tensor and returns float32 outputs on the input's device; a model
    exported with a fixed batch of 1 runs row by row. It passes no gradients to its input."""

    def __init__(self, path: Path, shape: tuple[int, ...], key: str) -> None:
        super().__init__()
        try:
            import onnxruntime as ort
        except ImportError:
            raise UserInputError(f"{key}.load: '{path}' is an ONNX model, which onnxruntime runs, and it is not "
                                 "installed: pip install 'edgedistill[deploy]'") from None
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001 - onnxruntime's own exception types: a bad file for the user
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
            raise UserInputError(f"{key}.load: '{path}' is not a readable ONNX model ({first})") from None
        self.edgedistill_outputs_only = f"loaded from ONNX file '{path.name}'"
        self.edgedistill_no_input_gradients = True  # for a regime that back-propagates into the teacher's input
        self.edgedistill_size = _onnx_size(path)  # onnxruntime holds the weights: torch would count 0
        inputs = self.session.get_inputs()
        where = f"{key}.load: ONNX model '{path}'"
        if len(inputs) != 1:
            raise UserInputError(f"{where} has {len(inputs)} inputs ({', '.join(i.name for i in inputs)}); a teacher "
                                 "reads one tensor (batch, *sample shape)")
        dims = list(inputs[0].shape)
        if len(dims) != 1 + len(shape) or any(isinstance(d, int) and d != s for d, s in zip(dims[1:], shape)):
            raise UserInputError(f"{where} takes inputs of shape {tuple(dims)} but the data gives (batch, "
                                 f"{', '.join(map(str, shape))}) per batch; export it for that shape")
        batch = dims[0]
        if isinstance(batch, int) and batch != 1:
            raise UserInputError(f"{where} has a fixed batch of {batch}; export it with a dynamic batch axis "
                                 "(dynamic_axes / dynamic_shapes) or a batch of 1")
        self.row_by_row = batch == 1
        self.input_name = inputs[0].name
        types = {"tensor(float)": np.float32, "tensor(double)": np.float64, "tensor(float16)": np.float16}
        if inputs[0].type not in types:
            raise UserInputError(f"{where} takes {inputs[0].type} inputs; a teacher reads float tensors")
        self.input_dtype = types[inputs[0].type]

    def train(self, mode: bool = True) -> "OnnxTeacher":
        self.training = mode  # a fixed graph: nothing to switch
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.requires_grad and torch.is_grad_enabled():
            raise UserInputError(f"{self.edgedistill_outputs_only}: onnxruntime passes no gradients to the input, which "
                                 "this method needs; give the teacher as TorchScript, torch.export or model + weights")
        rows = x.detach().cpu().numpy().astype(self.input_dtype, copy=False)
        parts = [rows[i:i + 1] for i in range(len(rows))] if self.row_by_row else [rows]
        outs = [np.asarray(self.session.run(None, {self.input_name: p})[0]) for p in parts]
        out = np.concatenate(outs) if outs else np.zeros((0,), dtype=np.float32)
        return torch.from_numpy(out.astype(np.float32, copy=False)).to(x.device)


def check_outputs(net: nn.Module, shape: tuple[int, ...], n_outputs: Optional[int], source: str) -> None:
    """Run ``net`` on two zero samples of ``shape``: it must give ``(2, n_outputs)`` (any width when ``n_outputs``
    is None), else one line naming ``source`` (a program's own shape is not known before it runs)."""
    from edgedistill.models.modes import evaluating

    try:
        with torch.no_grad(), evaluating(net):
            out = net(torch.zeros(2, *shape))
    except UserInputError:
        raise
    except Exception as exc:  # noqa: BLE001 - whatever the program raises on this input
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise UserInputError(f"{source}: cannot run on inputs of shape {tuple(shape)} per sample: {first}") from None
    got = tuple(out.shape) if torch.is_tensor(out) else type(out).__name__
    if not torch.is_tensor(out) or out.dim() != 2 or out.shape[0] != 2 or out.shape[1] != (n_outputs or out.shape[1]):
        want = f"(batch, {n_outputs}) ({n_outputs} classes or regression targets)" if n_outputs else "(batch, outputs)"
        raise UserInputError(f"{source}: gives outputs of shape {got} for 2 samples; the data needs {want}")


def smoke_teacher(entry: dict[str, Any], key: str, shape: Optional[tuple[int, ...]], n_outputs: Optional[int],
                  student: dict[str, Any]) -> dict[str, Any]:
    """For ``--smoke``, which swaps the data for synthetic data of another shape: check now that the file of a
    loaded teacher (a recipe ``entry``, as ``recipe_to_dict`` gives it) loads, and runs at the REAL data's
    per-sample ``shape`` with ``n_outputs`` outputs where those are known; then return the entry the smoke run uses
    instead: the same ``model`` trained for the smoke epoch (weights), or for a program, which cannot read the
    synthetic data, the student's architecture as a stand-in. (A feature loss on a program teacher is refused by the
    real run's plan, before anything is written, not by ``--smoke``: the stand-in has features.)"""
    if not entry.get("load"):
        return entry
    cfg = TeacherConfig.model_validate(entry)
    path, kind = _source(cfg, key)
    if kind == "weights":
        if shape is not None and n_outputs is not None:
            info = DataInfo(name="real", task="classification", input_shape=tuple(shape), n_outputs=int(n_outputs),
                            views={"x": tuple(shape)})
            _weights_teacher(cfg, info, key, path, tuple(shape))
        else:
            _read_weights(path, f"{key}.load")
        return {**entry, "load": None}
    if shape is not None:
        check_outputs(_program(path, kind, tuple(shape), key), tuple(shape), n_outputs, f"{key}.load '{path}'")
    elif kind != "onnx":
        _load_program(path, kind, key)
    stand_in = {k: v for k, v in student.items() if k != "checkpoint"}
    return {**{k: v for k, v in entry.items() if k != "load"}, **stand_in, "load": None}
