"""The command line: typer commands with no logic of their own. Heavy modules are imported lazily so
``edgedistill --help`` answers at once."""
from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import List, Optional

import typer

from edgedistill.cli_usage import OneLineUsage
from edgedistill.errors import EdgeDistillError, UserInputError, one_line

app = typer.Typer(add_completion=False, no_args_is_help=True, cls=OneLineUsage,
                  help="Knowledge distillation for wearable time series and small images.")


def find_recipe(name: Optional[str]) -> Path:
    """A recipe path, or the name of a shipped recipe (``kd``; none: the quickstart): ``shipped_recipes.recipe_source``.
    Raises ``UserInputError`` for an unknown name, so every caller calls it inside its ``try``."""
    from edgedistill.shipped_recipes import recipe_source

    return recipe_source(name)


def _fail(exc: EdgeDistillError) -> None:
    from edgedistill.experiment.rundir import redact

    from edgedistill.engine.distributed import is_rank_zero

    if is_rank_zero():  # (ranks 1..N-1 of a multi-device run fail alike: rank 0 says it once)
        typer.echo(f"error: {redact(one_line(exc))}", err=True)  # (a --storage URL's password never reaches the screen)
    raise typer.Exit(exc.exit_code)


def _environment(exc: OSError) -> None:
    """An OSError that escaped a command: the machine refusing (read-only, full disk, no permission) is one line and
    exit 4, a path that cannot be one (a file in the way, a name too long) one line and exit 2; anything else is a bug
    and keeps its traceback."""
    from edgedistill.experiment.rundir import as_environment_problem

    problem = as_environment_problem(exc, Path("."))
    if problem is None:
        raise exc
    _fail(problem)


def jobs_option(text: str) -> int | str:
    """--jobs as typed: 'auto' or a whole number (the runner refuses numbers below 1)."""
    if text.strip().lower() == "auto":
        return "auto"
    try:
        return int(text)
    except ValueError:
        raise UserInputError(f"--jobs: expected a whole number >= 1 or 'auto' (got '{text}')") from None


@app.command()
def run(
    recipe: Optional[str] = typer.Argument(None, help="Recipe YAML, or a shipped recipe's name (kd; edgedistill list recipes); default: quickstart."),
    overrides: Optional[List[str]] = typer.Argument(None, help="key.sub=value overrides, e.g. train.epochs=20"),
    smoke: bool = typer.Option(False, "--smoke", help="Tiny synthetic data of the same kind, one short epoch."),
    out: Optional[Path] = typer.Option(None, "--out", help="Run directory (default runs/<name>-<time>); an existing one with the same config is resumed."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show progress bars."),
    jobs: str = typer.Option("auto", "--jobs", "-j", help="Stages at a time (this process and jobs - 1 worker processes), each with cores // jobs threads unless the recipe sets engine.threads: the seeds' student-alone and distilled stages (the teachers first, in this process); with eval.scheme loso/group_kfold/stratified_kfold, whole folds in worker processes. auto: one per core and stage as memory allows; 1 for a smoke run, short stages or a GPU (docs/scale.md)."),
) -> None:
    """Train (or reuse) the teacher, the student alone and the distilled student; print the table."""
    items = list(overrides or [])
    if recipe is not None and "=" in recipe:
        items.insert(0, recipe)
        recipe = None
    try:
        path = find_recipe(recipe)
        from edgedistill.deploy.profile import report_profile
        from edgedistill.experiment.rundir import command_line
        from edgedistill.experiment.runner import run as run_recipe

        summary = run_recipe(path, items, out=out, smoke=smoke, progress=progress, command=command_line(),
                             deploy_profile=report_profile, jobs=jobs_option(jobs))
    except EdgeDistillError as exc:
        _fail(exc)
    except OSError as exc:
        _environment(exc)
    except KeyboardInterrupt:
        raise typer.Exit(130) from None  # the runner has printed how to resume
    from edgedistill.engine.distributed import is_rank_zero

    if is_rank_zero():  # ranks 1..N-1 of a multi-device run: rank 0 prints
        _print_summary(summary)


def _print_summary(summary: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    from edgedistill.experiment.report import table_rows

    header, rows = table_rows(summary, compact=True)
    what = "best-on-validation" if summary["select"] == "best" else "last-epoch"
    over = f"folds x seeds {summary['seeds']} ({summary['eval']['scheme']})" if summary.get("folds") else f"seeds {summary['seeds']}"
    table = Table(title=f"{summary['name']}: test metrics ({what} checkpoint), mean ± std over {over}")
    for h in header:
        text = h in ("model", "role")
        table.add_column(h, justify="left" if text else "right", no_wrap=not text)  # never split "0.720 ± 0.063"
    for r in rows:
        table.add_row(*r)
    console = Console(width=max(120, Console().width))  # the table needs ~120 columns even when piped
    console.print(table)
    if summary.get("verdict"):
        console.print(summary["verdict"].replace("**", ""))
    for warning in summary.get("warnings") or []:
        console.print(f"Warning: {warning}", markup=False)
    console.print(f"Report: {Path(summary['run_dir']) / 'report.md'}")


@app.command()
def sweep(
    recipe: str = typer.Argument(..., help="Recipe YAML (or a shipped recipe's name, e.g. sweep_example) with a top-level 'sweep:' section (grid, seeds, metric, name): docs/sweep.md."),
    overrides: Optional[List[str]] = typer.Argument(None, help="key.sub=value overrides of the recipe, e.g. train.epochs=20 or sweep.seeds=[0,1]"),
    smoke: bool = typer.Option(False, "--smoke", help="The whole grid on tiny synthetic data, one epoch, one seed: seconds."),
    out: Optional[Path] = typer.Option(None, "--out", help="Sweep directory (default sweeps/<name>-<time>; a temporary one with --smoke); give the same one again to resume."),
    jobs: str = typer.Option("auto", "--jobs", "-j", help="Grid points at a time, each a run in a worker process with cores // jobs threads unless the recipe sets engine.threads. auto: one per core and grid point as memory allows; 1 for a smoke sweep, a short grid or a GPU (docs/sweep.md)."),
    storage: Optional[str] = typer.Option(None, "--storage", help="Optuna storage URL (default sqlite:///<out>/study.db); one shared URL lets several machines work on one study."),
    study: Optional[str] = typer.Option(None, "--study", help="Optuna study name (default: the sweep's name)."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Progress bars inside each trial (with --jobs 1; in parallel, each trial's stage lines)."),
) -> None:
    """Run a grid of recipe variants (each over every seed); write results.csv, results.md and heatmap.png."""
    try:
        from edgedistill.deploy.profile import report_profile
        from edgedistill.experiment.rundir import command_line
        from edgedistill.experiment.sweep import sweep as run_sweep

        summary = run_sweep(find_recipe(recipe), list(overrides or []), out=out, smoke=smoke, jobs=jobs_option(jobs), storage=storage,
                            study=study, progress=progress, command=command_line(), deploy_profile=report_profile)
    except EdgeDistillError as exc:
        _fail(exc)
    except OSError as exc:
        _environment(exc)
    except KeyboardInterrupt:
        raise typer.Exit(130) from None  # the sweep has printed how to resume
    from edgedistill.experiment.sweep_report import label

    def cell(stat: Optional[dict]) -> str:
        return "" if not stat else f"{stat['mean']:.3f}" if stat["n"] == 1 else f"{stat['mean']:.3f} ± {stat['std']:.3f}"

    metric = summary["metric"]
    rows = [[*(label(r["point"][k]) for k in summary["axes"]),
             cell(r["method"]) if r["method"] else r["state"], cell(r["alone"]),
             "" if r["diff"] is None else f"{r['diff']:+.3f}", "" if r["wins"] is None else f"{r['wins']}/{r['n']}",
             "" if r["teacher"] is None else f"{r['teacher']:.3f}"] for r in summary["rows"]]
    _table(f"{summary['name']}: test {metric}, mean ± std over seeds {summary['seeds']}",
           [*(k.split(".")[-1] if len(summary["axes"]) > 1 else k for k in summary["axes"]), f"method {metric}", "student alone",
            "paired diff", "wins", "teacher"], rows)
    files = summary["files"]
    typer.echo(f"Results: {files['markdown']}, {files['csv']}, {files['heatmap']}")
    if summary["failed"]:
        typer.echo(f"error: {summary['failed']} of {summary['total']} grid points failed (reasons in {files['markdown']}); "
                   f"run the same command with --out {shlex.quote(summary['sweep_dir'])} to retry them", err=True)
        raise typer.Exit(1)


@app.command("list")
def list_(
    kind: str = typer.Argument(..., help="methods, losses, datasets, models, augmentations or recipes"),
    params: Optional[str] = typer.Option(None, "--params", help="Print this entry's parameters: type, default, bounds, doc."),
) -> None:
    """List what is registered, with one-line docs (or one entry's typed parameters with --params NAME)."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from edgedistill.registry import REGISTRIES, typed_params

    if kind == "recipes":
        if params is not None:
            typer.echo(f"error: --params is for {', '.join(REGISTRIES)}; a recipe's keys are in its file", err=True)
            raise typer.Exit(2)
        _list_recipes()
        return
    if kind not in REGISTRIES:
        typer.echo(f"error: unknown kind '{kind}'; expected one of: {', '.join(REGISTRIES)}, recipes", err=True)
        raise typer.Exit(2)
    if params is not None:
        try:
            model = typed_params(REGISTRIES[kind].entry(params, key="--params"))
        except UserInputError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None
        console = Console(width=max(100, Console().width))
        if model is None:
            typer.echo(f"{kind} '{params}' declares no typed parameters")
        else:
            table = Table(title=f"{params}: parameters ({kind})")
            for col in ("name", "type", "default", "bounds", "description"):
                table.add_column(col)
            for row in model.fields_doc():
                table.add_row(*(escape(str(row[k])) for k in ("name", "type", "default", "bounds", "doc")))
            console.print(table)
        obj = REGISTRIES[kind].entry(params).obj
        own, defaults = getattr(obj, "own_terms", {}), getattr(obj, "default_terms", ())
        if own or defaults:
            # A regime's weights are recipe terms: its own losses, or the registered losses it feeds a soft target.
            terms = Table(title=f"{params}: method.terms (default when a recipe gives none)")
            for col in ("loss", "default", "description"):
                terms.add_column(col)
            given = {t.loss: t for t in defaults}
            for name in dict.fromkeys([*own, *given]):
                t = given.get(name)
                default = ", ".join(f"{k}: {v}" for k, v in t.model_dump(exclude={"loss"}).items()) if t else "off"
                terms.add_row(escape(name), escape(default), escape(own.get(name, "registered loss")))
            console.print(terms)
        return
    table = Table(title=kind)
    table.add_column("name")
    table.add_column("tags")
    table.add_column("description")
    for entry in REGISTRIES[kind]:
        tags = " ".join(f"{k}={v}" for k, v in entry.meta.items() if isinstance(v, (str, int, float, bool)))
        table.add_row(entry.name, escape(tags), escape(entry.doc))
    Console(width=max(100, Console().width)).print(table)


def _list_recipes() -> None:
    """One plain line per shipped recipe (name, first sentence of its header), cut to the terminal: easy to grep."""
    import shutil

    from edgedistill.shipped_recipes import shipped_descriptions, shipped_names

    pad = max(len(n) for n in shipped_names())
    for name, doc in shipped_descriptions(width=max(40, shutil.get_terminal_size((120, 24)).columns - pad - 3)):
        typer.echo(f"{name:<{pad}}  {doc}")


def _table(title: str, header: list[str], rows: list[list[str]]) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=title)
    for i, h in enumerate(header):
        table.add_column(escape(h), justify="left" if i < 2 and h in ("variant", "file") else "right", no_wrap=True)
    for r in rows:
        table.add_row(*(escape(c) for c in r))
    Console(width=max(110, Console().width)).print(table)


@app.command()
def export(
    run_dir: Path = typer.Argument(..., help="A run directory made by 'edgedistill run'."),
    formats: str = typer.Option("onnx", "--format", help="Formats, comma-separated: onnx, tflite (LiteRT), executorch (.pte), c (C99 source)."),
    int8: bool = typer.Option(False, "--int8", help="Also write an int8 model of every format, calibrated on training windows."),
    opset: int = typer.Option(18, "--opset", help="ONNX opset."),
    out: Optional[Path] = typer.Option(None, "--out", help="Output file name, e.g. DIR/model.onnx (default <run>/export/student_seed<k>_<which>.onnx); every format adds its suffix, int8 files .int8 before it."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Which seed's student (default: the one best on validation)."),
    which: str = typer.Option("best", "--which", help="best (on validation) or last checkpoint."),
    calibration: int = typer.Option(256, "--calibration", help="Training windows used to calibrate int8 (all when fewer)."),
    max_diff: float = typer.Option(1e-4, "--max-diff", help="Fail if an fp32 file's outputs differ from PyTorch's by more (test windows)."),
    max_int8_drop: float = typer.Option(1.0, "--max-int8-drop", help="Fail if int8 loses more points of test accuracy (R² x 100 for regression)."),
    exporter: str = typer.Option("auto", "--exporter", help="ONNX: auto (dynamo, legacy as fallback), dynamo or legacy."),
) -> None:
    """Export the run's student (fp32, and int8 with --int8) in one or more formats, each verified against PyTorch on
    the test windows; the verification table is written beside the files."""
    from edgedistill.cli_export import export_command

    export_command(run_dir, formats, int8, opset, out, seed, which, calibration, max_diff, max_int8_drop, exporter)


@app.command()
def profile(
    target: Path = typer.Argument(..., help="A run directory (its student is exported to a temporary folder) or an .onnx file."),
    formats: Optional[str] = typer.Option(None, "--format", help="For a run: formats to profile, comma-separated (onnx, tflite, executorch, c; default onnx)."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Which seed's student (default: the one best on validation)."),
    which: str = typer.Option("best", "--which", help="best or last checkpoint."),
    int8: bool = typer.Option(True, "--int8/--no-int8", help="Also profile the int8 models."),
    runs: int = typer.Option(200, "--runs", help="Timed runs per variant (after the warm-up)."),
    warmup: int = typer.Option(20, "--warmup", help="Warm-up runs per variant."),
    report: bool = typer.Option(True, "--report/--no-report", help="For a run: add the section to report.md and write profile.json."),
    max_params: Optional[int] = typer.Option(None, "--max-params", help="Budget: exit 1 if the student has more parameters."),
    max_ram_kb: Optional[float] = typer.Option(None, "--max-ram-kb", help="Budget: exit 1 if a C variant's activation RAM exceeds this many KB (needs c in --format)."),
    max_latency_us: Optional[float] = typer.Option(None, "--max-latency-us", help="Budget: exit 1 if any exported variant's median batch-1 one-thread latency exceeds this."),
) -> None:
    """Parameters, file size, MACs per window, batch-1 latency (one thread) per exported format (C: flash and RAM),
    and budget checks for CI."""
    from edgedistill.cli_export import profile_command

    profile_command(target, formats, seed, which, int8, runs, warmup, report, max_params, max_ram_kb, max_latency_us)


@app.command()
def predict(
    target: Path = typer.Argument(..., help="A run directory (its exported student; exported for this command when there is none) or an .onnx file."),
    stream: Optional[Path] = typer.Option(None, "--stream", help="A recording as CSV: one row per sample, one column per channel in the model's order (a header is checked against the stored channel names)."),
    hop: Optional[int] = typer.Option(None, "--hop", help="Samples between predictions (default: the stride the model was trained with; required for files that store none)."),
    smooth: str = typer.Option("none", "--smooth", help="none, majority (label vote) or mean_proba (probability average) over the last --smooth-over hops."),
    smooth_over: int = typer.Option(5, "--smooth-over", help="Hops the smoothing spans."),
    out: Optional[Path] = typer.Option(None, "--out", help="Write the rows to this CSV file (default: print them)."),
    seed: Optional[int] = typer.Option(None, "--seed", help="For a run: which seed's student (default: the one best on validation)."),
    which: str = typer.Option("best", "--which", help="For a run: best or last checkpoint."),
    threads: Optional[int] = typer.Option(None, "--threads", help="ONNX Runtime threads (default: its own choice)."),
) -> None:
    """Stream a recording through the student: one row per hop (end sample, label, probabilities), docs/streaming.md."""
    from edgedistill.cli_predict import predict_command

    predict_command(target, stream, hop, smooth, smooth_over, out, seed, which, threads)


from edgedistill.cli_data import data_app  # noqa: E402 - its own module; registered beside the others

app.add_typer(data_app, name="data")
import edgedistill.cli_tune  # noqa: E402,F401 - registers the tune command (docs/tune.md)
import edgedistill.cli_report  # noqa: E402,F401 - registers the report command (docs/report.md)

topo_app = typer.Typer(no_args_is_help=True, help="Topological views: persistence images and PI-Net (docs/topology.md).")
app.add_typer(topo_app, name="topo")


@topo_app.command("pis")
def topo_pis(
    recipe: str = typer.Argument(..., help="A recipe with a data.topology section."),
    overrides: Optional[List[str]] = typer.Argument(None, help="key.sub=value overrides"),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show the progress bar."),
) -> None:
    """Compute the recipe's persistence images into the cache (interrupt with Ctrl-C and rerun to resume)."""
    try:
        from edgedistill.experiment.topology import precompute_pis

        result = precompute_pis(find_recipe(recipe), list(overrides or []), progress=progress)
    except EdgeDistillError as exc:
        _fail(exc)
    except OSError as exc:
        _environment(exc)
    except KeyboardInterrupt:
        typer.echo("interrupted: finished chunks are cached; rerun the same command to resume", err=True)
        raise typer.Exit(130) from None
    typer.echo(f"{result['windows']} windows, PIs of shape {tuple(result['shape'])} per window, cached")


@topo_app.command("pinet")
def topo_pinet(
    recipe: str = typer.Argument(..., help="A recipe with a data.topology section (its data and PI parameters are used)."),
    overrides: Optional[List[str]] = typer.Argument(None, help="key.sub=value overrides"),
    out: Path = typer.Option(Path("runs/pinet"), "--out", help="Folder for pinet.pt (the checkpoint) and pinet.json (metrics)."),
    epochs: int = typer.Option(200, "--epochs", min=1, help="Training epochs."),
    width: List[int] = typer.Option([32, 64, 128, 256], "--width", help="Conv widths of the four blocks (repeat the option)."),
    lr: float = typer.Option(1e-3, "--lr", min=0.0, help="Adam learning rate (cosine decay)."),
    batch_size: int = typer.Option(32, "--batch-size", min=1, help="Batch size."),
    seed: int = typer.Option(0, "--seed", help="Initialisation and shuffling seed."),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="torch threads (training and the timing)."),
    augment: int = typer.Option(0, "--augment", min=0, help="Perturbed copies of each training window (with exact PIs) added to PI-Net's training set."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show the progress bar of the exact PIs."),
) -> None:
    """Train a PI-Net (window -> persistence images) on the recipe's training windows; report MSE and speed-up."""
    try:
        from edgedistill.experiment.topology import train_pinet_from_recipe

        m = train_pinet_from_recipe(find_recipe(recipe), list(overrides or []), out, epochs=epochs, widths=tuple(width),
                                    lr=lr, batch_size=batch_size, seed=seed, threads=threads, progress=progress,
                                    augment=augment, log=lambda t: typer.echo(t, err=True))
    except EdgeDistillError as exc:
        _fail(exc)
    except OSError as exc:
        _environment(exc)
    typer.echo(f"PI-Net: best epoch {m['epoch'] + 1}, val MSE {m['val_mse']:.5f}, test MSE {m['test_mse']:.5f} "
               f"(mean-PI predictor {m['test_mse_mean_pi']:.5f})")
    typer.echo(f"per 1000 windows: gudhi {m['seconds_per_1000_gudhi']:.3f} s, PI-Net {m['seconds_per_1000_pinet']:.4f} s "
               f"-> {m['speedup']:.0f}x ({m['threads']} thread(s), load {m['load_avg'][0]:.2f})")
    typer.echo(f"use it: data.topology.source=pinet data.topology.pinet={out / 'pinet.pt'}")


def main() -> None:
    from edgedistill.cli_signals import stopping_on_sigterm

    try:
        stopping_on_sigterm(app)
    except EdgeDistillError as exc:  # raised outside a command body (should be rare)
        from edgedistill.experiment.rundir import redact

        typer.echo(f"error: {redact(one_line(exc))}", err=True)
        sys.exit(exc.exit_code)


if __name__ == "__main__":
    main()
