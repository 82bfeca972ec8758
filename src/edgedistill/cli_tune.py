"""``edgedistill tune RECIPE --budget 30m``: the command (experiment/tune.py does the work; docs/tune.md).
Registered on the main app when ``edgedistill.cli`` imports this module."""
from __future__ import annotations

import shlex
from pathlib import Path
from typing import List, Optional

import typer

from edgedistill.cli import _environment, _fail, _table, app, find_recipe, jobs_option
from edgedistill.errors import EdgeDistillError


@app.command("tune")
def tune(
    recipe: str = typer.Argument(..., help="Recipe YAML (or a shipped recipe's name, e.g. kd): its data, teacher(s), student and schedule; the tuner chooses the method section."),
    overrides: Optional[List[str]] = typer.Argument(None, help="key.sub=value overrides of the recipe, e.g. train.epochs=40"),
    budget: Optional[str] = typer.Option(None, "--budget", help="Wall-clock time for the search: 90s, 30m, 2h, 1h30m (default 30m; 1m with --smoke). No trial starts with less than its measured cost left; the winner's retraining over the seeds comes after it.", show_default=False),
    out: Optional[Path] = typer.Option(None, "--out", help="Tune directory (default tunes/<name>-<time>; a temporary one with --smoke); give the same one again to resume the study."),
    storage: Optional[str] = typer.Option(None, "--storage", help="Optuna storage URL (default sqlite:///<out>/study.db); one shared URL lets several machines work on one study."),
    jobs: str = typer.Option("auto", "--jobs", "-j", help="Trials at a time, each in a worker process with cores // jobs threads; the winner's retraining runs its stages with the same --jobs. auto: one per core as memory allows; 1 for a smoke tune or a GPU (docs/tune.md)."),
    max_params: Optional[int] = typer.Option(None, "--max-params", help="Also search the student's width and depth, keeping shapes with at most this many parameters."),
    max_latency_us: Optional[float] = typer.Option(None, "--max-latency-us", help="Also search the student's width and depth, keeping shapes whose batch-1 latency on one thread (measured here) is at most this."),
    methods: Optional[str] = typer.Option(None, "--methods", help="Search only these regimes, comma-separated (e.g. kd,dist,fitnet); default every applicable one."),
    include_data_free: bool = typer.Option(False, "--include-data-free", help="Also search the data-free regimes (dfad, cudfkd)."),
    trials: Optional[int] = typer.Option(None, "--trials", min=1, help="Also stop after this many trials (the budget still bounds them)."),
    smoke: bool = typer.Option(False, "--smoke", help="On tiny synthetic data, one epoch per trial: seconds."),
    retrain: bool = typer.Option(True, "--retrain/--no-retrain", help="Retrain the winner over the recipe's seeds and report it on test (the paired verdict)."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Progress bars inside each trial (with --jobs 1; in parallel, each trial's stage lines)."),
) -> None:
    """Choose the distillation for a recipe: a budgeted search over regimes, temperatures and weights, chosen on validation."""
    try:
        from edgedistill.deploy.profile import report_profile, torch_latency
        from edgedistill.experiment.rundir import command_line
        from edgedistill.experiment.tune import tune as run_tune

        chosen = [m.strip() for m in methods.split(",") if m.strip()] if methods is not None else None
        summary = run_tune(find_recipe(recipe), list(overrides or []), budget=budget, out=out, storage=storage, jobs=jobs_option(jobs),
                           max_params=max_params, max_latency_us=max_latency_us, methods=chosen,
                           include_data_free=include_data_free, max_trials=trials, smoke=smoke, retrain=retrain, progress=progress,
                           command=command_line(), deploy_profile=report_profile, latency=torch_latency)
    except EdgeDistillError as exc:
        _fail(exc)
    except OSError as exc:
        _environment(exc)
    except KeyboardInterrupt:
        raise typer.Exit(130) from None  # the tuner has printed how to resume
    metric, best, final = summary["metric"], summary["winner"], summary["final"]
    rows = [[str(r["trial"]), r["state"], r["method"], ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                                                                 for k, v in r["params"].items()),
             f"{r['epochs']}/{r['of']}", "" if r["val"] is None else f"{r['val']:.4f}"] for r in summary["trials"]]
    _table(f"{summary['name']}: trials (validation {metric})", ["trial", "state", "method", "hyperparameters", "epochs", f"val {metric}"], rows)
    files = summary["files"]
    if best is None:
        typer.echo(f"error: no trial finished within the budget; resume with --out {shlex.quote(summary['tune_dir'])} and a larger "
                   f"--budget (trials: {files['markdown']})", err=True)
        raise typer.Exit(1)
    tie = best.get("tied_with") or []
    typer.echo(f"Winner on validation: trial {best['trial']} ({best['method']}), val {metric} {best['val']:.4f}"
               + (f"; tied on validation with {len(tie)} other trial(s), so the tie-breaks chose it (report: why)" if tie else ""))
    if final is not None:
        def cell(stat: Optional[dict]) -> str:
            return "" if not stat else f"{stat['mean']:.3f}" if stat["n"] == 1 else f"{stat['mean']:.3f} ± {stat['std']:.3f}"

        verdict = "" if final["alone"] is None else (f"; student alone {cell(final['alone'])}, paired {final['diff']:+.3f}, "
                                                     f"better on {final['wins']}/{final['n']} seeds")
        typer.echo(f"Retrained over seeds {final['seeds']}: test {metric} {cell(final['method'])}{verdict}")
    typer.echo(f"Report: {files['markdown']}; recipe: {files.get('recipe')}")
