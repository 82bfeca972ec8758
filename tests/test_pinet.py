"""PI-Net: shapes, it learns (MSE falls), checkpoint round trip with parameter checks, and `edgedistill topo pinet`
-> a recipe whose "pi" view comes from the PI-Net instead of gudhi; `edgedistill topo pis` fills the cache."""
import json

import numpy as np
import pytest
import torch
import yaml
from typer.testing import CliRunner

from edgedistill.cli import app
from edgedistill.config import DataConfig, TopologyConfig
from edgedistill.data import topology as topo
from edgedistill.errors import UserInputError
from edgedistill.experiment.topology import prepare_with_pis
from edgedistill.models.pi_models import PINet, load_pinet, pinet_mse, predict_pis, save_pinet, train_pinet

PARAMS = topo.pi_params(TopologyConfig(resolution=8, spread=0.05))


def _data(n=48, seed=0):
    rng = np.random.default_rng(seed)
    t = np.linspace(0, 1, 40)
    freq = rng.integers(1, 6, size=n)
    x = np.sin(2 * np.pi * freq[:, None] * t)[:, None, :] * rng.uniform(0.3, 1.0, size=(n, 1, 1))
    x = x + 0.05 * rng.normal(size=x.shape)
    scale = topo.pi_scale(x)
    return topo.preprocess(x, scale), np.stack([topo.window_pis(w, PARAMS) for w in topo.preprocess(x, scale)])


def test_pinet_shapes_are_non_negative():
    net = PINet(3, 6, 8, widths=(4, 4, 4, 4))
    out = net(torch.randn(5, 3, 50))
    assert out.shape == (5, 6, 8, 8) and (out >= 0).all()


def test_pinet_learns():
    x, y = _data()
    untrained, _ = train_pinet(x, y, epochs=1, lr=1e-9, widths=(8, 8, 8, 8))
    net, best = train_pinet(x[:36], y[:36], x[36:], y[36:], epochs=60, lr=3e-3, widths=(8, 16, 16, 16))
    assert best["val_mse"] < 0.5 * pinet_mse(untrained, x[36:], y[36:])


def test_checkpoint_round_trip_and_checks(tmp_path):
    x, y = _data(n=8)
    net, best = train_pinet(x, y, epochs=1, widths=(4, 4, 4, 4))
    save_pinet(net, tmp_path / "p.pt", PARAMS, x.shape[2], best)
    again, ck = load_pinet(tmp_path / "p.pt")
    np.testing.assert_allclose(predict_pis(tmp_path / "p.pt", x, PARAMS), np.clip(again(torch.tensor(x).float()).detach().numpy(), 0, 1))
    with pytest.raises(UserInputError, match="spread"):
        predict_pis(tmp_path / "p.pt", x, {**PARAMS, "spread": 0.2})
    with pytest.raises(UserInputError, match="samples"):
        predict_pis(tmp_path / "p.pt", x[:, :, :20], PARAMS)
    with pytest.raises(UserInputError, match="does not exist"):
        predict_pis(tmp_path / "missing.pt", x, PARAMS)


def test_cli_trains_a_pinet_that_a_recipe_uses(tmp_path):
    data = {"name": "synthetic", "params": {"n_subjects": 4, "windows_per_subject": 8, "n_classes": 2, "length": 32},
            "topology": {"resolution": 8, "spread": 0.05}}
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({"data": data, "student": {"model": "cnn1d"}, "method": {"name": "supervised"}}))
    runner = CliRunner()
    res = runner.invoke(app, ["topo", "pis", str(recipe), "--no-progress"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["topo", "pinet", str(recipe), "--out", str(tmp_path / "pn"), "--epochs", "2",
                              "--width", "4", "--width", "4", "--width", "4", "--width", "4", "--no-progress"])
    assert res.exit_code == 0, res.output
    metrics = json.loads((tmp_path / "pn" / "pinet.json").read_text())
    assert metrics["speedup"] > 0 and metrics["test_mse"] >= 0
    cfg = DataConfig(**{**data, "topology": {**data["topology"], "source": "pinet", "pinet": str(tmp_path / "pn" / "pinet.pt")}})
    splits = prepare_with_pis(cfg, 0)
    assert splits.info.views["pi"] == (splits.info.views["x"][0], 8, 8)
    # a recipe without data.topology is refused with the key named
    plain = tmp_path / "plain.yaml"
    plain.write_text(yaml.safe_dump({"data": {"name": "synthetic"}, "student": {"model": "cnn1d"}}))
    res = runner.invoke(app, ["topo", "pinet", str(plain), "--out", str(tmp_path / "x")])
    assert res.exit_code == 2 and "data.topology" in res.output
