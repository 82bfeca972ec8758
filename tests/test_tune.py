"""edgedistill tune (issue 20): the search space's filtering, budget parsing and refusals, pruning, selection on
validation, resume, the winner's recipe, and the command's exit codes. Tiny synthetic data, seconds each."""
import json

import pytest
import yaml
from typer.testing import CliRunner

import edgedistill.cli_tune  # noqa: F401 - registers the command on the app
from edgedistill.cli import app
from edgedistill.errors import UserInputError
from edgedistill.experiment import tune_trial
from edgedistill.experiment.tune import parse_budget, tune
from edgedistill.experiment.tune_select import RECHECK, portfolio, winner
from edgedistill.experiment.tune_space import build_space

# Learnable in seconds, with room between regimes: the student alone and KD differ on validation.
RECIPE = {
    "name": "tiny",
    "data": {"name": "synthetic", "params": {"n_subjects": 5, "windows_per_subject": 30, "length": 48}, "split": {"by": "subject"}},
    "teacher": {"model": "fcn", "width": 0.25, "train": {"epochs": 4, "batch_size": 16}},
    "student": {"model": "cnn1d", "width": 8, "depth": 2},
    "method": {"name": "offline", "terms": [{"loss": "ce", "weight": 0.5}, {"loss": "kd", "weight": 0.5, "temperature": 2}]},
    "train": {"epochs": 3, "batch_size": 16, "lr": 0.01},
    "seeds": [0, 1],
    "engine": {"progress": False},
}


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory):
    return str(tmp_path_factory.mktemp("tune-cache"))  # teachers and baselines trained once for the whole file


def recipe(shared_cache, **changes):
    data = json.loads(json.dumps(RECIPE))
    for key, value in changes.items():
        data[key] = value
    data["cache_dir"] = shared_cache
    return data


def write(tmp_path, data):
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def quiet(line):
    pass


def test_budget_parsing():
    assert parse_budget("90s") == 90 and parse_budget("30m") == 1800 and parse_budget("2h") == 7200
    assert parse_budget("1h30m") == 5400 and parse_budget(45) == 45
    for bad in ("abc", "30", "0s", "-5m", "30 minutes", "1h30x"):
        with pytest.raises(UserInputError, match="--budget"):
            parse_budget(bad)


def test_budget_not_given_is_a_minute_for_a_smoke_tune_and_half_an_hour_otherwise(monkeypatch):
    """A smoke tune's trials take a second or two: the real default budget would run them by the thousand."""
    from edgedistill.experiment import tune as tune_module

    seen = []
    monkeypatch.setattr(tune_module, "_tune", lambda *a, **kw: seen.append(kw["budget"]))
    for smoke, budget in ((True, None), (False, None), (True, "5m")):
        tune_module.tune(RECIPE, smoke=smoke, budget=budget)
    assert seen == [60, 1800, 300]
    monkeypatch.setenv("COLUMNS", "400")  # (rich wraps the help at the terminal's width)
    command = CliRunner().invoke(app, ["tune", "--help"])
    assert "(default 30m; 1m with --smoke)" in command.output


def test_space_classification_filters(shared_cache):
    space = build_space(recipe(shared_cache))
    names = [c.name for c in space.candidates]
    assert {"kd", "dist", "dkd", "fitnet", "rkd"} <= set(names) and space.metric == "acc"
    assert "cross-view" in space.excluded["skkd"]  # no data.views: cross-view regimes are not searched
    assert "several teachers" in space.excluded["camkd"]
    assert "data-free" in space.excluded["dfad"] and "dfad" not in names
    with_df = build_space(recipe(shared_cache), include_data_free=True, methods=["kd", "dfad", "cudfkd"])
    assert {"dfad", "cudfkd"} <= {c.name for c in with_df.candidates}


def test_space_cross_view_with_views(shared_cache):
    data = recipe(shared_cache)
    data["data"]["views"] = {"x": [0, 1], "full": [0, 1, 2]}
    data["teacher"]["view"] = "full"
    space = build_space(data, methods=["kd", "skkd", "fitnet"])
    assert "skkd" in [c.name for c in space.candidates]


def test_space_regression_and_empty(shared_cache):
    data = recipe(shared_cache)
    data["data"]["params"]["task"] = "regression"
    data["method"] = {"name": "offline", "terms": [{"loss": "mse", "weight": 1.0}]}
    space = build_space(data)
    names = [c.name for c in space.candidates]
    assert "kd" not in names and "mse_to_teacher" in names and space.metric == "rmse" and space.direction == "minimize"
    assert "needs classification data" in space.excluded["kd"]
    with pytest.raises(UserInputError, match="no applicable method for regression data.*kd: needs classification"):
        build_space(data, methods=["kd", "dist"])
    with pytest.raises(UserInputError, match="--methods: unknown 'nope'"):
        build_space(data, methods=["nope"])


def test_budget_smaller_than_a_trial_is_refused_and_nothing_written(shared_cache, tmp_path):
    out = tmp_path / "t"
    with pytest.raises(UserInputError, match=r"--budget .*one trial \(3 epochs.*estimated"):
        tune(recipe(shared_cache), budget="0.01s", out=out, methods=["kd"], log=quiet)
    assert not out.exists()


def test_cli_exit_codes(shared_cache, tmp_path):
    path = write(tmp_path, recipe(shared_cache))
    runner = CliRunner()
    got = runner.invoke(app, ["tune", str(path), "--budget", "soon"])
    assert got.exit_code == 2 and "--budget" in got.output
    got = runner.invoke(app, ["tune", str(path), "--budget", "1m", "--methods", "camkd", "--out", str(tmp_path / "a")])
    assert got.exit_code == 2 and "camkd: needs several teachers" in got.output
    got = runner.invoke(app, ["tune", str(path), "--budget", "1m", "--storage", "postgresql://nobody@127.0.0.1:1/x",
                              "--out", str(tmp_path / "b"), "--methods", "kd"])
    assert got.exit_code == 2 and "--storage 'postgresql://nobody@127.0.0.1:1/x'" in got.output
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_pruned_trials_are_reported_as_pruned_and_the_recipe_setting_runs_whole(shared_cache, tmp_path, monkeypatch):
    import optuna

    # A pruner that stops every trial at its first report: the per-epoch hook must reach it from inside the run. The
    # recipe's own setting (trial 0) is exempt: the reference the others are judged against, with any --jobs.
    monkeypatch.setattr(tune_trial, "pruner", lambda epochs: optuna.pruners.ThresholdPruner(lower=1.5))
    result = tune(recipe(shared_cache), budget="10m", max_trials=3, out=tmp_path / "t", methods=["kd"], retrain=False, log=quiet)
    first, *rest = sorted(result["trials"], key=lambda r: r["trial"])
    assert first["state"] == "complete" and first["epochs"] == first["of"] == 3, first
    assert len(rest) == 2 and all(r["state"] == "pruned" and r["pruned_at"] == 1 and r["epochs"] == 1 for r in rest)
    assert result["winner"]["trial"] == first["trial"]
    report = (tmp_path / "t" / "report.md").read_text()
    assert "| pruned | kd |" in report and "epoch 1" in report


def test_recipe_setting_is_recognised_as_a_point_of_the_space():
    from edgedistill.experiment.tune_space import CANDIDATES, recipe_point

    kd = {"name": "offline", "terms": [{"loss": "ce", "weight": 0.1}, {"loss": "kd", "weight": 0.9, "temperature": 4}]}
    assert recipe_point(list(CANDIDATES), kd, "classification") == {"method": "kd", "kd.temperature": 4, "kd.alpha": 0.9}
    mixed = {"name": "offline", "terms": [{"loss": "ce", "weight": 1.0}, {"loss": "kd", "weight": 1.0, "temperature": 4}]}
    assert recipe_point(list(CANDIDATES), mixed, "classification") is None  # 1.0 + 1.0 is not a point of "1 - alpha, alpha"
    hot = {"name": "offline", "terms": [{"loss": "ce", "weight": 0.5}, {"loss": "kd", "weight": 0.5, "temperature": 20}]}
    assert recipe_point(list(CANDIDATES), hot, "classification") is None  # T = 20 is outside the searched range


def test_winner_is_chosen_on_validation_not_test():
    import optuna

    study = optuna.create_study(direction="maximize")
    for val, test in ((0.6, 0.9), (0.8, 0.5), (0.7, 0.7)):  # test disagrees with validation
        study.add_trial(optuna.trial.create_trial(value=val, params={}, distributions={}, user_attrs={"test": test}))
    assert winner(study, "maximize").value == 0.8
    assert winner(study, "minimize").value == 0.6


def _trial(value, number_tiebreak):
    import optuna

    return optuna.trial.create_trial(value=value, params={}, distributions={}, user_attrs={"tiebreak": number_tiebreak})


def test_ties_are_broken_by_the_validation_loss_and_finalists_by_their_two_seed_mean():
    import optuna

    study = optuna.create_study(direction="maximize")
    for value, tie in ((0.9, -0.50), (0.9, -0.20), (0.8, -0.10), (0.7, -0.05)):  # two trials tie on accuracy
        study.add_trial(_trial(value, tie))
    assert winner(study, "maximize").number == 1  # the lower validation NLL of the two at 0.9
    # Re-checked on a second seed: trial 0 holds up, trial 1 does not; the best mean over both seeds wins. The fourth
    # trial is not a finalist, so its (better) second-seed score is never consulted.
    study.set_user_attr(RECHECK, {"1": {"seed": 1, "value": 0.70, "tiebreak": -0.2},
                                  "0": {"seed": 1, "value": 0.88, "tiebreak": -0.4},
                                  "3": {"seed": 1, "value": 0.99, "tiebreak": -0.1}})
    assert winner(study, "maximize").number == 0
    study.set_user_attr(RECHECK, {"1": {"seed": 1, "value": 0.70, "tiebreak": -0.2}})
    assert winner(study, "maximize").number == 1  # one finalist re-checked is compared with nothing: the single-seed rule


def test_recheck_on_a_shared_study_keeps_other_processes_rechecks_and_runs_in_this_tunes_folder(tmp_path, monkeypatch):
    """Two tunes on one --storage: a finalist may have run in the other machine's --out, and the other process writes
    its re-checks to the same study attribute meanwhile. Neither may be lost, and nothing is written outside --out."""
    import types

    import optuna

    from edgedistill.experiment import runner, tune as tune_mod, tune_select

    study = optuna.create_study(direction="maximize")
    for value in (0.9, 0.8, 0.7):
        study.add_trial(optuna.trial.create_trial(value=value, params={}, distributions={}, user_attrs={
            "seconds": 0.0, "choice": {}, "run_dir": str(tmp_path / "other-machine" / "trials" / "0000")}))
    outs = []

    def fake_run(base, overrides, *, out, **_):
        outs.append(out)
        if len(outs) == 1:  # the other process finishes its re-check of trial 2 while this one runs trial 0
            study.set_user_attr(RECHECK, {**tune_select.rechecked(study), "2": {"seed": 1, "value": 0.5, "tiebreak": 0}})
        return {"rows": []}

    monkeypatch.setattr(runner, "run", fake_run)
    monkeypatch.setattr(tune_mod, "_extract", lambda summary, metric: {"val": {"mean": 0.6}})
    monkeypatch.setattr(tune_select, "tiebreak", lambda summary, metric: 0.0)
    tuner = types.SimpleNamespace(dir=tmp_path / "mine", progress=False, space=types.SimpleNamespace(metric="acc"),
                                  resume_command=lambda: "edgedistill tune ...")
    tune_select.recheck(study, "maximize", 1, float("inf"), tune_mod._rechecker(tuner, {}, True), lambda line: None)
    assert sorted(tune_select.rechecked(study)) == [0, 1, 2]  # 2: the other process's, kept; not run again here
    assert outs == [tmp_path / "mine" / "trials" / "0000" / "seed1", tmp_path / "mine" / "trials" / "0001" / "seed1"]


def test_between_equal_scores_a_documented_point_wins_over_a_proposed_one_before_the_loss_decides():
    import optuna

    def trial(value, tie, **attrs):
        return optuna.trial.create_trial(value=value, params={}, distributions={}, user_attrs={"tiebreak": tie, **attrs})

    study = optuna.create_study(direction="maximize")
    study.add_trial(trial(1.0, -0.03))  # TPE's proposal: the lowest NLL
    study.add_trial(trial(1.0, -0.05, documented_defaults=True))
    study.add_trial(trial(1.0, -0.04, documented_defaults=True))
    study.add_trial(trial(0.9, -0.01, recipe_setting=True))  # documented but lower accuracy: accuracy comes first
    assert winner(study, "maximize").number == 2  # the documented pair's lower NLL; the proposal's NLL is not consulted
    # Two seeds' means equal as fractions ((64 + 68) / 2 and (65 + 67) / 2 windows of 68) but not bit for bit in floats.
    study = optuna.create_study(direction="maximize")
    study.add_trial(trial(65 / 68, -0.2))
    study.add_trial(trial(64 / 68, -0.3, documented_defaults=True))
    study.set_user_attr(RECHECK, {"0": {"seed": 1, "value": 67 / 68, "tiebreak": -0.2},
                                  "1": {"seed": 1, "value": 68 / 68, "tiebreak": -0.3}})
    assert (65 / 68 + 67 / 68) / 2 > (64 / 68 + 68 / 68) / 2  # (the floats differ in the last bit)
    assert winner(study, "maximize").number == 1


def test_the_report_names_the_trials_validation_could_not_separate_from_the_winner(tmp_path):
    import optuna

    from edgedistill.experiment import tune_report
    from edgedistill.experiment.tune_select import tied

    def trial(value, tie, candidate, **attrs):
        return optuna.trial.create_trial(value=value, params={}, distributions={}, user_attrs={
            "tiebreak": tie, "candidate": candidate, "values": {}, **attrs})

    study = optuna.create_study(direction="maximize")
    study.add_trial(trial(1.0, -0.03, "pkt"))
    study.add_trial(trial(1.0, -0.05, "fitnet", documented_defaults=True))
    study.add_trial(trial(0.9, -0.01, "kd", recipe_setting=True))
    study.add_trial(trial(1.0, -0.20, "dist", documented_defaults=True))
    assert winner(study, "maximize").number == 1 and tied(study, "maximize", winner(study, "maximize")) == [0, 3]
    # Re-checked on a second seed, only the finalists' two-seed means count: trial 3 is no longer a tie.
    study.set_user_attr(RECHECK, {"0": {"seed": 1, "value": 1.0, "tiebreak": -0.03},
                                  "1": {"seed": 1, "value": 1.0, "tiebreak": -0.05},
                                  "3": {"seed": 1, "value": 0.9, "tiebreak": -0.2}})
    assert tied(study, "maximize", winner(study, "maximize")) == [0]
    info = {"name": "t", "command": "edgedistill tune", "seed": 0, "epochs": 5, "metric": "acc", "direction": "maximize"}
    result = tune_report.write(tmp_path, info, study, None)
    assert result["winner"]["trial"] == 1 and result["winner"]["tied_with"] == [0]
    assert "Validation did not separate it from trial(s) 0 (the same validation acc)" in (tmp_path / "report.md").read_text()
    for value in [1.0] * 12:  # many ties: ten named, the rest counted
        study.add_trial(trial(value, -0.9, "kd"))
    study.set_user_attr(RECHECK, {})
    tune_report.write(tmp_path, info, study, None)
    assert "from trial(s) 0, 3, 4, 5, 6, 7, 8, 9, 10, 11 and 4 more (the same" in (tmp_path / "report.md").read_text()
    lone = optuna.create_study(direction="maximize")
    lone.add_trial(trial(0.8, -0.1, "kd"))
    lone.add_trial(trial(0.7, -0.1, "dist"))
    assert tune_report.write(tmp_path, info, lone, None)["winner"]["tied_with"] == []
    assert "did not separate" not in (tmp_path / "report.md").read_text()


def test_every_regime_is_tried_at_its_documented_defaults_after_the_recipe_setting(shared_cache):
    space = build_space(recipe(shared_cache), methods=["kd", "dist", "dkd", "fitnet"])
    points = portfolio(space, {"method": "kd", "kd.temperature": 2, "kd.alpha": 0.5})
    assert [p["method"] for p in points] == ["dist", "dkd", "fitnet"]  # kd is the recipe's own point, already trial 0
    assert points[0] == {"method": "dist", "dist.weight": 2.0, "dist.temperature": 4.0}  # recipes/dist.yaml, docs/losses/dist.md
    assert points[1] == {"method": "dkd", "dkd.alpha": 1.0, "dkd.beta": 8.0, "dkd.temperature": 4.0}  # mdistiller's CIFAR defaults
    assert points[2] == {"method": "fitnet", "fitnet.weight": 100.0}  # RepDistiller's beta


def test_search_selects_on_validation_retrains_and_recipe_reproduces(shared_cache, tmp_path):
    from edgedistill.experiment.runner import run

    out = tmp_path / "t"
    result = tune(write(tmp_path, recipe(shared_cache)), budget="10m", max_trials=3, out=out, methods=["kd", "dist"], log=quiet)
    done = [r for r in result["trials"] if r["state"] == "complete"]
    assert len(done) >= 2
    first = result["trials"][0]  # the recipe's own setting is evaluated first, on the same validation split
    assert first["method"] == "kd" and first["params"] == {"temperature": 2, "alpha": 0.5}
    assert first["error"] == "the recipe's own setting"
    second = result["trials"][1]  # then the other regime at its documented defaults
    assert second["method"] == "dist" and second["params"] == {"weight": 2.0, "temperature": 4.0}
    assert second["error"] == "documented defaults"
    best = result["winner"]
    # The recipe has two seeds: the finished trials (up to 3) were re-run on seed 1, and the best two-seed mean won.
    again = [r for r in done if r["recheck"]]
    assert len(again) == len(done) and all(r["recheck"]["seed"] == 1 for r in again)
    assert (out / "trials" / f"{again[0]['trial']:04d}" / "seed1" / "summary.json").is_file()
    assert (best["val"] + best["recheck"]["value"]) / 2 == max((r["val"] + r["recheck"]["value"]) / 2 for r in again)
    assert "re-check (seed)" in (out / "report.md").read_text()
    # A trial's score is its run's validation metric (one seed), never its test metric.
    summary = json.loads((tmp_path / "t" / "trials" / f"{best['trial']:04d}" / "summary.json").read_text())
    row = next(r for r in summary["rows"] if r["role"] == "method")
    assert best["val"] == row["val_metrics"]["acc"]["mean"] and summary["seeds"] == [0]
    final = result["final"]
    assert final["seeds"] == [0, 1] and final["n"] == 2 and final["alone"] is not None  # the paired verdict, every seed
    again = run(out / "best_recipe.yaml", out=tmp_path / "again", progress=False)
    row = next(r for r in again["rows"] if r["role"] == "method")
    assert row["metrics"]["acc"]["mean"] == pytest.approx(final["method"]["mean"])
    report = (out / "report.md").read_text()
    assert "Hyperparameter importance" in report and "paired difference" in report
    if len({r["method"] for r in done}) > 1:  # knobs differ between regimes: only the regime choice is common
        assert "only `method` is common" in result["importances"]["all trials"]
    else:  # one regime finished: its knobs and the regime choice are common (or Optuna says why it cannot rank them)
        got = result["importances"]["all trials"]
        want = {"method", *(f"{done[0]['method']}.{k}" for k in done[0]["params"])}
        assert set(got) == want if isinstance(got, dict) else got.startswith("not computed: "), got


def test_importances_within_a_regime_and_the_guard():
    import optuna
    from optuna.distributions import CategoricalDistribution, FloatDistribution

    from edgedistill.experiment.tune_report import importances

    study = optuna.create_study(direction="maximize")
    dists = {"method": CategoricalDistribution(["kd"]), "kd.a": FloatDistribution(0, 1), "kd.b": FloatDistribution(0, 1)}
    for i in range(8):
        a, b = i / 8, ((i * 5) % 8) / 8
        study.add_trial(optuna.trial.create_trial(value=a, params={"method": "kd", "kd.a": a, "kd.b": b}, distributions=dists,
                                                  user_attrs={"candidate": "kd"}))
    got = importances(study)
    assert got["kd"]["kd.a"] > got["kd"]["kd.b"]  # the score follows kd.a only
    one = optuna.create_study()
    one.add_trial(optuna.trial.create_trial(value=1.0, params={"method": "kd"}, distributions={"method": dists["method"]},
                                            user_attrs={"candidate": "kd"}))
    assert importances(one)["all trials"] == "not computed: 1 finished trial(s), at least 2 needed"


def test_resume_continues_the_study(shared_cache, tmp_path):
    out = tmp_path / "t"
    first = tune(recipe(shared_cache), budget="10m", max_trials=1, out=out, methods=["kd"], retrain=False, log=quiet)
    second = tune(recipe(shared_cache), budget="10m", max_trials=1, out=out, methods=["kd"], retrain=False, log=quiet)
    n1, n2 = len(first["trials"]), len(second["trials"])
    assert n1 == 1 and n2 == 2
    assert [r["trial"] for r in second["trials"][:n1]] == [r["trial"] for r in first["trials"]]
    with pytest.raises(UserInputError, match="holds a different tune"):
        tune(recipe(shared_cache), budget="10m", out=out, methods=["kd", "dist"], retrain=False, log=quiet)


def test_cli_smoke_runs_and_writes_the_report(tmp_path):
    out = tmp_path / "t"
    got = CliRunner().invoke(app, ["tune", "kd", "--smoke", "--budget", "5m", "--trials", "2", "--no-retrain", "--methods",
                                   "kd,dist", "--out", str(out), "--no-progress"])
    assert got.exit_code == 0, got.output
    assert "Winner on validation: trial" in got.output and (out / "report.md").is_file() and (out / "best_recipe.yaml").is_file()
    assert yaml.safe_load((out / "best_recipe.yaml").read_text())["method"]["name"] == "offline"
