"""Emit ``student.h`` and ``student.c``: constants in flash, one static arena, one kernel call per layer.

Memory: activations live in one static arena whose two ends are a ping-pong pair: a layer reads its input at one
end and writes its output at the other (a ReLU works in place), so the arena is exactly the largest live
input + output pair of any layer (the input window counted as the first activation). The last layer writes the
caller's output array directly. No malloc, no recursion, no global state but the arena: the functions are not
re-entrant (one inference at a time).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Optional

import numpy as np

from edgedistill.deploy.c_graph import CLayer
from edgedistill.deploy.c_kernels import kernels
from edgedistill.deploy.c_quant import Int8Plan, QParams

PER_LINE = 10


def c_float(v: float) -> str:
    """A float32 value as a C literal that reads back to the same float32 (9 significant digits)."""
    text = f"{float(np.float32(v)):.9g}"
    if not any(ch in text for ch in ".en"):
        text += ".0"
    return text + "f"


def c_double(v: float) -> str:
    text = f"{float(v):.17g}"
    return text if any(ch in text for ch in ".en") else text + ".0"


def c_string(text: str) -> str:
    """A C string literal of ``text`` (UTF-8; quotes, backslashes and non-printable bytes as octal escapes)."""
    out = []
    for byte in text.encode("utf-8"):
        ch = chr(byte)
        out.append(ch if 32 <= byte < 127 and ch not in '"\\?' else f"\\{byte:03o}")
    return '"' + "".join(out) + '"'


def c_array(ctype: str, name: str, values: Iterable[Any], fmt: Any = str) -> str:
    """A ``static const`` array; an empty one gets a single 0 (C99 has no zero-length arrays)."""
    items = [fmt(v) for v in values] or ["0"]
    lines = [", ".join(items[i:i + PER_LINE]) for i in range(0, len(items), PER_LINE)]
    return f"static const {ctype} {name}[{len(items)}] = {{\n    " + ",\n    ".join(lines) + "\n};\n"


@dataclass
class CProgram:
    header: str
    source: str
    flash_bytes: int  # weights and every other constant array
    arena_bytes: int  # the activation arena: the peak RAM of an inference, besides the caller's arrays and stack
    constants: dict[str, int] = field(default_factory=dict)  # bytes per constant array


@dataclass
class _Plan:
    arena: int  # elements
    src: list[str]  # per layer: C expression of its input pointer
    dst: list[str]  # per layer: C expression of its output pointer


def plan_arena(layers: list[CLayer], input_size: int, out_direct: list[bool]) -> _Plan:
    """Place every activation at one end of the arena, alternating ends (``out_direct[i]``: layer i writes ``out``)."""
    need = [input_size]
    for layer, direct in zip(layers, out_direct):
        need.append(layer.in_size + (0 if direct or layer.kind == "relu" else layer.out_size))
    arena = max(need)

    def at(low: bool, size: int) -> str:
        return "arena" if low else f"arena + {arena - size}"

    low, src, dst = True, [], []
    for layer, direct in zip(layers, out_direct):
        src.append(at(low, layer.in_size))
        if direct:
            dst.append("out")
        elif layer.kind == "relu":
            dst.append(src[-1])  # in place
        else:
            low = not low
            dst.append(at(low, layer.out_size))
    return _Plan(arena, src, dst)


def _guard(name: str) -> str:
    return "".join(ch if ch.isalnum() else "_" for ch in name).upper()


def generate(layers: list[CLayer], meta: Any, *, int8: Optional[Int8Plan] = None) -> CProgram:
    """The C program of ``layers`` for a model described by ``meta`` (``deploy.metadata.ModelMetadata``), float32,
    or int8 with the constants of ``int8``."""
    q_input = int8.q_input if int8 else None
    q_outs = int8.q_outs if int8 else None
    qconvs = int8.convs if int8 else None
    channels, length = int(meta.input_shape[0]), int(meta.input_shape[1])
    n_out = layers[-1].out_size
    last = len(layers) - 1
    # Float: the last layer writes the float outputs itself; int8: only a conv does (its accumulators scaled).
    out_direct = [i == last and (not int8 or layers[i].kind == "conv") for i in range(len(layers))]
    plan = plan_arena(layers, channels * length, out_direct)
    elem, atype = (1, "int8_t") if int8 else (4, "float")
    constants: dict[str, int] = {}
    decls: list[str] = []

    def const(ctype: str, name: str, values: np.ndarray, fmt: Any, size: int) -> str:
        flat = np.asarray(values).reshape(-1)
        decls.append(c_array(ctype, name, flat, fmt))
        constants[name] = size * len(flat)
        return name

    norm = meta.normalization
    if norm["mode"] != "none":
        count = channels if norm["mode"] == "per_channel" else 1
        const("double", "norm_mean", np.asarray(norm["mean"], np.float64)[:count], c_double, 8)
        const("double", "norm_std", np.asarray(norm["std"], np.float64)[:count], c_double, 8)
    classes = meta.classes if meta.task == "classification" and meta.classes else None

    calls: list[str] = []
    for i, layer in enumerate(layers):
        p = layer.params
        cin, lin = layer.in_shape
        cout, lout = layer.out_shape
        x, y = plan.src[i], plan.dst[i]
        calls.append(f"    /* {i}: {layer.kind} {layer.name}: ({cin}, {lin}) -> ({cout}, {lout}) */")
        if layer.kind == "conv":
            geom = f"{cin}, {lin}, {cout}, {lout}, {p['k']}, {p['stride']}, {p['pad_l']}, {p['dil']}, {p['groups']}"
            if not int8:
                assert layer.weight is not None and layer.bias is not None
                w = const("float", f"l{i}_weight", layer.weight.astype(np.float32), c_float, 4)
                b = const("float", f"l{i}_bias", layer.bias.astype(np.float32), c_float, 4)
                calls.append(f"    conv_f32({x}, {y}, {w}, {b}, {geom}, {int(layer.relu)});")
            else:
                assert qconvs is not None and q_outs is not None and q_input is not None
                qc = qconvs[i]
                q_in = q_outs[i - 1] if i else q_input
                w = const("int8_t", f"l{i}_weight", qc.weight, str, 1)
                b = const("int32_t", f"l{i}_bias", qc.bias, str, 4)
                if qc.deq is not None:
                    deq = const("float", f"l{i}_dequant", qc.deq, c_float, 4)
                    calls.append(f"    conv_q8({x}, 0, {y}, {w}, {b}, 0, 0, {deq}, {geom}, {q_in.zero_point}, 0, "
                                 f"{int(layer.relu)});")
                else:
                    m = const("int32_t", f"l{i}_mult", qc.mult, str, 4)
                    s = const("int8_t", f"l{i}_shift", qc.shift, str, 1)
                    calls.append(f"    conv_q8({x}, {y}, 0, {w}, {b}, {m}, {s}, 0, {geom}, {q_in.zero_point}, "
                                 f"{q_outs[i].zero_point}, {int(layer.relu)});")
            continue
        t = "q8" if int8 else "f32"
        zp = ""
        if int8 and layer.kind in ("avgpool", "adaptive_avg"):
            assert q_outs is not None and q_input is not None
            mult, shift = int8.averages[i]
            m = const("int32_t", f"l{i}_mult", mult, str, 4)
            s = const("int8_t", f"l{i}_shift", shift, str, 1)
            zp = f", {(q_outs[i - 1] if i else q_input).zero_point}, {q_outs[i].zero_point}, {m}, {s}"
        elif int8 and layer.kind == "relu" and q_outs is not None:
            zp = f", {q_outs[i].zero_point}"
        if layer.kind == "maxpool":
            calls.append(f"    maxpool_{t}({x}, {y}, {cin}, {lin}, {lout}, {p['k']}, {p['stride']}, {p['pad']}, {p['dil']});")
        elif layer.kind == "avgpool":
            include = "" if int8 else f", {p['include_pad']}"  # int8: the divisors are in the multipliers
            calls.append(f"    avgpool_{t}({x}, {y}, {cin}, {lin}, {lout}, {p['k']}, {p['stride']}, {p['pad']}{include}{zp});")
        elif layer.kind == "adaptive_max":
            calls.append(f"    adaptive_max_{t}({x}, {y}, {cin}, {lin}, {lout});")
        elif layer.kind == "adaptive_avg":
            calls.append(f"    adaptive_avg_{t}({x}, {y}, {cin}, {lin}, {lout}{zp});")
        elif layer.kind == "relu":
            calls.append(f"    relu_{t}({x}, {y}, {layer.in_size}L{zp});")
        else:  # pragma: no cover - lower() makes only the kinds above
            raise AssertionError(layer.kind)
    if not out_direct[last]:  # int8 ending in a pooling or ReLU: dequantise the final codes
        q = q_outs[last] if q_outs is not None else QParams(1.0, 0)
        calls.append(f"    for (i = 0; i < {n_out}; ++i) out[i] = {c_float(q.scale)} * (float)((int32_t){plan.dst[last]}[i] - "
                     f"({q.zero_point}));")

    guard = "STUDENT_H"
    name = str(meta.model.get("name", "student"))
    variant = "int8" if int8 else "fp32"
    arena_bytes = plan.arena * elem
    flash = sum(constants.values())
    header = _header(guard, name, variant, meta, channels, length, n_out, arena_bytes, flash, classes)
    body = [
        f"/* {name} student ({variant}), generated by edgedistill: see student.h for how to call it. */",
        '#include "student.h"', "", "#include <math.h>", "#include <stdint.h>", "",
        f"static {atype} arena[{plan.arena}];  /* {arena_bytes} bytes: the largest live input + output pair */", "",
        *decls,
    ]
    if classes:
        body.append("const char *const student_classes[STUDENT_OUTPUTS] = {\n    "
                    + ",\n    ".join(c_string(c) for c in classes) + "\n};\n")
    body.append(kernels({layer.kind for layer in layers}, int8 is not None))
    body.append(_load_input(norm, channels, length, int8 is not None, q_input))
    uses_i = not out_direct[last]
    body += ["static void run_layers(float *out)", "{", *(["    long i;"] if uses_i else []), *calls, "}", "",
             "void student_forward(const float *x, float *out)", "{", "    load_input(x, 0);", "    run_layers(out);", "}", "",
             "void student_infer(const float *raw, float *out)", "{", "    load_input(raw, 1);", "    run_layers(out);", "}", "",
             "int student_argmax(const float *out)", "{", "    int i, best = 0;",
             "    for (i = 1; i < STUDENT_OUTPUTS; ++i)", "        if (out[i] > out[best]) best = i;",
             "    return best;", "}", ""]
    return CProgram(header, "\n".join(body), flash, arena_bytes, constants)


def _load_input(norm: dict[str, Any], channels: int, length: int, int8: bool, q: Optional[QParams]) -> str:
    """``load_input``: the window into the arena's low end, normalised (``normalize``) and quantised (int8)."""
    mode = norm["mode"]
    if mode == "none":
        value = "src[i]"
    else:
        # In double, as the toolkit's Normalizer: a channel nearly constant in training (std floored at 1e-8)
        # must not lose the difference to float32 rounding.
        c = "i / STUDENT_IN_LENGTH" if mode == "per_channel" else "0"
        value = f"normalize ? (float)(((double)src[i] - norm_mean[{c}]) / norm_std[{c}]) : src[i]"
    lines = ["static void load_input(const float *src, int normalize)", "{", "    long i;",
             f"    for (i = 0; i < {channels * length}L; ++i) {{", f"        const float v = {value};"]
    if mode == "none":
        lines.insert(3, "    (void)normalize;")
    if int8:
        assert q is not None
        lines += [f"        float r = floorf(v / {c_float(q.scale)} + 0.5f) + {q.zero_point}.0f;",
                  "        arena[i] = (int8_t)(r < -128.0f ? -128.0f : (r > 127.0f ? 127.0f : r));"]
    else:
        lines.append("        arena[i] = v;")
    lines += ["    }", "}", ""]
    return "\n".join(lines)


def _header(guard: str, name: str, variant: str, meta: Any, channels: int, length: int, n_out: int,
            arena_bytes: int, flash: int, classes: Optional[list[str]]) -> str:
    norm = meta.normalization["mode"]
    picked = f"channels {meta.channels} of the raw recording, in that order" if meta.channels else "every channel"
    outputs = ("class scores (logits): student_argmax() gives the class index, student_classes[] its name"
               if classes else "standardised regression outputs: multiply by the training targets' std and add "
                               "their mean (target_scale in the run's metadata) for original units")
    lines = [
        f"/* {name} student ({variant}), generated by edgedistill: dependency-free C99, static memory only. */",
        f"#ifndef {guard}", f"#define {guard}", "",
        f"#define STUDENT_IN_CHANNELS {channels}",
        f"#define STUDENT_IN_LENGTH {length}",
        "#define STUDENT_INPUT_SIZE (STUDENT_IN_CHANNELS * STUDENT_IN_LENGTH)",
        f"#define STUDENT_OUTPUTS {n_out}",
        f"#define STUDENT_ARENA_BYTES {arena_bytes}  /* static activation memory (RAM) */",
        f"#define STUDENT_FLASH_BYTES {flash}  /* weights and constants (code not included) */",
        f"#define STUDENT_INT8 {1 if variant == 'int8' else 0}", "",
        "/* A window is STUDENT_IN_CHANNELS x STUDENT_IN_LENGTH floats, channel-major: x[c * STUDENT_IN_LENGTH + t],",
        f"   holding {picked}. */", "",
        f"/* Raw window -> outputs: applies the training split's normalisation ({norm}) first. */",
        "void student_infer(const float *raw, float *out);", "",
        "/* Already-normalised window -> outputs (the exact input the PyTorch model takes). */",
        "void student_forward(const float *x, float *out);", "",
        f"/* out: STUDENT_OUTPUTS floats, {outputs}. */",
        "int student_argmax(const float *out);",
    ]
    if classes:
        lines += ["", "extern const char *const student_classes[STUDENT_OUTPUTS];"]
    lines += ["", f"#endif /* {guard} */", ""]
    return "\n".join(lines)
