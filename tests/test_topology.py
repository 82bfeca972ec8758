"""data/topology.py: sublevel diagrams of known signals (gudhi vs our union-find), the PI test vector
(tests/reference/ref_persistence_image.py), PI invariants, the disk cache (reuse, resume after an
interruption) and the "pi" view added by experiment.topology.prepare_with_pis (prepare_data refuses data.topology)."""
import numpy as np
import pytest

from edgedistill.config import DataConfig, TopologyConfig
from edgedistill.data import topology as topo
from edgedistill.data.prepare import prepare_data
from edgedistill.errors import UserInputError
from edgedistill.experiment.topology import prepare_with_pis

X = np.array([0.0, 0.6, -0.4, 0.8, 0.1, 0.5, -0.2, 0.3])


def test_diagram_of_the_spec_signal():
    expected = np.array([[-0.2, 0.8], [0.0, 0.6], [0.1, 0.5]])
    np.testing.assert_allclose(topo.sublevel_diagram(X), expected, atol=1e-12)
    np.testing.assert_allclose(topo.union_find_diagram(X), expected, atol=1e-12)


def test_monotone_signal_has_no_finite_pair_and_a_valley_has_one():
    assert topo.sublevel_diagram(np.arange(10.0)).shape == (0, 2)
    # two minima (0 and 1) separated by a peak of 5: the younger (born at 1) dies at 5
    np.testing.assert_allclose(topo.sublevel_diagram(np.array([0.0, 5.0, 1.0])), [[1.0, 5.0]])


@pytest.mark.parametrize("seed", range(5))
def test_gudhi_matches_our_union_find_on_random_signals(seed):
    x = np.random.default_rng(seed).normal(size=200)
    np.testing.assert_allclose(topo.sublevel_diagram(x), topo.union_find_diagram(x), atol=1e-12)


def test_pi_test_vector():
    img = topo.persistence_image(topo.sublevel_diagram(X), resolution=5, spread=0.1, min_bd=-1.0, max_bd=1.0)
    assert abs(img.sum() - 0.5947021179) < 1e-6
    assert np.unravel_index(img.argmax(), img.shape) == (2, 2)
    assert abs(img.max() - 0.238475029) < 1e-6
    norm = topo.persistence_image(topo.sublevel_diagram(X), 5, 0.1, -1.0, 1.0, normalize=True)
    np.testing.assert_allclose(norm[0], [1.974e-09, 0.3148085840, 0.0455035124, 2.545e-11, 0.0], atol=1e-6)


def test_pi_invariants():
    dg = topo.sublevel_diagram(np.random.default_rng(0).normal(size=100) * 0.3)
    img = topo.persistence_image(dg, 16, 0.05, normalize=True)
    assert img.shape == (16, 16) and (img >= 0).all() and img.max() == pytest.approx(1.0)
    assert not topo.persistence_image(np.zeros((0, 2)), 16, 0.05, normalize=True).any()
    # linear weight: a pair with zero persistence contributes nothing; doubling every weight is undone by p/max p
    lone = topo.persistence_image(np.array([[0.0, 0.5]]), 16, 0.05)
    assert np.allclose(topo.persistence_image(np.array([[0.0, 0.5], [0.2, 0.2]]), 16, 0.05), lone)
    # high persistence is drawn at the top rows
    top = topo.persistence_image(np.array([[0.0, 0.9]]), 16, 0.05)
    low = topo.persistence_image(np.array([[0.0, 0.1]]), 16, 0.05)
    assert np.unravel_index(top.argmax(), top.shape)[0] < np.unravel_index(low.argmax(), low.shape)[0]


def test_pi_rejects_bad_parameters():
    with pytest.raises(UserInputError, match="spread"):
        topo.persistence_image(np.array([[0.0, 1.0]]), 8, spread=0.0)


def _windows(n=20, c=2, length=64, seed=0):
    return np.random.default_rng(seed).normal(size=(n, c, length))


def test_compute_pis_shapes_range_and_cache_reuse(tmp_path):
    params = topo.pi_params(TopologyConfig(resolution=8, spread=0.05))
    x = _windows()
    a = topo.compute_pis(x, params, cache_dir=tmp_path, workers=1, chunk=6, progress=False)
    assert a.shape == (20, 2, 8, 8) and a.dtype == np.float32
    assert np.allclose(a.max(axis=(2, 3)), 1.0) and (a >= 0).all()
    calls = []
    b = topo.compute_pis(x, params, cache_dir=tmp_path, workers=1, chunk=6, progress=False, on_chunk=calls.append)
    assert calls == [] and np.array_equal(a, b)  # everything came from the cache
    # other parameters or other data: a new key, so computed again
    topo.compute_pis(x, {**params, "spread": 0.1}, cache_dir=tmp_path, workers=1, chunk=6, progress=False,
                     on_chunk=calls.append)
    assert len(calls) == 4


def test_interrupted_computation_resumes(tmp_path):
    params = topo.pi_params(TopologyConfig(resolution=8, spread=0.05))
    x = _windows(n=24)

    def stop_after_two(i):
        if i == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        topo.compute_pis(x, params, cache_dir=tmp_path, workers=1, chunk=6, progress=False, on_chunk=stop_after_two)
    done = []
    resumed = topo.compute_pis(x, params, cache_dir=tmp_path, workers=1, chunk=6, progress=False, on_chunk=done.append)
    assert done == [2, 3]  # chunks 0 and 1 were kept
    fresh = topo.compute_pis(x, params, cache_dir=tmp_path / "other", workers=1, chunk=6, progress=False)
    np.testing.assert_array_equal(resumed, fresh)


def test_process_pool_gives_the_same_pis(tmp_path):
    params = topo.pi_params(TopologyConfig(resolution=8, spread=0.05))
    x = _windows(n=12)
    one = topo.compute_pis(x, params, cache_dir=tmp_path / "a", workers=1, chunk=4, progress=False)
    two = topo.compute_pis(x, params, cache_dir=tmp_path / "b", workers=2, chunk=4, progress=False)
    np.testing.assert_array_equal(one, two)


def test_rips_adds_h1_channels_of_the_delay_embedding(tmp_path):
    t = np.linspace(0, 4 * np.pi, 60)
    dg = topo.rips_diagram(np.sin(t), embed_dim=2, delay=4)
    assert len(dg) >= 1 and (dg[:, 1] - dg[:, 0]).max() > 0.5  # a sine traces a loop in 2-D delay coordinates
    params = topo.pi_params(TopologyConfig(resolution=8, spread=0.05, rips=True, embed_dim=2, delay=4))
    a = topo.compute_pis(np.sin(t)[None, None, :].repeat(2, 0), params, cache_dir=tmp_path, workers=1, progress=False)
    assert a.shape == (2, 2, 8, 8) and a[:, 1].max() > 0


def test_prepare_with_pis_adds_a_normalised_pi_view():
    cfg = DataConfig(name="synthetic", params={"n_subjects": 4, "windows_per_subject": 6, "n_classes": 2, "length": 32},
                     topology={"resolution": 8, "spread": 0.05})
    # the data layer does not compute PIs: a data.topology section is refused there, with the way to get them named
    with pytest.raises(UserInputError, match="prepare_with_pis"):
        prepare_data(cfg, 0)
    splits = prepare_with_pis(cfg, 0)
    assert splits.info.views["pi"][1:] == (8, 8)
    assert splits.info.views["pi"][0] == splits.info.views["x"][0]
    assert splits.train.views["pi"].shape[0] == splits.train.views["x"].shape[0]
    # per-channel normalisation of the PI view, fitted on train
    m = splits.train.views["pi"].mean(dim=(0, 2, 3))
    assert m.abs().max() < 1e-4


def test_pinet_source_needs_a_checkpoint():
    with pytest.raises(ValueError, match="pinet"):
        TopologyConfig(source="pinet")
