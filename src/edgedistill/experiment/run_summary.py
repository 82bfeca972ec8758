"""A finished run's summary: one row per reported model (teachers, the student alone, the method, networks the
regime also trains), mean ± std over seeds, the verdict, the detail sections and the warnings report.md shows.

Split from runner.py, which trains; this module only reads what training returned (and evaluates once more on test
for the per-class / per-subject detail, ``report_detail.attach``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from edgedistill.config import Recipe
from edgedistill.experiment import report, report_detail
from edgedistill.experiment.teacher_select import selection_warning
from edgedistill.registry import METHODS


def model_row(name: str, role: str, size: dict[str, Any], per_seed: list[dict], select: str) -> dict[str, Any]:
    """Test metrics (what is reported) and validation metrics (what choices are made on), mean ± std."""
    return {
        "model": name,
        "role": role,
        **size,
        "metrics": report.aggregate(per_seed, select),
        "val_metrics": report.aggregate(per_seed, select, split="val"),
        "per_seed_test": [s["test"][select] for s in per_seed],
    }


def method_label(recipe: Recipe) -> str:
    if not METHODS.entry(recipe.method.name).meta.get("label_from_terms"):
        return recipe.method.name
    if recipe.method.terms:
        return "+".join(t.loss for t in recipe.method.terms)
    staged = [t.loss for s in recipe.method.stages for t in s.terms]  # (docs/stages.md: e.g. "ab+ce+kd")
    return "+".join(dict.fromkeys(staged)) if staged else recipe.method.name


def _teacher_warnings(p: Any, trained: dict[str, dict[str, tuple[Any, dict]]]) -> list[str]:
    """Where the epoch chosen on a small validation set and the last epoch disagree (teacher_select)."""
    val, info = p.splits.val, p.splits.info
    n_subjects = int(val.group[val.group >= 0].unique().numel()) if info.has_groups and val.group is not None else None
    out: list[str] = []
    for name, versions in trained.items():
        for t, summary in versions.values():
            text = selection_warning(summary, n_subjects, len(val), info.task, t.config.select)
            text = text if text is None or len(trained) == 1 else f"Teacher '{name}': {text}"
            if text is not None and text not in out:
                out.append(text)
    return out


def build(p: Any, runner: Any, trained: dict[str, dict[str, tuple[Any, dict]]], baselines: list[dict],
          results: list[dict], classical: list[dict], run_dir: Path, command: str, teachers_only: bool) -> dict[str, Any]:
    """``summary.json`` of a run from what its stages returned (``runner._execute``); ``classical``: the rows of
    ``report.classical`` (experiment/classical.py), last, without a gap-closed value (they distil nothing)."""
    from edgedistill.models import describe

    recipe, info, student = p.recipe, p.splits.info, p.student
    select = recipe.report.select
    is_baseline = bool(METHODS.entry(recipe.method.name).meta.get("baseline"))  # the regime is the student alone
    rows = []
    for name, versions in trained.items():
        # Each teacher at its teacher.select checkpoint; one shared by every seed is one model (n = 1).
        t, _ = next(iter(versions.values()))
        label = t.config.label if len(trained) == 1 else f"{name}: {t.config.label}"
        role = "teacher" if t.config.distill_from is None else f"assistant (from {t.config.distill_from})"
        rows.append(model_row(label, role, describe(t.model), [s for _, s in versions.values()], t.config.select))
        rows[-1]["checkpoint"] = t.config.select
        if t.config.given:
            rows[-1]["given"] = next(iter(versions.values()))[1].get("given")
    if baselines:
        rows.append(model_row(recipe.student.label, "student alone", describe(student), baselines, select))
    if results:
        role = "student alone" if is_baseline else "method"
        rows.append(model_row(f"{recipe.student.label} + {method_label(recipe)}", role, describe(student), results, select))
    for name in results[0].get("others", {}) if results else ():
        # Networks the regime trains or forms besides the deliverable (peers, a co-trained teacher, ensembles).
        per_seed = [r["others"][name] for r in results]
        rows.append(model_row(name, "also trained (not the deliverable)", per_seed[0].get("size", {}), per_seed, select))
    report.add_gap_closed(rows, info.task)
    report_detail.attach(rows, p, runner, trained, baselines, results, run_dir)  # per class, per subject (test)
    rows += classical  # after attach, which finds the network rows by position
    summary: dict[str, Any] = {
        "name": recipe.name,
        "task": info.task,
        "select": select,
        "seeds": recipe.seeds,
        "teacher_seed": recipe.teacher.seed if recipe.teacher else None,
        "deliverable": rows[0]["model"] if teachers_only else f"{recipe.student.label} + {method_label(recipe)}",
        "smoke": p.smoke,
        "data": report_detail.data_section(p.splits),  # + input shape, class counts, subjects per split
        "rows": rows,
        "warnings": _teacher_warnings(p, trained),
        "run_dir": str(run_dir),
        "command": command,
    }
    summary["verdict"] = report.verdict(summary)
    return summary
