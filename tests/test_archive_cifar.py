"""CIFAR loaders on tiny pickles written byte by byte as Python 2's cPickle (protocol 2) writes the archive's files:
py2 str as BINSTRING, numpy arrays through numpy.core.multiarray._reconstruct (numpy 1's module name)."""
from __future__ import annotations

import pickle
import struct
from pathlib import Path

import numpy as np
import pytest

from edgedistill.data.archives.cifar import ARCHIVE, ARCHIVE_100, MD5_CIFAR10, MD5_CIFAR100, load, load_100
from edgedistill.errors import UserInputError


def _str(s: str | bytes) -> bytes:
    b = s.encode("latin1") if isinstance(s, str) else s
    return (b"U" + bytes([len(b)]) + b) if len(b) < 256 else (b"T" + struct.pack("<i", len(b)) + b)


def _int(i: int) -> bytes:
    return b"K" + bytes([i]) if 0 <= i < 256 else b"J" + struct.pack("<i", i)


def _array(a: np.ndarray) -> bytes:
    dtype = (b"cnumpy\ndtype\n" + _str("u1") + _int(0) + _int(1) + b"\x87R"
             + b"(" + _int(3) + _str("|") + b"NNN" + _int(-1) + _int(-1) + _int(0) + b"tb")
    shape = b"(" + b"".join(_int(d) for d in a.shape) + b"t"
    return (b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\n" + _int(0) + b"\x85" + _str("b") + b"\x87R"
            + b"(" + _int(1) + shape + dtype + b"\x89" + _str(a.tobytes()) + b"tb")


def _obj(v) -> bytes:
    if isinstance(v, dict):
        return b"}(" + b"".join(_obj(k) + _obj(x) for k, x in v.items()) + b"u"
    if isinstance(v, list):
        return b"](" + b"".join(_obj(x) for x in v) + b"e"
    if isinstance(v, np.ndarray):
        return _array(v)
    return _int(v) if isinstance(v, int) else _str(v)


def py2_pickle(path: Path, obj: dict) -> None:
    path.write_bytes(b"\x80\x02" + _obj(obj) + b".")


def _images(seed: int, n: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, 3072), dtype=np.uint8)


NAMES10 = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def write_cifar10(root: Path) -> Path:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for i in range(1, 6):
        py2_pickle(folder / f"data_batch_{i}", {"batch_label": f"training batch {i} of 5", "labels": [i, 9 - i],
                                                 "data": _images(i, 2), "filenames": ["a.png", "b.png"]})
    py2_pickle(folder / "test_batch", {"batch_label": "testing batch 1 of 1", "labels": [0, 3, 7],
                                       "data": _images(0, 3), "filenames": ["c.png", "d.png", "e.png"]})
    py2_pickle(folder / "batches.meta", {"num_cases_per_batch": 10000, "label_names": NAMES10, "num_vis": 3072})
    return folder


def write_cifar100(root: Path) -> Path:
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    fine = [f"fine{i}" for i in range(100)]
    coarse = [f"coarse{i}" for i in range(20)]
    py2_pickle(folder / "meta", {"fine_label_names": fine, "coarse_label_names": coarse})
    py2_pickle(folder / "train", {"batch_label": "training batch 1 of 1", "fine_labels": [5, 99, 42],
                                  "coarse_labels": [1, 19, 7], "data": _images(7, 3), "filenames": ["a", "b", "c"]})
    py2_pickle(folder / "test", {"batch_label": "testing batch 1 of 1", "fine_labels": [0, 1],
                                 "coarse_labels": [0, 2], "data": _images(8, 2), "filenames": ["d", "e"]})
    return folder


def test_cifar10_shapes_labels_split_and_pixel_layout(tmp_path):
    raw = load(write_cifar10(tmp_path))
    assert raw.x.shape == (10, 3, 32, 32) and raw.x.dtype == np.float32 and raw.test_x.shape == (3, 3, 32, 32)
    assert list(raw.y[:4]) == ["automobile", "ship", "bird", "horse"]  # batch 1: [1, 8], batch 2: [2, 7]
    assert list(raw.test_y) == ["airplane", "cat", "horse"] and raw.classes == NAMES10
    data = _images(2, 2)  # batch 2, its second image: red plane first, row-major 32 x 32
    assert raw.x[3, 1, 4, 5] == pytest.approx(data[1, 1024 + 4 * 32 + 5] / 255)
    assert raw.x[3, 2, 31, 0] == pytest.approx(data[1, 2048 + 31 * 32] / 255)
    assert raw.group is None and raw.channels == ["red", "green", "blue"]


def test_cifar100_fine_and_coarse_labels(tmp_path):
    folder = write_cifar100(tmp_path)
    fine = load_100(folder)
    assert fine.x.shape == (3, 3, 32, 32) and list(fine.y) == ["fine5", "fine99", "fine42"] and len(fine.classes) == 100
    coarse = load_100(folder, labels="coarse")
    assert list(coarse.test_y) == ["coarse0", "coarse2"] and len(coarse.classes) == 20
    np.testing.assert_array_equal(fine.test_x, coarse.test_x)
    with pytest.raises(UserInputError, match="data.params.labels"):
        load_100(folder, labels="superclass")


def test_a_pickle_naming_any_other_global_is_refused_without_running_it(tmp_path):
    folder = write_cifar10(tmp_path)
    marker = tmp_path / "ran"
    evil = b"\x80\x02cos\nsystem\n" + _str(f"touch {marker}") + b"\x85R."
    (folder / "test_batch").write_bytes(evil)
    with pytest.raises(UserInputError, match=r"test_batch.*os\.system"):
        load(folder)
    assert not marker.exists()
    # a Python 3 re-pickle encodes bytes through _codecs.encode: not the archive's file, refused too
    (folder / "test_batch").write_bytes(pickle.dumps({"labels": [0], "data": _images(0, 1)}, protocol=2))
    with pytest.raises(UserInputError, match="_codecs.encode"):
        load(folder)


def test_missing_truncated_or_malformed_files_are_named(tmp_path):
    folder = write_cifar10(tmp_path)
    (folder / "data_batch_3").write_bytes((folder / "data_batch_3").read_bytes()[:100])
    with pytest.raises(UserInputError, match="data_batch_3"):
        load(folder)
    py2_pickle(folder / "data_batch_3", {"labels": [1, 12], "data": _images(3, 2)})  # label beyond 10 classes
    with pytest.raises(UserInputError, match="data_batch_3.*'labels'"):
        load(folder)
    py2_pickle(folder / "data_batch_3", {"labels": [1, 2]})
    with pytest.raises(UserInputError, match="data_batch_3.*no 'data'"):
        load(folder)
    (folder / "batches.meta").unlink()
    with pytest.raises(UserInputError, match="batches.meta"):
        load(folder)


def test_archive_entries_carry_the_published_md5():
    assert ARCHIVE.url.endswith("cifar-10-python.tar.gz") and ARCHIVE_100.url.endswith("cifar-100-python.tar.gz")
    assert MD5_CIFAR10 == "c58f30108f718f92721af3b95e74349a" and MD5_CIFAR100 == "eb9058c3a382ffc7106e4002c42a8d85"
    assert ARCHIVE.sha256 == MD5_CIFAR10 and ARCHIVE_100.sha256 == MD5_CIFAR100  # md5 compared by length
    assert ARCHIVE.kind == ARCHIVE_100.kind == "2d"
