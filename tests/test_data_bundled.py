"""Every bundled dataset (docs/data.md) loads offline with the shapes its source publishes: the train/test sizes,
series shapes and classes of the UCR/UEA classification and Monash extrinsic-regression archives, and scikit-learn's
1,797 8x8 digits."""
from __future__ import annotations

import os
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


def test_loader_failure_becomes_user_input_error(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    import aeon.datasets

    def broken(*args, **kwargs):
        raise OSError("archive not found")

    from edgedistill.data import bundled

    monkeypatch.setattr(bundled, "_PARSED", {})  # parse again, with the broken loader
    monkeypatch.setenv("EDGEDISTILL_CACHE", str(tmp_path))  # (and no copy kept from an earlier parse)
    monkeypatch.setattr(aeon.datasets, "load_classification", broken)
    with pytest.raises(UserInputError, match="dataset 'gunpoint'.*archive not found"):
        DATASETS.get("gunpoint")()


def test_a_set_parsed_once_gives_each_caller_its_own_arrays() -> None:
    first = DATASETS.get("gunpoint")()
    first.x[:] = 0.0
    second = DATASETS.get("gunpoint")()
    assert second.x.std() > 0 and second.x is not first.x


def _shipped_tecator() -> dict[str, np.ndarray]:
    from importlib.resources import files

    with (files("edgedistill.data") / "bundled_data" / "tecator.npz").open("rb") as fh, np.load(fh) as f:
        return {k: f[k] for k in f.files}


def test_shipped_tecator_arrays_and_permission_note() -> None:
    f = _shipped_tecator()
    assert set(f) == {"x", "y", "test_x", "test_y", "permission"}
    assert f["x"].shape == (172, 1, 100) and f["x"].dtype == np.float64
    assert f["test_x"].shape == (43, 1, 100) and f["test_x"].dtype == np.float64
    assert f["y"].shape == (172,) and f["test_y"].shape == (43,) and f["y"].dtype == f["test_y"].dtype == np.float32
    assert "can be redistributed as long as this\n    permission note is attached" in str(f["permission"])
    raw = DATASETS.get("tecator")()
    for k in ("x", "y", "test_x", "test_y"):
        assert np.array_equal(getattr(raw, k), f[k].astype(np.float64))


def test_tecator_loader_gives_sktimes_arrays() -> None:
    datasets = pytest.importorskip("sktime.datasets", reason="sktime (no longer a dependency) is not installed")
    x, y = datasets.load_tecator(split="train", return_type="numpy3D")
    tx, ty = datasets.load_tecator(split="test", return_type="numpy3D")
    f = _shipped_tecator()
    for k, a in {"x": x, "y": y, "test_x": tx, "test_y": ty}.items():
        assert f[k].dtype == a.dtype and np.array_equal(f[k], a), k  # stored as sktime returns them
    raw = DATASETS.get("tecator")()
    for got, want in ((raw.x, x), (raw.y, y), (raw.test_x, tx), (raw.test_y, ty)):
        assert got.dtype == np.float64 and np.array_equal(got, np.asarray(want, dtype=np.float64))


def test_an_aeon_set_is_parsed_once_then_read_back_without_aeon(tmp_path):
    """The arrays aeon parses are kept under <cache>/bundled: a second process reads them without importing aeon
    (2-4 s in every process: the run and each --jobs worker), and gets the same arrays; a damaged copy is parsed
    again. Nothing is kept while the cache folder does not exist (reading a set never creates it)."""
    env = {**os.environ, "EDGEDISTILL_CACHE": str(tmp_path / "cache")}
    code0 = "from edgedistill.registry import DATASETS; DATASETS.get('gunpoint')()"
    subprocess.run([sys.executable, "-c", code0], env=env, check=True)
    assert not (tmp_path / "cache").exists()
    (tmp_path / "cache").mkdir()
    code = ("import sys, numpy as np; from edgedistill.registry import DATASETS; r = DATASETS.get('gunpoint')(); "
            "np.savez(sys.argv[1], x=r.x, y=r.y, test_x=r.test_x, test_y=r.test_y); print('aeon' in sys.modules)")
    runs = [subprocess.run([sys.executable, "-c", code, str(tmp_path / f"{i}.npz")], env=env, capture_output=True,
                           text=True, check=True).stdout.split() for i in range(3)]
    assert [r[-1] for r in runs[:2]] == ["True", "False"]
    (kept,) = (tmp_path / "cache" / "bundled").glob("gunpoint-aeon*.npz")
    first, second = np.load(tmp_path / "0.npz"), np.load(tmp_path / "1.npz")
    assert all(np.array_equal(first[k], second[k]) and first[k].dtype == second[k].dtype for k in first.files)
    kept.write_bytes(b"not an npz")
    again = subprocess.run([sys.executable, "-c", code, str(tmp_path / "3.npz")], env=env, capture_output=True,
                           text=True, check=True).stdout.split()
    assert again[-1] == "True" and np.array_equal(np.load(tmp_path / "3.npz")["x"], first["x"])
