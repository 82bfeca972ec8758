"""Aggregate per-seed results into mean ± std rows, and render them as Markdown and a rich table."""
from __future__ import annotations

import math
from typing import Any, Optional

from edgedistill.experiment import report_detail

CLASSIFICATION_COLUMNS = [("acc", "accuracy"), ("f1", "macro-F1"), ("ece", "ECE"), ("ece_ts", "ECE T-scaled"), ("nll", "NLL")]
REGRESSION_COLUMNS = [("mae", "MAE"), ("rmse", "RMSE"), ("r2", "R²")]


def mean_std(values: list[float]) -> dict[str, float]:
    """Mean and sample standard deviation (ddof=1; 0 for a single seed)."""
    n = len(values)
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    return {"mean": mean, "std": std, "n": n}


def aggregate(per_seed: list[dict[str, Any]], select: str, split: str = "test") -> dict[str, Any]:
    """Mean ± std over seeds of one split's metrics of the ``select`` ("best" or "last") checkpoint."""
    keys = per_seed[0][split][select].keys()
    return {k: mean_std([s[split][select][k] for s in per_seed]) for k in keys}


def gap_closed(method_acc: float, student_acc: float, teacher_acc: float, noise: float = 0.0) -> Optional[float]:
    """Fraction of the teacher-student gap the method closed; None when the gap is no larger than the
    student's seed-to-seed noise (a ratio over a gap that small says nothing)."""
    gap = teacher_acc - student_acc
    return (method_acc - student_acc) / gap if gap > max(noise, 1e-9) else None


def add_gap_closed(rows: list[dict[str, Any]], task: str) -> None:
    """Set ``gap_closed`` on every row after the student alone's, against the (first) teacher's accuracy."""
    ref = next((r for r in rows if r["role"] == "teacher"), None)
    alone = next((r for r in rows if r["role"] == "student alone"), None)
    if task != "classification" or ref is None or alone is None:
        return
    t_acc, s_acc, noise = ref["metrics"]["acc"]["mean"], alone["metrics"]["acc"]["mean"], alone["metrics"]["acc"]["std"]
    for row in rows[rows.index(alone) + 1:]:
        row["gap_closed"] = gap_closed(row["metrics"]["acc"]["mean"], s_acc, t_acc, noise)


def _fmt(stat: dict[str, float], digits: int = 3) -> str:
    if stat["n"] == 1:
        return f"{stat['mean']:.{digits}f}"
    return f"{stat['mean']:.{digits}f} ± {stat['std']:.{digits}f}"


def table_rows(summary: dict[str, Any], compact: bool = False) -> tuple[list[str], list[list[str]]]:
    """Header and cells; ``compact`` (the terminal table) leaves NLL and the T-scaled ECE to the Markdown report.
    A metric a row lacks (a user-supplied teacher checkpoint has no T-scaled ECE) is an empty cell."""
    cols = CLASSIFICATION_COLUMNS if summary["task"] == "classification" else REGRESSION_COLUMNS
    if compact:
        cols = [c for c in cols if c[0] not in ("nll", "ece_ts")]
    header = ["model", "role", "params", "KB"] + [label for _, label in cols]
    if summary["task"] == "classification":
        header.append("gap closed")
    rows = []
    for row in summary["rows"]:
        # "-": a size torch does not know (a teacher given by its outputs)
        cells = [row["model"], row["role"], "-" if row["params"] is None else f"{row['params']:,}",
                 "-" if row["size_kb"] is None else f"{row['size_kb']:.1f}"]
        cells += [_fmt(row["metrics"][k]) if k in row["metrics"] else "" for k, _ in cols]
        if summary["task"] == "classification":
            g = row.get("gap_closed")
            cells.append("" if g is None else f"{g:+.2f}")  # empty: no teacher-student gap to close
        rows.append(cells)
    return header, rows


def _split_words(data: dict[str, Any]) -> str:
    held = {"subject": "by subject (no subject in two splits)", "stratified": "stratified by class", "random": "at random"}
    how = held.get(data["split_by"], data["split_by"])
    fold = data.get("fold")
    if fold:
        return (f"test = fold{fold['index']} of {fold['count']} ({fold['scheme']}): {fold['label']}; "
                f"validation held out {how} from the rest")
    if data.get("official_test"):
        return f"test = the dataset's official test split, validation held out {how}"
    return f"validation and test held out {how}"


_CHECKPOINT_WORDS = {"best": "its best epoch on validation", "last": "its last epoch",
                     "swa": "the average of its last epochs' weights (SWA)"}


def _teacher_words(summary: dict[str, Any]) -> str:
    rows = summary.get("rows", [])
    teachers = [r for r in rows if r.get("role", "").startswith(("teacher", "assistant")) and not r.get("given")]
    # teacher.select (rows from before that key: best); several teachers choosing differently are each named.
    picks = sorted({r.get("checkpoint", "best") for r in teachers})
    which = _CHECKPOINT_WORDS[picks[0]] if len(picks) == 1 else ", ".join(
        f"{r['model']}: {_CHECKPOINT_WORDS[r.get('checkpoint', 'best')]}" for r in teachers)
    given = [r["given"] for r in rows if r.get("given")]
    if given:  # loaded, read from outputs or a checkpoint: it has no epochs or seeds of its own here
        words = f"given teacher{'s' if len(given) > 1 else ''} ({'; '.join(given)}): evaluated as given, never trained."
        return words + (f" Every other teacher or assistant is {which}." if teachers else "")
    if summary.get("teacher_seed") is not None:
        return f"the teacher is one model (seed {summary['teacher_seed']}, {which})."
    return f"each teacher or assistant is {which}; one trained once for all seeds counts as one model."


def _data_words(data: dict[str, Any]) -> list[str]:
    """The channels the student read and what the loader inferred (task, row order): the first thing to check when
    a user's own file gives surprising numbers. Summaries written before these keys existed have neither."""
    lines = []
    channels = [str(c) for c in data.get("channels") or []]
    if channels:
        shown = ", ".join(channels[:32]) + (f", ... ({len(channels) - 32} more)" if len(channels) > 32 else "")
        lines.append(f"Channels used ({len(channels)}): {shown}.")
    lines += [f"Data note: {note}" for note in data.get("notes") or []]
    return [*lines, ""] if lines else []


def markdown(summary: dict[str, Any]) -> str:
    from edgedistill.experiment.classical import markdown_lines as classical_lines  # lazy: it imports torch

    if summary.get("folds"):  # a cross-validation's summary (experiment/cv_report.py)
        from edgedistill.experiment import cv_report

        return cv_report.markdown(summary)
    header, rows = table_rows(summary)
    lines = [
        f"# {summary['name']}",
        "",
        f"Data: **{summary['data']['name']}** ({summary['task']}; train/val/test = "
        f"{summary['data']['sizes'].get('train')}/{summary['data']['sizes'].get('val')}/{summary['data']['sizes'].get('test')}; "
        f"{_split_words(summary['data'])}). Test metrics of the **{summary['select']}** checkpoint "
        f"({'best epoch on validation' if summary['select'] == 'best' else 'last epoch'}), "
        f"mean ± sample std over seeds {summary['seeds']}; {_teacher_words(summary)}",
        "",
        *_data_words(summary["data"]),
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" for _ in header) + "|",
    ]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    if summary["task"] == "classification":
        lines += ["", "*gap closed* = (method − student alone) / (teacher − student alone) accuracy; negative means distillation hurt; "
                  "blank when the teacher-student gap is no larger than the student's seed std. *ECE T-scaled* = test ECE after "
                  "dividing the logits by one temperature fitted on validation (accuracy unchanged): what calibration costs to fix."]
    if any(r["role"].startswith("also trained") for r in summary["rows"]):
        lines += ["", f"The deliverable is the **method** row ({summary.get('deliverable')}); rows marked *also trained* are "
                  "networks the regime trains or forms alongside it, at the deliverable's selected epoch."]
    verdict = summary.get("verdict")
    if verdict:
        lines += ["", verdict]
    lines += [line for w in summary.get("warnings") or [] for line in ("", f"**Warning:** {w}")]
    lines += classical_lines(summary)
    lines += report_detail.markdown_lines(summary)  # per class, per subject, the data: after the main table's notes
    lines += ["", f"Command: `{summary['command']}`", ""]
    return "\n".join(lines)


def verdict(summary: dict[str, Any]) -> Optional[str]:
    """One plain sentence: did the method beat the student alone, beyond the seeds' spread? Then one naming any
    teacher that was worse than the student alone on validation."""
    rows = {r["role"]: r for r in summary["rows"]}
    if "method" not in rows or "student alone" not in rows:
        return None
    key, better = ("acc", 1) if summary["task"] == "classification" else ("rmse", -1)
    m, s = rows["method"]["metrics"][key], rows["student alone"]["metrics"][key]
    diff = better * (m["mean"] - s["mean"])
    spread = max(m["std"], s["std"])
    name = rows["method"]["model"]
    # Seed k of both arms starts from the same initialisation and data order: compare them pairwise too.
    diffs = [better * (a[key] - b[key]) for a, b in zip(rows["method"]["per_seed_test"], rows["student alone"]["per_seed_test"])]
    paired = f" Paired by seed it won on {sum(d > 0 for d in diffs)} of {len(diffs)} seeds (differences {', '.join(f'{d:+.3f}' for d in diffs)})."
    warn = weak_teachers(summary)
    if warn:
        return _verdict(name, key, m, diff, spread, paired) + " " + warn
    return _verdict(name, key, m, diff, spread, paired)


def weak_teachers(summary: dict[str, Any]) -> Optional[str]:
    """A sentence naming the teachers that scored below the student alone on validation, beyond its seeds'
    spread: the student is asked to imitate a worse model, the commonest reason distillation hurts on small
    sensor sets (e.g. topo_kd's persistence-image teachers in benchmarks/results/quality.md)."""
    rows = summary["rows"]
    alone = next((r for r in rows if r["role"] == "student alone"), None)
    if alone is None or "val_metrics" not in alone:
        return None
    key, better = ("acc", 1) if summary["task"] == "classification" else ("rmse", -1)
    ref, spread = alone["val_metrics"][key]["mean"], alone["val_metrics"][key]["std"]
    weak = [f"{r['model']} {r['val_metrics'][key]['mean']:.3f}" for r in rows
            if r["role"] == "teacher" and "val_metrics" in r and better * (ref - r["val_metrics"][key]["mean"]) > spread]
    if not weak:
        return None
    return (f"Teacher(s) below the student alone on validation ({ref:.3f} {key}): {', '.join(weak)}. Distilling from a "
            "worse model tends to hurt: choose a better teacher or give it less weight.")


def _verdict(name: str, key: str, m: dict[str, Any], diff: float, spread: float, paired: str) -> str:
    if m["n"] == 1:
        if diff == 0:
            return f"**{name}** scored the same test {key} as the student alone on one seed: no spread to judge it by."
        word = "ahead of" if diff > 0 else "behind"
        return f"**{name}** was {word} the student alone by {abs(diff):.3f} test {key} on one seed: no spread to judge it by."
    if diff > spread and diff > 0:
        return f"**{name}** beat the student alone on test {key} by {diff:.3f} (more than one seed std, {spread:.3f})." + paired
    if diff > 0:
        return f"**{name}** was ahead of the student alone by {diff:.3f} test {key}, within the seeds' spread ({spread:.3f}): not a clear win." + paired
    return f"**{name}** did not beat the student alone: {abs(diff):.3f} test {key} {'worse' if diff < 0 else 'equal'}." + paired
