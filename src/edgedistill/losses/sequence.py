"""Relational losses over a mini-batch: similarity keeping (SK-KD, EEG) and time-aware KD (TaKD, GRF regression).

Neither paper's formula is public: both
losses here are OUR designs from the spec's templates, not the papers' verified methods (see the
docstrings and docs/losses/similarity_keeping.md, docs/losses/functional.md).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from edgedistill.errors import UserInputError
from edgedistill.losses._checks import min_dims, same_batch, same_shape
from edgedistill.losses.feature import similarity_preserving, unit_rows
from edgedistill.registry import LOSSES

_SK_FORMS = ("cosine", "sp")
_REGRESSIONS = ("mse", "l1")


def cosine_matrix(feat: torch.Tensor) -> torch.Tensor:
    """B x B cosine-similarity matrix n(F) n(F)^T of features flattened per sample."""
    unit = unit_rows(feat.flatten(1))
    return unit @ unit.T


def _check_batch(loss: str, student_feat: torch.Tensor, teacher_feat: torch.Tensor) -> None:
    min_dims(loss, "student_feat", student_feat, 2, "(N, ...) features")
    min_dims(loss, "teacher_feat", teacher_feat, 2, "(N, ...) features")
    same_batch(loss, "student_feat", student_feat, "teacher_feat", teacher_feat)


@LOSSES.register("similarity_keeping")
def similarity_keeping(student_feat: torch.Tensor, teacher_feat: torch.Tensor, form: str = "cosine") -> torch.Tensor:
    """Similarity keeping (SK-KD, Huang et al. 2024): match the batch's inter-sample cosine similarities.

    form="cosine" (our default; the NYCU lab's own "similarity-keeping" code, MUSE_EEG):
    S = n(F) n(F)^T per network, L = 1 - mean_i cos(S_S[i, :], S_T[i, :]), in [0, 2].
    form="sp": the SP template ||n_row(F_S F_S^T) - n_row(F_T F_T^T)||_F^2 / B^2.
    The SK-KD paper's exact formula is unknown: this is our choice, not a verified paper formula.
    Features are flattened per sample, so widths and layouts may differ; reduction: mean over the B rows.
    """
    _check_batch("similarity_keeping", student_feat, teacher_feat)
    if form not in _SK_FORMS:
        raise UserInputError(f"similarity_keeping: form must be one of {', '.join(_SK_FORMS)}, got {form!r}")
    if form == "sp":
        return similarity_preserving(student_feat, teacher_feat)
    ss, st = cosine_matrix(student_feat), cosine_matrix(teacher_feat)
    return 1.0 - (unit_rows(ss) * unit_rows(st)).sum(dim=1).mean()


def _as_sequences(name: str, seq: torch.Tensor) -> torch.Tensor:
    """(B, T) -> (B, 1, T); (B, C, T) kept. Time is the last axis, as for every 1-D tensor in the toolkit."""
    if seq.dim() == 2:
        return seq.unsqueeze(1)
    if seq.dim() != 3:
        raise UserInputError(f"time_aware_kd: {name} must be (B, T) or (B, C, T), got shape {tuple(seq.shape)}")
    return seq


def _autocorrelation(seq: torch.Tensor, max_lag: int) -> torch.Tensor:
    """Normalised autocorrelation r_k = sum_t x~_t x~_{t+k} / sum_t x~_t^2, k = 1..max_lag, per sample and channel."""
    centred = seq - seq.mean(dim=-1, keepdim=True)
    energy = centred.pow(2).sum(dim=-1).clamp_min(1e-12)  # a constant channel has no shape to match: r = 0
    lags = [(centred[..., :-k] * centred[..., k:]).sum(dim=-1) / energy for k in range(1, max_lag + 1)]
    return torch.stack(lags, dim=-1)


def _self_similarity(seq: torch.Tensor) -> torch.Tensor:
    """Per-sample T x T temporal self-similarity n_row(H H^T), H = the (T, C) sequence of one sample."""
    h = seq.transpose(1, 2)
    return unit_rows(h @ h.transpose(1, 2))


_TERMS = ("task", "teacher", "similarity", "difference", "autocorr", "self_similarity")


def time_aware_terms(
    student_seq: torch.Tensor,
    teacher_seq: torch.Tensor,
    target_seq: torch.Tensor,
    max_lag: int = 8,
    regression: str = "mse",
    names: tuple[str, ...] = _TERMS,
) -> dict[str, torch.Tensor]:
    """The unweighted terms of time_aware_kd by name (task, teacher, similarity, difference, autocorr, ...)."""
    s, t = _as_sequences("student_seq", student_seq), _as_sequences("teacher_seq", teacher_seq)
    y = _as_sequences("target_seq", target_seq).to(s.dtype)
    same_shape("time_aware_kd", "student_seq", s, "teacher_seq", t)
    same_shape("time_aware_kd", "student_seq", s, "target_seq", y)
    if regression not in _REGRESSIONS:
        raise UserInputError(f"time_aware_kd: regression must be one of {', '.join(_REGRESSIONS)}, got {regression!r}")
    if isinstance(max_lag, bool) or not isinstance(max_lag, int) or max_lag < 1:
        raise UserInputError(f"time_aware_kd: max_lag must be an integer >= 1, got {max_lag!r}")
    if s.shape[-1] < 2:
        raise UserInputError(f"time_aware_kd: sequences need at least 2 time steps, got {s.shape[-1]}")
    unknown = [n for n in names if n not in _TERMS]
    if unknown:
        raise UserInputError(f"time_aware_kd: unknown term(s) {', '.join(unknown)}; expected some of {', '.join(_TERMS)}")
    reg = F.mse_loss if regression == "mse" else F.l1_loss
    lag = min(max_lag, s.shape[-1] - 1)
    # Lazily, so a dropped term (the T x T self-similarity above all) costs nothing.
    compute = {
        "task": lambda: reg(s, y),
        "teacher": lambda: reg(s, t),
        "similarity": lambda: similarity_preserving(s, t),
        "difference": lambda: reg(s.diff(dim=-1), t.diff(dim=-1)),
        "autocorr": lambda: F.mse_loss(_autocorrelation(s, lag), _autocorrelation(t, lag)),
        "self_similarity": lambda: F.mse_loss(_self_similarity(s), _self_similarity(t)),
    }
    return {name: compute[name]() for name in names}


def time_aware_kd(
    student_seq: torch.Tensor,
    teacher_seq: torch.Tensor,
    target_seq: torch.Tensor,
    task_weight: float = 1.0,
    teacher_weight: float = 1.0,
    similarity_weight: float = 1.0,
    difference_weight: float = 1.0,
    autocorr_weight: float = 1.0,
    self_similarity_weight: float = 0.0,
    max_lag: int = 8,
    regression: str = "mse",
) -> torch.Tensor:
    """Time-aware KD for sequence regression (TaKD, Jeon et al. 2025): OUR design from the spec's template.

    Weighted sum of: task = reg(S, Y); teacher = reg(S, T); similarity = SP batch-Gram distance of the
    sequences flattened per sample; difference = reg(diff_t S, diff_t T) (first differences); autocorr =
    MSE of the normalised autocorrelations at lags 1..max_lag; self_similarity = MSE of the per-sample
    T x T maps n_row(H H^T). reg is "mse" or "l1" (element means). Sequences are (B, T) or (B, C, T).
    The paper's formulas are unknown: terms and default weights are our choice; a weight of 0 drops a term.
    """
    weights = {
        "task": task_weight, "teacher": teacher_weight, "similarity": similarity_weight,
        "difference": difference_weight, "autocorr": autocorr_weight, "self_similarity": self_similarity_weight,
    }
    for name, value in weights.items():
        if not value >= 0:
            raise UserInputError(f"time_aware_kd: {name}_weight must be >= 0, got {value}")
    used = tuple(name for name in _TERMS if weights[name] > 0)
    terms = time_aware_terms(student_seq, teacher_seq, target_seq, max_lag=max_lag, regression=regression, names=used)
    return sum((weights[name] * value for name, value in terms.items()), student_seq.new_zeros(()))


def as_output_sequences(name: str, out: torch.Tensor, channels: int) -> torch.Tensor:
    """(N, channels * T) regression outputs -> (N, channels, T) sequences (a model's outputs are one flat vector:
    a 2-channel GRF curve of T points is 2T outputs, channel by channel); (N, C, T) is kept if C == channels."""
    if isinstance(channels, bool) or not isinstance(channels, int) or channels < 1:
        raise UserInputError(f"time_aware_kd: channels must be an integer >= 1, got {channels!r}")
    if out.dim() == 3 and out.shape[1] == channels:
        return out
    flat = out.reshape(out.shape[0], -1)
    if flat.shape[1] % channels or flat.shape[1] // channels < 2:
        raise UserInputError(
            f"time_aware_kd: {name} has {flat.shape[1]} outputs per sample, which is not {channels} channel(s) x at "
            f"least 2 time steps; the term is for sequence targets (a GRF curve), set channels to the number of "
            f"curves the outputs hold")
    return flat.reshape(out.shape[0], channels, -1)


# smoke_data: a --smoke run replaces the data by a tiny synthetic set; the plain one has one target per window, which
# is no curve, so a recipe with this term smokes on a tiny synthetic_grf set (2 curves) instead.
SMOKE_DATA = {"name": "synthetic_grf", "params": {"n_subjects": 5, "steps_per_subject": 6, "sensors": 4, "length": 16}}


@LOSSES.register("time_aware_kd", task="regression", smoke_data=SMOKE_DATA)
def time_aware_regression(
    student_out: torch.Tensor,
    teacher_out: torch.Tensor,
    target: torch.Tensor,
    channels: int = 1,
    task_weight: float = 1.0,
    teacher_weight: float = 1.0,
    similarity_weight: float = 1.0,
    difference_weight: float = 1.0,
    autocorr_weight: float = 1.0,
    self_similarity_weight: float = 0.0,
    max_lag: int = 8,
    regression: str = "mse",
) -> torch.Tensor:
    """time_aware_kd as a recipe term for sequence regression: the outputs, the teacher's outputs and the targets,
    each (N, channels * T), are read as ``channels`` curves of T points (GRF: channels 2) and passed to
    ``time_aware_kd`` with the same weights. The task term is to the labels: the term replaces mse + mse_to_teacher
    (task and teacher weights) and adds the temporal terms. Our design; the paper's formulas are unknown."""
    s = as_output_sequences("student_out", student_out, channels)
    t = as_output_sequences("teacher_out", teacher_out.detach(), channels)
    y = as_output_sequences("target", target.reshape(student_out.shape) if target.numel() == student_out.numel()
                            else target, channels)
    return time_aware_kd(s, t, y, task_weight, teacher_weight, similarity_weight, difference_weight, autocorr_weight,
                         self_similarity_weight, max_lag, regression)


__all__ = [
    "similarity_keeping", "time_aware_kd", "time_aware_regression", "time_aware_terms", "cosine_matrix",
    "as_output_sequences",
]
