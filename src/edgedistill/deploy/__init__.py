"""Ship the student: export to ONNX, LiteRT/TFLite, ExecuTorch or C99 (fp32 and int8; ``export_format``),
verification, size/MACs/latency profile, and a small ``Predictor`` for raw windows or a stream (``Predictor.stream``).

``export(run_dir, int8=True)`` writes verified ``.onnx`` files with the preprocessing in their metadata;
``profile(run_dir_or_onnx)`` measures parameters, file size, MACs and batch-1 latency; ``Predictor(path)``
classifies raw, un-normalised windows with nothing but ONNX Runtime and numpy. onnx, onnxruntime and
onnxscript come with the ``deploy`` extra (``pip install 'edgedistill[deploy]'``); they are imported only
when these functions are called.
"""
from __future__ import annotations

from typing import Any

# The functions share their modules' names: bind them eagerly so ``edgedistill.deploy.export`` is the
# function, never the submodule (both modules import only numpy at the top).
from edgedistill.deploy.export import export
from edgedistill.deploy.profile import profile

__all__ = ["export", "profile", "Predictor", "read_metadata", "to_onnx", "ExportError", "VerificationError",
           "export_format", "FormatResult", "StreamResult"]

_LAZY = {
    "ExportResult": ("edgedistill.deploy.export", "ExportResult"),
    "Predictor": ("edgedistill.deploy.predictor", "Predictor"),
    "read_metadata": ("edgedistill.deploy.metadata", "read"),
    "ModelMetadata": ("edgedistill.deploy.metadata", "ModelMetadata"),
    "to_onnx": ("edgedistill.deploy.convert", "to_onnx"),
    "ExportError": ("edgedistill.deploy.convert", "ExportError"),
    "VerificationError": ("edgedistill.deploy.verify", "VerificationError"),
    "export_format": ("edgedistill.deploy.formats", "export_format"),
    "FormatResult": ("edgedistill.deploy.formats", "FormatResult"),
    "StreamResult": ("edgedistill.deploy.stream", "StreamResult"),
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'edgedistill.deploy' has no attribute '{name}'")
