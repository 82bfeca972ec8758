"""Every bundled dataset loads offline with the shapes recorded in FACTS.md."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from edgedistill.errors import UserInputError
from edgedistill.registry import DATASETS

# name: (train n, test n or None, per-sample shape, classes or None for regression)
EXPECTED = {
    "basicmotions": (40, 40, (6, 100), 4),
    "japanesevowels": (270, 370, (12, 25), 9),
    "pickupgesture": (50, 50, (1, 361), 10),
    "gunpoint": (50, 150, (1, 150), 2),
    "osuleaf": (200, 242, (1, 427), 6),
    "arrowhead": (36, 175, (1, 251), 3),
    "italypowerdemand": (67, 1029, (1, 24), 2),
    "digits": (1797, None, (1, 8, 8), 10),
    "covid3month": (140, 61, (1, 84), None),
    "tecator": (172, 43, (1, 100), None),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_bundled_shapes(name: str) -> None:
    n_train, n_test, shape, n_classes = EXPECTED[name]
    entry = DATASETS.entry(name)
    raw = entry.obj()
    assert raw.x.shape == (n_train, *shape) and len(raw.y) == n_train and raw.group is None
    assert entry.meta["kind"] == ("2d" if len(shape) == 3 else "1d") and entry.doc
    if n_test is None:
        assert raw.test_x is None
    else:
        assert raw.test_x.shape == (n_test, *shape) and len(raw.test_y) == n_test
    if n_classes is None:
        assert raw.task == entry.meta["task"] == "regression" and raw.y.dtype.kind == "f"
    else:
        assert raw.task == entry.meta["task"] == "classification"
        assert len(np.unique(raw.y)) == n_classes
    assert np.isfinite(raw.x).all()


def test_registry_lists_every_dataset() -> None:
    assert set(EXPECTED) | {"synthetic", "synthetic_images"} <= set(DATASETS.names())


def test_importing_the_registry_does_not_import_aeon() -> None:
    code = (
        "import sys; from edgedistill.registry import DATASETS; DATASETS.names(); import edgedistill.data; "
        "bad = [m for m in ('aeon', 'sktime', 'sklearn', 'pandas') if m in sys.modules]; print(bad); "
        "sys.exit(1 if bad else 0)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_loader_failure_becomes_user_input_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import aeon.datasets

    def broken(*args, **kwargs):
        raise OSError("archive not found")

    monkeypatch.setattr(aeon.datasets, "load_classification", broken)
    with pytest.raises(UserInputError, match="dataset 'gunpoint'.*archive not found"):
        DATASETS.get("gunpoint")()
