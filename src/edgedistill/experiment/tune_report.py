"""The report of ``edgedistill tune``: every trial (regime, hyperparameters, epochs it used, where it was pruned, its
validation score), the hyperparameter importances (Optuna's evaluator), and the winner: chosen on validation,
retrained over the recipe's seeds and reported on test with ``edgedistill run``'s paired verdict.
Written as ``report.md`` and ``trials.csv`` (atomically) after every trial and at the end."""
from __future__ import annotations

import csv
import io
import warnings
from pathlib import Path
from typing import Any, Optional

from edgedistill.experiment.sweep_report import _cell, _fmt
from edgedistill.experiment.tune_select import FINALISTS, rechecked, tied, winner
from edgedistill.io import write_text

STATES = {"COMPLETE": "complete", "PRUNED": "pruned", "FAIL": "failed", "RUNNING": "running", "WAITING": "waiting"}


def rows(study: Any, epochs: int) -> list[dict[str, Any]]:
    out, again = [], rechecked(study)
    for t in study.get_trials(deepcopy=False):
        a = t.user_attrs
        if "candidate" not in a:
            continue
        state = STATES.get(t.state.name, t.state.name.lower())
        if state == "failed" and str(a.get("error", "")).startswith("stopped"):
            state = "stopped"
        last = t.intermediate_values[max(t.intermediate_values)] if t.intermediate_values else None
        out.append({"trial": t.number, "state": state, "method": a["candidate"], "params": a.get("values", {}),
                    "epochs": a.get("epochs_run", max(t.intermediate_values, default=0)), "of": epochs,
                    "pruned_at": a.get("pruned_at"), "val": t.value if t.value is not None else last,
                    "seconds": a.get("seconds"), "run_dir": a.get("run_dir"), "error": (a.get("error") or "").splitlines()[:1],
                    "recheck": again.get(t.number)})
        note = "the recipe's own setting" if a.get("recipe_setting") else "documented defaults" if a.get("documented_defaults") else ""
        out[-1]["error"] = out[-1]["error"][0] if out[-1]["error"] else note
    return out


def importances(study: Any) -> dict[str, Any]:
    """Optuna's hyperparameter importances over the finished trials: over the parameters every trial has (the
    regime, the student's shape), and within each regime over its own knobs (a sub-study of its trials). Each needs
    at least two finished trials; where it cannot be computed, the reason is kept instead."""
    import optuna
    from optuna.trial import TrialState

    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    out: dict[str, Any] = {}

    def compute(key: str, trials: list[Any]) -> None:
        if len(trials) < 2:
            out[key] = f"not computed: {len(trials)} finished trial(s), at least 2 needed"
            return
        shared = sorted(set.intersection(*(set(t.params) for t in trials)))  # a knob of one regime is absent elsewhere
        if len(shared) < 2:
            out[key] = f"not computed: only {', '.join(f'`{p}`' for p in shared) or 'no parameter'} is common to these trials"
            return
        sub = optuna.create_study(direction=study.direction)
        sub.add_trials(trials)
        try:
            with warnings.catch_warnings():  # "importances will be equal" when all trials tie: the numbers say so
                warnings.simplefilter("ignore")
                got = optuna.importance.get_param_importances(sub, params=shared)
                out[key] = {k: round(float(v), 4) for k, v in got.items()}
        except (RuntimeError, ValueError) as exc:  # e.g. every trial has the same value, or no parameter varies
            out[key] = f"not computed: {exc}"

    compute("all trials", done)
    for name in sorted({t.user_attrs.get("candidate") for t in done if t.user_attrs.get("candidate")}):
        compute(name, [t for t in done if t.user_attrs.get("candidate") == name])
    return out


def _num(x: Any) -> str:
    return "" if x is None else f"{x:.4f}" if isinstance(x, float) else str(x)


def _params(p: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in p.items())


def csv_text(table: list[dict[str, Any]], metric: str) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["trial", "state", "method", "params", "epochs_run", "epochs", "pruned_at", f"val_{metric}", "recheck_seed",
                f"recheck_val_{metric}", "seconds", "run_dir", "error"])
    for r in table:
        again = r.get("recheck") or {}
        w.writerow([r["trial"], r["state"], r["method"], _params(r["params"]), r["epochs"], r["of"], _num(r["pruned_at"]),
                    _num(r["val"]), _num(again.get("seed")), _num(again.get("value")), _num(r["seconds"]), r["run_dir"] or "", r["error"]])
    return buf.getvalue()


def markdown(info: dict[str, Any], table: list[dict[str, Any]], imp: dict[str, Any], best: Optional[dict[str, Any]],
             final: Optional[dict[str, Any]], searched_s: Optional[float]) -> str:
    metric = info["metric"]
    better = "higher" if info["direction"] == "maximize" else "lower"
    count = {s: sum(r["state"] == s for r in table) for s in ("complete", "pruned", "stopped", "failed", "running")}
    lines = [f"# {info['name']}: tuned distillation", "",
             f"Command: `{info['command']}`{' (smoke mode: tiny synthetic data)' if info.get('smoke') else ''}.", "",
             f"Each trial trains the distilled student on seed {info['seed']} for up to {info['epochs']} epochs and is scored on "
             f"**validation {metric}** ({better} is better; the best epoch's); a successive-halving pruner stops trials that "
             "trail the others at the same epoch. The recipe's own setting runs first, then every regime at its documented "
             "defaults, then TPE's proposals. The winner is chosen on validation only (ties go to a documented point over a "
             f"proposed one, then to the validation {'NLL' if metric == 'acc' else 'MAE'}; with two seeds or more, the best {FINALISTS} finished trials are run "
             "again on the second seed and the best mean wins), then retrained over every seed of the recipe and reported "
             "on test below. "
             + ", ".join(f"{n} {s}" for s, n in count.items() if n) + " trial(s)"
             + (f"; search time this invocation {searched_s / 60:.1f} min" if searched_s is not None else "") + ".", ""]
    if info.get("excluded"):
        lines += ["Not searched: " + "; ".join(f"`{k}` ({v})" for k, v in info["excluded"].items()) + ".", ""]
    if info.get("student_note"):
        lines += [f"Student shapes: {info['student_note']}.", ""]
    lines += ["## Winner", ""]
    if best is None:
        lines += ["No trial finished: no winner yet (resume with the same `--out` and a budget).", ""]
    else:
        lines += [f"Trial {best['trial']}: `{best['method']}` {_params(best['params'])}; validation {metric} "
                  f"{best['val']:.4f} on seed {info['seed']}"
                  + (f", {best['recheck']['value']:.4f} on seed {best['recheck']['seed']}" if best.get("recheck") else "")
                  + ". Recipe: `best_recipe.yaml` (`edgedistill run best_recipe.yaml`).", ""]
        if best.get("tied_with"):
            tie = best["tied_with"]
            named = ", ".join(map(str, tie[:10])) + (f" and {len(tie) - 10} more" if len(tie) > 10 else "")
            lines += [f"Validation did not separate it from trial(s) {named} (the same "
                      f"validation {metric}): among equal scores a documented point goes first, then the lower validation "
                      f"{'NLL' if metric == 'acc' else 'MAE'}. A larger validation split (`data.split.val`) would tell them "
                      "apart; the retrained paired verdict below is the number to trust.", ""]
        if final is not None:
            alone = "" if final["alone"] is None else (f"; student alone {_fmt(final['alone'])}; paired difference "
                                                       f"{final['diff']:+.3f}, better on {final['wins']} of {final['n']} seeds")
            teacher = "" if final["teacher"] is None else f"; teacher {final['teacher']:.3f}"
            lines += [f"Retrained over seeds {final['seeds']}: test {metric} **{_fmt(final['method'])}** (validation "
                      f"{_fmt(final['val']) if final.get('val') else '?'}){alone}{teacher}. Run directory: `{final['run_dir']}`.", ""]
    lines += ["## Hyperparameter importance", "", "Optuna's `get_param_importances` over finished trials (all trials: the "
              "parameters every trial has; per regime: its own knobs).", ""]
    for key, v in imp.items():
        lines.append(f"- {key}: " + (", ".join(f"`{k}` {x:.3f}" for k, x in v.items()) if isinstance(v, dict) else v))
    lines += ["", "## Trials", ""]
    header = ["trial", "state", "method", "hyperparameters", "epochs used", "pruned at", f"val {metric}", "re-check (seed)",
              "seconds", "note"]
    lines += ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for r in table:
        cells = [str(r["trial"]), r["state"], r["method"], _params(r["params"]), f"{r['epochs']}/{r['of']}",
                 "" if r["pruned_at"] is None else f"epoch {r['pruned_at']}", _num(r["val"]),
                 "" if not r.get("recheck") else f"{r['recheck']['value']:.4f} ({r['recheck']['seed']})",
                 "" if r["seconds"] is None else f"{r['seconds']:.0f}", r["error"]]
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    lines += ["", "Honest limits: the search sees one seed (its finalists two), so a small validation split can still "
              "favour a lucky point; the retrained winner's paired verdict over all seeds is the number to trust.", ""]
    return "\n".join(lines)


def write(tune_dir: Path, info: dict[str, Any], study: Any, space: Any, *, final: Optional[dict[str, Any]] = None,
          searched_s: Optional[float] = None) -> dict[str, Any]:
    table = rows(study, info["epochs"])
    best_trial = winner(study, info["direction"])
    best = next((r for r in table if best_trial is not None and r["trial"] == best_trial.number), None)
    if best is not None:
        best = {**best, "tied_with": tied(study, info["direction"], best_trial)}
    imp = importances(study)
    files = {"markdown": str(tune_dir / "report.md"), "csv": str(tune_dir / "trials.csv")}
    write_text(tune_dir / "trials.csv", csv_text(table, info["metric"]))
    write_text(tune_dir / "report.md", markdown(info, table, imp, best, final, searched_s))
    if best is not None:
        files["recipe"] = str(tune_dir / "best_recipe.yaml")
    return {"rows": table, "importances": imp, "winner": best, "files": files}


def write_best_recipe(path: Path, recipe: Any, name: str, trial: Any, command: str, metric: str, seed: int) -> None:
    """The winner as a runnable recipe: the original recipe with the chosen method (and student shape), resolved."""
    import yaml

    from edgedistill.config import recipe_to_dict

    resolved = recipe_to_dict(recipe)
    resolved["name"] = f"{name}-tuned"
    header = (f"# Chosen by `{command}` (trial {trial.number}: {trial.user_attrs['candidate']}, validation {metric} "
              f"{trial.value:.4f} on seed {seed}); run it with: edgedistill run best_recipe.yaml\n")
    write_text(path, header + yaml.safe_dump(resolved, sort_keys=False))
