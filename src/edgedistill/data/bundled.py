"""Real datasets that need no network: in installed wheels (aeon, scikit-learn) or shipped in this package.

aeon and scikit-learn are imported inside each loader, never at module import: this module is imported
whenever the dataset registry is listed, and aeon alone costs ~1.5 s. Official train/test splits are
returned as given (``test_x``/``test_y``) so results compare with published numbers.

Every set is one row of ``BUNDLED`` (name -> source, archive, task, kind, one-line doc); one loop registers
them all in ``DATASETS``. What each source does with its arrays (the only special handling):

- ``aeon``: ``aeon.datasets.load_classification`` or ``load_regression`` (by task) on the archive name,
  split "train" and "test"; x float64, labels as aeon gives them (strings), regression targets float64. The parsed
  arrays are kept as ``<cache>/bundled/<name>-aeon<version>.npz``, so later processes skip aeon entirely.
- ``sklearn``: ``sklearn.datasets.load_<archive>`` (digits): the images as (n, 1, h, w) float64, int64
  labels, no official test split.
- ``package``: ``bundled_data/<archive>`` (an npz with x, y, test_x, test_y) shipped with edgedistill,
  every array cast to float64 (regression).

Tecator ships here, in ``bundled_data/tecator.npz`` (105 kB), so that one small regression set does not
need sktime installed. The arrays are exactly those ``sktime.datasets.load_tecator(split="train"|"test",
return_type="numpy3D")`` returned with sktime 1.2.0 (x float64 (n, 1, 100), y float32 fat %, 172 train /
43 test), written by ``scripts/make_tecator_npz.py`` (which needs sktime and can ``--check`` the file
against it). sktime's copy cites OpenML dataset 505 (https://www.openml.org/d/505) and Borggaard &
Thodberg, Analytical Chemistry 64 (1992) 545-551, and states no licence of its own; the original Tecator
permission note (public domain, redistributable with the note attached; publications should name the
Tecator instrument and company) travels with the data, inside the npz (``permission``) and as
``bundled_data/tecator_PERMISSION.txt``.
"""
from __future__ import annotations

import copy

from pathlib import Path
from typing import Any, Callable, NamedTuple, Optional

import numpy as np

from edgedistill.data.dataset import Task
from edgedistill.data.raw import RawData
from edgedistill.errors import EdgeDistillError, UserInputError
from edgedistill.io import atomic_write
from edgedistill.registry import DATASETS


class Bundled(NamedTuple):
    source: str  # "aeon" | "sklearn" | "package": how the arrays are read (module docstring)
    archive: str  # the name the source knows the set by
    task: Task
    kind: str  # "1d" (n, channels, length) or "2d" (n, channels, h, w)
    doc: str  # the registry's one-line description


BUNDLED: dict[str, Bundled] = {
    "basicmotions": Bundled("aeon", "BasicMotions", "classification", "1d",
        "BasicMotions: smartwatch accelerometer+gyroscope, 6 x 100, 4 activities, 40 train / 40 test."),
    "japanesevowels": Bundled("aeon", "JapaneseVowels_eq", "classification", "1d",
        "JapaneseVowels (equal length): 12 LPC coefficients x 25, 9 speakers, 270 train / 370 test."),
    "pickupgesture": Bundled("aeon", "PickupGestureWiimoteZ_eq", "classification", "1d",
        "PickupGestureWiimoteZ (equal length): Wii remote accelerometer z, 1 x 361, 10 gestures, 50 / 50."),
    "gunpoint": Bundled("aeon", "GunPoint", "classification", "1d",
        "GunPoint: hand motion x-coordinate, 1 x 150, 2 classes (gun / point), 50 train / 150 test."),
    "osuleaf": Bundled("aeon", "OSULeaf", "classification", "1d",
        "OSULeaf: leaf outlines as series, 1 x 427, 6 classes, 200 train / 242 test."),
    "arrowhead": Bundled("aeon", "ArrowHead", "classification", "1d",
        "ArrowHead: arrowhead outlines as series, 1 x 251, 3 classes, 36 train / 175 test."),
    "italypowerdemand": Bundled("aeon", "ItalyPowerDemand", "classification", "1d",
        "ItalyPowerDemand: daily electricity demand, 1 x 24, 2 classes (season), 67 train / 1029 test."),
    "digits": Bundled("sklearn", "digits", "classification", "2d",
        "digits: scikit-learn handwritten digits, 1 x 8 x 8 images, 10 classes, 1797 (no official test split)."),
    "covid3month": Bundled("aeon", "Covid3Month", "regression", "1d",
        "Covid3Month: daily COVID-19 cases, 1 x 84, regression (death rate), 140 train / 61 test."),
    "tecator": Bundled("package", "tecator.npz", "regression", "1d",
        "Tecator: near-infrared meat spectra, 1 x 100, regression (fat %), 172 train / 43 test."),
}


def _kept_copy(name: str) -> Optional[Path]:
    """Where the arrays aeon parsed for ``name`` are kept between processes (``<cache>/bundled``, keyed by aeon's
    version): importing aeon and parsing the .ts files costs 2-4 s in every process that reads the set, the run
    itself and each ``--jobs`` worker. None when aeon's version cannot be read, or when the cache folder does not
    exist yet: reading a set never creates it (a refused run leaves nothing behind), the first trained model does."""
    from importlib.metadata import PackageNotFoundError, version

    from edgedistill.paths import existing_cache_dir

    cache = existing_cache_dir()
    try:
        return None if cache is None else cache / "bundled" / f"{name}-aeon{version('aeon')}.npz"
    except PackageNotFoundError:
        return None


def _from_aeon(name: str, spec: Bundled) -> RawData:
    kept = _kept_copy(name)
    if kept is not None and kept.is_file():
        try:
            with np.load(kept, allow_pickle=False) as f:
                a = {k: np.asarray(f[k]) for k in ("x", "y", "test_x", "test_y")}
            return RawData(task=spec.task, name=name, **a)
        except (OSError, ValueError, KeyError, EOFError):  # a damaged copy: parsed again below, and rewritten
            pass
    raw = _parse_aeon(name, spec)
    if kept is not None:
        arrays = {"x": raw.x, "y": raw.y, "test_x": raw.test_x, "test_y": raw.test_y}
        try:
            atomic_write(kept, lambda fh: np.savez(fh, **arrays), mode="wb")
        except (OSError, EdgeDistillError):  # a read-only or full disk: the set is parsed every time, as before
            pass
    return raw


def _parse_aeon(name: str, spec: Bundled) -> RawData:
    if spec.task == "regression":
        from aeon.datasets import load_regression as loader
    else:
        from aeon.datasets import load_classification as loader
    x, y = loader(spec.archive, split="train")
    tx, ty = loader(spec.archive, split="test")
    label = (lambda a: np.asarray(a, dtype=np.float64)) if spec.task == "regression" else np.asarray
    return RawData(
        x=np.asarray(x, dtype=np.float64), y=label(y), task=spec.task,
        test_x=np.asarray(tx, dtype=np.float64), test_y=label(ty), name=name,
    )


def _from_sklearn(name: str, spec: Bundled) -> RawData:
    import sklearn.datasets

    bunch = getattr(sklearn.datasets, f"load_{spec.archive}")()
    images = np.asarray(bunch.images, dtype=np.float64)
    return RawData(
        x=images.reshape(len(images), 1, *images.shape[1:]), y=np.asarray(bunch.target, dtype=np.int64),
        task=spec.task, name=name,
    )


def _from_package(name: str, spec: Bundled) -> RawData:
    from importlib.resources import files

    with (files("edgedistill.data") / "bundled_data" / spec.archive).open("rb") as fh:
        with np.load(fh, allow_pickle=False) as f:
            a = {k: np.asarray(f[k], dtype=np.float64) for k in ("x", "y", "test_x", "test_y")}
    return RawData(task=spec.task, name=name, **a)


_SOURCES: dict[str, Callable[[str, Bundled], RawData]] = {
    "aeon": _from_aeon, "sklearn": _from_sklearn, "package": _from_package,
}


def _guarded(name: str, load: Callable[[], Any]) -> Any:
    try:
        return load()
    except UserInputError:
        raise
    except Exception as exc:  # noqa: BLE001 - any loader failure becomes one readable line
        raise UserInputError(f"dataset '{name}': the bundled loader failed ({type(exc).__name__}: {exc})") from None


# Parsed sets by name, for this process: a run reads its data again after training (the in-run profile's export
# verification), and aeon parses OSULeaf's .ts files in ~1.3 s each time. Every caller gets its own copy.
_PARSED: dict[str, RawData] = {}


def _loader(name: str, spec: Bundled) -> Callable[[], RawData]:
    def load() -> RawData:
        if name not in _PARSED:
            _PARSED[name] = _guarded(name, lambda: _SOURCES[spec.source](name, spec))
        return copy.deepcopy(_PARSED[name])

    load.__name__ = load.__qualname__ = name
    load.__doc__ = spec.doc
    return load


for _name, _spec in BUNDLED.items():
    DATASETS.register(_name, task=_spec.task, kind=_spec.kind)(_loader(_name, _spec))
