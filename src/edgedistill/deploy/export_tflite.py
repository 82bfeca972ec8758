"""The ``tflite`` format: the student as a LiteRT (TensorFlow Lite) flatbuffer, converted by litert-torch and checked
with ai-edge-litert's interpreter on the run's test windows.

fp32: ``litert_torch.convert`` of the eval-mode student. int8: full-integer post-training quantisation through the
PT2E flow litert-torch documents (``PT2EQuantizer`` with its symmetric static config, int8 weights per channel and
int8 activations), calibrated on a representative set of training windows (``--calibration`` of them); the file
is full-integer down to its input and output tensors (int8, their scale and zero point stored in the file; the
verification quantises each normalised window and dequantises the logits with them, as a device would). The batch size is fixed at 1, what a device runs; the interpreter is checked window by window.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any, Optional

import numpy as np

from edgedistill.deploy.formats import FormatResult, Staging, check_outputs, converter_input, missing_package, \
    unsupported

FORMAT = "tflite"


def _require() -> tuple[Any, Any]:
    # litert-torch prints a progress line per conversion stage and its C++ converter INFO lines: the CLI prints its own
    # table instead (a user's explicit setting wins).
    os.environ.setdefault("LITERT_TORCH_SHOW_PROGRESS", "n")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        import litert_torch
    except ImportError as exc:
        raise missing_package(FORMAT, "litert-torch" if "litert_torch" in str(exc) else getattr(exc, "name", str(exc))) from None
    try:
        from ai_edge_litert import interpreter
    except ImportError:
        raise missing_package(FORMAT, "ai-edge-litert") from None
    return litert_torch, interpreter


def convert(model: Any, example: Any, *, calibration: Optional[np.ndarray] = None) -> Any:
    """litert-torch's edge model of ``model`` for input ``example`` (batch 1); int8 when ``calibration`` is given."""
    import torch

    from edgedistill.deploy.quantize import _quiet_root_logger

    litert_torch, _ = _require()
    model = model.eval()
    try:
        with _quiet_root_logger(), warnings.catch_warnings():  # litert-torch advises through the root logger
            warnings.simplefilter("ignore", FutureWarning)  # pytree deprecation notes from inside torch.export
            if calibration is None:
                return litert_torch.convert(model, (example,))
            from litert_torch.quantize import pt2e_quantizer as pq
            from litert_torch.quantize.quant_config import QuantConfig
            from torchao.quantization.pt2e import move_exported_model_to_eval, quantize_pt2e

            quantizer = pq.PT2EQuantizer().set_global(pq.get_symmetric_quantization_config(is_per_channel=True,
                                                                                             is_dynamic=False))
            graph = torch.export.export(model, (example,)).module()
            graph = quantize_pt2e.prepare_pt2e(graph, quantizer)
            # An exported module runs in training mode: BatchNorm would normalise with each calibration window's own
            # statistics, not the running ones the student was trained to use.
            move_exported_model_to_eval(graph)
            with torch.no_grad():
                for window in calibration:  # observers see the representative set one window at a time (batch 1)
                    graph(torch.from_numpy(window[None]))
            graph = quantize_pt2e.convert_pt2e(graph, fold_quantize=False)
            move_exported_model_to_eval(graph)  # (convert_pt2e gives a module in training mode again)
            return litert_torch.convert(graph, (example,), quant_config=QuantConfig(pt2e_quantizer=quantizer))
    except Exception as exc:  # noqa: BLE001 - litert-torch raises many kinds; all mean "cannot lower this model"
        raise unsupported(FORMAT, exc, "int8" if calibration is not None else "fp32") from exc


def interpreter_outputs(path: Path, x: np.ndarray, threads: int = 1) -> np.ndarray:
    """The file's outputs for every window of ``x``, run one window at a time by ai-edge-litert's interpreter."""
    _, interpreter = _require()
    runner = interpreter.Interpreter(model_path=str(path), num_threads=threads)
    runner.allocate_tensors()
    inp, out = runner.get_input_details()[0], runner.get_output_details()[0]
    in_scale, in_zero = inp["quantization"]
    out_scale, out_zero = out["quantization"]
    integer_in = np.issubdtype(inp["dtype"], np.integer)
    info = np.iinfo(inp["dtype"]) if integer_in else None
    outs = []
    for window in x:
        feed = np.ascontiguousarray(window[None], dtype=np.float32)
        if integer_in:  # a full-integer file: quantise the window with the input scale stored in the file
            feed = np.clip(np.round(feed / in_scale) + in_zero, info.min, info.max).astype(inp["dtype"])
        runner.set_tensor(inp["index"], feed)
        runner.invoke()
        result = runner.get_tensor(out["index"])[0].copy()
        if np.issubdtype(out["dtype"], np.integer):
            result = (result.astype(np.float64) - out_zero) * out_scale
        outs.append(result)
    return np.stack(outs)


def export_tflite(run: Any, out_dir: Path, *, int8: bool, calibration: int, max_diff: Optional[float] = 1e-4,
                  max_int8_drop: Optional[float] = 1.0, stem: Optional[str] = None, **_: Any) -> FormatResult:
    """Write ``<stem>.tflite`` (and ``<stem>.int8.tflite``) into ``out_dir``, verified; see the module docstring."""
    import torch

    from edgedistill.deploy.quantize import calibration_windows

    litert_torch, _ = _require()
    stem = stem or f"student_seed{run.seed}_{run.which}"
    prep = converter_input(run)
    example, train_x, student, rewrites = prep.example, prep.train_x, prep.student, prep.rewrites
    x, y, reference = prep.x, prep.y, prep.reference
    names = {"fp32": f"{stem}.tflite", "int8": f"{stem}.int8.tflite"}
    staging = Staging(out_dir)
    with staging as tmp:
        staged = {"fp32": tmp / "fp32.tflite"}
        convert(student, example).export(str(staged["fp32"]))
        if int8:
            calib = calibration_windows(train_x, calibration, seed=run.seed)
            staged["int8"] = tmp / "int8.tflite"
            convert(student, example, calibration=calib).export(str(staged["int8"]))
        outputs = {v: (out_dir / names[v], interpreter_outputs(p, x)) for v, p in staged.items()}
        metric, rows = check_outputs(run, FORMAT, outputs, reference, y, max_diff=max_diff, max_int8_drop=max_int8_drop)
        sizes = {v: p.stat().st_size for v, p in staged.items()}
        files = staging.publish(staged, names)
    from edgedistill.deploy.export import int8_notes

    notes = ["batch size fixed at 1 (what a device runs)",
             *(f"rewritten for export (same numbers, checked above): {r}" for r in rewrites)]
    if int8:
        notes.append(f"int8: PT2E static symmetric, weights per channel, {len(calib)} training windows for calibration; "
                     "int8 input and output tensors (scale and zero point in the file)")
        notes += int8_notes(sizes["fp32"], sizes["int8"])
    return FormatResult(FORMAT, files, rows, metric, sizes, notes=notes,
                        backend=f"litert-torch {litert_torch.__version__}, torch {torch.__version__}; "
                                "verified with ai-edge-litert's interpreter")


def single_window_call(path: Path, window: np.ndarray) -> Any:
    """A call running one window through the file on one interpreter thread (for ``profile``'s latency)."""
    _, interpreter = _require()
    runner = interpreter.Interpreter(model_path=str(path), num_threads=1)
    runner.allocate_tensors()
    inp = runner.get_input_details()[0]
    feed = np.ascontiguousarray(window[None], dtype=np.float32)
    if np.issubdtype(inp["dtype"], np.integer):
        scale, zero = inp["quantization"]
        info = np.iinfo(inp["dtype"])
        feed = np.clip(np.round(feed / scale) + zero, info.min, info.max).astype(inp["dtype"])
    runner.set_tensor(inp["index"], feed)
    return runner.invoke
