"""An archive's shipped recipe run for real (not --smoke, which swaps the data for synthetic windows) on files
written in the archive's own format: loader, window cache, recipe keys and run directory together."""
import json

import numpy as np

from tests.helpers import cli_run
from tests.test_archive_pamap2 import _write_subject


def test_pamap2_recipe_runs_on_an_archive_in_pamap2_format(tmp_path, monkeypatch):
    root = tmp_path / "data"
    for k, subject in enumerate(range(101, 110)):
        _write_subject(root / "PAMAP2_Dataset", subject, [(1, 600), (4, 600 + 30 * k), (5, 600)])
    monkeypatch.setenv("EDGEDISTILL_DATA", str(root))
    out = tmp_path / "run"
    args = ["pamap2_kd", "--out", out, "eval.scheme=holdout", "seeds=[0]", "train.epochs=1", "teacher.train.epochs=1",
            "data.params.window=40", "data.params.stride=20"]
    result = cli_run(*args)
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert [r["role"] for r in summary["rows"]] == ["teacher", "student alone", "method"]
    assert summary["data"]["split_by"] == "subject" and len(summary["data"]["subjects"]["test"]) >= 1
    assert summary["data"]["input_shape"][0] == 9  # the hand IMU: acc16, gyro, mag x 3 axes
    assert any("transient" in n or "resampled" in n for n in summary["data"]["notes"]), summary["data"]["notes"]
    assert len(list((tmp_path / "model-cache" / "windows").glob("pamap2-*"))) == 1  # the prepared windows, cached
    again = cli_run(*args)  # the same run again: every stage and the windows read back
    assert again.exit_code == 0 and "started" not in again.output, again.output
    assert np.isfinite(summary["rows"][2]["metrics"]["acc"]["mean"])
