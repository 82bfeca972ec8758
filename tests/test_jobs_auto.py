"""--jobs auto (edgedistill run's default): one worker per core and parallel stage as memory allows, one process where
workers cannot pay (a smoke run) or cannot run (an accelerator, a per-epoch callback), and the reason said."""
import pytest

from edgedistill.config import load_recipe
from edgedistill.experiment import parallel_seeds
from edgedistill.experiment.runner import plan
from edgedistill.shipped_recipes import recipe_source
from tests.helpers import cli_run


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
    machine(8, 3 * parallel_seeds.WORKER_BYTES)  # half of it holds one worker (plus the data)
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

    assert parallel_seeds.requested("auto") == (1, True) and parallel_seeds.requested(3) == (3, False)
    for bad in ("3", 2.0, True, None):
        with pytest.raises(UserInputError, match="--jobs: expected a whole number >= 1 or 'auto'"):
            parallel_seeds.requested(bad)
    out = cli_run("quickstart", "--smoke", "--jobs", "many", "--out", tmp_path / "x")
    assert out.exit_code == 2 and "--jobs: expected a whole number >= 1 or 'auto' (got 'many')" in out.output
    assert not (tmp_path / "x").exists()


def test_the_command_defaults_to_auto_and_a_cross_validation_says_what_it_chose(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEDISTILL_CACHE", str(tmp_path / "cache"))
    out = cli_run("loso", "--smoke", "--out", tmp_path / "cv")
    assert out.exit_code == 0, out.output
    assert "1 at a time (--jobs auto: a smoke run)" in out.output
