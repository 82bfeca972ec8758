"""Int8 parameters for the C program: weights symmetric per output channel, activations asymmetric per tensor.

Activation ranges are calibrated on training windows (``deploy.quantize.calibration_windows``): the float model
runs on them and every quantisation point records its min and max (widened to include 0, so zero padding and
ReLU's zero are exact codes). Quantisation points are the input, every conv/linear output (after its folded
batch norm and fused ReLU) and every average pooling's output (a mean over a long window spans far fewer codes than
its input); max pooling and a standalone ReLU keep their input's scale and zero point. The last
conv/linear layer is not requantised: its int32 accumulators are scaled to float logits.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np
import torch
from torch import nn

from edgedistill.deploy.c_graph import CLayer


@dataclass
class QParams:
    """Real value = scale * (q - zero_point), q in [-128, 127]."""

    scale: float
    zero_point: int

    @classmethod
    def from_range(cls, lo: float, hi: float) -> "QParams":
        lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
        scale = (hi - lo) / 255.0 if hi > lo else 1.0  # a constant-zero tensor: any scale represents it
        zp = int(round(-128 - lo / scale))
        return cls(scale, max(-128, min(127, zp)))


@dataclass
class QuantConv:
    weight: np.ndarray  # int8, (cout, cin/groups, k)
    bias: np.ndarray  # int32 at scale s_in * s_w[c]
    mult: np.ndarray  # int32 in [2^30, 2^31) (0 for a channel whose output rounds to zero)
    shift: np.ndarray  # int8 right shift in [1, 62]
    deq: Optional[np.ndarray]  # float32 s_in * s_w[c], only for the last layer (float outputs)


def calibrate(model: nn.Module, layers: list[CLayer], windows: np.ndarray, batch: int = 64) -> dict[str, tuple[float, float]]:
    """(min, max) of the input ("") and of every layer's ``tap`` over ``windows``, from the traced float model."""
    from torch.fx import Interpreter, symbolic_trace

    wanted = {layer.tap for layer in layers}
    ranges: dict[str, tuple[float, float]] = {}

    def note(key: str, value: torch.Tensor) -> None:
        lo, hi = float(value.min()), float(value.max())
        old = ranges.get(key)
        ranges[key] = (lo, hi) if old is None else (min(old[0], lo), max(old[1], hi))

    class Recorder(Interpreter):
        def run_node(self, n: Any) -> Any:
            out = super().run_node(n)
            key = str(n.target) if n.op == "call_module" else n.name
            if key in wanted and isinstance(out, torch.Tensor):
                note(key, out)
            return out

    traced = symbolic_trace(model.eval())
    with torch.no_grad():
        for i in range(0, len(windows), batch):
            x = torch.from_numpy(np.ascontiguousarray(windows[i:i + batch], dtype=np.float32))
            note("", x)
            Recorder(traced).run(x)
    missing = sorted(wanted - set(ranges))
    if missing:
        raise RuntimeError(f"format c int8 calibration saw no output of {missing}")  # a bug, not bad input
    return ranges


def fixed_point(m: float) -> tuple[int, int]:
    """``m`` (> 0) as (mult, shift) with m ~= mult / 2^shift, mult in [2^30, 2^31), shift in [1, 62]."""
    if m <= 0:
        return 0, 1
    mant, exp = math.frexp(m)  # m = mant * 2^exp, mant in [0.5, 1)
    mult = int(round(mant * (1 << 31)))
    if mult == 1 << 31:
        mult //= 2
        exp += 1
    shift = 31 - exp
    if shift > 62:  # the output is below half a code for any int32 accumulator
        return 0, 1
    if shift < 1:
        raise ValueError(f"requantisation multiplier {m:g} is too large for an int32 fixed-point form")
    return mult, shift


def quantize_conv(layer: CLayer, q_in: QParams, q_out: Optional[QParams]) -> QuantConv:
    """Int8 weights, int32 bias and requantisation constants of a conv layer (``q_out`` None: float outputs)."""
    assert layer.weight is not None and layer.bias is not None
    w = layer.weight
    amax = np.abs(w).reshape(len(w), -1).max(axis=1)
    s_w = np.where(amax > 0, amax / 127.0, 1.0)
    wq = np.clip(np.round(w / s_w[:, None, None]), -127, 127).astype(np.int8)
    acc_scale = q_in.scale * s_w
    bq = np.clip(np.round(layer.bias / acc_scale), -(2 ** 31), 2 ** 31 - 1).astype(np.int32)
    if q_out is None:
        return QuantConv(wq, bq, np.zeros(len(w), np.int32), np.ones(len(w), np.int8), acc_scale.astype(np.float32))
    pairs = [fixed_point(float(s) / q_out.scale) for s in acc_scale]
    mult = np.array([p[0] for p in pairs], dtype=np.int64).astype(np.int32)
    shift = np.array([p[1] for p in pairs], dtype=np.int8)
    return QuantConv(wq, bq, mult, shift, None)


def avg_divisors(layer: CLayer) -> list[int]:
    """How many values each output position of an average pooling divides by (PyTorch's rules)."""
    lin, lout = layer.in_shape[1], layer.out_shape[1]
    if layer.kind == "adaptive_avg":
        return [-((-(t + 1) * lin) // lout) - (t * lin) // lout for t in range(lout)]
    p = layer.params
    out = []
    for t in range(lout):
        s = t * p["stride"] - p["pad"]
        e = min(s + p["k"], lin + p["pad"])
        div = e - s
        if not p["include_pad"]:
            div = min(e, lin) - max(s, 0)
        out.append(div)
    return out


def quantize_average(layer: CLayer, q_in: QParams, q_out: QParams) -> tuple[np.ndarray, np.ndarray]:
    """Per output position (mult, shift) of s_in / (count * s_out): the bin's sum of (q - zp_in) -> output code."""
    pairs = [fixed_point(q_in.scale / (n * q_out.scale)) for n in avg_divisors(layer)]
    return (np.array([p[0] for p in pairs], dtype=np.int64).astype(np.int32),
            np.array([p[1] for p in pairs], dtype=np.int8))


@dataclass
class Int8Plan:
    q_input: QParams
    q_outs: list[QParams]  # each layer's output parameters
    convs: dict[int, QuantConv]  # by layer index
    averages: dict[int, tuple[np.ndarray, np.ndarray]]  # by layer index: per-position (mult, shift)


def plan_int8(model: nn.Module, layers: list[CLayer], windows: np.ndarray) -> Int8Plan:
    """The int8 constants of ``layers``, activation ranges calibrated on ``windows``."""
    ranges = calibrate(model, layers, windows)
    q_input = QParams.from_range(*ranges[""])
    outs: list[QParams] = []
    convs: dict[int, QuantConv] = {}
    averages: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    q = q_input
    for i, layer in enumerate(layers):
        final = i == len(layers) - 1
        if layer.kind == "conv":
            q_out = None if final else QParams.from_range(*ranges[layer.tap])
            convs[i] = quantize_conv(layer, q, q_out)
            q = q_out if q_out is not None else q
        elif layer.kind in ("avgpool", "adaptive_avg"):
            q_out = QParams.from_range(*ranges[layer.tap])
            averages[i] = quantize_average(layer, q, q_out)
            q = q_out
        outs.append(q)  # max pooling and ReLU keep their input's parameters
    return Int8Plan(q_input, outs, convs, averages)
