"""The bodies of ``edgedistill export`` and ``edgedistill profile`` (``cli.py`` declares their options): several
formats at once through ``deploy.formats``, each verified against PyTorch, its table printed and written beside its
files; the profile's budget checks (docs/deploy.md)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer

from edgedistill.errors import EdgeDistillError, UserInputError

SUFFIXES = (".onnx", ".tflite", ".pte", ".c")


def output_place(run: Any, out: Optional[Path]) -> tuple[Path, str]:
    """(folder, file stem): ``--out DIR/NAME.onnx`` (any format's suffix, or none) or ``<run>/export/student_seed<k>_<which>``."""
    if out is None:
        return run.run_dir / "export", f"student_seed{run.seed}_{run.which}"
    out = Path(out)
    name = out.name
    for suffix in SUFFIXES:
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    if not name or name.startswith("."):
        raise UserInputError(f"--out: '{out}' does not name a file (expected e.g. model.onnx; every format adds its suffix)")
    return out.parent, name


def export_command(run_dir: Path, formats: str, int8: bool, opset: int, out: Optional[Path], seed: Optional[int],
                   which: str, calibration: int, max_diff: float, max_int8_drop: float, exporter: str) -> None:
    from edgedistill.cli import _environment, _fail, _table
    from edgedistill.deploy.formats import FormatResult, backend, export_format, parse_formats, verification_table, \
        write_verification
    from edgedistill.deploy.runs import load_run

    written: list[Path] = []
    try:
        names = parse_formats(formats)
        for name in names:  # a missing package is said before the data is loaded
            backend(name)
        if "onnx" in names:
            from edgedistill.deploy.metadata import require_onnx, require_onnxruntime

            require_onnx(), require_onnxruntime()
        run = load_run(run_dir, seed, which)
        if run.seed_reason:
            typer.echo(f"exporting {run.seed_reason}")
        out_dir, stem = output_place(run, out)
        title = f"{run.recipe.student.model} seed {run.seed} ({run.which} checkpoint): {len(run.splits.test.x)} test windows"
        for name in names:
            options: dict[str, Any] = {"opset": opset, "exporter": exporter} if name == "onnx" else {}
            try:
                result = export_format(name, run, out_dir, int8=int8, calibration=calibration, max_diff=max_diff,
                                       max_int8_drop=max_int8_drop, stem=stem, **options)
            except EdgeDistillError as exc:
                table = getattr(exc, "result", None)
                if table is not None:
                    shown = FormatResult(name, {}, table["rows"], table["metric"])
                    _table(f"{name} verification (nothing written for {name})", *verification_table(shown))
                raise
            _table(f"{name}: {title}", *verification_table(result))
            files = [*result.files.values(), *result.extra_files]
            files += write_verification(result, out_dir, stem)
            written += files
            for note in result.notes:
                typer.echo(f"{'' if note.startswith('warning: ') else 'note: '}{note}", err=note.startswith("warning: "))
            for variant, path in result.files.items():
                typer.echo(f"{name} {variant}: {path}")
    except EdgeDistillError as exc:
        if written:
            typer.echo(f"(the formats before this one were written and verified: {', '.join(p.name for p in written)})",
                       err=True)
        _fail(exc)
    except OSError as exc:
        _environment(exc)


def profile_command(target: Path, formats: Optional[str], seed: Optional[int], which: str, int8: bool, runs: int,
                    warmup: int, report: bool, max_params: Optional[int], max_ram_kb: Optional[float],
                    max_latency_us: Optional[float]) -> None:
    from edgedistill.cli import _environment, _fail, _table
    from edgedistill.deploy.export import int8_notes
    from edgedistill.deploy.formats import backend, parse_formats
    from edgedistill.deploy.profile import BudgetExceeded, check_budgets, describe, profile as do_profile, table
    from edgedistill.deploy.runs import pick_seed

    try:
        names = parse_formats(formats or "onnx")
        if max_ram_kb is not None and "c" not in names:
            raise UserInputError("--max-ram-kb: only format c estimates RAM (its activation arena); add c to --format")
        if Path(target).is_dir():
            for name in names:
                backend(name)
            if seed is None:
                seed, reason = pick_seed(target, which)
                typer.echo(f"profiling {reason}")
        elif formats is not None and names != ["onnx"]:
            raise UserInputError(f"--format: '{target}' is a file; --format applies to a run directory")
        result = do_profile(target, seed=seed, which=which, int8=int8, runs=runs, warmup=warmup, write_report=report,
                            formats=tuple(names))
        _table(f"profile: {result['target']}", *table(result))
        typer.echo(describe(result))
        rows = {r["variant"]: r for r in result["rows"]}
        fp32, q8 = rows.get("onnxruntime fp32"), rows.get("onnxruntime int8")
        if fp32 is not None and q8 is not None:
            for note in int8_notes(fp32["size_bytes"], q8["size_bytes"], fp32.get("median_us"), q8.get("median_us")):
                typer.echo(f"note: {note}")
        if report and Path(target).is_dir():
            typer.echo(f"Written into {Path(target) / 'report.md'} and {Path(target) / 'profile.json'}")
        problems = check_budgets(result, max_params=max_params, max_ram_kb=max_ram_kb, max_latency_us=max_latency_us)
        if problems:
            raise BudgetExceeded("over budget: " + "; ".join(problems))
        if any(v is not None for v in (max_params, max_ram_kb, max_latency_us)):
            typer.echo("within budget: " + ", ".join(f"{k} {v:g}" for k, v in (("--max-params", max_params),
                       ("--max-ram-kb", max_ram_kb), ("--max-latency-us", max_latency_us)) if v is not None))
    except EdgeDistillError as exc:
        _fail(exc)
    except OSError as exc:
        _environment(exc)
