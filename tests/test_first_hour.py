"""The first hour without traps (issue 18, part 5): stage lines with --no-progress, run files created with the
user's umask, export/profile taking the seed best on validation (and saying so), a plain note when int8 is not
smaller or faster, and shell-safe command lines in the README and docs."""
import copy
import io
import json
import os
import re
import stat
from pathlib import Path
from types import SimpleNamespace

import pytest
from rich.console import Console
from typer.testing import CliRunner

from edgedistill.cli import app
from edgedistill.deploy.export import int8_notes
from edgedistill.deploy.runs import choose_seed, load_run
from edgedistill.io import write_json, write_text
from edgedistill.progress import StageProgress
from tests.helpers import TINY_RECIPE

ROOT = Path(__file__).resolve().parents[1]

# The CLI tests' tiny recipe, one epoch each, without the student alone.
RECIPE = {**copy.deepcopy(TINY_RECIPE), "name": "firsthour", "baseline": False,
          "teacher": {**TINY_RECIPE["teacher"], "train": {"epochs": 1, "batch_size": 16}},
          "train": {"epochs": 1, "batch_size": 16}}


@pytest.fixture(scope="module")
def run_cli(tmp_path_factory):
    """One tiny two-seed run through the CLI with --no-progress: (run directory, CLI result)."""
    import yaml

    root = tmp_path_factory.mktemp("firsthour")
    recipe = root / "recipe.yaml"
    recipe.write_text(yaml.safe_dump({**RECIPE, "cache_dir": str(root / "cache")}))
    result = CliRunner().invoke(app, ["run", str(recipe), "--out", str(root / "run"), "--no-progress"])
    assert result.exit_code == 0, result.output
    return root / "run", result


# -- (a) stage lines ---------------------------------------------------------------------------------
def test_no_progress_run_prints_one_line_per_stage_start_and_end(run_cli):
    """On stdout: stderr stays for warnings and the one-line error of a failure."""
    _, result = run_cli
    out = result.stdout
    for label in ("teacher seed 0", "offline seed 0", "offline seed 1"):
        assert f"{label}: started" in out, out
        ends = [line for line in out.splitlines() if re.match(rf"{label}: epoch \d+/\d+, test acc", line)]
        assert len(ends) == 1, out
        assert re.search(r", \d+ s$", ends[0]), ends[0]  # the stage's duration
    stages = [line for line in out.splitlines() if re.match(r"(teacher|student|offline) seed \d", line)]
    assert len(stages) < 12  # no per-batch or per-epoch noise
    assert "started" not in result.stderr


def _plain(**kw) -> tuple[StageProgress, io.StringIO]:
    buf = io.StringIO()
    return StageProgress(console=Console(file=buf, force_terminal=False, width=40), **kw), buf


def test_stage_lines_count_epochs_heartbeat_and_stay_whole_lines():
    prog, buf = _plain(enabled=False, heartbeat_s=0)
    with prog:
        prog.start("teacher seed 0 [a long label that is wider than forty columns]", 60, epochs=3)
        for _ in range(3):
            prog.advance(20)
            prog.note("val acc 0.900 (best epoch 1)")
        prog.finish("test acc 0.925 (best epoch 3)")
    lines = buf.getvalue().splitlines()
    assert lines[0] == "teacher seed 0 [a long label that is wider than forty columns]: started (3 epochs)"
    assert lines[1].endswith(": epoch 1/3, val acc 0.900 (best epoch 1), 0 s")  # heartbeat (every note at 0 s)
    assert lines[-1].endswith(": epoch 3/3, test acc 0.925 (best epoch 3), 0 s")
    assert len(lines) == 5


def test_unfinished_stage_gets_its_end_line_and_quiet_prints_nothing():
    prog, buf = _plain(enabled=False)
    with prog:
        prog.start("persistence images (10 windows)", 4, done=1)
        prog.advance(3)
        prog.note("per-chunk note")  # within the heartbeat interval: no line
    assert buf.getvalue().splitlines() == ["persistence images (10 windows): started (4 steps, resuming at step 1/4)",
                                           "persistence images (10 windows): step 4/4, done, 0 s"]
    quiet, qbuf = _plain(enabled=False, quiet=True)
    with quiet:
        quiet.start("x", 2)
        quiet.message("hello")
        quiet.finish("ok")
    assert qbuf.getvalue() == ""


# -- (b) umask ---------------------------------------------------------------------------------------
@pytest.mark.skipif(not hasattr(os, "fchmod"), reason="POSIX file modes")
@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_atomic_writes_follow_the_umask(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        write_text(tmp_path / "a.txt", "x")
        write_json(tmp_path / "b.json", {"a": 1})
        write_text(tmp_path / "a.txt", "rewritten")  # replacing a file gives the same mode
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == mode
    assert stat.S_IMODE((tmp_path / "b.json").stat().st_mode) == mode


def test_run_files_are_not_private_under_umask_022(run_cli):
    run_dir, _ = run_cli
    old = os.umask(0o022)  # read the test process's umask (the run fixture wrote under it) and restore it
    os.umask(old)
    if not hasattr(os, "fchmod") or old != 0o022:
        pytest.skip("needs POSIX modes and umask 022")
    for name in ("summary.json", "report.md", "config.yaml"):
        assert stat.S_IMODE((run_dir / name).stat().st_mode) == 0o644, name


# -- (c) best seed, int8 notes -----------------------------------------------------------------------
def _seed_summaries(root: Path, accs: dict[int, float]) -> SimpleNamespace:
    for seed, acc in accs.items():
        write_json(root / "m" / f"seed{seed}" / "summary.json",
                   {"val": {"best": {"acc": acc, "nll": 1.0}, "last": {"acc": 1 - acc, "nll": 1.0}}})
    return SimpleNamespace(seeds=[0, 1, 2], method=SimpleNamespace(name="m"))


def test_choose_seed_takes_the_best_on_validation_and_says_why(tmp_path):
    recipe = _seed_summaries(tmp_path, {0: 0.70, 1: 0.90, 2: 0.80})
    seed, why = choose_seed(tmp_path, recipe, "best")
    assert seed == 1 and why.startswith("seed 1: ") and "0.900" in why and "seed 0 0.700" in why and "--seed" in why
    assert choose_seed(tmp_path, recipe, "last")[0] == 0  # compared at the checkpoint being exported
    write_json(tmp_path / "m" / "seed2" / "summary.json", {"val": {"best": {"acc": 0.90, "nll": 0.5}}})
    seed, why = choose_seed(tmp_path, recipe, "best")
    assert seed == 2 and "tied with seed(s) [1], lower validation nll 0.500" in why  # ties: as training chose epochs
    recipe = _seed_summaries(tmp_path / "partial", {2: 0.5})
    seed, why = choose_seed(tmp_path / "partial", recipe)
    assert seed == 2 and "[0, 1] unfinished" in why
    seed, why = choose_seed(tmp_path / "none", recipe)
    assert seed == 0 and "no seed has a finished summary.json" in why


def test_export_without_seed_takes_the_best_seed_and_seed_overrides(run_cli, tmp_path):
    run_dir, _ = run_cli
    summary = run_dir / "offline" / "seed1" / "summary.json"
    data = json.loads(summary.read_text())
    data["val"]["best"]["acc"] = 1.0  # make seed 1 the clear winner on validation
    write_json(summary, data)
    assert load_run(run_dir).seed == 1
    out = tmp_path / "m.onnx"
    result = CliRunner().invoke(app, ["export", str(run_dir), "--out", str(out), "--int8", "--calibration", "16"])
    assert result.exit_code == 0, result.output
    assert "exporting seed 1: its student had the best validation acc (1.000" in result.output
    sizes = {v: p.stat().st_size for v, p in {"fp32": out, "int8": out.with_name("m.int8.onnx")}.items()}
    assert ("note: the int8 file" in result.output) == (sizes["int8"] >= sizes["fp32"])
    result = CliRunner().invoke(app, ["profile", str(run_dir), "--no-int8", "--runs", "1", "--warmup", "0", "--no-report"])
    assert result.exit_code == 0, result.output
    assert "profiling seed 1: its student had the best validation acc" in result.output
    chosen = load_run(run_dir, seed=0)  # --seed passes its value here: it wins, and no reason is given
    assert chosen.seed == 0 and chosen.seed_reason == ""


def test_int8_notes_say_when_int8_buys_nothing():
    assert int8_notes(4000, 3000, 50.0, 40.0) == []
    notes = int8_notes(4000, 5000, 50.0, 60.0)
    assert len(notes) == 2 and "not smaller than fp32" in notes[0] and "not faster than fp32" in notes[1]
    assert len(int8_notes(4000, 3000, 50.0, 70.0)) == 1
    assert int8_notes(4000, 3000) == []  # no latency measured: no claim about speed


# -- (d) shell-safe command lines --------------------------------------------------------------------
def test_readme_and_docs_quote_bracket_arguments():
    """zsh stops at an unquoted ``seeds=[0,1]`` ("no matches found"): every command-line ``key=[...]`` is quoted."""
    bad = []
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]:
        for n, line in enumerate(path.read_text().splitlines(), 1):
            for code in re.findall(r"`([^`]*edgedistill (?:run|sweep|export|profile)[^`]*)`", line) + (
                    [line] if line.lstrip().startswith("edgedistill ") else []):
                if re.search(r"(?<=\s)[\w.]+=\[", code):
                    bad.append(f"{path.relative_to(ROOT)}:{n}: {code.strip()}")
    assert not bad, "\n".join(bad)
