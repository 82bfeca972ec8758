"""Modality-level Gram relation distillation over channel views (Liu, arXiv 2112.11447).

The paper's student learns the teacher's modality-level Gram matrix: the relations among the embeddings of the
sensor streams (modalities). A wearable window holds its streams as channel groups (BasicMotions: accelerometer
= channels 0-2, gyroscope = 3-5), named here by ``method.params.views``.

How the per-modality embeddings are obtained is our choice (the paper's abstract does not say, and our 1-D nets
mix every channel in their first layer, so a feature map cannot be split by modality afterwards): each network is
run once more on every view, the window with the other views' channels set to zero (after per-channel
normalisation that is each absent channel's training mean), and the tapped embedding (``emb`` by default) of
view m is the m-th modality's row. The M view copies go through one forward pass (N x M rows). The student's
view pass trains it (gradients flow); its BatchNorm running statistics are restored afterwards, because windows
with zeroed streams are not what the network is evaluated on. The teacher's view pass is frozen and live.

The regime is offline KD: the recipe's terms read the usual tensors of the full window (CE, KD, ...), and every
``modality_gram`` term reads the stacked (N, M, d) view embeddings instead. docs/losses/modality_gram.md.
"""
from __future__ import annotations

import contextlib
from typing import Any, Iterator, Optional

import torch
from pydantic import Field
from torch import nn

from edgedistill.config import TermConfig
from edgedistill.data.dataset import Batch, DataInfo, TensorData
from edgedistill.errors import UserInputError
from edgedistill.losses.modality import modality_gram  # registers the loss with the method that feeds it
from edgedistill.methods.base import Step
from edgedistill.methods.term_taps import FEATURE_ROLES, feature_key, tapped_features
from edgedistill.methods.teachers import TeacherNet, Teachers
from edgedistill.methods.terms import BoundTerm, TermsMethod, TermsParams
from edgedistill.registry import METHODS

GRAM_LOSS = modality_gram.__name__  # the registered name ("modality_gram"); importing the loss registers it


class ModalityGramParams(TermsParams):
    views: list[list[int]] = Field(..., description="channel index groups, one per modality (sensor stream), at "
                                                    "least 2, disjoint: e.g. [[0, 1, 2], [3, 4, 5]]")


def view_masks(views: list[list[int]], channels: int, key: str = "method.params.views") -> torch.Tensor:
    """(M, C) 0/1 masks, one row per view; refuses empty, overlapping or out-of-range groups by name."""
    if len(views) < 2:
        raise UserInputError(f"{key}: a modality relation needs at least 2 views (channel groups), got {len(views)}")
    masks = torch.zeros(len(views), channels)
    for m, group in enumerate(views):
        if not group:
            raise UserInputError(f"{key}[{m}]: a view must name at least one channel index")
        for c in group:
            if not 0 <= c < channels:
                raise UserInputError(f"{key}[{m}]: channel index {c} is out of range; the input has {channels} "
                                     f"channels (0..{channels - 1})")
            if masks[:, c].any():
                raise UserInputError(f"{key}[{m}]: channel {c} is already in another view; views must be disjoint")
            masks[m, c] = 1.0
    return masks


@contextlib.contextmanager
def running_stats_kept(model: nn.Module) -> Iterator[None]:
    """Run ``model`` in training mode (batch statistics) without updating its BatchNorm running statistics. Not by
    restoring them afterwards: an in-place write would break the backward pass of the full-window forward, which
    saved them (autograd's version check)."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    for m in norms:
        m.track_running_stats = False  # in training mode: normalise by the batch, leave the buffers alone
    try:
        yield
    finally:
        for m in norms:
            m.track_running_stats = True


@METHODS.register("modality_gram")
class ModalityGram(TermsMethod):
    """Offline KD plus the teacher's modality-level Gram matrix over channel views (method.params.views)."""

    Params = ModalityGramParams

    def __init__(self, student: nn.Module, info: DataInfo, teacher: Optional[nn.Module | TeacherNet],
                 terms: Optional[list[TermConfig]] = None, teacher_view: str = "x",
                 train: Optional[TensorData] = None, **params: Any) -> None:
        if teacher is None:
            raise UserInputError("teacher: method 'modality_gram' needs a teacher (a 'teacher' section)")
        teachers = Teachers.single(teacher, info, self.method_name(), view=teacher_view)
        if teachers[-1].view != "x":
            raise UserInputError(f"teacher.view: method 'modality_gram' runs both networks on the same channel views, "
                                 f"so the teacher must read 'x', the student's input; it reads '{teachers[-1].view}'")
        if not terms or not any(t.loss == GRAM_LOSS for t in terms):
            raise UserInputError("method.terms: method 'modality_gram' needs a modality_gram term, e.g. "
                                 "{loss: modality_gram, weight: 1.0, normalize: cosine}; without it use method 'offline'")
        chosen = self.Params.parse(params, "method.params", what=f"method '{self.method_name()}'")
        super().__init__(student, info, teachers, terms, train, **params)
        self.masks = view_masks(chosen.views, int(info.input_shape[0]))
        self.views = chosen.views
        self.gram_terms = [t for t in self.terms if t.config is not None and t.config.loss == GRAM_LOSS]

    @classmethod
    def smoke_data_params(cls, params: dict[str, Any]) -> dict[str, Any]:
        """``--smoke`` replaces the data by a synthetic set of 3 channels: give it as many as the views name (the
        generator makes 3 to 9), so a smoke run checks the same views as the real run."""
        views = params.get("views")
        named = [c for g in views for c in g if isinstance(c, int)] if isinstance(views, list) and all(
            isinstance(g, list) for g in views) else []
        return {"channels": min(9, max(3, max(named, default=0) + 1))}

    def _view_tensors(self, x: torch.Tensor, terms: list[BoundTerm]) -> dict[str, torch.Tensor]:
        """Every tapped feature of both networks on the M channel views, stacked per sample as (N, M, ...)."""
        n, m = x.shape[0], self.masks.shape[0]
        masks = self.masks.to(x).reshape(m, 1, self.masks.shape[1], *([1] * (x.dim() - 2)))
        views = (x.unsqueeze(0) * masks).reshape(m * n, *x.shape[1:])  # view-major rows: m * n + i
        with running_stats_kept(self.networks["student"]), self._student_taps or contextlib.nullcontext():
            self.networks["student"](views)
        out = tapped_features("student", self._student_taps)
        with torch.no_grad():
            self.teachers.run({"x": views}, taps=self._teacher_taps)
        out.update(tapped_features("teacher", self._teacher_taps))
        wanted = {feature_key(FEATURE_ROLES[role][0], spec) for t in terms for role, spec in t.taps.items()}
        return {k: v.reshape(m, n, -1).transpose(0, 1) for k, v in out.items() if k in wanted}

    def training_step(self, batch: Batch, step: Step) -> dict[str, torch.Tensor]:
        tensors = self._tensors(batch, step)
        # The view pass costs M more forward passes of each network: only when a Gram term is on this epoch.
        on = [t for t in self.gram_terms if t.config.factor(step.epoch) != 0.0]
        views = self._view_tensors(batch["x"], on) if on else tensors
        gram = {id(t) for t in self.gram_terms}
        return {t.label: t(views if id(t) in gram else tensors, step) for t in self.terms}

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "views": self.views}
