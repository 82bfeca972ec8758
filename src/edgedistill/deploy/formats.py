"""Export formats behind one interface: ``onnx``, ``tflite`` (LiteRT), ``executorch`` (``.pte``) and ``c`` (C99).

Every backend is a function ``export_<format>(run, out_dir, *, int8, calibration) -> FormatResult`` that writes its
files into ``out_dir`` and verifies them against the PyTorch student on the run's test windows; its rows have the
shape of ``verify.verify``'s (variant, file, max_abs_diff, score, agreement). Backends are imported only when
their format is asked for, so a format whose package is missing is an error naming the extra to install and the
other formats still work.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from edgedistill.errors import UserInputError


@dataclass
class FormatResult:
    """What one format's export wrote and how well it reproduces PyTorch.

    ``files``: variant ("fp32", "int8") -> the model file; ``extra_files``: other files written (a C header, a
    test harness). ``rows``: verification rows, the first the PyTorch reference, each a dict with ``variant``
    (e.g. "tflite int8"), ``file``, ``max_abs_diff``, ``score``, ``agreement`` (None for regression) and
    ``score_drop_points``. ``sizes``: bytes per variant. ``footprint``: per variant a dict of device estimates
    (for C: ``flash_bytes``, ``ram_bytes``). ``notes``: plain remarks (int8 not smaller, a delegate not used).
    """

    format: str
    files: dict[str, Path]
    rows: list[dict[str, Any]]
    metric: str = "accuracy"
    sizes: dict[str, int] = field(default_factory=dict)
    footprint: dict[str, dict[str, int]] = field(default_factory=dict)
    extra_files: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    backend: str = ""  # the converter and runtime used, with versions

    def to_json(self) -> dict[str, Any]:
        return {"format": self.format, "backend": self.backend, "metric": self.metric,
                "files": {k: str(v) for k, v in self.files.items()}, "extra_files": [str(p) for p in self.extra_files],
                "sizes": self.sizes, "footprint": self.footprint, "rows": self.rows, "notes": self.notes}


Backend = Callable[..., FormatResult]


@dataclass(frozen=True)
class FormatSpec:
    name: str
    module: str  # imported only when the format is used
    function: str
    extra: str  # the pyproject extra that installs its packages
    suffix: str  # of the fp32 file
    description: str


FORMATS: dict[str, FormatSpec] = {
    "onnx": FormatSpec("onnx", "edgedistill.deploy.export", "export_onnx_format", "deploy", ".onnx",
                       "ONNX (torch.onnx), run by ONNX Runtime; int8 as static QDQ"),
    "tflite": FormatSpec("tflite", "edgedistill.deploy.export_tflite", "export_tflite", "tflite", ".tflite",
                         "LiteRT / TensorFlow Lite (litert-torch), run by ai-edge-litert; int8 full-integer"),
    "executorch": FormatSpec("executorch", "edgedistill.deploy.export_executorch", "export_executorch", "executorch",
                             ".pte", "ExecuTorch program (XNNPACK delegate, else portable ops); int8 via PT2E"),
    "c": FormatSpec("c", "edgedistill.deploy.c_export", "export_c", "", ".c",
                    "dependency-free C99 source + header for the 1-D student zoo, with a compiled test harness"),
}


def parse_formats(text: str) -> list[str]:
    """``"onnx,tflite"`` -> ["onnx", "tflite"]; an unknown or repeated name is a UserInputError."""
    names = [t.strip().lower() for t in text.split(",") if t.strip()]
    if not names:
        raise UserInputError(f"--format: expected one or more of {', '.join(FORMATS)} separated by commas, got {text!r}")
    unknown = [n for n in names if n not in FORMATS]
    if unknown:
        raise UserInputError(f"--format: unknown format(s) {', '.join(map(repr, unknown))}; expected any of "
                             f"{', '.join(FORMATS)} separated by commas")
    return list(dict.fromkeys(names))


def backend(name: str) -> Backend:
    """The export function of format ``name``, imported now; a missing module is a clear error."""
    spec = FORMATS[name]
    try:
        module = importlib.import_module(spec.module)
    except ModuleNotFoundError as exc:
        if exc.name and spec.module.startswith(exc.name):  # our own module is not there (yet)
            raise UserInputError(f"--format {name}: this edgedistill has no backend module {spec.module} yet") from None
        raise missing_package(name, exc.name or str(exc)) from None
    return getattr(module, spec.function)


def missing_package(format_name: str, package: str) -> UserInputError:
    """The error for a format whose package is not installed (exit 2, as for a missing onnxruntime)."""
    extra = FORMATS[format_name].extra
    how = f"pip install 'edgedistill[{extra}]'" if extra else f"install {package}"
    return UserInputError(f"format '{format_name}' needs the package '{package}', which is not installed: {how}")


def unsupported(format_name: str, exc: BaseException, stage: str) -> UserInputError:
    """An ``ExportError`` naming the operator(s) a converter could not lower (the ``aten.*`` names in its message), or
    its first line when it names none."""
    import re

    from edgedistill.deploy.convert import ExportError

    text = str(exc)
    ops = sorted(set(re.findall(r"\baten(?:\.|::)[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z0-9_]+)?", text)))
    what = (f"operator(s) {', '.join(ops)} not supported" if ops
            else f"{type(exc).__name__}: {text.strip().splitlines()[0][:300] if text.strip() else '(no message)'}")
    return ExportError(f"format '{format_name}' cannot express the student ({stage}): {what}; write that layer with "
                       f"operators {format_name} has, or export another format")


def export_format(name: str, run: Any, out_dir: Path, *, int8: bool = False, calibration: Optional[int] = None,
                  **options: Any) -> FormatResult:
    """Export the loaded run's student as ``name`` into ``out_dir`` (see the module docstring)."""
    from edgedistill.deploy.quantize import DEFAULT_CALIBRATION

    fn = backend(name)
    return fn(run, Path(out_dir), int8=int8, calibration=DEFAULT_CALIBRATION if calibration is None else calibration,
              **options)


def test_data(run: Any) -> tuple[Any, Any, Any]:
    """(test windows float32 C-contiguous, test targets, PyTorch's outputs on them) of a loaded run."""
    import numpy as np

    from edgedistill.deploy.export import predict_torch

    x = np.ascontiguousarray(run.splits.test.x.numpy(), dtype=np.float32)
    return x, run.splits.test.y.numpy(), predict_torch(run.student, x)


@dataclass
class ConverterInput:
    """What a converter backend (tflite, executorch) starts from: a one-window example from the training split,
    the student with the ONNX path's exact rewrites (an adaptive pool whose bins do not divide its input becomes
    per-bin slices and means; otherwise converters decompose it into a large gather graph), and the test data."""

    example: Any
    train_x: Any
    student: Any
    rewrites: list[str]
    x: Any
    y: Any
    reference: Any  # the original student's outputs on x: every file is checked against them


def converter_input(run: Any) -> ConverterInput:
    import numpy as np
    import torch

    from edgedistill.deploy.convert import export_ready

    train_x = run.splits.train.x.numpy()
    example = torch.from_numpy(np.ascontiguousarray(train_x[:1], dtype=np.float32))
    student, rewrites = export_ready(run.student, example)
    return ConverterInput(example, train_x, student, rewrites, *test_data(run))


def check_outputs(run: Any, format_name: str, outputs: dict[str, tuple[Path, Any]], reference: Any, y: Any, *,
                  max_diff: Optional[float], max_int8_drop: Optional[float]) -> tuple[str, list[dict[str, Any]]]:
    """(metric, rows) comparing each variant's test outputs (``{"fp32": (file, outputs)}``) with PyTorch's, in the
    shape of ``verify.verify``'s rows; raises ``VerificationError`` (carrying ``result``) after measuring all."""
    import numpy as np

    from edgedistill.deploy.verify import VerificationError, score

    meta = run.metadata()
    task, scale = meta.task, meta.target_scale
    metric = "accuracy" if task == "classification" else "R2"
    ref_score = score(reference, y, task, scale)
    rows: list[dict[str, Any]] = [{"variant": "pytorch", "file": "", "max_abs_diff": 0.0, "score": ref_score,
                                   "agreement": 1.0}]
    problems = []
    for variant, (path, out) in outputs.items():
        out = np.asarray(out, dtype=np.float64).reshape(reference.shape)
        agree = float((out.argmax(1) == reference.argmax(1)).mean()) if task == "classification" else None
        row = {"variant": f"{format_name} {variant}", "file": str(path), "max_abs_diff": float(np.abs(out - reference).max()),
               "score": score(out, y, task, scale), "agreement": agree}
        row["score_drop_points"] = 100 * (ref_score - row["score"])
        rows.append(row)
        if variant == "fp32" and max_diff is not None and not row["max_abs_diff"] <= max_diff:
            problems.append(f"{format_name} fp32 output differs from PyTorch by {row['max_abs_diff']:.3g} > {max_diff:g} "
                            "(--max-diff)")
        if variant == "int8" and max_int8_drop is not None and row["score_drop_points"] > max_int8_drop:
            problems.append(f"{format_name} int8 loses {row['score_drop_points']:.2f} points of test {metric} "
                            f"({ref_score:.4f} -> {row['score']:.4f}) > {max_int8_drop:g} (--max-int8-drop)")
    if problems:
        err = VerificationError("export verification failed: " + "; ".join(problems) + "; no file was written")
        err.result = {"metric": metric, "test_windows": int(len(y)), "rows": rows}  # type: ignore[attr-defined]
        raise err
    return metric, rows


class Staging:
    """A temporary folder beside ``out_dir`` whose files are renamed into place only by ``publish`` (all or nothing:
    a failed conversion or verification leaves no file behind). Use as a context manager."""

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = Path(out_dir)

    def __enter__(self) -> Path:
        import tempfile

        from edgedistill.io import environment_error, make_dirs

        self.made = [p for p in [self.out_dir, *self.out_dir.parents] if not p.exists()]
        make_dirs(self.out_dir)
        try:
            self.tmp = Path(tempfile.mkdtemp(prefix=".export-", dir=self.out_dir))
        except OSError as exc:
            raise environment_error(exc, self.out_dir, "write into") from None
        return self.tmp

    def __exit__(self, exc_type: Any, *exc: Any) -> None:
        import shutil

        shutil.rmtree(self.tmp, ignore_errors=True)
        if exc_type is not None:
            for p in self.made:  # folders this export created, innermost first, if still empty
                if p.is_dir() and not any(p.iterdir()):
                    p.rmdir()

    def publish(self, staged: dict[str, Path], names: dict[str, str]) -> dict[str, Path]:
        """Move every staged file (key -> file in the staging folder) to ``out_dir/names[key]``; returns the targets."""
        import os

        targets = {}
        for key, path in staged.items():
            with open(path, "rb") as fh:
                os.fsync(fh.fileno())
            target = self.out_dir / names[key]
            os.replace(path, target)
            targets[key] = target
        return targets


def write_verification(result: FormatResult, out_dir: Path, stem: str) -> list[Path]:
    """``<stem>.<format>.verification.json`` and ``.md`` beside the files, written atomically."""
    from edgedistill.io import write_json, write_text

    json_path = Path(out_dir) / f"{stem}.{result.format}.verification.json"
    md_path = json_path.with_name(f"{stem}.{result.format}.verification.md")
    header, cells = verification_table(result)
    lines = [f"# {result.format} export of {stem}", "", f"Backend: {result.backend}.", "",
             "| " + " | ".join(h.replace("|", "\\|") for h in header) + " |", "|" + "|".join("---" for _ in header) + "|",
             *("| " + " | ".join(c) + " |" for c in cells), "", *(f"- {n}" for n in result.notes)]
    write_json(json_path, result.to_json())
    write_text(md_path, "\n".join(lines).rstrip() + "\n")
    return [json_path, md_path]


def verification_table(result: FormatResult) -> tuple[list[str], list[list[str]]]:
    """Header and cells of one format's verification table."""
    header = ["variant", "file", "KB", "max |diff| vs PyTorch", f"test {result.metric}", "agreement"]
    cells = []
    for r in result.rows:
        variant = r["variant"].split(" ")[-1]
        size = result.sizes.get(variant) if r["variant"] != "pytorch" else None
        agree = "" if r.get("agreement") is None else f"{100 * r['agreement']:.1f}%"
        cells.append([r["variant"], Path(r["file"]).name if r["file"] else "(checkpoint)",
                      "" if size is None else f"{size / 1024:.1f}",
                      "-" if r["variant"] == "pytorch" else f"{r['max_abs_diff']:.2e}", f"{r['score']:.4f}", agree])
    return header, cells
