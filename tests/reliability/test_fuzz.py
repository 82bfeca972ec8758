"""A few hundred seeded fuzz cases of the cheap kinds (refused when the recipe, the overrides or the data file is
read: nothing trains) through the real CLI, in-process, each in its own sandbox (tests/reliability/fuzz_harness.py).
None may end in a traceback, a hang, exit 0 where a refusal is owed, a write outside the run directory or a
changed or removed file. `make fuzz` runs 1,000 cases of every kind, with a memory cap, in a worker process.
"""
import pytest

from reliability.fuzz_cases import REFUSE, draw_cases
from reliability.fuzz_harness import is_failure, run_case, signature

SEED = 2016  # fixed: the same cases every run (make fuzz --seed N draws fresh ones)
# family -> cases in `make test` (270 in all, ~0.1 s each when refused as they should be)
BUDGET = {"numbers": 40, "drop_or_rename": 20, "wrong_type": 20, "strings": 30, "names": 30, "yaml": 25,
          "overrides": 30, "npz": 25, "checkpoint": 10, "out": 10, "chains": 20, "special_files": 10}


@pytest.mark.parametrize("family", list(BUDGET))
def test_bad_input_is_refused_in_one_line_and_nothing_else_happens(family, tmp_path):
    # Only cases owed a refusal: an accepted case trains (seconds each); `make fuzz` runs those.
    cases = [c for c in draw_cases(3 * BUDGET[family], SEED, (family,)) if c.expect == REFUSE][: BUDGET[family]]
    assert len(cases) >= BUDGET[family] // 2, "the generator no longer draws enough refusals for this family"
    failures = []
    for i, case in enumerate(cases):
        r = run_case(case, tmp_path, i, limit_s=10.0)
        if is_failure(r):
            failures.append(f"{signature(r)}: {case.note[:80]!r} -> {r.get('message', '')[:200]}")
    assert not failures, f"{len(failures)} of {len(cases)} {family} cases failed:\n" + "\n".join(failures)


def test_the_harness_sees_a_refusal_a_run_and_a_write_outside(tmp_path, monkeypatch):
    """The classifier is not blind: a valid recipe runs, a misspelt key is a clean refusal, and a stand-in CLI that
    writes beside the run directory, replaces a sentinel, raises or sleeps is reported as such."""
    import time
    from pathlib import Path
    from typing import List, Optional

    import typer

    import edgedistill.cli
    from reliability.fuzz_cases import BASE, Case

    ok = run_case(Case("valid", "accept", BASE), tmp_path, 0)
    assert ok["outcome"] == "accepted" and not ok["flags"], ok
    bad = run_case(Case("recipe.unknown_key", REFUSE, {**BASE, "trian": 1}), tmp_path, 1)
    assert bad["outcome"] == "clean" and bad["exit"] == 2 and "trian" in bad["message"], bad

    fake = typer.Typer()

    @fake.command()
    def run(recipe: str, overrides: Optional[List[str]] = typer.Argument(None), out: Optional[str] = typer.Option(None),
            progress: bool = typer.Option(True, "--progress/--no-progress")) -> None:
        what = (overrides or ["ok"])[0]
        if what == "escape":
            Path("../PARENT_SENTINEL.txt").write_text("replaced")  # the working folder is <case>/box
            Path("../../elsewhere.txt").write_text("x")
        elif what == "raise":
            raise RuntimeError("boom")
        elif what == "sleep":
            time.sleep(5)

    @fake.command()
    def other() -> None:  # two commands: `run` stays a subcommand
        pass

    monkeypatch.setattr(edgedistill.cli, "app", fake)
    escaped = run_case(Case("probe", REFUSE, BASE, overrides=("escape",)), tmp_path, 2)
    assert escaped["outcome"] == "accepted" and set(escaped["flags"]) == {"silent_wrong", "data_lost", "writes_outside"}
    assert run_case(Case("probe", REFUSE, BASE, overrides=("raise",)), tmp_path, 3)["outcome"] == "traceback"
    assert run_case(Case("probe", REFUSE, BASE, overrides=("sleep",)), tmp_path, 4, limit_s=0.5)["outcome"] == "hang"


def test_the_snapshot_counts_a_new_empty_folder_but_not_the_parents_of_an_allowed_one(tmp_path):
    """A recipe's cache_dir a/b makes a/ on the way: a/ holds only the allowed folder, so it is not a write outside;
    an empty folder elsewhere is."""
    from reliability.fuzz_harness import _snapshot

    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "b" / "model.pt").write_text("x")
    (tmp_path / "stray").mkdir()
    assert set(_snapshot(tmp_path, [tmp_path / "a" / "b"])) == {"stray/"}
