"""Whether the teacher's best-on-validation epoch rests on too little validation data: a sentence for report.md.

A trained teacher is by default the epoch that scored best on validation (``teacher.select: best``). With few
validation subjects that choice can follow who those subjects are rather than how good the teacher is: in a
12-subject study (issue 18) a fixed split left 2 for validation, the teacher was chosen at an early epoch that scored
far below its last epoch on test, and the KD verdict flipped with the choice of validation subjects.
``selection_warning`` says so in the report when the chosen epoch and the last one differ on validation by more
than sampling noise AND the validation set is small; it recommends a choice that does not read validation
(``teacher.select: last`` or ``swa``) or cross-validation (``eval.scheme: loso`` / ``group_kfold`` over subjects,
``stratified_kfold`` for data without subjects).
"""
from __future__ import annotations

import math
from typing import Any, Optional

#: Fewer validation subjects than this is "few": each subject then weighs at least a fifth of the validation score,
#: so one atypical person can decide which epoch wins. (The case above had 2.)
FEW_SUBJECTS = 5
#: Without subjects, fewer validation samples than this is "few": at 400 samples the 95% interval of an accuracy near
#: 0.5 is about +-0.049 (1.96 * sqrt(0.25 / 400)), so below it two epochs' scores are hard to tell apart.
FEW_SAMPLES = 400
#: A gap counts as real beyond this many standard errors (about a 95% two-sided interval).
NOISE_SE = 2.0

#: The recipe keys whose choice of epoch does not read validation: nothing to warn about there.
_NOT_ON_VALIDATION = ("last", "swa")


def noise_threshold(task: str, best: float, last: float, n_val: int) -> float:
    """The smallest validation gap between two epochs that ``selection_warning`` calls more than noise.

    Classification: ``NOISE_SE`` binomial standard errors of an accuracy on ``n_val`` samples, sqrt(p (1 - p) / n)
    at p, the mean of the two accuracies, and never below one sample (1 / n). Regression: ``NOISE_SE`` standard
    errors of an RMSE, about RMSE / sqrt(2 n) (the standard error of a standard deviation under normal errors),
    at the mean of the two RMSEs. Both treat samples as independent; windows of one subject are not, so the real
    noise is larger and this threshold errs towards warning, which is the side to err on when subjects are few."""
    mid = (best + last) / 2
    if task == "classification":
        return max(NOISE_SE * math.sqrt(mid * (1 - mid) / n_val), 1 / n_val)
    return NOISE_SE * mid / math.sqrt(2 * n_val)


def selection_warning(teacher_summary: dict[str, Any], n_val_subjects: Optional[int], n_val: int, task: str,
                      select: str) -> Optional[str]:
    """A plain sentence for report.md, or None.

    ``teacher_summary`` is the teacher stage's summary (``val`` -> ``best``/``last`` metrics, ``best_epoch``,
    ``epochs``); ``n_val_subjects``: subjects in the validation split, None (or 0) when the data has none; ``n_val``:
    validation samples; ``task``: "classification" (accuracy) or "regression" (RMSE); ``select``: the recipe's
    ``teacher.select``. Silent for a given teacher (it has no epochs), for ``select`` last or swa (neither reads
    validation), when the gap is within ``noise_threshold``, and when validation is not small (``FEW_SUBJECTS``
    subjects or more; without subjects, ``FEW_SAMPLES`` samples or more)."""
    if "given" in teacher_summary or select in _NOT_ON_VALIDATION or n_val <= 0:
        return None
    val = teacher_summary.get("val", {})
    key = "acc" if task == "classification" else "rmse"
    try:
        best, last = float(val["best"][key]), float(val["last"][key])
    except (KeyError, TypeError):
        return None
    if not n_val_subjects:  # 0: rows without a known subject, judged like data without subjects
        n_val_subjects = None
    small = n_val_subjects < FEW_SUBJECTS if n_val_subjects is not None else n_val < FEW_SAMPLES
    threshold = noise_threshold(task, best, last, n_val)
    if not small or abs(best - last) <= threshold:
        return None
    name = "accuracy" if key == "acc" else "RMSE"
    if n_val_subjects is not None:
        few = f"only {n_val_subjects} subject{'s' if n_val_subjects != 1 else ''}"
        who, schemes = "who is in validation", "eval.scheme: loso or group_kfold to cross-validate over subjects"
    else:
        few = f"only {n_val} samples and no subjects"
        who, schemes = "which samples are in validation", "eval.scheme: stratified_kfold to cross-validate"
    epoch, epochs = teacher_summary.get("best_epoch"), teacher_summary.get("epochs")
    at = f"epoch {epoch} of {epochs}" if epoch is not None and epochs is not None else "its best epoch"
    return (f"The teacher was chosen on validation at {at} (validation {name} {best:.3f}), but its last epoch scores "
            f"{last:.3f}: a gap of {abs(best - last):.3f}, beyond sampling noise (+-{threshold:.3f} on {n_val} "
            f"samples), on a validation set of {few}, so which epoch wins may depend on {who} rather than on the "
            f"teacher. Consider teacher.select: last or swa (neither reads validation), or {schemes}.")
