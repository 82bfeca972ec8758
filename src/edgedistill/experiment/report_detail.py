"""Per-class and per-subject results, and what the data was, for summary.json and report.md.

A mean accuracy over a test split hides the classes a student never gets right and the subjects it fails on;
wearable studies are judged on both (and on how many subjects each split held). The runner calls ``attach`` once
the stages are done: each reported model (teachers, the student alone, the method) is evaluated once more on test,
at the checkpoint the main table reports, and the seeds are averaged. ``markdown_lines`` renders what a summary
has, so a summary written before these keys existed still renders (``edgedistill report``).
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Callable, Optional

from edgedistill.errors import UserInputError

DETAILED_ROLES = ("teacher", "assistant", "student alone", "method")


def data_section(splits: Any) -> dict[str, Any]:
    """``summary["data"]``: the split facts the report states, plus input shape, class counts and subjects per split."""
    info = splits.info
    out: dict[str, Any] = {
        "name": info.name, "sizes": info.sizes, "split_by": info.split_by, "official_test": info.official_test,
        "classes": info.classes, "channels": info.channels, "notes": info.notes, "input_shape": list(info.input_shape),
    }
    if info.fold:  # one fold of a cross-validation: which, and what its test part holds
        out["fold"] = info.fold
    parts = {"train": splits.train, "val": splits.val, "test": splits.test}
    if info.task == "classification":
        import torch

        out["class_counts"] = {k: torch.bincount(d.y.long(), minlength=info.n_outputs).tolist() for k, d in parts.items()}
    if info.has_groups:
        out["subjects"] = {k: [info.subject_name(int(g)) for g in sorted(d.group.unique().tolist())] if d.group is not None else []
                           for k, d in parts.items()}
    return out


def _mean(values: list[Optional[float]]) -> Optional[float]:
    return None if any(v is None for v in values) else sum(values) / len(values)  # type: ignore[arg-type, misc]


def mean_detail(per_seed: list[dict[str, Any]], checkpoint: str) -> dict[str, Any]:
    """One detail from several models' (seeds'): recall, confusion counts and per-subject scores are means over
    them. The test split is the same for every seed, so the mean confusion's diagonal over its row sum is still
    the mean recall."""
    k, first = len(per_seed), per_seed[0]
    out: dict[str, Any] = {"split": "test", "checkpoint": checkpoint, "seeds": k, "n": first["n"]}
    if "confusion" in first:
        out["support"] = first["support"]
        out["recall"] = [_mean(list(v)) for v in zip(*(d["recall"] for d in per_seed))]
        cms = [d["confusion"] for d in per_seed]
        out["confusion"] = cms[0] if k == 1 else [[sum(c[i][j] for c in cms) / k for j in range(len(cms[0]))]
                                                   for i in range(len(cms[0]))]
    keys = [m for m in ("acc", "f1", "mae") if first["subjects"] and m in first["subjects"][0]]
    out["subjects"] = [{"subject": s["subject"], "n": s["n"], **{m: _mean([d["subjects"][i][m] for d in per_seed]) for m in keys}}
                       for i, s in enumerate(first["subjects"])]
    return out


def attach(rows: list[dict[str, Any]], p: Any, runner: Any, trained: dict[str, dict[str, tuple[Any, dict]]],
           baselines: list[dict], results: list[dict], run_dir: Path) -> None:
    """Add ``detail`` to the rows of the teachers, the student alone and the method (in the order the runner made
    them: one per trained teacher, then the student alone if trained, then the method). Teachers are their
    teacher.select checkpoint; the method at ``report.select``; the student alone is the weights the model cache keeps (best epoch)."""
    from edgedistill.engine.evaluate import evaluate_detail
    from edgedistill.engine.loop import deliverable_weights
    from edgedistill.experiment.build import build_network

    recipe, splits, info = p.recipe, p.splits, p.splits.info
    device, select = runner.trainer.fabric.device, recipe.report.select

    def student(seed: int, state: dict[str, Any]) -> Any:
        net = build_network(recipe.student.model_copy(update={"checkpoint": None}), info, "student", seed=seed)
        net.load_state_dict(state)
        return net.to(device)

    def put(row: dict[str, Any], details: Callable[[], list[dict[str, Any]]], checkpoint: str) -> None:
        # The training is done and its summary is due: a model that cannot be evaluated again (a checkpoint moved
        # away since a resumed stage finished) loses its detail, said in one line, not the run.
        try:
            row["detail"] = mean_detail(details(), checkpoint)
        except (OSError, RuntimeError, KeyError, ValueError, UserInputError) as exc:  # not a bug in this code
            print(f"report: no per-class/per-subject detail for {row['model']} ({row['role']}): "
                  f"{str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__}", file=sys.stderr)

    at = 0
    for versions in trained.values():
        put(rows[at], lambda v=versions: [evaluate_detail(t.model, splits.view_as_x(t.config.view).test, info, device)
                                          for t, _ in v.values()], next(iter(versions.values()))[0].config.select)
        at += 1
    if baselines:
        def alone() -> list[dict[str, Any]]:
            hits = [runner.cache.lookup(s["cache_key"]) for s in baselines]
            if any(h is None for h in hits):
                raise FileNotFoundError("its weights are no longer in the model cache")
            return [evaluate_detail(student(seed, h[0]), splits.test, info, device) for seed, h in zip(recipe.seeds, hits)]

        put(rows[at], alone, "best")
        at += 1
    if results:
        stage = lambda seed: run_dir / recipe.method.name / f"seed{seed}"  # noqa: E731
        put(rows[at], lambda: [evaluate_detail(student(seed, deliverable_weights(stage(seed), select)), splits.test, info,
                                               device) for seed in recipe.seeds[: len(results)]], select)


def _num(v: Optional[float], digits: int = 3) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def _count(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else f"{v:.1f}"


def _head(row: dict[str, Any]) -> str:
    """A column's name: the model and its role (a teacher and the student alone may be the same architecture)."""
    return f"{row['model']} ({row['role']})"


def _seeds_words(detail: dict[str, Any]) -> str:
    k = detail.get("seeds", 1)
    return "one model" if k == 1 else f"mean over {k} seeds"


def markdown_lines(summary: dict[str, Any]) -> list[str]:
    """The per-class, confusion, per-subject and data sections; empty where the summary has none of them."""
    rows = [r for r in summary.get("rows", []) if isinstance(r.get("detail"), dict)]
    classes = summary.get("data", {}).get("classes") or []
    label = lambda c: str(classes[c]) if c < len(classes) else str(c)  # noqa: E731
    lines: list[str] = []
    cls_rows = [r for r in rows if "recall" in r["detail"]]
    if cls_rows:
        support = cls_rows[0]["detail"]["support"]
        lines += ["", "## Per-class recall (test)", "",
                  "| class | test n | " + " | ".join(_head(r) for r in cls_rows) + " |",
                  "|---|---|" + "---|" * len(cls_rows)]
        lines += [f"| {label(c)} | {support[c]} | " + " | ".join(_num(r["detail"]["recall"][c]) for r in cls_rows) + " |"
                  for c in range(len(support))]
        method = next((r for r in cls_rows if r["model"] == summary.get("deliverable")), cls_rows[-1])
        cm = method["detail"]["confusion"]
        lines += ["", f"## Confusion matrix of {method['model']} (test; rows true, columns predicted; "
                  f"{method['detail'].get('checkpoint', '')} checkpoint, {_seeds_words(method['detail'])})", "",
                  "| true \\ predicted | " + " | ".join(label(c) for c in range(len(cm))) + " |",
                  "|---|" + "---|" * len(cm)]
        lines += [f"| {label(i)} | " + " | ".join(_count(v) for v in cm[i]) + " |" for i in range(len(cm))]
    subj_rows = [r for r in rows if r["detail"].get("subjects")]
    if subj_rows:
        regression = "mae" in subj_rows[0]["detail"]["subjects"][0]
        what = "MAE" if regression else "accuracy (macro-F1 in brackets)"
        lines += ["", f"## Per-subject {what} (test)", "",
                  "| subject | test n | " + " | ".join(_head(r) for r in subj_rows) + " |",
                  "|---|---|" + "---|" * len(subj_rows)]
        by_model = [{s["subject"]: s for s in r["detail"]["subjects"]} for r in subj_rows]
        for s in subj_rows[0]["detail"]["subjects"]:
            cells = []
            for m in by_model:
                e = m.get(s["subject"])
                cells.append("" if e is None else _num(e.get("mae")) if regression else f"{_num(e.get('acc'))} ({_num(e.get('f1'))})")
            lines.append(f"| {s['subject']} | {s['n']} | " + " | ".join(cells) + " |")
    if rows:
        notes = [f"{_head(r)}: {r['detail'].get('checkpoint', '?')} checkpoint, {_seeds_words(r['detail'])}" for r in rows]
        lines += ["", "Models in the tables above (test split): " + "; ".join(notes) + "."]
    return lines + _data_lines(summary.get("data", {}))


def _data_lines(data: dict[str, Any]) -> list[str]:
    """Input shape, samples per class and split, subjects per split (summaries from before these keys: nothing)."""
    lines: list[str] = []
    if data.get("input_shape"):
        lines.append(f"Input shape (per sample, channels first): {tuple(data['input_shape'])}.")
    counts = data.get("class_counts")
    if counts:
        classes = data.get("classes") or [str(c) for c in range(len(counts.get("train", [])))]
        splits = [k for k in ("train", "val", "test") if k in counts]
        lines += ["", "| class | " + " | ".join(splits) + " |", "|---|" + "---|" * len(splits)]
        lines += [f"| {c} | " + " | ".join(str(counts[k][i]) for k in splits) + " |" for i, c in enumerate(classes)]
    subjects = data.get("subjects")
    if subjects:
        shown = lambda names: ", ".join(map(str, names[:24])) + (f", ... ({len(names) - 24} more)" if len(names) > 24 else "")  # noqa: E731
        lines += [""] + [f"- {k}: {len(v)} subject{'s' if len(v) != 1 else ''} ({shown(v)})" for k, v in subjects.items()]
    return ["", "## Data", "", *lines] if lines else []
