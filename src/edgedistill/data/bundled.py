"""Real datasets that need no network: in installed wheels (aeon, scikit-learn) or shipped in this package.

aeon and scikit-learn are imported inside each loader, never at module import: this module is imported
whenever the dataset registry is listed, and aeon alone costs ~1.5 s. Official train/test splits are
returned as given (``test_x``/``test_y``) so results compare with published numbers.

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

from typing import Any, Callable

import numpy as np

from edgedistill.data.raw import RawData
from edgedistill.errors import UserInputError
from edgedistill.registry import DATASETS


def _guarded(name: str, load: Callable[[], Any]) -> Any:
    try:
        return load()
    except UserInputError:
        raise
    except Exception as exc:  # noqa: BLE001 - any loader failure becomes one readable line
        raise UserInputError(f"dataset '{name}': the bundled loader failed ({type(exc).__name__}: {exc})") from None


def _aeon(name: str, archive_name: str, regression: bool = False) -> RawData:
    def load() -> RawData:
        if regression:
            from aeon.datasets import load_regression as loader
        else:
            from aeon.datasets import load_classification as loader
        x, y = loader(archive_name, split="train")
        tx, ty = loader(archive_name, split="test")
        return RawData(
            x=np.asarray(x, dtype=np.float64),
            y=np.asarray(y, dtype=np.float64) if regression else np.asarray(y),
            task="regression" if regression else "classification",
            test_x=np.asarray(tx, dtype=np.float64),
            test_y=np.asarray(ty, dtype=np.float64) if regression else np.asarray(ty),
            name=name,
        )

    return _guarded(name, load)


@DATASETS.register("basicmotions", task="classification", kind="1d")
def basicmotions() -> RawData:
    """BasicMotions: smartwatch accelerometer+gyroscope, 6 x 100, 4 activities, 40 train / 40 test."""
    return _aeon("basicmotions", "BasicMotions")


@DATASETS.register("japanesevowels", task="classification", kind="1d")
def japanesevowels() -> RawData:
    """JapaneseVowels (equal length): 12 LPC coefficients x 25, 9 speakers, 270 train / 370 test."""
    return _aeon("japanesevowels", "JapaneseVowels_eq")


@DATASETS.register("pickupgesture", task="classification", kind="1d")
def pickupgesture() -> RawData:
    """PickupGestureWiimoteZ (equal length): Wii remote accelerometer z, 1 x 361, 10 gestures, 50 / 50."""
    return _aeon("pickupgesture", "PickupGestureWiimoteZ_eq")


@DATASETS.register("gunpoint", task="classification", kind="1d")
def gunpoint() -> RawData:
    """GunPoint: hand motion x-coordinate, 1 x 150, 2 classes (gun / point), 50 train / 150 test."""
    return _aeon("gunpoint", "GunPoint")


@DATASETS.register("osuleaf", task="classification", kind="1d")
def osuleaf() -> RawData:
    """OSULeaf: leaf outlines as series, 1 x 427, 6 classes, 200 train / 242 test."""
    return _aeon("osuleaf", "OSULeaf")


@DATASETS.register("arrowhead", task="classification", kind="1d")
def arrowhead() -> RawData:
    """ArrowHead: arrowhead outlines as series, 1 x 251, 3 classes, 36 train / 175 test."""
    return _aeon("arrowhead", "ArrowHead")


@DATASETS.register("italypowerdemand", task="classification", kind="1d")
def italypowerdemand() -> RawData:
    """ItalyPowerDemand: daily electricity demand, 1 x 24, 2 classes (season), 67 train / 1029 test."""
    return _aeon("italypowerdemand", "ItalyPowerDemand")


@DATASETS.register("digits", task="classification", kind="2d")
def digits() -> RawData:
    """digits: scikit-learn handwritten digits, 1 x 8 x 8 images, 10 classes, 1797 (no official test split)."""

    def load() -> RawData:
        from sklearn.datasets import load_digits

        bunch = load_digits()
        x = np.asarray(bunch.images, dtype=np.float64).reshape(-1, 1, 8, 8)
        return RawData(x=x, y=np.asarray(bunch.target, dtype=np.int64), task="classification", name="digits")

    return _guarded("digits", load)


@DATASETS.register("covid3month", task="regression", kind="1d")
def covid3month() -> RawData:
    """Covid3Month: daily COVID-19 cases, 1 x 84, regression (death rate), 140 train / 61 test."""
    return _aeon("covid3month", "Covid3Month", regression=True)


@DATASETS.register("tecator", task="regression", kind="1d")
def tecator() -> RawData:
    """Tecator: near-infrared meat spectra, 1 x 100, regression (fat %), 172 train / 43 test."""

    def load() -> RawData:
        from importlib.resources import files

        with (files("edgedistill.data") / "bundled_data" / "tecator.npz").open("rb") as fh:
            with np.load(fh, allow_pickle=False) as f:
                x, y, tx, ty = f["x"], f["y"], f["test_x"], f["test_y"]
        return RawData(
            x=np.asarray(x, dtype=np.float64), y=np.asarray(y, dtype=np.float64), task="regression",
            test_x=np.asarray(tx, dtype=np.float64), test_y=np.asarray(ty, dtype=np.float64), name="tecator",
        )

    return _guarded("tecator", load)
