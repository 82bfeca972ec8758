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


def export_format(name: str, run: Any, out_dir: Path, *, int8: bool = False, calibration: Optional[int] = None,
                  **options: Any) -> FormatResult:
    """Export the loaded run's student as ``name`` into ``out_dir`` (see the module docstring)."""
    from edgedistill.deploy.quantize import DEFAULT_CALIBRATION

    fn = backend(name)
    return fn(run, Path(out_dir), int8=int8, calibration=DEFAULT_CALIBRATION if calibration is None else calibration,
              **options)
