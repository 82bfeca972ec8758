"""``edgedistill report`` and the report a run writes at its end (experiment/html_report.py): one self-contained HTML
file (images embedded, no script, nothing fetched) plus its Markdown version, runs side by side, a sweep's grid, and
bad input (not a run, a run in progress, a run from an older version) said in words while the report shows what it can."""
import base64
import json
import re
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

import edgedistill.cli_report  # noqa: F401 - registers the report command on the app
from edgedistill.cli import app
from edgedistill.errors import UserInputError
from edgedistill.experiment import html_report
from edgedistill.experiment.rundir import DirLock
from tests.helpers import TINY_RECIPE

SECTIONS = ["overview", "tables", "curves", "reliability", "confusion", "pareto", "paired"]


@pytest.fixture
def finished_run(tmp_path_factory) -> Path:
    """A finished two-seed run with its plots, trained once per session (shared with test_plots.py)."""
    run_dir = tmp_path_factory.getbasetemp() / "report-run" / "run"
    if not (run_dir / "report.html").is_file():
        from edgedistill.config import load_recipe
        from edgedistill.experiment.runner import plan, run

        recipe = {**TINY_RECIPE, "cache_dir": str(run_dir.parent / "cache"), "report": {"plots": True}}
        run(recipe, out=run_dir, progress=False)
        if not (run_dir / "report.html").is_file():  # a runner that does not yet write them at its end
            p = plan(load_recipe(recipe))
            html_report.write_run_artifacts(run_dir, p.recipe, p.splits)
    return run_dir


def _images(text: str) -> list[bytes]:
    return [base64.b64decode(m) for m in re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', text)]


def _self_contained(text: str) -> None:
    assert "<script" not in text.lower()
    assert not re.search(r'(src|href)="(?!data:)', text), "something is loaded from outside the file"
    images = _images(text)
    assert images and all(img[:8] == b"\x89PNG\r\n\x1a\n" and len(img) > 2000 for img in images)


def test_run_writes_report_html_with_every_section(finished_run):
    text = (finished_run / "report.html").read_text()
    _self_contained(text)
    for section in SECTIONS:
        assert f'data-section="{section}"' in text
    assert "Not drawn" not in text  # a finished classification run with a student alone has every plot
    assert len(_images(text)) == 6


def test_report_command_single_run_keeps_the_runs_report_md(finished_run):
    before = (finished_run / "report.md").read_text()
    result = CliRunner().invoke(app, ["report", str(finished_run)])
    assert result.exit_code == 0, result.output
    assert (finished_run / "report.md").read_text() == before
    md = (finished_run / "report_plots.md").read_text()
    for key in ("curves_loss", "reliability", "confusion", "pareto", "paired_seeds"):
        assert f"](plots/{key}.png)" in md
    _self_contained((finished_run / "report.html").read_text())


def test_several_runs_side_by_side(tmp_path, finished_run):
    other = tmp_path / "other"
    shutil.copytree(finished_run, other)
    out = tmp_path / "out" / "both.html"
    result = CliRunner().invoke(app, ["report", str(finished_run), str(other), "--out", str(out)])
    assert result.exit_code == 0, result.output
    text = out.read_text()
    _self_contained(text)
    assert 'data-section="comparison"' in text and "repeat(2," in text
    for prefix in ("t0-", "t1-"):
        for section in SECTIONS:
            assert f'id="{prefix}{section}"' in text
    md = (tmp_path / "out" / "both.md").read_text()
    assert md.count("## e2e") == 2 and "both_plots/pareto.png" in md


def test_sweep_grid_and_heatmap(tmp_path, finished_run):
    sweep = tmp_path / "sweep"
    shutil.copytree(finished_run, sweep / "trials" / "p0")
    (sweep / "sweep.json").write_text(json.dumps({"name": "grid", "identity": "x"}))
    (sweep / "results.md").write_text("# grid: sweep over `train.lr`\n\n| train.lr | method acc |\n|---|---|\n| 0.01 | 0.500 |\n")
    shutil.copy(finished_run / "plots" / "pareto.png", sweep / "heatmap.png")
    result = CliRunner().invoke(app, ["report", str(sweep)])
    assert result.exit_code == 0, result.output
    text = (sweep / "report.html").read_text()
    _self_contained(text)
    for section in ("overview", "grid", "heatmap", "pareto"):
        assert f'data-section="{section}"' in text
    assert "<td>0.01</td>" in text and (sweep / "plots" / "pareto.png").is_file()


def test_not_a_run_is_refused_with_exit_2(tmp_path):
    (tmp_path / "stuff").mkdir()
    (tmp_path / "stuff" / "notes.txt").write_text("hi")
    result = CliRunner().invoke(app, ["report", str(tmp_path / "stuff")])
    assert result.exit_code == 2 and "neither a run directory" in result.output
    result = CliRunner().invoke(app, ["report", str(tmp_path / "stuff" / "notes.txt")])
    assert result.exit_code == 2 and "is a file" in result.output
    with pytest.raises(UserInputError, match="--out"):
        html_report.build_report([tmp_path / "stuff"], tmp_path / "x.txt")


def test_run_in_progress_is_said_and_not_written_into(tmp_path, finished_run):
    run_dir = tmp_path / "running"
    shutil.copytree(finished_run, run_dir, ignore=shutil.ignore_patterns("plots", "report.*", "summary.json"))
    with DirLock(run_dir, "run directory"):
        result = html_report.build_report([run_dir], tmp_path / "r.html", warn=lambda line: None)
    assert any("still in progress" in n for n in result["notes"])
    text = (tmp_path / "r.html").read_text()
    assert "still in progress" in text
    assert text.count("Not drawn") == 4  # reliability, confusion, Pareto, paired need the summary; the curves are drawn
    assert 'id="curves"' in text and len(_images(text)) >= 2
    assert not (run_dir / "plots").exists()  # the run's own folder is left to the run
    assert (tmp_path / "r_plots").is_dir()
    result = html_report.build_report([run_dir], tmp_path / "r2.html", warn=lambda line: None)
    assert any("no summary.json yet" in n for n in result["notes"])


def test_older_run_without_some_metrics_shows_what_it_can(tmp_path, finished_run):
    run_dir = tmp_path / "old"
    shutil.copytree(finished_run, run_dir, ignore=shutil.ignore_patterns("plots", "report.html", "report_plots.md"))
    summary = json.loads((run_dir / "summary.json").read_text())
    for row in summary["rows"]:
        for key in ("detail", "per_seed_test"):
            row.pop(key, None)
    (run_dir / "summary.json").write_text(json.dumps(summary))
    result = CliRunner().invoke(app, ["report", str(run_dir)])
    assert result.exit_code == 0, result.output
    text = (run_dir / "report.html").read_text()
    for missing in ("reliability.json", "per-class detail", "student alone and the distilled student"):
        assert missing in text
    assert {p.name for p in (run_dir / "plots").iterdir()} == {"curves_loss.png", "curves_val.png", "pareto.png"}
    # --predict: the reliability bins from the saved weights (the data loaded again), the same as the run's own.
    result = CliRunner().invoke(app, ["report", str(run_dir), "--predict"])
    assert result.exit_code == 0, result.output
    rebuilt = json.loads((run_dir / "plots" / "reliability.json").read_text())
    assert rebuilt == json.loads((finished_run / "plots" / "reliability.json").read_text())
    assert (run_dir / "plots" / "reliability.png").is_file()


def test_run_artifacts_never_fail_the_run(tmp_path, finished_run, capsys):
    run_dir = tmp_path / "blocked"
    shutil.copytree(finished_run, run_dir, ignore=shutil.ignore_patterns("plots", "report.html"))
    (run_dir / "plots").write_text("a file where the folder goes")
    written = html_report.write_run_artifacts(run_dir)
    assert written == [run_dir / "report.html"]
    assert "report:" in capsys.readouterr().err

    class Off:
        class report:
            plots = False

    assert html_report.write_run_artifacts(run_dir, Off()) == []
