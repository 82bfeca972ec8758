"""prepare_data: loading, label encoding, splits, train-only normalisation, tensors, fingerprint."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from edgedistill.config import DataConfig
from edgedistill.data import DataSplits, dataset_fingerprint, prepare_data
from edgedistill.errors import UserInputError


def _npz(path: Path, **arrays: np.ndarray) -> Path:
    np.savez(path, **arrays)
    return path


def _cfg(**kw) -> DataConfig:
    return DataConfig.model_validate(kw)


def test_synthetic_subject_split_and_train_only_normalisation() -> None:
    d = prepare_data(_cfg(name="synthetic"), seed=0)
    assert isinstance(d, DataSplits)
    assert d.info.split_by == "subject" and d.info.has_groups
    ids = [set(part.group.tolist()) for part in (d.train, d.val, d.test)]
    assert not ids[0] & ids[1] and not ids[0] & ids[2] and not ids[1] & ids[2]
    assert d.train.x.dtype == torch.float32 and d.train.y.dtype == torch.int64 and d.train.group.dtype == torch.int64
    assert torch.allclose(d.train.x.mean(dim=(0, 2)), torch.zeros(3), atol=1e-4)
    assert torch.allclose(d.train.x.std(dim=(0, 2)), torch.ones(3), atol=1e-2)
    assert d.test.x.mean(dim=(0, 2)).abs().max() > 0.05  # the test split is not re-standardised
    assert d.info.sizes == {"train": len(d.train), "val": len(d.val), "test": len(d.test)}
    assert d.info.input_shape == (3, 128) and d.info.views == {"x": (3, 128)} and d.info.n_outputs == 4
    json.dumps(d.info.normalization)
    assert sorted(d.info.normalization) == ["x"] and len(d.info.normalization["x"]["mean"]) == 3


def test_deterministic_per_seed() -> None:
    a, b = prepare_data(_cfg(name="synthetic"), seed=1), prepare_data(_cfg(name="synthetic"), seed=1)
    assert torch.equal(a.train.x, b.train.x) and torch.equal(a.test.y, b.test.y)
    c = prepare_data(_cfg(name="synthetic"), seed=2)
    assert not torch.equal(a.test.group, c.test.group) or not torch.equal(a.val.group, c.val.group)


def test_unknown_dataset_and_parameter() -> None:
    with pytest.raises(UserInputError, match="data.name"):
        prepare_data(_cfg(name="synthetc"))
    with pytest.raises(UserInputError, match=r"data.params.n_subject: unknown parameter for dataset synthetic"):
        prepare_data(_cfg(name="synthetic", params={"n_subject": 3}))
    with pytest.raises(UserInputError, match="data.params.channels"):
        prepare_data(_cfg(name="synthetic", params={"channels": 2}))


def test_label_encoding_shared_by_train_and_test(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    y = np.array(["walk", "run", "sit", "10", "2"] * 6)
    ty = np.array(["sit", "walk", "2"] * 4)
    p = _npz(tmp_path / "d.npz", x=rng.normal(size=(30, 2, 8)), y=y, test_x=rng.normal(size=(12, 2, 8)), test_y=ty)
    d = prepare_data(_cfg(path=p))
    assert d.info.classes == sorted(["walk", "run", "sit", "10", "2"])
    names = [d.info.classes[i] for i in d.test.y.tolist()]
    assert names == ty.tolist()
    assert len(d.test) == 12 and d.info.split_by == "stratified"
    p2 = _npz(tmp_path / "e.npz", x=rng.normal(size=(30, 2, 8)), y=y, test_x=rng.normal(size=(2, 2, 8)),
              test_y=np.array(["walk", "swim"]))
    with pytest.raises(UserInputError, match=r"official test split has label\(s\) \['swim'\]"):
        prepare_data(_cfg(path=p2))


def test_numeric_labels_sort_naturally_and_pool_without_official_test() -> None:
    d = prepare_data(_cfg(name="pickupgesture", split={"official_test": False, "test": 0.3}))
    assert d.info.classes == [str(i) for i in range(1, 11)]
    assert sum(d.info.sizes.values()) == 100  # official train + test pooled and re-split
    assert set(d.test.y.tolist()) == set(range(10))


def test_non_finite_values_name_the_array(tmp_path: Path) -> None:
    x = np.zeros((10, 2, 5))
    x[3, 1, 2] = np.nan
    x[4, 0, 0] = np.inf
    p = _npz(tmp_path / "bad.npz", x=x, y=np.arange(10) % 2)
    with pytest.raises(UserInputError, match=r"array 'x' has 2 non-finite .* first at index \(3, 1, 2\)"):
        prepare_data(_cfg(path=p))
    pi = np.zeros((10, 3))
    pi[9, 0] = np.nan
    p = _npz(tmp_path / "bad_pi.npz", x=np.zeros((10, 2, 5)), y=np.arange(10) % 2, pi=pi)
    with pytest.raises(UserInputError, match=r"array 'pi' has 1 non-finite"):
        prepare_data(_cfg(path=p))


def test_privileged_views_get_their_own_statistics(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(3, 2, size=(40, 2, 16))
    pi = rng.normal(-50, 10, size=(40, 5))
    p = _npz(tmp_path / "pi.npz", x=x, y=np.arange(40) % 4, pi=pi)
    d = prepare_data(_cfg(path=p, normalize="global"))
    assert d.info.views == {"x": (2, 16), "pi": (5,)}
    assert abs(d.info.normalization["pi"]["mean"][0] + 50) < 10 and abs(d.info.normalization["x"]["mean"][0] - 3) < 1
    assert abs(float(d.train.views["pi"].mean())) < 1e-4
    assert d.test.views["pi"].shape[1:] == (5,)


def test_regression_target_standardised_on_train() -> None:
    d = prepare_data(_cfg(name="tecator"))
    assert d.info.task == "regression" and d.info.split_by == "random" and d.info.n_outputs == 1
    assert d.train.y.dtype == torch.float32 and d.train.y.shape == (len(d.train),)
    assert abs(float(d.train.y.mean())) < 1e-4 and abs(float(d.train.y.std(unbiased=False)) - 1) < 1e-3
    mean, std = d.info.target_scale
    from edgedistill.registry import DATASETS

    ty = DATASETS.get("tecator")().test_y  # the raw targets (identical to sktime's: test_data_bundled.py)
    assert np.allclose(d.test.y.numpy() * std[0] + mean[0], ty, atol=1e-3)  # recoverable in original units
    raw = prepare_data(_cfg(name="tecator", normalize_target=False))
    assert raw.info.target_scale == ([0.0], [1.0]) and np.allclose(raw.test.y.numpy(), ty, atol=1e-4)


def test_multi_target_regression_and_stratified_regression(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    p = _npz(tmp_path / "r.npz", x=rng.normal(size=(50, 1, 8)), y=rng.normal(5, 3, size=(50, 2)))
    d = prepare_data(_cfg(path=p, split={"by": "stratified"}))
    assert d.train.y.shape == (len(d.train), 2) and d.info.n_outputs == 2
    assert np.allclose(d.train.y.mean(0).numpy(), 0, atol=1e-5)


def test_subject_split_needs_groups_and_enough_subjects(tmp_path: Path) -> None:
    x = np.random.default_rng(4).normal(size=(12, 1, 4))
    p = _npz(tmp_path / "g.npz", x=x, y=np.arange(12) % 2)
    with pytest.raises(UserInputError, match="data.split.by: 'subject' needs subject ids"):
        prepare_data(_cfg(path=p, split={"by": "subject"}))
    p = _npz(tmp_path / "g2.npz", x=x, y=np.arange(12) % 2, group=np.repeat(["ann", "bob"], 6))
    with pytest.raises(UserInputError, match="at least 3 subjects .* has 2"):
        prepare_data(_cfg(path=p))
    d = prepare_data(_cfg(path=p, split={"by": "stratified"}))
    assert d.info.split_by == "stratified" and set(d.train.group.tolist()) <= {0, 1}


def test_windowing_from_config(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    p = _npz(tmp_path / "long.npz", x=rng.normal(size=(6, 3, 100)), y=np.arange(6) % 2, group=np.arange(6))
    d = prepare_data(_cfg(path=p, window={"length": 20, "stride": 10}))
    assert d.info.input_shape == (3, 20) and sum(d.info.sizes.values()) == 6 * 9
    with pytest.raises(UserInputError, match="data.window.length"):
        prepare_data(_cfg(path=p, window={"length": 200}))


def test_bad_path_suffix_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(UserInputError, match="expected a .npz or .csv"):
        prepare_data(_cfg(path=tmp_path / "data.txt"))
    with pytest.raises(UserInputError, match="missing.npz"):
        prepare_data(_cfg(path=tmp_path / "missing.npz"))


def test_fingerprint_tracks_config_content_and_seed(tmp_path: Path) -> None:
    a = dataset_fingerprint(_cfg(name="synthetic"))
    assert a == dataset_fingerprint(_cfg(name="synthetic")) and len(a) == 64
    assert a != dataset_fingerprint(_cfg(name="synthetic", params={"seed": 1}))
    assert a != dataset_fingerprint(_cfg(name="synthetic"), seed=1)
    assert a != dataset_fingerprint(_cfg(name="synthetic", split={"val": 0.3}))
    p = _npz(tmp_path / "f.npz", x=np.zeros((4, 1, 3)), y=np.arange(4))
    q = tmp_path / "copy.npz"
    q.write_bytes(p.read_bytes())
    assert dataset_fingerprint(_cfg(path=p)) == dataset_fingerprint(_cfg(path=q))  # content, not location
    _npz(p, x=np.ones((4, 1, 3)), y=np.arange(4))
    assert dataset_fingerprint(_cfg(path=p)) != dataset_fingerprint(_cfg(path=q))


def test_params_with_path_and_non_numeric_regression_targets(tmp_path: Path) -> None:
    p = _npz(tmp_path / "p.npz", x=np.arange(24.0).reshape(6, 1, 4), y=np.array(list("abcabc")), task=np.array("regression"))
    with pytest.raises(UserInputError, match="data.params: only used with data.name"):
        prepare_data(_cfg(path=p, params={"seed": 1}))
    with pytest.raises(UserInputError, match="regression targets 'y' must be numbers"):
        prepare_data(_cfg(path=p))
