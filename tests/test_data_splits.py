"""Splits, windowing and normalisation: the pieces that decide what the model may see."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgedistill.data.normalize import fit_normalizer
from edgedistill.data.raw import RawData
from edgedistill.data.splits import random_split, stratified_split, subject_split
from edgedistill.data.windowing import majority_vote, sliding_windows, window_raw
from edgedistill.errors import UserInputError


@settings(max_examples=60, deadline=None)
@given(
    groups=st.lists(st.integers(0, 12), min_size=3, max_size=120),
    fractions=st.lists(st.floats(0.05, 1.0), min_size=1, max_size=3),
    seed=st.integers(0, 2**16),
)
def test_subject_split_never_leaks_a_subject(groups: list[int], fractions: list[float], seed: int) -> None:
    g = np.array(groups)
    if len(np.unique(g)) < len(fractions):
        with pytest.raises(UserInputError, match="subject"):
            subject_split(g, fractions, seed)
        return
    parts = subject_split(g, fractions, seed)
    assert len(parts) == len(fractions)
    assert all(len(p) > 0 for p in parts)
    assert np.array_equal(np.sort(np.concatenate(parts)), np.arange(len(g)))  # a partition
    subjects = [set(g[p].tolist()) for p in parts]
    for i in range(len(parts)):
        for j in range(i + 1, len(parts)):
            assert not subjects[i] & subjects[j]


def test_subject_split_sizes_follow_fractions_and_seed() -> None:
    g = np.repeat(np.arange(20), 10)
    a = subject_split(g, (0.6, 0.2, 0.2), seed=3)
    b = subject_split(g, (0.6, 0.2, 0.2), seed=3)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert [len(p) for p in a] == [120, 40, 40]
    with pytest.raises(UserInputError, match="2 subject"):
        subject_split(np.array([0, 0, 1, 1]), (0.6, 0.2, 0.2), seed=0)


def test_stratified_split_keeps_every_class_on_both_sides() -> None:
    y = np.array([0] * 50 + [1] * 10 + [2] * 3 + [3] * 2)
    rest, held = stratified_split(y, 0.2, seed=0)
    assert len(held) == 13 and len(rest) + len(held) == len(y)
    assert not set(rest) & set(held)
    assert set(y[rest]) == set(y[held]) == {0, 1, 2, 3}
    assert np.array_equal(held, stratified_split(y, 0.2, seed=0)[1])
    assert not np.array_equal(held, stratified_split(y, 0.2, seed=1)[1])


def test_stratified_split_tiny_classes_fall_back_gracefully() -> None:
    rest, held = stratified_split(np.array(["a", "a", "a", "a", "b"]), 0.4, seed=0)
    assert "b" in set(np.array(["a", "a", "a", "a", "b"])[rest])  # the singleton stays on the training side
    rest, held = stratified_split(np.arange(5), 0.4, seed=0)  # all singletons: random fallback
    assert len(held) == 2 and len(rest) == 3
    with pytest.raises(UserInputError, match="at least 2"):
        stratified_split(np.array([1]), 0.5, seed=0)


def test_random_split_partition_and_bounds() -> None:
    rest, held = random_split(10, 0.01, seed=0)
    assert len(held) == 1 and len(rest) == 9
    rest, held = random_split(10, 0.99, seed=0)
    assert len(held) == 9 and len(rest) == 1


def test_sliding_windows_shapes_and_content() -> None:
    x = np.arange(20, dtype=float).reshape(2, 10)
    w = sliding_windows(x, 4, 3)
    assert w.shape == (3, 2, 4)
    assert np.array_equal(w[1, 0], [3, 4, 5, 6]) and np.array_equal(w[2, 1], [16, 17, 18, 19])
    assert sliding_windows(x, 5).shape == (2, 2, 5)  # default stride: no overlap
    with pytest.raises(UserInputError, match="longer than the recording"):
        sliding_windows(x, 11)


def test_window_raw_majority_labels_and_groups() -> None:
    x = np.random.default_rng(0).normal(size=(2, 3, 12))
    y = np.array([["a"] * 7 + ["b"] * 5, ["c"] * 12])  # per-timestep labels
    raw = RawData(x=x, y=y, task="classification", group=np.array([7, 8]), views={"pi": np.ones((2, 4))})
    w = window_raw(raw, 4, 4)
    assert w.x.shape == (6, 3, 4)
    assert w.y.tolist() == ["a", "a", "b", "c", "c", "c"]
    assert w.group.tolist() == [7, 7, 7, 8, 8, 8]
    assert w.views["pi"].shape == (6, 4)
    assert np.array_equal(w.x[1], x[0, :, 4:8])
    assert majority_vote(np.array([[1, 2, 2, 1]])).tolist() == [1]  # tie: smallest label


def test_normalizer_modes() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 3, 20)) * np.array([1.0, 10.0, 0.1])[None, :, None] + 5
    x[:, 2] = 4.0  # a constant channel must become 0, not NaN
    n = fit_normalizer(x, "per_channel")
    z = n.apply(x)
    assert z.dtype == np.float32 and np.allclose(z.mean(axis=(0, 2)), 0, atol=1e-5)
    assert np.allclose(z[:, :2].std(axis=(0, 2)), 1, atol=1e-4) and np.all(z[:, 2] == 0)
    g = fit_normalizer(x, "global")
    assert len(g.mean) == 1 and abs(float(g.apply(x).mean())) < 1e-5
    assert np.array_equal(fit_normalizer(x, "none").apply(x), x.astype(np.float32))
    import json

    json.dumps(n.to_dict())
    with pytest.raises(UserInputError, match="normalize"):
        fit_normalizer(x, "minmax")
