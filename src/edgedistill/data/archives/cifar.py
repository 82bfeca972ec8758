"""CIFAR-10 and CIFAR-100 (Krizhevsky 2009) from the official "python version" archives, read without executing code.

The archives (https://www.cs.toronto.edu/~kriz/cifar.html) unpack as ``cifar-10-batches-py/`` (``data_batch_1`` ..
``data_batch_5``, ``test_batch``, ``batches.meta``) and ``cifar-100-python/`` (``train``, ``test``, ``meta``). Each
file is a Python 2 ``cPickle`` of a dict: ``data`` a uint8 numpy array (n, 3072), one row an image as 1024 red, 1024
green, 1024 blue values, each 32 x 32 row-major; ``labels`` (CIFAR-10) or ``fine_labels`` / ``coarse_labels``
(CIFAR-100) lists of ints; the meta file lists the class names (``label_names``, ``fine_label_names``,
``coarse_label_names``). Unpickling can run arbitrary code, so ``SafeUnpickler`` resolves no global except the three
numpy needs to rebuild an array (``numpy.core.multiarray._reconstruct``, ``numpy.ndarray``, ``numpy.dtype``); any
other global (a function, a class, ``_codecs.encode`` from a Python 3 re-pickle) is refused naming the file.

Protocol: the official split (50000 train / 10000 test), images as (n, 3, 32, 32) float32 scaled to [0, 1] (float32:
60000 float64 images would take 1.5 GB), labels as class names in the meta file's order.
"""
from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from edgedistill.data.archives.base import Archive, require
from edgedistill.data.archives.text_tables import announce
from edgedistill.data.raw import RawData
from edgedistill.errors import UserInputError

#: The md5 checksums the CIFAR page publishes (it gives md5 only, no sha256). They go in ``Archive.sha256``: the
#: download compares md5 when that field holds 32 hex digits (``download.py``).
MD5_CIFAR10 = "c58f30108f718f92721af3b95e74349a"
MD5_CIFAR100 = "eb9058c3a382ffc7106e4002c42a8d85"
IMAGE = (3, 32, 32)


def _numpy_globals() -> dict[tuple[str, str], Any]:
    """The only globals a CIFAR pickle may name, as numpy 1 and numpy 2 spell the reconstruct function's module."""
    try:
        from numpy._core.multiarray import _reconstruct  # numpy >= 2
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core.multiarray import _reconstruct
    return {("numpy.core.multiarray", "_reconstruct"): _reconstruct,
            ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
            ("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype}


class SafeUnpickler(pickle.Unpickler):
    """Plain containers, numbers and strings, and numpy arrays rebuilt from their bytes; no other global."""

    def __init__(self, file: io.BufferedIOBase, path: Path):
        super().__init__(file, encoding="latin1")  # Python 2 str -> str; numpy decodes array bytes from latin1
        self.path = path
        self.allowed = _numpy_globals()

    def find_class(self, module: str, name: str) -> Any:
        found = self.allowed.get((module, name))
        if found is None:
            raise UserInputError(
                f"dataset 'cifar': '{self.path}' names '{module}.{name}', which a CIFAR pickle never does; refused "
                f"(loading it could run code): use the archive as downloaded from the CIFAR page"
            )
        return found


def read_pickle(path: Path, archive: str) -> dict:
    """One CIFAR pickle as a dict with str keys; missing, truncated or foreign files refused naming the file."""
    announce(require(path, archive))
    try:
        with open(path, "rb") as fh:
            out = SafeUnpickler(fh, path).load()
    except UserInputError:
        raise
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means the file is not the archive's
        raise UserInputError(f"dataset '{archive}': '{path}' is not a CIFAR pickle as the archive ships it "
                             f"({type(exc).__name__}: {exc})") from None
    if not isinstance(out, dict):
        raise UserInputError(f"dataset '{archive}': '{path}' holds a {type(out).__name__}, not the archive's dict")
    return out


def _field(batch: dict, key: str, path: Path, archive: str) -> Any:
    if key not in batch:
        raise UserInputError(f"dataset '{archive}': '{path}' has no '{key}' entry (keys: {sorted(batch)[:8]})")
    return batch[key]


def _images(batch: dict, label_key: str, n_classes: int, path: Path, archive: str) -> tuple[np.ndarray, np.ndarray]:
    """A batch's (n, 3, 32, 32) float32 images in [0, 1] and int label ids, checked against the format."""
    data = _field(batch, "data", path, archive)
    labels = np.asarray(_field(batch, label_key, path, archive))
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        shape = getattr(data, "shape", None)
        raise UserInputError(f"dataset '{archive}': '{path}' 'data' is not a uint8 (n, 3072) array (got "
                             f"{type(data).__name__} {shape})")
    if labels.shape != (len(data),) or labels.dtype.kind not in "iu" or labels.min() < 0 or labels.max() >= n_classes:
        raise UserInputError(f"dataset '{archive}': '{path}' '{label_key}' is not {len(data)} class ids in "
                             f"0..{n_classes - 1}")
    return (data.reshape(len(data), *IMAGE) / np.float32(255)).astype(np.float32), labels.astype(np.int64)


def _names(meta_path: Path, key: str, archive: str) -> list[str]:
    names = _field(read_pickle(meta_path, archive), key, meta_path, archive)
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise UserInputError(f"dataset '{archive}': '{meta_path}' '{key}' is not a list of class names")
    return names


def _raw(parts: list[tuple[np.ndarray, np.ndarray]], test: tuple[np.ndarray, np.ndarray], classes: list[str],
         name: str, notes: list[str]) -> RawData:
    names = np.asarray(classes)
    return RawData(
        x=np.concatenate([p[0] for p in parts]), y=names[np.concatenate([p[1] for p in parts])],
        task="classification", test_x=test[0], test_y=names[test[1]], classes=classes, name=name,
        channels=["red", "green", "blue"], notes=notes + ["pixels scaled from 0..255 to [0, 1] as float32"],
    )


def load(folder: Path) -> RawData:
    """CIFAR-10: data_batch_1..5 as the training set, test_batch as the official test set, 10 classes."""
    folder = Path(folder)
    classes = _names(folder / "batches.meta", "label_names", "cifar10")
    parts = [_images(read_pickle(folder / f"data_batch_{i}", "cifar10"), "labels", len(classes),
                     folder / f"data_batch_{i}", "cifar10") for i in range(1, 6)]
    test = _images(read_pickle(folder / "test_batch", "cifar10"), "labels", len(classes), folder / "test_batch",
                   "cifar10")
    return _raw(parts, test, classes, "cifar10", [])


LABELS_100 = {"fine": ("fine_labels", "fine_label_names"), "coarse": ("coarse_labels", "coarse_label_names")}


def load_100(folder: Path, *, labels: str = "fine") -> RawData:
    """CIFAR-100: train / test, labelled by the 100 fine classes or (``labels: coarse``) the 20 superclasses."""
    if labels not in LABELS_100:
        raise UserInputError(f"data.params.labels: expected one of {sorted(LABELS_100)}, got {labels!r}")
    folder = Path(folder)
    label_key, names_key = LABELS_100[labels]
    classes = _names(folder / "meta", names_key, "cifar100")
    train = _images(read_pickle(folder / "train", "cifar100"), label_key, len(classes), folder / "train", "cifar100")
    test = _images(read_pickle(folder / "test", "cifar100"), label_key, len(classes), folder / "test", "cifar100")
    return _raw([train], test, classes, f"cifar100-{labels}", [f"labels: the {len(classes)} {labels} classes"])


_CITATION = ("Krizhevsky 2009, Learning Multiple Layers of Features from Tiny Images (tech. report, U. Toronto); "
             "https://www.cs.toronto.edu/~kriz/cifar.html")

ARCHIVE = Archive(
    name="cifar10",
    folder="cifar-10-batches-py",
    files=tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch", "batches.meta"),
    task="classification",
    kind="2d",
    doc="CIFAR-10: 32x32 colour images, 3 x 32 x 32, 10 classes, 50000 train / 10000 test (official split).",
    citation=_CITATION,
    load=load,
    url="https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
    sha256=MD5_CIFAR10,  # the page publishes md5 only; download.py compares md5 for a 32-hex-digit value
    download_name="cifar-10-python.tar.gz",
    manual="download cifar-10-python.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html and unpack it",
)

ARCHIVE_100 = Archive(
    name="cifar100",
    folder="cifar-100-python",
    files=("train", "test", "meta"),
    task="classification",
    kind="2d",
    doc="CIFAR-100: 32x32 colour images, 3 x 32 x 32, 100 fine (or 20 coarse) classes, 50000 train / 10000 test.",
    citation=_CITATION,
    load=load_100,
    url="https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
    sha256=MD5_CIFAR100,  # the page publishes md5 only; download.py compares md5 for a 32-hex-digit value
    download_name="cifar-100-python.tar.gz",
    manual="download cifar-100-python.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html and unpack it",
)

#: Both archives this module defines (the registry takes one entry each).
ARCHIVES = (ARCHIVE, ARCHIVE_100)
