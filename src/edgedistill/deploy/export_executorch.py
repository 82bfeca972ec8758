"""The ``executorch`` format: the student as an ExecuTorch program (``.pte``), checked with ExecuTorch's own runtime
(``executorch.runtime``) on the run's test windows.

fp32: ``torch.export`` of the eval-mode student, lowered with ``to_edge_transform_and_lower`` to the XNNPACK delegate
where ExecuTorch has it (the portable operators run whatever XNNPACK does not take, and all of the graph when the
delegate is not installed). int8: the PT2E flow ExecuTorch documents for XNNPACK (``XNNPACKQuantizer`` with its
symmetric static config, weights per channel, int8 activations), calibrated on ``--calibration`` training windows;
input and output stay float (the quantise and dequantise nodes are inside the program). The batch size is fixed
at 1, what a device runs; the runtime is checked window by window.
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Optional

import numpy as np

from edgedistill.deploy.formats import FormatResult, Staging, check_outputs, converter_input, missing_package, \
    unsupported

FORMAT = "executorch"


def _require() -> Any:
    try:
        import importlib

        import executorch.exir as exir
        importlib.import_module("executorch.runtime")  # the verification needs the runtime too
    except ImportError:
        raise missing_package(FORMAT, "executorch") from None
    return exir


def _partitioners() -> tuple[list[Any], str]:
    """([XNNPACK partitioner], "xnnpack") or ([], "portable") when this ExecuTorch has no XNNPACK backend."""
    try:
        from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    except ImportError:
        return [], "portable"
    return [XnnpackPartitioner()], "xnnpack"


def program_bytes(model: Any, example: Any, *, calibration: Optional[np.ndarray] = None) -> tuple[bytes, str]:
    """(the ``.pte`` bytes, "xnnpack" or "portable") of ``model`` for input ``example``; int8 with ``calibration``."""
    import torch

    exir = _require()
    partitioners, backend = _partitioners()
    model = model.eval()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # pytree deprecation notes from inside torch.export
            if calibration is not None:
                from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
                    XNNPACKQuantizer, get_symmetric_quantization_config)
                from torchao.quantization.pt2e import move_exported_model_to_eval, quantize_pt2e

                quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
                graph = torch.export.export(model, (example,)).module()
                graph = quantize_pt2e.prepare_pt2e(graph, quantizer)
                move_exported_model_to_eval(graph)  # BatchNorm with its running statistics while calibrating
                with torch.no_grad():
                    for window in calibration:
                        graph(torch.from_numpy(window[None]))
                model = quantize_pt2e.convert_pt2e(graph)
            program = torch.export.export(model, (example,))
            lowered = exir.to_edge_transform_and_lower(program, partitioner=partitioners)
            return lowered.to_executorch().buffer, backend
    except Exception as exc:  # noqa: BLE001 - export and lowering raise many kinds; all mean "cannot express"
        raise unsupported(FORMAT, exc, "int8" if calibration is not None else "fp32") from exc


def runtime_outputs(path: Path, x: np.ndarray) -> np.ndarray:
    """The program's outputs for every window of ``x``, one window at a time, by ``executorch.runtime``."""
    import torch

    _require()
    from executorch.runtime import Runtime

    method = Runtime.get().load_program(Path(path)).load_method("forward")
    return np.stack([method.execute([torch.from_numpy(np.ascontiguousarray(w[None], dtype=np.float32))])[0][0].numpy()
                     for w in x])


def export_executorch(run: Any, out_dir: Path, *, int8: bool, calibration: int, max_diff: Optional[float] = 1e-4,
                      max_int8_drop: Optional[float] = 1.0, stem: Optional[str] = None, **_: Any) -> FormatResult:
    """Write ``<stem>.pte`` (and ``<stem>.int8.pte``) into ``out_dir``, verified; see the module docstring."""
    import torch

    from edgedistill.deploy.export import int8_notes
    from edgedistill.deploy.quantize import calibration_windows

    _require()
    from importlib.metadata import version

    stem = stem or f"student_seed{run.seed}_{run.which}"
    prep = converter_input(run)
    example, train_x, student, rewrites = prep.example, prep.train_x, prep.student, prep.rewrites
    x, y, reference = prep.x, prep.y, prep.reference
    names = {"fp32": f"{stem}.pte", "int8": f"{stem}.int8.pte"}
    staging = Staging(out_dir)
    with staging as tmp:
        staged = {"fp32": tmp / "fp32.pte"}
        data, backend = program_bytes(student, example)
        staged["fp32"].write_bytes(data)
        if int8:
            calib = calibration_windows(train_x, calibration, seed=run.seed)
            staged["int8"] = tmp / "int8.pte"
            staged["int8"].write_bytes(program_bytes(student, example, calibration=calib)[0])
        outputs = {v: (out_dir / names[v], runtime_outputs(p, x)) for v, p in staged.items()}
        metric, rows = check_outputs(run, FORMAT, outputs, reference, y, max_diff=max_diff, max_int8_drop=max_int8_drop)
        sizes = {v: p.stat().st_size for v, p in staged.items()}
        files = staging.publish(staged, names)
    notes = ["batch size fixed at 1 (what a device runs)",
             *(f"rewritten for export (same numbers, checked above): {r}" for r in rewrites),
             "XNNPACK delegate" if backend == "xnnpack" else "portable operators (this ExecuTorch has no XNNPACK backend)"]
    if int8:
        notes.append(f"int8: PT2E XNNPACKQuantizer, symmetric, weights per channel, {len(calib)} training windows for "
                     "calibration; float input and output")
        notes += int8_notes(sizes["fp32"], sizes["int8"])
    return FormatResult(FORMAT, files, rows, metric, sizes, notes=notes,
                        backend=f"executorch {version('executorch')} ({backend}), torch {torch.__version__}; "
                                "verified with executorch.runtime")


def single_window_call(path: Path, window: np.ndarray) -> Any:
    """A call running one window through the program, its thread pool cut to one thread (``profile``'s latency)."""
    import torch

    _require()
    from executorch.extension.pybindings.portable_lib import _unsafe_reset_threadpool
    from executorch.runtime import Runtime

    _unsafe_reset_threadpool(1)
    method = Runtime.get().load_program(Path(path)).load_method("forward")
    feed = [torch.from_numpy(np.ascontiguousarray(window[None], dtype=np.float32))]
    return lambda: method.execute(feed)
