"""One summary over the folds of a cross-validation: rows over folds x seeds, a per-fold table, the paired verdict.

Pure functions over the folds' own summaries (each fold is a run, ``<run>/fold<i>/summary.json``). A row's metrics
are mean ± sample std over every (fold, seed) run; its validation metrics are the folds' validation means averaged.
The verdict pairs the method with the student alone *by fold* (each fold's mean over seeds): folds are the
independent replicates here, since a fold's seeds share its test subjects.
"""
from __future__ import annotations

import math
from typing import Any, Optional

from edgedistill.experiment import report, report_detail


def _merge_detail(details: list[dict[str, Any]]) -> Optional[dict[str, Any]]:
    """Per-class counts summed over the folds' test parts (each sample is tested in exactly one fold), recall from
    the summed confusion; per-subject rows: a subject tested in several folds (stratified_kfold) is n-weighted."""
    if not details:
        return None
    first = details[0]
    out: dict[str, Any] = {"split": "test (every fold's)", "checkpoint": first.get("checkpoint"), "seeds": first.get("seeds", 1),
                           "n": sum(d["n"] for d in details)}
    if all("confusion" in d for d in details):
        k = len(first["confusion"])
        cm = [[sum(d["confusion"][i][j] for d in details) for j in range(k)] for i in range(k)]
        out["confusion"], out["support"] = cm, [sum(d["support"][i] for d in details) for i in range(k)]
        out["recall"] = [cm[i][i] / sum(cm[i]) if sum(cm[i]) else None for i in range(k)]
    subjects: dict[str, dict[str, Any]] = {}
    for d in details:
        for s in d.get("subjects") or []:
            e = subjects.setdefault(s["subject"], {"subject": s["subject"], "n": 0, "_w": {}})
            e["n"] += s["n"]
            for m, v in s.items():
                if m not in ("subject", "n") and v is not None:
                    e["_w"].setdefault(m, []).append((v, s["n"]))
    out["subjects"] = [{"subject": e["subject"], "n": e["n"],
                        **{m: sum(v * n for v, n in vs) / sum(n for _, n in vs) for m, vs in e["_w"].items()}}
                       for e in subjects.values()]
    return out


def _row(fold_rows: list[dict[str, Any]]) -> dict[str, Any]:
    first = fold_rows[0]
    pooled = [s for r in fold_rows for s in r["per_seed_test"]]
    keys = [k for k in first["per_seed_test"][0] if all(k in s for s in pooled)]
    row = {k: first[k] for k in ("model", "role", "params", "size_kb", "given", "checkpoint", "note") if k in first}
    for k in ("latency_ms", "fit_s"):  # a classical baseline's: the mean over folds
        if all(isinstance(r.get(k), (int, float)) for r in fold_rows):
            row[k] = sum(r[k] for r in fold_rows) / len(fold_rows)
    row["metrics"] = {k: report.mean_std([s[k] for s in pooled]) for k in keys}
    if all("val_metrics" in r for r in fold_rows):
        vkeys = [k for k in first["val_metrics"] if all(k in r["val_metrics"] for r in fold_rows)]
        row["val_metrics"] = {k: report.mean_std([r["val_metrics"][k]["mean"] for r in fold_rows]) for k in vkeys}
    row["per_seed_test"] = pooled
    row["per_fold_test"] = [{k: r["metrics"][k]["mean"] for k in keys if k in r["metrics"]} for r in fold_rows]
    detail = _merge_detail([r["detail"] for r in fold_rows if isinstance(r.get("detail"), dict)])
    if detail is not None and all(isinstance(r.get("detail"), dict) for r in fold_rows):
        row["detail"] = detail
    return row


def combine(folds: list[dict[str, Any]], eval_section: dict[str, Any], command: str, run_dir: str) -> dict[str, Any]:
    """The cross-validation's summary from its folds' summaries (in fold order)."""
    first = folds[0]
    layout = [(r["model"], r["role"]) for r in first["rows"]]
    for f in folds[1:]:
        if [(r["model"], r["role"]) for r in f["rows"]] != layout:  # one recipe: a difference is a bug or a tampered file
            raise ValueError(f"fold summaries disagree on their rows: {layout} vs {[(r['model'], r['role']) for r in f['rows']]}")
    rows = [_row([f["rows"][i] for f in folds]) for i in range(len(layout))]
    report.add_gap_closed(rows, first["task"])
    d = first["data"]
    data = {k: d.get(k) for k in ("name", "split_by", "classes", "channels", "notes", "input_shape")}
    data["official_test"] = False
    subjects = sorted({s for f in folds for part in (f["data"].get("subjects") or {}).values() for s in part}, key=str)
    if subjects:
        data["subjects"] = {"all folds": subjects}
    summary = {
        **{k: first[k] for k in ("name", "task", "select", "seeds", "teacher_seed", "deliverable", "smoke")},
        "eval": eval_section,
        "data": data,
        "rows": rows,
        "folds": [{"index": f["data"]["fold"]["index"], "label": f["data"]["fold"]["label"], "dir": f"fold{f['data']['fold']['index']}",
                   "sizes": f["data"]["sizes"], "subjects": f["data"].get("subjects"),
                   "rows": [{"model": r["model"], "role": r["role"], "metrics": r["metrics"]} for r in f["rows"]]}
                  for f in folds],
        "run_dir": run_dir,
        "command": command,
    }
    summary["verdict"] = verdict(summary)
    warned = [f"fold{f['data']['fold']['index']}" for f in folds if f.get("warnings")]
    summary["warnings"] = [] if not warned else [
        f"in {len(warned)} of {len(folds)} folds ({', '.join(warned[:12])}{', ...' if len(warned) > 12 else ''}) the "
        "teacher's best epoch on validation and its last epoch differed beyond noise on a small validation set, so "
        "which epoch was chosen depends on who the validation subjects are (each fold's report.md says by how much); "
        "teacher.select: last or swa does not read validation"]
    return summary


def fold_differences(summary: dict[str, Any]) -> Optional[tuple[str, list[float]]]:
    """(metric, method − student alone per fold, signed so that positive is better), or None without both rows."""
    roles = {r["role"]: r for r in summary["rows"]}
    if "method" not in roles or "student alone" not in roles:
        return None
    key, better = ("acc", 1) if summary["task"] == "classification" else ("rmse", -1)
    m, a = roles["method"]["per_fold_test"], roles["student alone"]["per_fold_test"]
    return key, [better * (x[key] - y[key]) for x, y in zip(m, a)]


def verdict(summary: dict[str, Any]) -> Optional[str]:
    """Paired by fold: the mean difference, its standard error over folds, and on how many folds the method won.
    A clear win needs the mean more than two standard errors above zero (about a 95% paired t-interval for ten or
    more folds; with fewer folds the bar is, if anything, too low: read the per-fold table)."""
    found = fold_differences(summary)
    if found is None:
        return None
    key, diffs = found
    name = next(r["model"] for r in summary["rows"] if r["role"] == "method")
    k = len(diffs)
    mean = sum(diffs) / k
    wins = sum(d > 0 for d in diffs)
    per = ", ".join(f"{d:+.3f}" for d in diffs[:24]) + (", ..." if k > 24 else "")
    if k == 1:
        text = (f"**{name}** was {'ahead of' if mean > 0 else 'behind' if mean < 0 else 'level with'} the student alone by "
                f"{abs(mean):.3f} test {key} on the one fold run: no spread over folds to judge it by.")
    else:
        se = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (k - 1)) / math.sqrt(k)
        stats = f"mean paired difference {mean:+.3f} test {key} (standard error {se:.3f} over {k} folds); won on {wins} of {k} folds ({per})"
        if mean > 2 * se and mean > 0:
            text = f"**{name}** beat the student alone: {stats}. A clear win: more than two standard errors above zero."
        elif mean > 0:
            text = f"**{name}** was ahead of the student alone but not clearly: {stats}; within two standard errors of zero."
        else:
            text = f"**{name}** did not beat the student alone: {stats}."
    warn = report.weak_teachers(summary)
    return text + (" " + warn if warn else "")


def _fold_table(summary: dict[str, Any]) -> list[str]:
    key = "acc" if summary["task"] == "classification" else "rmse"
    heads = [(i, f"{r['model']} ({r['role']})") for i, r in enumerate(summary["rows"]) if key in r["metrics"]]
    found = fold_differences(summary)
    lines = ["", f"## Per fold (test {key}, mean over seeds)", "",
             "| fold | test holds | train/val/test | " + " | ".join(h for _, h in heads) + (" | method − alone |" if found else " |"),
             "|---|---|---|" + "---|" * (len(heads) + bool(found))]
    for n, f in enumerate(summary["folds"]):
        s = f["sizes"]
        cells = []
        for i, _ in heads:
            row = next((r for r in f["rows"] if (r["model"], r["role"]) == (summary["rows"][i]["model"], summary["rows"][i]["role"])), None)
            cells.append("" if row is None or key not in row["metrics"] else f"{row['metrics'][key]['mean']:.3f}")
        diff = f" | {found[1][n]:+.3f}" if found else ""
        lines.append(f"| {f['index']} | {f['label']} | {s.get('train')}/{s.get('val')}/{s.get('test')} | " + " | ".join(cells) + diff + " |")
    return lines


_SCHEME_WORDS = {"loso": "leave-one-subject-out", "group_kfold": "subject-wise k-fold (whole subjects per fold)",
                 "stratified_kfold": "stratified k-fold (every class in each fold)"}


def markdown(summary: dict[str, Any]) -> str:
    ev, data = summary["eval"], summary["data"]
    header, rows = report.table_rows(summary)
    held = {"subject": "by subject", "stratified": "stratified by class", "random": "at random"}.get(data["split_by"], data["split_by"])
    n_runs = sum(r["metrics"][next(iter(r["metrics"]))]["n"] for r in summary["rows"][:1])
    lines = [
        f"# {summary['name']}", "",
        f"Cross-validation: **{_SCHEME_WORDS.get(ev['scheme'], ev['scheme'])}**, {len(summary['folds'])} of {ev['count']} "
        f"folds run, on **{data['name']}** ({summary['task']}). In each fold the test part is that fold; validation is held "
        f"out {held} from the rest. Test metrics of the **{summary['select']}** checkpoint "
        f"({'best epoch on validation' if summary['select'] == 'best' else 'last epoch'}), mean ± sample std over "
        f"folds x seeds {summary['seeds']} ({n_runs} runs per row). Teachers are trained per fold and cached.", "",
        *report._data_words(data),
        "| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|",
        *("| " + " | ".join(r) + " |" for r in rows),
    ]
    if summary.get("verdict"):
        lines += ["", summary["verdict"]]
    lines += [line for w in summary.get("warnings") or [] for line in ("", f"**Warning:** {w}")]
    from edgedistill.experiment.classical import markdown_lines as classical_lines  # lazy: it imports torch

    lines += classical_lines(summary)
    lines += _fold_table(summary)
    lines += report_detail.markdown_lines(summary)
    lines += ["", "Each fold is a run of its own (`fold<i>/report.md`, per-seed numbers and checkpoints); export a fold's "
              "student with `edgedistill export <run>/fold<i>`.", "", f"Command: `{summary['command']}`", ""]
    return "\n".join(lines)
