"""run --jobs N on a holdout recipe: the seeds' stages in worker processes give the numbers of --jobs 1 (same
thread count), the teacher is trained once by the run's own process, the workers' stage lines are shown by it, and a
failing stage is named with its seed."""
import json

import pytest

from edgedistill.errors import UserInputError
from edgedistill.experiment.runner import run
from tests.helpers import cli_run

ARGS = ["data.name=basicmotions", "seeds=[0, 1]", "train.epochs=3", "teacher.train.epochs=2", "engine.threads=1",
        "report.profile=false"]


def _stages(run_dir):
    out = {}
    for part in ("student_alone", "offline"):
        for seed in (0, 1):
            s = json.loads((run_dir / part / f"seed{seed}" / "summary.json").read_text())
            out[(part, seed)] = (s["val"], s["test"])
    return out


def test_seeds_in_two_workers_give_the_numbers_of_one_process(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEDISTILL_CACHE", str(tmp_path / "cache"))
    one = cli_run("quickstart", *ARGS, "--out", tmp_path / "one", "--jobs", "1")
    assert one.exit_code == 0, one.output
    assert "worker processes" not in one.output
    assert "reused from cache" not in one.output  # (the teacher it trained, read back for seed 1: nothing to say)
    monkeypatch.setenv("EDGEDISTILL_CACHE", str(tmp_path / "cache2"))  # an empty cache: every stage trains again
    two = cli_run("quickstart", *ARGS, "--out", tmp_path / "two", "--jobs", "2")
    assert two.exit_code == 0, two.output
    assert "4 stage(s) in this process and 1 worker process(es), 1 thread(s) each" in two.output
    assert two.output.count("teacher seed 0: started") == 1  # trained once, before the workers start
    assert "independent teachers" not in two.output  # (one teacher: in the run's process, with every thread)
    for seed in (0, 1):  # the workers' stages, shown by the run's process (progress.relay), named by their seed
        assert f"[seed {seed}] offline seed {seed}: started (3 epochs)" in two.output
        assert f"[seed {seed}] student seed {seed}: epoch 3/3" in two.output
    assert _stages(tmp_path / "one") == _stages(tmp_path / "two")
    rows = [json.loads((tmp_path / d / "summary.json").read_text())["rows"] for d in ("one", "two")]
    assert [r["metrics"] for r in rows[0]] == [r["metrics"] for r in rows[1]]
    again = cli_run("quickstart", *ARGS, "--out", tmp_path / "two", "--jobs", "2")  # finished: read back, nothing trained
    assert again.exit_code == 0 and "started" not in again.output, again.output


def test_independent_teachers_train_side_by_side_to_the_numbers_of_one_process(tmp_path, monkeypatch):
    """Three teachers no other teacher makes (multi_teacher): two trained in the slots first, the third then by the run's
    process, each once; every number as with --jobs 1 at the same thread count."""
    args = ["data.name=basicmotions", "seeds=[0]", "train.epochs=2", "engine.threads=1", "report.profile=false",
            *(f"teachers.{i}.train.epochs=2" for i in range(3))]
    monkeypatch.setenv("EDGEDISTILL_CACHE", str(tmp_path / "cache1"))
    one = cli_run("multi_teacher", *args, "--out", tmp_path / "one", "--jobs", "1")
    assert one.exit_code == 0, one.output
    monkeypatch.setenv("EDGEDISTILL_CACHE", str(tmp_path / "cache2"))
    two = cli_run("multi_teacher", *args, "--out", tmp_path / "two", "--jobs", "2")
    assert two.exit_code == 0, two.output
    assert "--jobs 2: 2 independent teachers side by side first" in two.output  # (the third: then, with both threads)
    for name, seed in (("fcn_s0", 0), ("fcn_s1", 1), ("fcn_s2", 2)):
        assert two.output.count(f"teacher '{name}' seed {seed}: started") == 1, two.output  # once, by a slot
    rows = [json.loads((tmp_path / d / "summary.json").read_text())["rows"] for d in ("one", "two")]
    assert [(r["role"], r["metrics"]) for r in rows[0]] == [(r["role"], r["metrics"]) for r in rows[1]]


@pytest.mark.slow  # (25-65 s: a killed worker, then the whole run again; make test-slow)
def test_a_worker_killed_mid_stage_is_named_with_its_seed_and_the_run_resumes(tmp_path, monkeypatch):
    from edgedistill.engine.loop import TEST_KILL_AFTER_EPOCH

    monkeypatch.setenv("EDGEDISTILL_CACHE", str(tmp_path / "cache"))
    first = cli_run("quickstart", *ARGS, "--out", tmp_path / "warm", "--jobs", "1")  # teacher, students alone: cached
    assert first.exit_code == 0, first.output
    # Only the distilled stages train now. The jobs go out in order, the first to the run's own slot (a thread, which
    # the kill hook spares): seed 0's student alone there, seed 0's distilled student to the worker process, which
    # kills itself after its epoch 2 (SIGKILL); seed 1's stages, in the run's slot, finish.
    monkeypatch.setenv(TEST_KILL_AFTER_EPOCH, "2")
    out = tmp_path / "run"
    killed = cli_run("quickstart", *ARGS, "--out", out, "--jobs", "2")
    assert killed.exit_code == 1 and "1 stage(s) failed (distilled student seed 0: the worker process" in killed.output
    assert "killed by SIGKILL" in killed.output and (out / "offline" / "seed1" / "summary.json").exists()
    assert "resume with:" in killed.output and not (out / "summary.json").exists()
    monkeypatch.delenv(TEST_KILL_AFTER_EPOCH)
    resumed = cli_run("quickstart", *ARGS, "--out", out, "--jobs", "2")
    assert resumed.exit_code == 0, resumed.output
    assert "[seed 0] offline seed 0: started (3 epochs, resuming at epoch 2/3)" in resumed.output, resumed.output
    assert _stages(out) == _stages(tmp_path / "warm")  # the resumed stages end where uninterrupted ones did


@pytest.mark.slow  # (a killed teacher worker, then the run again; make test-slow)
def test_a_worker_killed_mid_teacher_is_named_and_the_teacher_resumes_from_its_checkpoint(tmp_path, monkeypatch):
    """multi_teacher with --jobs 2: of the two teachers side by side, the one in the worker process kills itself after
    its epoch 1 (the run's own slot, a thread, is spared). The run stops naming it; run again, that teacher resumes at
    epoch 1 from the cache's partial entry and the run ends with the numbers of an uninterrupted one."""
    from edgedistill.engine.loop import TEST_KILL_AFTER_EPOCH

    args = ["data.name=basicmotions", "seeds=[0]", "train.epochs=2", "engine.threads=1", "report.profile=false",
            *(f"teachers.{i}.train.epochs=2" for i in range(3))]
    monkeypatch.setenv("EDGEDISTILL_CACHE", str(tmp_path / "cache-straight"))
    straight = cli_run("multi_teacher", *args, "--out", tmp_path / "straight", "--jobs", "1")
    assert straight.exit_code == 0, straight.output
    monkeypatch.setenv("EDGEDISTILL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv(TEST_KILL_AFTER_EPOCH, "1")
    out = tmp_path / "run"
    killed = cli_run("multi_teacher", *args, "--out", out, "--jobs", "2")
    assert killed.exit_code == 1, killed.output
    assert ("1 teacher(s) failed (teacher 'fcn_s1': the worker process running this teacher died (killed by "
            "SIGKILL)") in killed.output, killed.output
    assert "resume with:" in killed.output
    assert not (out / "summary.json").exists()
    assert "teacher 'fcn_s2' seed 2: started" not in killed.output  # (nothing more trains once a teacher failed)
    monkeypatch.delenv(TEST_KILL_AFTER_EPOCH)
    resumed = cli_run("multi_teacher", *args, "--out", out, "--jobs", "2")
    assert resumed.exit_code == 0, resumed.output
    assert "teacher 'fcn_s1' seed 1: started (2 epochs, resuming at epoch 1/2)" in resumed.output, resumed.output
    assert "teacher 'fcn_s0' seed 0: reused from cache" in resumed.output  # (finished in the run's slot before)
    rows = [json.loads((d / "summary.json").read_text())["rows"] for d in (tmp_path / "straight", out)]
    assert [(r["role"], r["metrics"]) for r in rows[0]] == [(r["role"], r["metrics"]) for r in rows[1]]


def test_jobs_refusals_name_the_option(tmp_path):
    from edgedistill.shipped_recipes import recipe_source

    quickstart = recipe_source("quickstart")
    with pytest.raises(UserInputError, match="--jobs: expected at least 1"):
        run(quickstart, smoke=True, out=tmp_path / "a", jobs=0)
    with pytest.raises(UserInputError, match="on_epoch"):
        run(quickstart, smoke=True, out=tmp_path / "b", jobs=2, on_epoch=lambda e, v: None)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_the_teachers_side_by_side_are_the_independent_ones_in_whole_rounds_of_the_slots():
    from types import SimpleNamespace as NS

    from edgedistill.experiment.parallel_seeds import side_by_side_teachers

    def plan(names, seeds=(0, 1), **extra):  # every seed needs the same teachers (one seed each: shared), plus extra
        specs = [NS(name=n, seed=0, given=False, distill_from=None) for n in names]
        specs += [NS(name=n, seed=0, given=kind == "given", distill_from="a" if kind == "assistant" else None)
                  for n, kind in extra.items()]
        return NS(recipe=NS(seeds=list(seeds)), teachers={s: specs for s in seeds})

    assert side_by_side_teachers(plan("abc"), 2) == [("a", 0), ("b", 0)]  # the third: then, with every thread
    assert side_by_side_teachers(plan("abc"), 4) == [("a", 0), ("b", 0), ("c", 0)]
    assert len(side_by_side_teachers(plan("abcde"), 2)) == 4
    assert side_by_side_teachers(plan("a", ta="assistant", saved="given"), 2) == []  # one independent teacher
    per_seed = NS(recipe=NS(seeds=[0, 1]), teachers={s: [NS(name="t", seed=s, given=False, distill_from=None)]
                                                     for s in (0, 1)})
    assert side_by_side_teachers(per_seed, 2) == [("t", 0), ("t", 1)]  # a teacher per seed: one job each
