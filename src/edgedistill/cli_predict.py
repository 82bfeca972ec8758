"""The body of ``edgedistill predict`` (``cli.py`` declares its options): a run's exported student, or an ``.onnx``
file, on a recording streamed from a CSV file through ``deploy.stream`` (docs/streaming.md): one row per hop."""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import IO, Any, Iterator, Optional

import typer

from edgedistill.errors import EdgeDistillError, UserInputError


def model_file(target: Path, seed: Optional[int], which: str, tmp: Path) -> tuple[Path, str]:
    """(the .onnx file to stream through, a note saying where it came from). A run directory gives its exported
    fp32 file ``<run>/export/student_seed<k>_<which>.onnx``; a run not exported yet is exported (and verified)
    into ``tmp`` for this command only."""
    from edgedistill.deploy.runs import check_run_dir, pick_seed

    if not target.is_dir():
        if target.suffix != ".onnx":
            raise UserInputError(f"'{target}': expected a run directory or an .onnx file made by 'edgedistill export'")
        if seed is not None:
            raise UserInputError(f"--seed: '{target}' is a model file; --seed applies to a run directory")
        return target, ""
    check_run_dir(target)
    reason = ""
    if seed is None:
        seed, reason = pick_seed(target, which)
    exported = target / "export" / f"student_seed{seed}_{which}.onnx"
    if exported.is_file():
        return exported, f"streaming {exported}" + (f" ({reason})" if reason else "")
    from edgedistill.deploy.export import export

    result = export(target, tmp / exported.name, seed=seed, which=which)
    return result.fp32, (f"streaming the student of seed {seed} ({which} checkpoint), exported and verified for this "
                         f"command only ('edgedistill export {target}' keeps a file)")


def rows(results: Iterator[Any], classes: Optional[list[str]], rate: Optional[float]) -> Iterator[list[str]]:
    """The CSV rows of a stream's results: a header, then one row per hop."""
    head = ["end_sample"] + (["end_time_s"] if rate else [])
    if classes is not None:
        head += ["label", "window_label"] + [f"p_{c}" for c in classes]
    else:
        head += ["value"]
    yield head
    for r in results:
        row = [str(r.end)] + ([f"{r.end / rate:.6g}"] if rate else [])
        if classes is not None:
            row += [str(r.label), str(r.window_label)] + [f"{p:.6f}" for p in r.proba]
        else:
            row += [" ".join(f"{v:.6g}" for v in _values(r.label))]
        yield row


def _values(value: Any) -> list[float]:
    import numpy as np

    return [float(v) for v in np.atleast_1d(value)]


def _write(lines: Iterator[list[str]], fh: IO[str]) -> int:
    import csv

    writer = csv.writer(fh, lineterminator="\n")
    count = -1  # the header is not a hop
    for line in lines:
        writer.writerow(line)
        count += 1
    return count


def predict_command(target: Path, stream_csv: Optional[Path], hop: Optional[int], smooth: str, smooth_over: int,
                    out: Optional[Path], seed: Optional[int], which: str, threads: Optional[int]) -> None:
    from edgedistill.cli import _environment, _fail

    try:
        if stream_csv is None:
            raise UserInputError("predict: give the recording to stream, --stream FILE.csv (one row per sample, one "
                                 "column per channel)")
        from edgedistill.deploy.predictor import Predictor
        from edgedistill.deploy.stream import csv_chunks, stream
        from edgedistill.io import atomic_write

        with tempfile.TemporaryDirectory(prefix="edgedistill-predict-") as tmp:
            path, note = model_file(Path(target), seed, which, Path(tmp))
            if note:
                typer.echo(note, err=True)
            predictor = Predictor(path, threads)
            meta = predictor.meta
            results = stream(predictor, csv_chunks(stream_csv, meta), hop=hop, smoothing=smooth,
                             smooth_over=smooth_over, source=f"'{stream_csv}'")
            lines = rows(results, predictor.classes if meta.task == "classification" else None, meta.sampling_rate)
            if out is not None:
                counted: list[int] = []
                atomic_write(out, lambda fh: counted.append(_write(lines, fh)))
                typer.echo(f"{counted[0]} hop(s) written to {out}", err=True)
            else:
                _write(lines, sys.stdout)
                sys.stdout.flush()
    except EdgeDistillError as exc:
        _fail(exc)
    except OSError as exc:
        _environment(exc)
