"""How ``edgedistill tune`` spends a small budget and picks its winner without trusting one lucky validation score.

Three rules, each because a budget of a few trials on a small validation split is the common case on sensor data:

1. **Documented defaults first** (``portfolio``): after the recipe's own setting, every applicable regime is tried
   once at the values its docs page gives (the paper's or official code's), cheapest kind first (response-based
   losses before feature losses); TPE samples only after that. With ten trials, TPE over a dozen regimes and their
   knobs is close to random search; a regime's documented point is the best single guess there is, and it is the
   point ``benchmarks/quality.py`` measures each fixed method at.
2. **Ties go to the documented point, then to the validation loss** (``score``): on a split of 70 windows, accuracy
   moves in steps of 1.4 % and several trials tie (JapaneseVowels: seven at 100 %). Between equal scores, a point at
   a regime's documented values (or the recipe's own setting) wins over one TPE proposed: an exact tie is no
   evidence for a point fitted on this split, while the documented one carries the paper's (the spirit of the
   one-standard-error rule, Hastie et al., *Elements of Statistical Learning* 7.10, at zero width). Only then does
   the validation loss decide, the tie-break ``edgedistill run`` uses to pick a stage's best epoch
   (``metrics.selection_score``: negative NLL, or negative MAE for regression). NLL comes last because it compares
   calibration as much as accuracy, and distillation methods change calibration by design (a temperature, DIST's
   underconfident students), so between regimes it favours the sharper one, not the more accurate one.
3. **Finalists re-checked on a second seed** (``recheck``): when the recipe has two seeds or more, the best
   ``FINALISTS`` finished trials are run again on the recipe's second seed (validation only, still never test) and
   the winner is the best mean over the two seeds. The search keeps ``reserve(...)`` seconds of the budget for it
   (the finalists' measured time, at most a third of the budget);
   the re-runs are ordinary run directories (``<trial>/seed<s>``), so an interrupted tune resumes them. Their scores
   are kept in the study's user attributes (``RECHECK``): a finished trial's own attributes are read-only in Optuna.
"""
from __future__ import annotations

import time
from typing import Any, Callable, Optional

from edgedistill.experiment.tune_space import Space, defaults

FINALISTS = 3
#: At most this share of the budget is held back for the finalists' second seed (a quarter was measured too little:
#: one trial that took twice the median ate it, and JapaneseVowels' three-way tie at 100 % went unchecked).
RESERVE_SHARE = 1 / 3
RECHECK = "recheck"  # study user attribute: {trial number: {"seed": s, "value": v, "tiebreak": t}}


def portfolio(space: Space, first: Optional[dict[str, Any]]) -> list[dict[str, Any]]:
    """Points to enqueue: every candidate at its documented defaults (``tune_space.defaults``), in the table's order
    (response-based before feature losses), except the regime of the recipe's own point ``first``, already trial 0."""
    points = []
    for c in space.candidates:
        if first is not None and first.get("method") == c.name:
            continue
        point = {"method": c.name, **{f"{c.name}.{k}": v for k, v in defaults(c).items()}}
        if first is not None and "student" in first:
            point["student"] = first["student"]
        points.append(point)
    return points


def tiebreak(summary: dict[str, Any], metric: str) -> Optional[float]:
    """The run's validation tie-break, higher is better: -NLL (classification) or -MAE (regression)."""
    method = next((r for r in summary["rows"] if r["role"] == "method"), None)
    val = (method or {}).get("val_metrics", {})
    key = "nll" if metric == "acc" else "mae"
    return -val[key]["mean"] if key in val else None


def documented(trial: Any) -> bool:
    """Whether the trial is a point chosen without this split: a regime's documented values or the recipe's own."""
    return bool(trial.user_attrs.get("documented_defaults") or trial.user_attrs.get("recipe_setting"))


def score(value: float, tie: Optional[float], direction: str, is_documented: bool = False) -> tuple[float, bool, float]:
    """A trial's rank key, higher is better: the validation metric (to 12 decimals: a mean of two seeds' accuracies
    that are equal as fractions must tie), then a documented point before a proposed one, then the tie-break."""
    sign = 1 if direction == "maximize" else -1
    return (round(sign * value, 12), is_documented, tie if tie is not None else float("-inf"))


def _ranked(study: Any, direction: str) -> list[Any]:
    from optuna.trial import TrialState

    done = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if t.value is not None]
    return sorted(done, key=lambda t: (score(t.value, t.user_attrs.get("tiebreak"), direction, documented(t)), -t.number),
                  reverse=True)


def reserve(study: Any, direction: str, seeds: list[int], budget: float) -> float:
    """Seconds the search leaves for the re-check: the measured time of the current finalists, at most
    ``RESERVE_SHARE`` of the budget; 0 with a single seed."""
    if len(seeds) < 2:
        return 0.0
    took = sum(t.user_attrs.get("seconds") or 0.0 for t in _ranked(study, direction)[:FINALISTS])
    return min(took, RESERVE_SHARE * budget)


def rechecked(study: Any) -> dict[int, dict[str, Any]]:
    return {int(k): v for k, v in (study.user_attrs.get(RECHECK) or {}).items()}


def recheck(study: Any, direction: str, seed: int, deadline: float, run_trial: Callable[[Any, int], dict[str, Any]],
            log: Callable[[str], None]) -> None:
    """Run the finalists again on ``seed`` while the budget allows (each needs its own first run's time left).
    ``run_trial(trial, seed)`` runs it (in this process's own folder: on a shared study the trial may have run in
    another machine's) and returns ``{"value", "tiebreak"}``. A finalist that no longer fits is skipped, not the ones
    after it (a cheaper one may still fit). Processes sharing the study skip what another re-checked already."""
    for t in _ranked(study, direction)[:FINALISTS]:
        if t.number in rechecked(study):
            continue
        need = t.user_attrs.get("seconds") or 0.0
        if deadline - time.time() < need:
            log(f"re-check: no time left to run trial {t.number} on seed {seed} ({need:.0f} s needed)")
            continue
        got = run_trial(t, seed)
        # Read again before writing: another process on the study may have added its re-checks meanwhile.
        done = {**rechecked(study), t.number: {"seed": seed, **got}}
        study.set_user_attr(RECHECK, {str(k): v for k, v in done.items()})
        log(f"[trial {t.number}] re-check on seed {seed}: val {got['value']:.4f} (first seed: {t.value:.4f})")


def _finalists(study: Any, direction: str) -> tuple[list[Any], dict[int, dict[str, Any]]]:
    """The finished trials, ranked, and the finalists re-checked on a second seed with their re-checks: empty with
    fewer than two (then the single-seed ranking decides)."""
    ranked, done = _ranked(study, direction), rechecked(study)
    both = {t.number: done[t.number] for t in ranked[:FINALISTS] if t.number in done}
    return ranked, both if len(both) >= 2 else {}


def _mean(trial: Any, again: dict[str, Any]) -> float:
    return (trial.value + again["value"]) / 2


def winner(study: Any, direction: str) -> Optional[Any]:
    """The winner on validation only: among finalists re-checked on a second seed (two at least), the best mean over
    both seeds (then a documented point, then the mean tie-break); otherwise the best single-seed score (then a
    documented point, then the tie-break, then the earlier trial)."""
    ranked, both = _finalists(study, direction)
    if not ranked:
        return None
    if not both:
        return ranked[0]

    def mean_key(t: Any) -> tuple[float, bool, float]:
        again = both[t.number]
        ties = [x for x in (t.user_attrs.get("tiebreak"), again.get("tiebreak")) if x is not None]
        return score(_mean(t, again), sum(ties) / len(ties) if len(ties) == 2 else None, direction, documented(t))

    return max((t for t in ranked if t.number in both), key=lambda t: (mean_key(t), -t.number))


def tied(study: Any, direction: str, chosen: Any) -> list[int]:
    """The other finished trials validation could not separate from ``chosen`` (the winner): the same score (``score``'s
    first key, to 12 decimals) on the basis it won on (the two-seed mean among the re-checked finalists, else the
    first seed's)."""
    ranked, both = _finalists(study, direction)
    if chosen.number in both:
        basis = {t.number: score(_mean(t, both[t.number]), None, direction)[0] for t in ranked if t.number in both}
    else:
        basis = {t.number: score(t.value, None, direction)[0] for t in ranked}
    return sorted(n for n, v in basis.items() if n != chosen.number and v == basis[chosen.number])


__all__ = ["FINALISTS", "RESERVE_SHARE", "portfolio", "tiebreak", "documented", "score", "reserve", "recheck", "rechecked", "winner", "tied"]
