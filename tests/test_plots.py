"""The report's plots (experiment/plots_*.py): drawn from a finished run's files, every axis labelled (checked on the
matplotlib Figure objects, not pixels), every PNG non-empty, and the numbers drawn are the run's numbers."""
import json
import struct
from pathlib import Path

import pytest
import torch

from edgedistill.experiment import plots_curves, plots_eval, plots_reliability
from edgedistill.experiment.html_report import draw_run
from edgedistill.experiment.plots_common import png_bytes
from edgedistill.experiment.plots_sources import load_run
from edgedistill.metrics import ece, fit_temperature
from tests.test_html_report import finished_run  # noqa: F401 - the shared finished run (built once per session)

EXPECTED = {"curves_loss", "curves_val", "reliability", "confusion", "pareto", "paired_seeds"}


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


def _data_axes(fig):
    # A colorbar is an axes too; its label is the colorbar's, set on one side only.
    return [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]


def test_every_plot_is_drawn_labelled_and_saved(finished_run):  # noqa: F811
    plots = {p.key: p for p in draw_run(load_run(finished_run, check_lock=False))}
    assert set(plots) == EXPECTED
    for key, plot in plots.items():
        axes = _data_axes(plot.figure)
        assert axes, key
        for ax in axes:
            assert ax.get_xlabel().strip() and ax.get_ylabel().strip(), f"{key}: an axis without labels"
            assert ax.get_title().strip(), f"{key}: a panel without a title"
        width, height = _png_size(png_bytes(plot.figure))
        assert width > 200 and height > 150, key
        saved = finished_run / "plots" / f"{key}.png"
        assert saved.is_file() and saved.stat().st_size > 2000, f"{saved} missing or nearly empty"
        _png_size(saved.read_bytes())


def test_learning_curves_draw_every_term_of_every_network(finished_run):  # noqa: F811
    run = load_run(finished_run, check_lock=False)
    assert [c.name for c in run.curves] == ["teacher", "student alone", "offline"]
    plot = plots_curves.loss_curves(run.curves)
    for ax, curves in zip(plot.figure.axes, run.curves):
        terms = {k for recs in curves.records.values() for r in recs for k in r["train"]}
        assert set(ax.get_legend_handles_labels()[1]) == terms
    # The distilled student's ce line, averaged over its two seeds, is the mean of the metrics.jsonl values.
    ax = plot.figure.axes[2]
    line = next(ln for ln in ax.get_lines() if ln.get_label() == "ce")
    per_seed = [[json.loads(s)["train"]["ce"] for s in (finished_run / "offline" / f"seed{k}" / "metrics.jsonl").read_text().splitlines()]
                for k in (0, 1)]
    assert list(line.get_ydata()) == pytest.approx([(a + b) / 2 for a, b in zip(*per_seed)])


def test_paired_differences_are_the_per_seed_differences(finished_run):  # noqa: F811
    summary = json.loads((finished_run / "summary.json").read_text())
    rows = {r["role"]: r for r in summary["rows"]}
    plot = plots_curves.paired_differences(summary)
    acc_ax = plot.figure.axes[0]
    heights = [p.get_height() for p in acc_ax.patches]
    want = [m["acc"] - a["acc"] for m, a in zip(rows["method"]["per_seed_test"], rows["student alone"]["per_seed_test"])]
    assert heights == pytest.approx(want)
    del rows["student alone"]["per_seed_test"]  # an older summary: nothing to pair, no exception
    assert plots_curves.paired_differences(summary) is None


def test_reliability_bins_give_the_table_ece():
    g = torch.Generator().manual_seed(0)
    logits, y = torch.randn(500, 4, generator=g) * 3, torch.randint(0, 4, (500,), generator=g)
    assert plots_reliability.ece_of(plots_reliability.bins(logits, y)) == pytest.approx(ece(logits, y), abs=1e-9)
    entry = plots_reliability.network_entry("net", [(logits[:200], y[:200], logits[200:], y[200:])])
    t = fit_temperature(logits[:200], y[:200])
    assert entry["temperature"] == [pytest.approx(t)]
    assert entry["ece_ts"] == pytest.approx(ece(logits[200:] / t, y[200:]), abs=1e-9)
    assert sum(entry["raw"]["count"]) == 300


def test_reliability_json_matches_the_summary_ece(finished_run):  # noqa: F811
    rel = json.loads((finished_run / "plots" / "reliability.json").read_text())
    summary = json.loads((finished_run / "summary.json").read_text())
    method = next(r for r in summary["rows"] if r["role"] == "method")
    net = next(n for n in rel["networks"] if n["name"] == "offline")
    # Pooled over the two seeds vs the seeds' mean: equal when both seeds' bins are the same size (same test split).
    assert net["seeds"] == 2 and sum(net["raw"]["count"]) == 2 * summary["data"]["sizes"]["test"]
    assert {n["name"] for n in rel["networks"]} == {"teacher", "student alone", "offline"}
    assert 0.0 <= net["ece"] <= 1.0 and method["metrics"]["ece"]["mean"] >= 0.0


def test_pareto_front_and_profile_points(finished_run):  # noqa: F811
    assert plots_eval._front([(1, 0.5), (2, 0.4), (3, 0.7), (4, 0.6), (5, 0.9)], True) == [(1, 0.5), (3, 0.7), (5, 0.9)]
    assert plots_eval._front([(1, 3.0), (2, 2.0), (3, 2.5)], False) == [(1, 3.0), (2, 2.0)]
    run = load_run(finished_run, check_lock=False)
    run.profile = {"rows": [{"variant": "onnxruntime fp32", "size_bytes": 20480, "median_us": 120.0},
                            {"variant": "onnxruntime int8", "size_bytes": 8192, "median_us": 90.0}]}
    _, points = plots_eval.pareto_points([run])
    method = next(p for p in points if p["role"] == "method")
    assert method["int8_kb"] == 8.0 and method["latency_us"] == 90.0
    plot = plots_eval.pareto([run])
    assert [len(ax.collections) for ax in plot.figure.axes] == [3, 1, 1]  # every network; the profiled student twice


def test_confusion_matrix_shows_the_summary_counts(finished_run):  # noqa: F811
    summary = json.loads((finished_run / "summary.json").read_text())
    plot = plots_eval.confusion(summary)
    method = next(r for r in summary["rows"] if r["role"] == "method")
    ax = next(a for a in plot.figure.axes if a.get_title().startswith(method["model"]))
    cm = method["detail"]["confusion"]
    shown = [t.get_text() for t in ax.texts]
    assert shown == [str(int(v)) if float(v).is_integer() else f"{v:.1f}" for row in cm for v in row]
    assert plots_eval.confusion({"rows": [{"model": "m", "role": "method"}]}) is None  # no detail: nothing drawn


def test_plots_never_fail_on_damaged_inputs(tmp_path, finished_run):  # noqa: F811
    import shutil

    run_dir = tmp_path / "copy"
    shutil.copytree(finished_run, run_dir)
    (run_dir / "offline" / "seed0" / "metrics.jsonl").write_text('{"epoch": 1, "train": {"ce": "x"}}\n{"epo')
    (run_dir / "plots" / "reliability.json").write_text('{"networks": [{"name": "n"}]}')
    warnings: list[str] = []
    plots = draw_run(load_run(Path(run_dir), check_lock=False), warnings.append)
    assert "reliability" not in {p.key for p in plots}
    assert any("reliability" in w for w in warnings)
