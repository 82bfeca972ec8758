"""A 1-D student as a chain of C layers: what ``format c`` can express, with batch norm folded and ReLU fused.

The model is traced with ``torch.fx`` and must be a chain (every operation reads the previous one's output):
the ``cnn1d`` student of the zoo and any user model built from the same layers. Supported: ``Conv1d`` (zero
padding, any stride, dilation and groups; a ``ConstantPad1d`` of zeros before it becomes its padding),
``BatchNorm1d`` right after a ``Conv1d`` or ``Linear`` (folded into its weights), ``ReLU`` (fused into the layer
before it where there is one), ``MaxPool1d``, ``AvgPool1d``, ``AdaptiveAvgPool1d``, ``AdaptiveMaxPool1d``,
``Flatten`` and ``Linear`` on a flat vector; ``Dropout`` and ``Identity`` vanish in eval mode. Anything else is
an ``ExportError`` naming the layer, its type and "format c".
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np
import torch
from torch import nn

from edgedistill.deploy.convert import ExportError

SUPPORTED = (nn.Conv1d, nn.BatchNorm1d, nn.ReLU, nn.MaxPool1d, nn.AvgPool1d, nn.AdaptiveAvgPool1d,
             nn.AdaptiveMaxPool1d, nn.Flatten, nn.Linear, nn.Dropout, nn.Identity, nn.ConstantPad1d)
_CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict)
_HEADLINE = (nn.RNNBase, nn.MultiheadAttention, nn.TransformerEncoderLayer, nn.TransformerDecoderLayer,
             nn.TransformerEncoder, nn.TransformerDecoder, nn.Transformer)
_SUPPORTED_TEXT = ("Conv1d, BatchNorm1d after Conv1d/Linear, ReLU, MaxPool1d, AvgPool1d, AdaptiveAvgPool1d, "
                   "AdaptiveMaxPool1d, Flatten, Linear, Dropout, Identity, ConstantPad1d of zeros before a Conv1d")


@dataclass
class CLayer:
    """One step of the C program. ``kind``: conv (Linear is a conv of kernel 1 on a length-1 map), maxpool,
    avgpool, adaptive_avg, adaptive_max or relu. Shapes are per sample, (channels, length)."""

    kind: str
    name: str  # module path(s) it came from, for messages and the generated comments
    in_shape: tuple[int, int]
    out_shape: tuple[int, int]
    params: dict[str, int] = field(default_factory=dict)
    weight: Optional[np.ndarray] = None  # conv: (cout, cin/groups, k), float64, BN folded
    bias: Optional[np.ndarray] = None  # conv: (cout,), float64
    relu: bool = False
    tap: str = ""  # module whose output equals this layer's output (calibration hooks)

    @property
    def in_size(self) -> int:
        return self.in_shape[0] * self.in_shape[1]

    @property
    def out_size(self) -> int:
        return self.out_shape[0] * self.out_shape[1]


def _refuse(path: str, what: str, why: str = "") -> ExportError:
    return ExportError(f"format c cannot express layer '{path}' ({what}){': ' + why if why else ''}; "
                       f"format c supports {_SUPPORTED_TEXT}")


def check_modules(model: nn.Module) -> None:
    """Every PyTorch layer of ``model`` must be one format c knows: the first that is not is named (a GRU, a
    TransformerEncoderLayer) before tracing, so the message names the layer rather than a traced operation.
    Recurrent and attention layers are named first: they say more about the model than a padding inside them."""
    for path, mod in model.named_modules():
        if isinstance(mod, _HEADLINE):
            raise _refuse(path or "<model>", type(mod).__name__)
    for path, mod in model.named_modules():
        if isinstance(mod, SUPPORTED) or isinstance(mod, _CONTAINERS):
            continue
        if type(mod).__module__.startswith("torch.nn"):
            raise _refuse(path or "<model>", type(mod).__name__)


def _shape(node: Any) -> tuple[int, int]:
    meta = node.meta.get("tensor_meta")
    shape = tuple(meta.shape) if meta is not None else ()
    if len(shape) == 3:
        return int(shape[1]), int(shape[2])
    if len(shape) == 2:
        return int(shape[1]), 1  # a flat vector is a (features, 1) map: the same memory order
    raise ExportError(f"format c: '{node.target}' gives a tensor of shape {shape}; format c handles (N, C, L) maps "
                      "and (N, features) vectors")


def _pair(value: Any) -> int:
    return int(value[0] if isinstance(value, (tuple, list)) else value)


def _conv(path: str, mod: nn.Conv1d, lin: int, lout: int, pad: tuple[int, int]) -> CLayer:
    if mod.padding_mode != "zeros":
        raise _refuse(path, "Conv1d", f"padding_mode '{mod.padding_mode}' (only zeros)")
    k, stride, dil = _pair(mod.kernel_size), _pair(mod.stride), _pair(mod.dilation)
    if isinstance(mod.padding, str):  # 'valid' or 'same': the total follows from the traced lengths
        total = 0 if mod.padding == "valid" else max(0, (lout - 1) * stride + dil * (k - 1) + 1 - lin)
        own = (total // 2, total - total // 2)
    else:
        own = (_pair(mod.padding), _pair(mod.padding))
    w = mod.weight.detach().double().numpy().copy()
    b = mod.bias.detach().double().numpy().copy() if mod.bias is not None else np.zeros(w.shape[0])
    return CLayer("conv", path, (mod.in_channels, lin), (mod.out_channels, lout),
                  {"k": k, "stride": stride, "dil": dil, "groups": int(mod.groups),
                   "pad_l": own[0] + pad[0], "pad_r": own[1] + pad[1]}, w, b, tap=path)


def _fold_bn(layer: CLayer, path: str, bn: nn.BatchNorm1d) -> None:
    if bn.running_mean is None or bn.running_var is None:
        raise _refuse(path, "BatchNorm1d", "it keeps no running statistics (track_running_stats=False)")
    assert layer.weight is not None and layer.bias is not None
    scale = (bn.weight.detach().double().numpy() if bn.weight is not None else 1.0) / np.sqrt(
        bn.running_var.detach().double().numpy() + bn.eps)
    shift = bn.bias.detach().double().numpy() if bn.bias is not None else 0.0
    layer.weight = layer.weight * np.reshape(scale, (-1, 1, 1))
    layer.bias = (layer.bias - bn.running_mean.detach().double().numpy()) * scale + shift
    layer.name += f" + {path}"
    layer.tap = path


def _is_flatten_call(node: Any) -> bool:
    if node.op == "call_function" and node.target is torch.flatten:
        start = node.args[1] if len(node.args) > 1 else node.kwargs.get("start_dim", 0)
        return start == 1 and (node.args[2] if len(node.args) > 2 else node.kwargs.get("end_dim", -1)) == -1
    if node.op == "call_method" and node.target == "flatten":
        start = node.args[1] if len(node.args) > 1 else node.kwargs.get("start_dim", 0)
        return start == 1 and (node.args[2] if len(node.args) > 2 else node.kwargs.get("end_dim", -1)) == -1
    return False


def _is_relu_call(node: Any) -> bool:
    return (node.op == "call_function" and node.target in (torch.relu, torch.nn.functional.relu)) or (
        node.op == "call_method" and node.target == "relu")


def lower(model: nn.Module, input_shape: tuple[int, ...]) -> list[CLayer]:
    """The C layers of ``model`` (eval mode) for one window of ``input_shape`` (channels, length)."""
    from torch.fx import symbolic_trace
    from torch.fx.passes.shape_prop import ShapeProp

    if len(input_shape) != 2:
        raise ExportError(f"format c supports 1-D models on (channels, length) windows; this model takes windows of "
                          f"shape {tuple(input_shape)}")
    model = model.eval()
    check_modules(model)
    try:
        traced = symbolic_trace(model)
    except Exception as exc:  # noqa: BLE001 - any trace failure means the forward is not a plain chain
        raise ExportError(f"format c: {type(model).__name__}.forward cannot be traced as a chain of layers "
                          f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from None
    with torch.no_grad():
        ShapeProp(traced).propagate(torch.zeros(1, *input_shape))
    modules = dict(traced.named_modules())
    layers: list[CLayer] = []
    pending_pad: Optional[tuple[str, tuple[int, int]]] = None
    prev: Any = None
    seen: set[str] = set()
    for node in traced.graph.nodes:
        if node.op == "placeholder":
            prev = node
            continue
        if node.op == "output":
            if node.args[0] is not prev:
                raise ExportError("format c: the model's output is not the last operation of a chain")
            break
        inputs = [a for a in node.all_input_nodes]
        if len(inputs) != 1 or inputs[0] is not prev:
            raise ExportError(f"format c: operation '{node.name}' ({node.target}) does not read the previous "
                              "operation's output alone; format c handles chains of layers (no residual or "
                              "concatenation branches)")
        prev = node
        cin, lin = _shape(inputs[0]) if inputs[0].op != "placeholder" else (int(input_shape[0]), int(input_shape[1]))
        cout, lout = _shape(node)
        last = layers[-1] if layers else None
        if node.op == "call_module":
            path, mod = str(node.target), modules[str(node.target)]
            if path in seen:
                raise _refuse(path, type(mod).__name__, "it is called more than once")
            seen.add(path)
            if pending_pad is not None and not isinstance(mod, nn.Conv1d):
                raise _refuse(pending_pad[0], "ConstantPad1d", "it is not followed by a Conv1d")
            if isinstance(mod, (nn.Dropout, nn.Identity, nn.Flatten)):
                if isinstance(mod, nn.Flatten) and (mod.start_dim, mod.end_dim) != (1, -1):
                    raise _refuse(path, "Flatten", f"start_dim={mod.start_dim}, end_dim={mod.end_dim} (only 1, -1)")
                continue
            if isinstance(mod, nn.ConstantPad1d):
                if float(mod.value) != 0.0:
                    raise _refuse(path, "ConstantPad1d", f"pads with {mod.value} (only zeros)")
                pending_pad = (path, (int(mod.padding[0]), int(mod.padding[1])))
                continue
            if isinstance(mod, nn.Conv1d):
                pad = pending_pad[1] if pending_pad else (0, 0)
                lin_unpadded = lin - pad[0] - pad[1]
                layer = _conv(path, mod, lin_unpadded, lout, pad)
                layer.in_shape = (cin, lin_unpadded)
                if pending_pad:
                    layer.name = f"{pending_pad[0]} + {path}"
                pending_pad = None
                layers.append(layer)
            elif isinstance(mod, nn.Linear):
                if lin != 1 or len(node.args[0].meta["tensor_meta"].shape) != 2:
                    raise _refuse(path, "Linear", f"it is applied to a (channels, length) map of shape ({cin}, {lin}); "
                                  "flatten or pool the map first")
                w = mod.weight.detach().double().numpy()[:, :, None].copy()
                b = mod.bias.detach().double().numpy().copy() if mod.bias is not None else np.zeros(w.shape[0])
                layers.append(CLayer("conv", path, (cin, 1), (cout, 1),
                                     {"k": 1, "stride": 1, "dil": 1, "groups": 1, "pad_l": 0, "pad_r": 0}, w, b, tap=path))
            elif isinstance(mod, nn.BatchNorm1d):
                if last is None or last.kind != "conv" or last.relu or last.out_shape != (cout, lout):
                    raise _refuse(path, "BatchNorm1d", "it does not directly follow a Conv1d or Linear, so it cannot "
                                  "be folded")
                _fold_bn(last, path, mod)
            elif isinstance(mod, nn.ReLU):
                _add_relu(layers, path, (cout, lout))
            elif isinstance(mod, (nn.MaxPool1d, nn.AvgPool1d)):
                layers.append(_pool(path, mod, (cin, lin), (cout, lout)))
            elif isinstance(mod, (nn.AdaptiveAvgPool1d, nn.AdaptiveMaxPool1d)):
                if getattr(mod, "return_indices", False):
                    raise _refuse(path, type(mod).__name__, "return_indices=True")
                kind = "adaptive_avg" if isinstance(mod, nn.AdaptiveAvgPool1d) else "adaptive_max"
                layers.append(CLayer(kind, path, (cin, lin), (cout, lout), tap=path))
            else:
                raise _refuse(path, type(mod).__name__)
        elif _is_flatten_call(node):
            continue
        elif _is_relu_call(node):
            _add_relu(layers, node.name, (cout, lout))
        else:
            what = getattr(node.target, "__name__", str(node.target))
            raise ExportError(f"format c cannot express operation '{what}' ({node.op} '{node.name}' in "
                              f"{type(model).__name__}.forward); format c supports {_SUPPORTED_TEXT}")
    if pending_pad is not None:
        raise _refuse(pending_pad[0], "ConstantPad1d", "it is not followed by a Conv1d")
    if not layers:
        raise ExportError("format c: the model has no layer to compute")
    for layer in layers:
        if layer.weight is not None and not (np.isfinite(layer.weight).all() and np.isfinite(layer.bias).all()):
            raise ExportError(f"format c: layer '{layer.name}' has NaN or inf weights")
    return layers


def _add_relu(layers: list[CLayer], path: str, shape: tuple[int, int]) -> None:
    last = layers[-1] if layers else None
    if last is not None and last.kind == "conv" and not last.relu:
        last.relu, last.tap = True, path  # fused: one pass over the output, and int8 clamps at the zero point
        last.name += f" + {path}"
        return
    layers.append(CLayer("relu", path, shape, shape, tap=path))


def _pool(path: str, mod: nn.Module, in_shape: tuple[int, int], out_shape: tuple[int, int]) -> CLayer:
    k, stride, pad = _pair(mod.kernel_size), _pair(mod.stride), _pair(mod.padding)
    if isinstance(mod, nn.MaxPool1d):
        if mod.return_indices:
            raise _refuse(path, "MaxPool1d", "return_indices=True")
        return CLayer("maxpool", path, in_shape, out_shape, {"k": k, "stride": stride, "pad": pad,
                                                             "dil": _pair(mod.dilation)}, tap=path)
    return CLayer("avgpool", path, in_shape, out_shape, {"k": k, "stride": stride, "pad": pad,
                                                         "include_pad": int(bool(mod.count_include_pad))}, tap=path)

