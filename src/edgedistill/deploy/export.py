"""``edgedistill export RUN_DIR``: the run's student as ONNX (fp32, optionally int8), verified, with its
preprocessing in the file's metadata.

All or nothing: the files are written and checked in a temporary folder beside the target and renamed
into place only when every check passed, so a failed export leaves no file behind.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np

from edgedistill.deploy.quantize import DEFAULT_CALIBRATION
from edgedistill.errors import EnvironmentProblem, UserInputError
from edgedistill.io import environment_error, make_dirs

DEFAULT_MAX_DIFF = 1e-4
DEFAULT_MAX_INT8_DROP = 1.0  # points of test accuracy (R² x 100 for regression)


@dataclass
class ExportResult:
    fp32: Path
    int8: Optional[Path]
    verification: dict[str, Any]
    metadata: Any  # ModelMetadata of the fp32 file
    exporter: str
    rewrites: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    sizes: dict[str, int] = field(default_factory=dict)  # bytes per variant ("pytorch": the state dict)
    notes: list[str] = field(default_factory=list)  # plain remarks on the result (int8 not smaller than fp32)
    seed_reason: str = ""  # which seed was exported and why, when the caller named none

    @property
    def files(self) -> dict[str, Path]:
        return {"fp32": self.fp32, **({"int8": self.int8} if self.int8 is not None else {})}

    def table(self) -> tuple[list[str], list[list[str]]]:
        """Header and cells of the verification table (what the CLI prints)."""
        metric = self.verification["metric"]
        header = ["variant", "file", "KB", "max |diff| vs PyTorch", f"test {metric}", "agreement"]
        rows = []
        for r in self.verification["rows"]:
            variant = r["variant"].replace("onnx ", "")
            size = self.sizes.get(variant)
            agree = "" if r["agreement"] is None else f"{100 * r['agreement']:.1f}%"
            rows.append([r["variant"], Path(r["file"]).name if r["file"] else "(checkpoint)", "" if size is None else f"{size / 1024:.1f}",
                         "-" if r["variant"] == "pytorch" else f"{r['max_abs_diff']:.2e}", f"{r['score']:.4f}", agree])
        return header, rows


def int8_notes(size_fp32: int, size_int8: int, us_fp32: Optional[float] = None,
               us_int8: Optional[float] = None) -> list[str]:
    """Say plainly when int8 buys nothing: for a student of a few thousand weights the quantise/dequantise nodes and
    their scales outweigh the bytes saved, and ONNX Runtime may run the QDQ graph slower than fp32."""
    notes = []
    if size_int8 >= size_fp32:
        notes.append(f"the int8 file ({size_int8 / 1024:.1f} KB) is not smaller than fp32 ({size_fp32 / 1024:.1f} KB): "
                     "for a model this small its quantisation nodes outweigh the bytes saved; ship fp32")
    if us_fp32 is not None and us_int8 is not None and us_int8 >= us_fp32:
        notes.append(f"int8 is not faster than fp32 here (median {us_int8:.0f} µs against {us_fp32:.0f} µs per window, "
                     "batch 1, one thread); on this CPU fp32 is the better choice")
    return notes


def predict_torch(model: Any, x: np.ndarray, batch: int = 256) -> np.ndarray:
    import torch

    model.eval()
    with torch.no_grad():
        outs = [model(torch.from_numpy(x[i:i + batch])).float().numpy() for i in range(0, len(x), batch)]
    return np.concatenate(outs).astype(np.float64)


def _state_dict_bytes(model: Any) -> int:
    import io

    import torch

    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    return len(buf.getvalue())


def export(
    run_dir: str | Path,
    out: Optional[str | Path] = None,
    *,
    int8: bool = False,
    opset: Optional[int] = None,
    seed: Optional[int] = None,
    which: str = "best",
    calibration: int = DEFAULT_CALIBRATION,
    max_diff: Optional[float] = DEFAULT_MAX_DIFF,
    max_int8_drop: Optional[float] = DEFAULT_MAX_INT8_DROP,
    exporter: str = "auto",
) -> ExportResult:
    """Export the student of ``run_dir`` (seed ``seed``, default the one best on validation; checkpoint ``which``).

    Writes ``out`` (default ``<run>/export/student_seed<k>_<which>.onnx``) and with ``int8`` also
    ``<stem>.int8.onnx``. Raises ``ExportError`` (the layer that cannot be exported and why) or
    ``VerificationError`` (a threshold exceeded; ``None`` disables a check); both are ``UserInputError``.
    """
    from edgedistill.deploy.metadata import require_onnx, require_onnxruntime
    from edgedistill.deploy.runs import default_paths, load_run

    require_onnx(), require_onnxruntime()  # before the data is loaded: say what to install at once
    run = load_run(run_dir, seed, which)
    fp32_path, int8_path = default_paths(run, out)
    result = export_loaded(run, fp32_path, int8_path if int8 else None, opset=opset, calibration=calibration,
                           max_diff=max_diff, max_int8_drop=max_int8_drop, exporter=exporter)
    result.seed_reason = run.seed_reason
    return result


def export_loaded(run: Any, fp32_path: Path, int8_path: Optional[Path], *, opset: Optional[int] = None,
                  calibration: int = DEFAULT_CALIBRATION, max_diff: Optional[float] = DEFAULT_MAX_DIFF,
                  max_int8_drop: Optional[float] = DEFAULT_MAX_INT8_DROP, exporter: str = "auto") -> ExportResult:
    import torch

    from edgedistill.deploy.convert import DEFAULT_OPSET, strip_debug_info, to_onnx
    from edgedistill.deploy.metadata import attach, require_onnx, require_onnxruntime
    from edgedistill.deploy.quantize import calibration_windows, quantize_int8
    from edgedistill.deploy.verify import VerificationError, verify

    onnx = require_onnx()
    require_onnxruntime()
    opset = DEFAULT_OPSET if opset is None else opset
    if not 13 <= opset <= 23:
        raise UserInputError(f"--opset: expected an ONNX opset between 13 and 23, got {opset}")
    meta = run.metadata()
    train_x = run.splits.train.x.numpy()
    example = torch.from_numpy(np.ascontiguousarray(train_x[:2] if len(train_x) >= 2 else np.repeat(train_x, 2, 0)))
    converted = to_onnx(run.student, example, opset=opset, exporter=exporter, names=(meta.input_name, meta.output_name))
    meta.exporter = f"torch.onnx.export ({converted.exporter}), opset {opset}, torch {torch.__version__}"

    parent = fp32_path.parent
    made = [p for p in [parent, *parent.parents] if not p.exists()]
    make_dirs(parent)  # a read-only or full --out folder: EnvironmentProblem (exit 4) naming it
    try:
        tmp = Path(tempfile.mkdtemp(prefix=".export-", dir=parent))
    except OSError as exc:
        raise environment_error(exc, parent, "write into") from None
    try:
        staged = {"fp32": tmp / "fp32.onnx"}
        onnx.save_model(converted.proto, str(staged["fp32"]))
        quant_info: dict[str, Any] = {}
        if int8_path is not None:
            staged["int8"] = tmp / "int8.onnx"
            calib = calibration_windows(train_x, calibration, seed=run.seed)
            quant_info = quantize_int8(staged["fp32"], staged["int8"], calib, meta.input_name)
        test_x = np.ascontiguousarray(run.splits.test.x.numpy(), dtype=np.float32)
        test_y = run.splits.test.y.numpy()
        reference = predict_torch(run.student, test_x)
        final_names = {"onnx fp32": str(fp32_path), "onnx int8": str(int8_path)}
        try:
            result = verify(reference, staged, test_x, test_y, task=meta.task, input_name=meta.input_name,
                            target_scale=meta.target_scale, max_diff=max_diff, max_int8_drop=max_int8_drop)
        except VerificationError as exc:
            for row in getattr(exc, "result", {}).get("rows", []):  # name the files that were not written
                row["file"] = final_names.get(row["variant"], "")
            raise
        for row in result["rows"]:  # report the final names, not the staging ones
            row["file"] = final_names.get(row["variant"], "")
        meta.verification = {k: v for k, v in result.items() if k != "rows"}
        meta.verification["rows"] = [{k: v for k, v in r.items() if k != "file"} for r in result["rows"]]
        targets = {"fp32": fp32_path, **({"int8": int8_path} if int8_path is not None else {})}
        sizes = {"pytorch": _state_dict_bytes(run.student)}
        for variant, path in staged.items():
            proto = strip_debug_info(onnx.load(str(path)))
            meta.quantization = "none" if variant == "fp32" else (
                f"{quant_info['method']}; weights {quant_info['weights']}; activations {quant_info['activations']}; "
                f"{quant_info['calibration_windows']} training windows for calibration")
            attach(proto, meta)
            final = tmp / f"final-{variant}.onnx"
            onnx.save_model(proto, str(final))
            with open(final, "rb") as fh:
                os.fsync(fh.fileno())
            sizes[variant] = final.stat().st_size
            staged[variant] = final
        for variant, path in staged.items():  # every check passed: move into place
            os.replace(path, targets[variant])
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        for p in made:  # folders this export created, innermost first, if still empty
            if p.is_dir() and not any(p.iterdir()):
                p.rmdir()
        if isinstance(exc, OSError) and not isinstance(exc, EnvironmentProblem):
            # A full disk while writing the model (onnx.save_model, the rename): one line, exit 4, nothing left.
            raise environment_error(exc, Path(exc.filename) if exc.filename else fp32_path) from None
        raise
    shutil.rmtree(tmp, ignore_errors=True)
    meta.quantization = "none"
    notes = int8_notes(sizes["fp32"], sizes["int8"]) if "int8" in sizes else []
    return ExportResult(fp32_path, int8_path, result, meta, converted.exporter, converted.rewrites,
                        converted.warnings, sizes, notes)


def export_onnx_format(run: Any, out_dir: Path, *, int8: bool, calibration: int = DEFAULT_CALIBRATION,
                       max_diff: Optional[float] = DEFAULT_MAX_DIFF,
                       max_int8_drop: Optional[float] = DEFAULT_MAX_INT8_DROP, opset: Optional[int] = None,
                       exporter: str = "auto", stem: Optional[str] = None) -> Any:
    """The ``onnx`` backend of ``deploy.formats``: ``export_loaded`` into ``out_dir/<stem>.onnx`` (and
    ``<stem>.int8.onnx``) as a ``FormatResult``."""
    from edgedistill.deploy.formats import FormatResult

    stem = stem or f"student_seed{run.seed}_{run.which}"
    fp32 = Path(out_dir) / f"{stem}.onnx"
    result = export_loaded(run, fp32, fp32.with_name(f"{stem}.int8.onnx") if int8 else None, opset=opset,
                           calibration=calibration, max_diff=max_diff, max_int8_drop=max_int8_drop, exporter=exporter)
    notes = [*(f"warning: {w}" for w in result.warnings),
             *(f"rewritten for export (same numbers, checked above): {r}" for r in result.rewrites), *result.notes]
    return FormatResult("onnx", result.files, result.verification["rows"], result.verification["metric"],
                        {k: v for k, v in result.sizes.items() if k != "pytorch"}, notes=notes,
                        backend=result.metadata.exporter + ", verified with ONNX Runtime")
