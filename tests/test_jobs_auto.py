"""--jobs auto (the default of edgedistill run, sweep and tune): one slot per core and parallel unit (a run's stages or
folds, a sweep's grid points, a tune's trials) as memory allows, one process where workers cannot pay (a smoke run,
short stages) or cannot run (an accelerator, a per-epoch callback), and the reason said."""
import pytest
import yaml

from edgedistill.config import load_recipe
from edgedistill.experiment import job_slots, parallel_seeds, sweep, tune
from edgedistill.experiment.job_slots import Footprint
from edgedistill.experiment.runner import plan
from edgedistill.shipped_recipes import recipe_source
from tests.helpers import TINY_RECIPE, cli_run


@pytest.fixture(scope="module")
def quickstart():
    recipe = load_recipe(recipe_source("quickstart"), [])  # 3 seeds x (alone, distilled); 150 rows x 100 epochs
    return recipe, plan(recipe)


@pytest.fixture
def machine(monkeypatch):
    """A machine of the test's choosing: ``machine(cores, free_bytes)``."""
    import edgedistill.machine as m

    def set_to(cores, free):
        monkeypatch.setattr(m, "available_cores", lambda: cores)
        monkeypatch.setattr(m, "available_memory", lambda: free)
    return set_to


def test_one_worker_per_core_and_stage(quickstart, machine):
    recipe, p = quickstart
    machine(16, None)
    assert parallel_seeds.auto_jobs(recipe, p, False) == (6, "16 cores, 6 stages")  # 6 stages: no more workers
    machine(4, 64 * 2**30)
    assert parallel_seeds.auto_jobs(recipe, p, False) == (4, "4 cores, 6 stages")
    no_alone = recipe.model_copy(update={"baseline": False})
    machine(16, None)
    assert parallel_seeds.auto_jobs(no_alone, p, False)[0] == 3


def test_memory_caps_the_workers_and_says_so(quickstart, machine):
    recipe, p = quickstart
    machine(8, 3 * job_slots.WORKER_BYTES)  # half of it holds one worker (plus the data)
    jobs, why = parallel_seeds.auto_jobs(recipe, p, False)
    assert jobs == 1 and "memory for 1" in why and "GB each" in why


@pytest.mark.parametrize("case, reason", [("smoke", "a smoke run"), ("teachers", "teachers only"),
                                          ("callback", "a per-epoch callback"), ("one core", "1 core"),
                                          ("cuda", "the run is on cuda"), ("one seed", "one stage"),
                                          ("short", "short stages (3000 training rows x epochs)")])
def test_one_process_where_workers_cannot_pay_or_run(quickstart, machine, monkeypatch, case, reason):
    from edgedistill.engine import devices

    recipe, p = quickstart
    machine(1 if case == "one core" else 8, None)
    if case == "cuda":
        monkeypatch.setattr(devices, "accelerator", lambda cfg: "cuda")
    if case == "one seed":
        recipe = recipe.model_copy(update={"seeds": [0], "baseline": False})
    if case == "short":
        recipe = recipe.model_copy(update={"train": recipe.train.model_copy(update={"epochs": 20})})
    jobs, why = parallel_seeds.auto_jobs(recipe, p, case == "smoke", teachers_only=case == "teachers",
                                         on_epoch=(lambda e, v: None) if case == "callback" else None)
    assert (jobs, why) == (1, reason)


def test_requested_refuses_what_is_not_a_count(tmp_path):
    from edgedistill.errors import UserInputError

    assert job_slots.requested("auto") == (1, True) and job_slots.requested(3) == (3, False)
    for bad in ("3", 2.0, True, None):
        with pytest.raises(UserInputError, match="--jobs: expected a whole number >= 1 or 'auto'"):
            job_slots.requested(bad)
    with pytest.raises(UserInputError, match=r"--jobs: expected at least 1 \(got 0\)"):
        job_slots.requested(0)
    out = cli_run("quickstart", "--smoke", "--jobs", "many", "--out", tmp_path / "x")
    assert out.exit_code == 2 and "--jobs: expected a whole number >= 1 or 'auto' (got 'many')" in out.output
    assert not (tmp_path / "x").exists()


def test_the_command_defaults_to_auto_and_a_cross_validation_says_what_it_chose(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEDISTILL_CACHE", str(tmp_path / "cache"))
    out = cli_run("loso", "--smoke", "--out", tmp_path / "cv")
    assert out.exit_code == 0, out.output
    assert "1 at a time (--jobs auto: a smoke run)" in out.output


GB = 2**30


def test_a_sweep_runs_one_grid_point_per_slot_and_keeps_short_or_smoke_grids_in_one_process(machine):
    big, small = Footprint("", 20000, GB), Footprint("", 20000, 2 * GB)
    machine(4, 64 * GB)
    assert sweep.auto_jobs([big, small], 8, 3) == (4, "4 cores, 8 grid points left")
    assert sweep.auto_jobs([big, small], 3, 3) == (3, "4 cores, 3 grid points left")  # (the points not finished yet)
    assert sweep.auto_jobs([big, small], 1, 3) == (1, "one grid point left")
    assert sweep.auto_jobs([big], 0, 3) == (1, "no grid points left")
    machine(4, 8 * GB)  # half of it holds two of the largest point's slots
    assert sweep.auto_jobs([big, small], 8, 3) == (2, "4 cores, 8 grid points left, memory for 2 (about 2.0 GB each)")
    assert sweep.auto_jobs([big, Footprint("a smoke run", 60, GB)], 8, 3) == (1, "a smoke run")
    tiny = Footprint("", 500, GB)  # 2 points x 3 seeds x 500: 3000 rows x epochs in the whole grid
    assert sweep.auto_jobs([tiny, tiny], 2, 3) == (1, "a short grid (3000 training rows x epochs)")


def test_a_tune_runs_one_trial_per_core_up_to_trials(machine):
    fp = Footprint("", 100, GB)  # (a tune's trials are never too short: the budget is spent on many of them)
    machine(4, 64 * GB)
    assert tune.auto_jobs(fp, False, None) == (4, "4 cores")
    assert tune.auto_jobs(fp, False, 2) == (2, "4 cores, 2 trials")
    assert tune.auto_jobs(fp, True, None) == (1, "a smoke run")
    assert tune.auto_jobs(Footprint("the run is on cuda", 100, GB), False, None) == (1, "the run is on cuda")


def test_sweep_and_tune_commands_default_to_auto_and_say_what_it_chose(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from edgedistill.cli import app

    monkeypatch.setenv("EDGEDISTILL_CACHE", str(tmp_path / "cache"))
    got = CliRunner().invoke(app, ["sweep", "sweep_example", "--smoke", "--no-progress", "--out", str(tmp_path / "sw"),
                                   "sweep.grid={method.terms.1.temperature: [4]}"])
    assert got.exit_code == 0, got.output
    assert "1 job(s) (--jobs auto: a smoke run)" in got.output
    got = CliRunner().invoke(app, ["tune", "kd", "--smoke", "--budget", "5m", "--trials", "1", "--no-retrain",
                                   "--methods", "kd", "--no-progress", "--out", str(tmp_path / "tu")])
    assert got.exit_code == 0, got.output
    assert "1 job(s) (--jobs auto: a smoke run)" in got.output
    for command in (["sweep", "sweep_example"], ["tune", "kd"]):
        got = CliRunner().invoke(app, [*command, "--smoke", "--jobs", "0", "--out", str(tmp_path / "never")])
        assert got.exit_code == 2 and "--jobs: expected at least 1 (got 0)" in got.output, got.output
    assert not (tmp_path / "never").exists()


def test_a_sweep_that_runs_one_trial_at_a_time_lets_the_trial_run_its_seeds_stages_side_by_side(tmp_path, monkeypatch):
    """--jobs auto chose one trial at a time (one grid point): the trial's run chooses its own slots, as edgedistill
    run's default does; with --jobs 1 given, the trial keeps to one process."""
    from edgedistill.experiment import sweep_store

    seen = []
    monkeypatch.setattr(sweep_store, "run_trial", lambda job: seen.append(job["jobs"]) or {"error": "stop", "seconds": 0})
    monkeypatch.setattr(sweep, "run_trial", sweep_store.run_trial)
    recipe = tmp_path / "one.yaml"
    recipe.write_text(yaml.safe_dump({**TINY_RECIPE, "sweep": {"grid": {"method.terms.1.temperature": [4]}}}))
    for jobs, expected in (("auto", "auto"), (1, 1)):
        sweep.sweep(recipe, out=tmp_path / f"sw{jobs}", jobs=jobs, log=lambda line: None)
    assert seen == ["auto", 1]
