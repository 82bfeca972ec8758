"""Data layer: loaders return ``RawData``; ``prepare_data`` turns a ``DataConfig`` into ``DataSplits``.

Exports resolve lazily (PEP 562) so that importing a submodule, or listing the CLI's commands, does not
pull in torch, pydantic or the dataset libraries before they are needed.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from edgedistill.data.dataset import DataInfo, DataSplits, TensorData
    from edgedistill.data.prepare import dataset_fingerprint, prepare_data
    from edgedistill.data.raw import RawData

_EXPORTS = {
    "prepare_data": "edgedistill.data.prepare",
    "dataset_fingerprint": "edgedistill.data.prepare",
    "TensorData": "edgedistill.data.dataset",
    "DataSplits": "edgedistill.data.dataset",
    "DataInfo": "edgedistill.data.dataset",
    "RawData": "edgedistill.data.raw",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'edgedistill.data' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
