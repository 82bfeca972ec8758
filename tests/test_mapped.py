"""data.storage: mapped -- splits read from an archive's memory-mapped windows a batch at a time give exactly the
values (and so the training) of the in-memory splits, and refuse data that is not on disk."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from edgedistill.config import DataConfig
from edgedistill.data.mapped import MappedRows, OnDisk, fit_rows, pick_channels, pooled
from edgedistill.data.normalize import Normalizer, fit_normalizer
from edgedistill.data.prepare import dataset_fingerprint, prepare_data, split_windows
from edgedistill.data.raw import CHECK_CHUNK, RawData, check_values
from edgedistill.errors import UserInputError
from tests.helpers import cli_run
from tests.test_archive_pamap2 import _write_subject


def _memmap(tmp_path: Path, name: str, a: np.ndarray) -> np.ndarray:
    np.save(tmp_path / f"{name}.npy", a)
    return np.load(tmp_path / f"{name}.npy", mmap_mode="r")


def test_on_disk_rows_pool_and_channels_read_what_memory_holds(tmp_path):
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(7, 5, 6)), rng.normal(size=(4, 5, 6))
    both_parts = pooled(_memmap(tmp_path, "a", a), _memmap(tmp_path, "b", b))
    both = np.concatenate([a, b])
    rows = np.array([10, 0, 7, 6, 3, 10])
    np.testing.assert_array_equal(both_parts[rows], both[rows])
    picked = pick_channels(pick_channels(both_parts, [4, 1, 2]), [2, 0])  # a view of a view: channels 2 and 4
    assert isinstance(picked, OnDisk) and picked.shape == (11, 2, 6)
    np.testing.assert_array_equal(picked[rows], both[rows][:, [2, 4]])
    np.testing.assert_array_equal(np.asarray(picked), both[:, [2, 4]])
    assert isinstance(pick_channels(a, [1]), np.ndarray)  # in memory: a plain copy, as before


def test_mapped_rows_normalise_each_batch_like_the_whole_array(tmp_path, monkeypatch):
    rng = np.random.default_rng(1)
    x = rng.normal(3.0, [[1.0], [20.0], [0.1]], size=(50, 3, 8))
    monkeypatch.setattr("edgedistill.data.mapped.CHUNK_BYTES", 8 * 3 * 8 * 7)  # 7 rows a chunk: several chunks
    rows = MappedRows(_memmap(tmp_path, "x", x), np.arange(5, 45))
    for mode in ("per_channel", "global"):
        want, got = fit_normalizer(x[5:45], mode), fit_rows(rows, mode)
        assert got.mode == want.mode
        np.testing.assert_allclose(got.mean, want.mean, rtol=1e-12)
        np.testing.assert_allclose(got.std, want.std, rtol=1e-12)
    norm = fit_normalizer(x[5:45], "per_channel")
    mapped = rows.normalized(norm)
    order = torch.tensor([39, 0, 17, 17, 3])
    assert torch.equal(mapped[order], torch.from_numpy(norm.apply(x[5:45][order.numpy()])))
    assert torch.equal(mapped.load(), torch.from_numpy(norm.apply(x[5:45])))
    sub = mapped.rows_of([2, 1])  # a subset reads nothing until indexed
    assert isinstance(sub, MappedRows) and torch.equal(sub[torch.tensor([1])], mapped[torch.tensor([1])])
    with pytest.raises(UserInputError, match="channel 1"):
        rows.normalized(Normalizer("per_channel", [0.0, 0.0, 0.0], [1.0, 1e-8, 1.0])).check("x", "val", "demo")


def test_check_values_in_chunks_counts_every_bad_value_and_names_the_first(monkeypatch):
    monkeypatch.setattr("edgedistill.data.raw.CHECK_CHUNK", 12)  # 2 rows of 6 a chunk
    x = np.zeros((9, 2, 3))
    x[4, 1, 2] = np.nan
    x[7, 0, 0] = np.inf
    with pytest.raises(UserInputError, match=r"2 non-finite value\(s\).*index \(4, 1, 2\)"):
        check_values("x", x, "demo", True)
    assert CHECK_CHUNK > 12  # the real chunk is unchanged


def _pamap2(tmp_path, monkeypatch) -> DataConfig:
    root = tmp_path / "data"
    for k, subject in enumerate(range(101, 110)):
        _write_subject(root / "PAMAP2_Dataset", subject, [(1, 500), (4, 500 + 40 * k), (5, 500)])
    monkeypatch.setenv("EDGEDISTILL_CACHE", str(tmp_path / "cache"))
    return DataConfig(name="pamap2", root=str(root), params={"window": 40, "stride": 20},
                      views={"x": [0, 1, 2], "wide": [0, 1, 2, 3, 4, 5]})


def _same_splits(a, b) -> None:
    for part in ("train", "val", "test"):
        da, db = getattr(a, part), getattr(b, part)
        assert torch.equal(da.y, db.y) and (da.group is None or torch.equal(da.group, db.group))
        index = torch.randperm(len(da), generator=torch.Generator().manual_seed(0))
        for view in da.views:
            assert torch.equal(da.batch(index)[view], db.batch(index)[view]), (part, view)
    assert a.info.normalization.keys() == b.info.normalization.keys()
    for view, norm in a.info.normalization.items():
        np.testing.assert_allclose(b.info.normalization[view]["std"], norm["std"], rtol=1e-9)


def test_pamap2_mapped_splits_equal_the_in_memory_ones(tmp_path, monkeypatch):
    cfg = _pamap2(tmp_path, monkeypatch)
    memory = prepare_data(cfg.model_copy(update={"storage": "memory"}), seed=3)
    mapped = prepare_data(cfg.model_copy(update={"storage": "mapped"}), seed=3)
    assert not memory.train.mapped and mapped.train.mapped
    assert all(isinstance(v, MappedRows) for v in mapped.test.views.values())
    _same_splits(memory, mapped)
    assert any("memory-mapped" in n for n in mapped.info.notes)
    assert torch.equal(mapped.train.x, memory.train.x)  # .x loads the split: what whole-split code gets
    half = mapped.train.subset(torch.arange(0, len(mapped.train), 2))
    assert half.mapped and torch.equal(half.batch(torch.arange(3))["x"], memory.train.x[0:6:2])
    # The same values, so the same fingerprint: cached teachers serve both.
    assert dataset_fingerprint(cfg.model_copy(update={"storage": "mapped"})) == dataset_fingerprint(cfg)


def test_an_official_test_split_pooled_from_disk(tmp_path):
    rng = np.random.default_rng(2)
    x, test_x = rng.normal(size=(30, 4, 10)), rng.normal(size=(20, 4, 10))
    y, test_y = np.arange(30) % 3, np.arange(20) % 3
    raw = RawData(x=_memmap(tmp_path, "x", x), y=y, task="classification", test_x=_memmap(tmp_path, "tx", test_x),
                  test_y=test_y, views={"two": pick_channels(_memmap(tmp_path, "x2", x), [3, 1])},
                  test_views={"two": pick_channels(_memmap(tmp_path, "tx2", test_x), [3, 1])})
    cfg = DataConfig(name="disk", split={"official_test": False})
    memory = split_windows(raw, cfg.model_copy(update={"storage": "memory"}), seed=1)
    mapped = split_windows(raw, cfg.model_copy(update={"storage": "mapped"}), seed=1)
    assert mapped.train.mapped and sum(mapped.info.sizes.values()) == 50  # the official test rows pooled in
    _same_splits(memory, mapped)
    official = DataConfig(name="disk", storage="mapped")  # the official test split kept as the test split
    mapped = split_windows(raw, official, seed=1)
    assert mapped.info.official_test and mapped.info.sizes["test"] == 20 and mapped.test.mapped
    _same_splits(split_windows(raw, official.model_copy(update={"storage": "memory"}), seed=1), mapped)


def test_mapped_refuses_data_in_memory_and_auto_keeps_small_sets_in_memory(tmp_path, monkeypatch):
    with pytest.raises(UserInputError, match="data.storage: 'mapped'.*edgedistill data list"):
        prepare_data(DataConfig(name="basicmotions", storage="mapped"))
    cfg = _pamap2(tmp_path, monkeypatch)
    assert not prepare_data(cfg).train.mapped  # auto: a few hundred KB stay in memory
    monkeypatch.setattr("edgedistill.data.mapped.available_memory", lambda: 1000)
    assert prepare_data(cfg).train.mapped  # auto: above a quarter of the memory left, read from disk


def _never_whole(self):  # noqa: ANN001, ANN202
    raise AssertionError("a mapped split was read whole")


def test_prepare_reads_no_split_whole(tmp_path, monkeypatch):
    cfg = _pamap2(tmp_path, monkeypatch)
    monkeypatch.setattr(MappedRows, "load", _never_whole)
    splits = prepare_data(cfg.model_copy(update={"storage": "mapped"}))
    assert splits.info.input_shape == (3, 40) and len(splits.train.batch(torch.tensor([0, 1]))["wide"]) == 2


def test_a_mapped_run_gives_the_numbers_of_an_in_memory_run(tmp_path, monkeypatch):
    cfg = _pamap2(tmp_path, monkeypatch)
    args = ["pamap2_kd", "eval.scheme=holdout", "seeds=[0]", "train.epochs=2", "teacher.train.epochs=1",
            "data.params.window=40", "data.params.stride=20", f"data.root={cfg.root}", "data.views={}"]
    rows = {}
    for storage in ("memory", "mapped"):
        out = tmp_path / storage
        if storage == "mapped":  # training, evaluation and teacher caching read batches, never a whole split
            monkeypatch.setattr(MappedRows, "load", _never_whole)
        result = cli_run(*args, f"data.storage={storage}", "--out", out)
        assert result.exit_code == 0, result.output
        summary = json.loads((out / "summary.json").read_text())
        assert any("memory-mapped" in n for n in summary["data"]["notes"]) == (storage == "mapped")
        rows[storage] = summary["rows"]
    for a, b in zip(rows["memory"], rows["mapped"]):
        assert a["role"] == b["role"] and a["metrics"]["acc"]["mean"] == b["metrics"]["acc"]["mean"]
        assert a["metrics"]["nll"]["mean"] == pytest.approx(b["metrics"]["nll"]["mean"], rel=1e-6)
