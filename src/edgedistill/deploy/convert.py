"""PyTorch module -> ``onnx.ModelProto``: the dynamo exporter, the legacy exporter as a fallback, and an
error that names the layer that cannot be exported and why.

Before export, a copy of the model gets one numerically equivalent rewrite: an adaptive average pool
whose output bins do not divide its input (the 4-segment head of ``cnn1d`` on a 427-sample window) has no
ONNX operator; the dynamo exporter decomposes it into ~250 Gather/Add nodes and the legacy exporter
refuses it. For the fixed input size of a deployed model the bins are known, so the copy pools each bin
with a slice and a mean: a handful of nodes, the same numbers (verification checks it against the
original model).
"""
from __future__ import annotations

import contextlib
import copy
import io
import os
import re
import sys
import tempfile
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Optional

import torch
from torch import nn

from edgedistill.errors import UserInputError

DEFAULT_OPSET = 18


class ExportError(UserInputError):
    """The model cannot be exported to ONNX (exit code 2): the message names the layer and the reason."""


@dataclass
class Converted:
    proto: Any  # onnx.ModelProto
    exporter: str  # "dynamo" or "legacy"
    rewrites: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


class BinnedAvgPool(nn.Module):
    """``AdaptiveAvgPool{1,2}d`` for one known input size: a mean over each precomputed bin."""

    def __init__(self, bins: list[list[tuple[int, int]]]) -> None:
        super().__init__()
        self.bins = bins  # per pooled axis (the last 1 or 2), the [start, end) of every output position

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if len(self.bins) == 1:
            return torch.cat([x[..., s:e].mean(dim=-1, keepdim=True) for s, e in self.bins[0]], dim=-1)
        rows = []
        for hs, he in self.bins[0]:
            band = x[..., hs:he, :]
            rows.append(torch.cat([band[..., ws:we].mean(dim=(-2, -1), keepdim=True) for ws, we in self.bins[1]], dim=-1))
        return torch.cat(rows, dim=-2)


def _bins(size: int, out: int) -> list[tuple[int, int]]:
    # PyTorch's adaptive pooling: bin i covers [floor(i*size/out), ceil((i+1)*size/out)).
    return [((i * size) // out, -((-(i + 1) * size) // out)) for i in range(out)]


def _records(model: nn.Module, example: torch.Tensor) -> dict[str, tuple[Any, ...]]:
    """Positional inputs of every submodule on ``example`` (for sizes and for finding a failing layer)."""
    seen: dict[str, tuple[Any, ...]] = {}
    handles = []
    for name, mod in model.named_modules():
        if name:
            handles.append(mod.register_forward_pre_hook(lambda m, args, name=name: seen.setdefault(name, args)))
    try:
        with torch.no_grad():
            model(example)
    finally:
        for h in handles:
            h.remove()
    return seen


def export_ready(model: nn.Module, example: torch.Tensor) -> tuple[nn.Module, list[str]]:
    """An eval-mode copy with the rewrites above applied, and a line per rewrite."""
    model = copy.deepcopy(model).eval()
    inputs = _records(model, example)
    notes = []
    for name, mod in list(model.named_modules()):
        if not isinstance(mod, (nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d)) or name not in inputs:
            continue
        x = inputs[name][0]
        rank = 1 if isinstance(mod, nn.AdaptiveAvgPool1d) else 2
        outs = mod.output_size if isinstance(mod.output_size, tuple) else (mod.output_size,) * rank
        sizes = tuple(x.shape[-rank:])
        outs = tuple(s if o is None else o for o, s in zip(outs, sizes))
        if all(s % o == 0 for s, o in zip(sizes, outs)):
            continue  # exports as a plain pool / mean
        parent_name, _, attr = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, attr, BinnedAvgPool([_bins(s, o) for s, o in zip(sizes, outs)]))
        notes.append(f"{name}: {type(mod).__name__}({list(outs)}) on input {list(sizes)} -> per-bin slice + mean")
    return model, notes


@contextlib.contextmanager
def quiet() -> Iterator[io.StringIO]:
    """Silence the exporters' progress text and warnings (file-descriptor level), keeping it for errors."""
    import logging

    log = io.StringIO()
    loggers = [logging.getLogger(n) for n in ("torch", "torch.onnx", "torch.export", "torch.fx", "onnxscript")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    with tempfile.TemporaryFile(mode="w+b") as sink:
        os.dup2(sink.fileno(), 1)
        os.dup2(sink.fileno(), 2)
        try:
            with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                yield log
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)
            for lg, level in zip(loggers, levels):
                lg.setLevel(level)
            sink.seek(0)
            log.write(sink.read().decode(errors="replace"))


def strip_debug_info(proto: Any) -> Any:
    """Drop what the exporter records for debugging: per-node stack traces, module paths and FX node text
    (local file paths, and for a 3k-parameter student twice the size of its weights) and intermediate
    value_info (ONNX Runtime infers shapes itself)."""
    graphs = [proto.graph]
    while graphs:
        graph = graphs.pop()
        for node in graph.node:
            del node.metadata_props[:]
            node.doc_string = ""
            for attr in node.attribute:  # subgraphs of If/Loop/Scan
                if attr.HasField("g"):
                    graphs.append(attr.g)
                graphs.extend(attr.graphs)
        for item in list(graph.initializer) + list(graph.input) + list(graph.output):
            del item.metadata_props[:]
        del graph.value_info[:]
        graph.doc_string = ""
    return proto


def _batch_dims(args: tuple[Any, ...], batch: int) -> tuple[Any, ...]:
    dim = torch.export.Dim.DYNAMIC
    return tuple({0: dim} if torch.is_tensor(a) and a.dim() > 0 and a.shape[0] == batch else None for a in args)


def _dynamo(model: nn.Module, example: torch.Tensor, opset: int, names: tuple[str, str]) -> Any:
    program = torch.onnx.export(
        model, (example,), dynamo=True, opset_version=opset, input_names=[names[0]], output_names=[names[1]],
        dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=1 << 20)},), optimize=True, verbose=False,
        report=False,
    )
    return program.model_proto


def _legacy(model: nn.Module, example: torch.Tensor, opset: int, names: tuple[str, str]) -> tuple[Any, list[str]]:
    import onnx

    buf = io.BytesIO()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.onnx.export(
            model, (example,), buf, dynamo=False, opset_version=min(opset, 20), input_names=[names[0]],
            output_names=[names[1]], dynamic_axes={names[0]: {0: "batch"}, names[1]: {0: "batch"}},
        )
    torch_dir = os.path.dirname(torch.__file__)
    # TracerWarnings from inside torch (nn.GRU's own checks) are about torch's code, not the model's.
    tracer = [f"{w.filename}:{w.lineno}: {str(w.message).splitlines()[0]}" for w in caught
              if issubclass(w.category, torch.jit.TracerWarning) and not w.filename.startswith(torch_dir)]
    if tracer:
        # Tracing records one path through the code: a value-dependent branch would be frozen silently.
        raise ExportError(f"the legacy exporter traced a graph that may not generalise: {tracer[0]}")
    return onnx.load_from_string(buf.getvalue()), []


def _root_cause(exc: BaseException) -> BaseException:
    while exc.__cause__ is not None and exc.__cause__ is not exc:
        exc = exc.__cause__
    return exc


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:300]


def _user_line(exc: BaseException) -> str:
    """The user code the exporter blames ("The following call raised this error: File ..., line N")."""
    text = "\n".join(str(e) for e in (exc, _root_cause(exc)))
    m = re.search(r'File "([^"]+)", line (\d+), in \w+\n(?:[ \t]+(\S.*))?', text)
    if m is None:
        return ""
    return f"{m.group(1)}:{m.group(2)}" + (f" `{m.group(3).strip()}`" if m.group(3) else "")


def _data_dependent(exc: BaseException) -> bool:
    text = f"{type(_root_cause(exc)).__name__} {_root_cause(exc)} {exc}"
    return "DataDependent" in text or "data-dependent" in text


def _why(exc: BaseException) -> str:
    root = _root_cause(exc)
    where = _user_line(exc)
    at = f" at {where}" if where else ""
    if _data_dependent(exc):
        return (f"data-dependent control flow{at} (a Python branch or loop on tensor values cannot be captured "
                "in a static graph; use torch.where, or branch on shapes only)")
    return f"{type(root).__name__}: {_first_line(root)}{at}"


def _capture_fails(module: nn.Module, args: tuple[Any, ...], batch: int) -> Optional[BaseException]:
    try:
        torch.export.export(module, args, dynamic_shapes=_batch_dims(args, batch), strict=False)
    except Exception as exc:  # noqa: BLE001 - any failure is what we are looking for
        return exc
    return None


def _onnx_fails(module: nn.Module, args: tuple[Any, ...], batch: int, opset: int) -> Optional[BaseException]:
    try:
        torch.onnx.export(module, args, dynamo=True, opset_version=opset, dynamic_shapes=_batch_dims(args, batch),
                          optimize=False, verbose=False, report=False)
    except Exception as exc:  # noqa: BLE001
        return exc
    return None


def locate(model: nn.Module, example: torch.Tensor, fails: Callable[[nn.Module, tuple[Any, ...]], Optional[BaseException]]
           ) -> tuple[str, Optional[BaseException]]:
    """The deepest submodule that fails on its own recorded input, and its error ("" = the model itself)."""
    inputs = _records(model, example)
    name, err = "", None
    current = model
    while True:
        for child_name, child in current.named_children():
            full = f"{name}.{child_name}" if name else child_name
            if full in inputs and all(torch.is_tensor(a) for a in inputs[full]):
                e = fails(child, inputs[full])
                if e is not None:
                    name, err, current = full, e, child
                    break
        else:
            return name, err


def to_onnx(model: nn.Module, example: torch.Tensor, *, opset: int = DEFAULT_OPSET, exporter: str = "auto",
            names: tuple[str, str] = ("input", "logits")) -> Converted:
    """Export ``model`` (eval mode) for inputs shaped like ``example`` with a dynamic batch axis."""
    if exporter not in ("auto", "dynamo", "legacy"):
        raise UserInputError(f"exporter: expected auto, dynamo or legacy, got {exporter!r}")
    ready, rewrites = export_ready(model, example)
    batch = example.shape[0]
    notes: list[str] = []
    dynamo_error: Optional[BaseException] = None
    if exporter in ("auto", "dynamo"):
        try:
            import onnxscript  # noqa: F401 - the dynamo exporter needs it

            with quiet():
                return Converted(strip_debug_info(_dynamo(ready, example, opset, names)), "dynamo", rewrites, notes)
        except ImportError as exc:
            if exporter == "dynamo":
                raise ExportError("the dynamo exporter needs onnxscript: pip install 'edgedistill[deploy]'") from None
            dynamo_error = exc
            notes.append("the dynamo exporter needs onnxscript (pip install 'edgedistill[deploy]')")
        except Exception as exc:  # noqa: BLE001 - examined below
            dynamo_error = exc
        if not isinstance(dynamo_error, ImportError) and (_data_dependent(dynamo_error) or exporter == "dynamo"):
            raise _located(ready, example, batch, opset, dynamo_error) from None
        notes.append(f"the dynamo exporter failed ({_why(dynamo_error)}); used the legacy TorchScript exporter")
    try:
        with quiet():
            proto, more = _legacy(ready, example, opset, names)
    except Exception as exc:  # noqa: BLE001 - reported with the layer that fails
        legacy = str(exc) if isinstance(exc, ExportError) else _first_line(exc)
        if dynamo_error is None or isinstance(dynamo_error, ImportError):
            raise ExportError(f"the legacy exporter cannot export {type(model).__name__}: {legacy}") from None
        raise _located(ready, example, batch, opset, dynamo_error, legacy) from None
    for note in notes:
        warnings.warn(note, stacklevel=2)
    return Converted(strip_debug_info(proto), "legacy", rewrites, notes + more)


def _located(model: nn.Module, example: torch.Tensor, batch: int, opset: int, error: BaseException,
             legacy: str = "") -> ExportError:
    """An ExportError naming the layer: capture failures are found with torch.export (fast), translation
    failures by exporting submodules to ONNX."""
    with quiet():
        capture = _capture_fails(model, (example,), batch)
        if capture is not None:
            name, err = locate(model, example, lambda m, a: _capture_fails(m, a, batch))
        else:
            name, err = locate(model, example, lambda m, a: _onnx_fails(m, a, batch, opset))
    err = err or capture or error
    layer = f"layer '{name}' ({type(model.get_submodule(name)).__name__})" if name else f"{type(model).__name__} (no single layer fails alone)"
    tail = f"; the legacy exporter also failed: {legacy}" if legacy else ""
    return ExportError(f"cannot export {layer} to ONNX: {_why(err)}{tail}")
