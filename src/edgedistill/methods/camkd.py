"""CA-MKD: confidence-aware multi-teacher distillation (Zhang, Chen, Wang, ICASSP 2022, arXiv 2201.00007).

Checked against the official code (Rorozhl/CA-MKD,
``distiller_zoo/CAMKD.py``, ``helper/loops.py``, ``models/util.py``). We follow the code.

    w_k,i      = (1 - softmax_k CE(z_k,i, y_i)) / (K - 1)                 teacher k's weight on sample i
    L_KD       = 1/(B K) sum_k sum_i w_k,i T^2 KL(softmax(z_k,i/T) || softmax(z_s,i/T))
    H_k        = Embed_k(resize(F_s, length of F_k))                        Conv1x1 + BN + ReLU, trainable
    zhat_k     = head_k(pool_k(H_k))                                        teacher k's own (frozen) pool and head
    v_k,i      = (1 - softmax_k CE(zhat_k,i, y_i)) / (K - 1)               NOT detached (as in the code)
    L_inter    = 1/(B K) sum_k sum_i v_k,i mean((H_k,i - F_k,i)^2)
    L          = gamma CE(z_s, y) + alpha L_KD + beta L_inter               beta term off in the first epoch

The weights are recipe terms naming the regime's own losses ``ce``, ``kd`` and ``inter`` (default: gamma = 1,
alpha = 1, beta = 50 with ``start_epoch: 1``, the code's skipped first epoch); a schedule on any of them is a
recipe line.

F_s is the student's ``feat`` tap, F_k teacher k's ``feat`` tap (the map its ``pool`` and ``head`` read).
resize: adaptive average pooling when the student map is longer, linear (bilinear for 2-D) interpolation when
shorter. Defaults gamma = 1, alpha = 1, beta = 50, T = 4 (README). ``reduction: code`` divides by B K as the code
does (the default); ``reduction: sum`` is the batch mean of the sum over teachers (K times larger).
Deviation: the code resizes the student map cumulatively across teachers of different sizes (a quirk); we
resize the original map for every teacher.
"""
from __future__ import annotations

from typing import Any, Literal, Optional, Sequence

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from edgedistill.config import TermConfig
from edgedistill.data.dataset import Batch, DataInfo, TensorData
from edgedistill.errors import UserInputError
from edgedistill.losses.multiteacher import confidence_weights
from edgedistill.losses.response import ce, kl_rows
from edgedistill.methods.base import Step
from edgedistill.methods.teachers import TeacherNet, Teachers, evaluating
from edgedistill.methods.terms import OwnTermsMethod, weigh_own_terms
from edgedistill.models.taps import FeatureTaps
from edgedistill.params import Params
from edgedistill.registry import METHODS


def _reduce(per_teacher_sample: torch.Tensor, reduction: str) -> torch.Tensor:
    """(K, B) -> scalar: the code's sum / (B K), or the batch mean of the sum over teachers."""
    return per_teacher_sample.mean() if reduction == "code" else per_teacher_sample.sum(0).mean()


def camkd_kd(student_logits: torch.Tensor, teacher_logits: Sequence[torch.Tensor], target: torch.Tensor,
             temperature: float = 4.0, reduction: str = "code") -> tuple[torch.Tensor, torch.Tensor]:
    """CA-MKD logit term and its (K, B) confidence weights (teachers' CE with the label, softmax over teachers)."""
    w = confidence_weights(teacher_logits, target)
    kl = torch.stack([temperature**2 * kl_rows(z, student_logits, temperature) for z in teacher_logits])
    return _reduce(w * kl, reduction), w


def camkd_inter(projected: Sequence[torch.Tensor], teacher_maps: Sequence[torch.Tensor], head_logits: Sequence[torch.Tensor],
                target: torch.Tensor, reduction: str = "code", detach_weights: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """CA-MKD intermediate term: per-sample MSE of each projected student map to teacher k's map, weighted by the
    confidence of teacher k's head on the projected map (``head_logits``). Returns the loss and the (K, B) weights."""
    w = confidence_weights(head_logits, target)
    if detach_weights:
        w = w.detach()
    mse = torch.stack([(h - f).pow(2).flatten(1).mean(1) for h, f in zip(projected, teacher_maps)])
    return _reduce(w * mse, reduction), w


def resize(feat: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Student map (B, C, *spatial) to the teacher's spatial size: average pooling down, interpolation up."""
    size = tuple(size)
    if tuple(feat.shape[2:]) == size:
        return feat
    if all(s >= t for s, t in zip(feat.shape[2:], size)):
        return (F.adaptive_avg_pool1d if feat.dim() == 3 else F.adaptive_avg_pool2d)(feat, size)
    return F.interpolate(feat, size=size, mode="linear" if feat.dim() == 3 else "bilinear", align_corners=False)


def embed(c_in: int, c_out: int, dims: int) -> nn.Module:
    """The code's Embed: 1x1 conv (with bias) + BatchNorm + ReLU, 1-D or 2-D."""
    conv, bn = (nn.Conv1d, nn.BatchNorm1d) if dims == 1 else (nn.Conv2d, nn.BatchNorm2d)
    return nn.Sequential(conv(c_in, c_out, 1), bn(c_out), nn.ReLU())


def _tap(model: nn.Module, spec: str, key: str, detach: bool = False) -> FeatureTaps:
    try:
        return FeatureTaps(model, {"feat": getattr(model, "default_taps", {}).get(spec, spec)}, detach=detach)
    except UserInputError as exc:
        raise UserInputError(f"{key}: {exc}") from None


#: The regime's own losses, weighted by the recipe's terms.
OWN_TERMS = {"ce": "label cross-entropy", "kd": "confidence-weighted logit KD",
             "inter": "confidence-weighted intermediate-feature MSE"}
#: The official README command's weights; the code skips the feature term in the first epoch.
DEFAULT_TERMS = (TermConfig(loss="ce", weight=1.0), TermConfig(loss="kd", weight=1.0),
                 TermConfig(loss="inter", weight=50.0, start_epoch=1))


class CAMKDParams(Params):
    temperature: float = Field(4.0, gt=0.0, description="softmax temperature T of the logit term")
    reduction: Literal["code", "sum"] = Field("code", description="code: sum / (B K) as the official code; sum: batch "
                                                                  "mean of the sum over teachers (K times larger)")
    detach_inter_weights: bool = Field(False, description="detach the intermediate term's confidence weights (the "
                                                          "code does not)")
    student_tap: str = Field("feat", description="the student's feature map: a name in its default_taps or a module "
                                                 "path")
    cache_teacher: bool = Field(True, description="look the teachers' logits and feature maps up by training row "
                                                 "instead of running them each step")


@METHODS.register("camkd")
class CAMKD(OwnTermsMethod):
    """Confidence-aware multi-teacher KD: label-aware per-sample teacher weights on logits and on features."""

    Params = CAMKDParams
    own_terms = OWN_TERMS
    default_terms = DEFAULT_TERMS
    task = "classification"

    def __init__(self, student: nn.Module, info: DataInfo, teachers: Sequence[TeacherNet],
                 terms: Sequence[TermConfig] = (), **params: Any) -> None:
        super().__init__(student, info, terms, **params)
        self.teachers = Teachers(teachers, info, self.method_name(), minimum=2)
        self.teacher = self.teachers[-1].model
        self._student_taps = _tap(student, self.params.student_tap, "method.params.student_tap")
        self._teacher_taps = []
        for i, t in enumerate(self.teachers):
            for part in ("pool", "head"):
                if not isinstance(getattr(t.model, part, None), nn.Module):
                    raise UserInputError(
                        f"teachers[{i}]: method 'camkd' feeds the student's projected map through each teacher's own "
                        f"'pool' and 'head'; teacher '{t.name}' ({type(t.model).__name__}) has no '{part}' module")
            if "feat" not in getattr(t.model, "default_taps", {}):
                raise UserInputError(f"teachers[{i}]: method 'camkd' reads each teacher's 'feat' tap (default_taps['feat']); "
                                     f"teacher '{t.name}' ({type(t.model).__name__}) has none")
            self._teacher_taps.append(_tap(t.model, "feat", f"teachers[{i}]", detach=True))
        self._build_embeds()

    def _build_embeds(self) -> None:
        """One Embed per teacher, sized by a forward pass on zeros; they train and checkpoint with the student."""
        student = self.networks["student"]
        with evaluating(student), torch.no_grad(), self._student_taps:
            student(torch.zeros(2, *self.info.views["x"]))
        fs = self._student_taps.outputs["feat"]
        for k, (t, taps) in enumerate(zip(self.teachers, self._teacher_taps)):
            with torch.no_grad(), taps:
                out = t.model(torch.zeros(2, *self.info.views[t.view]))
            ft = taps.outputs["feat"]
            if not torch.is_tensor(ft) or ft.dim() != fs.dim() or ft.dim() < 3:
                raise UserInputError(f"teachers[{k}]: method 'camkd' needs (N, C, *spatial) feature maps of the same "
                                     f"rank in teacher and student; got {tuple(ft.shape)} and {tuple(fs.shape)}")
            with torch.no_grad():
                again = t.model.head(t.model.pool(ft))
            if again.shape != out.shape or not torch.allclose(again, out, atol=1e-4):
                raise UserInputError(f"teachers[{k}]: teacher '{t.name}' does not compute head(pool(feat)), which "
                                     "method 'camkd' relies on to score the projected student map")
            self.networks[f"embed{k}"] = embed(fs.shape[1], ft.shape[1], ft.dim() - 2)

    def setup(self, train: TensorData, device: torch.device, val: Optional[TensorData] = None) -> None:
        self.teachers.place(device)
        if self.params.cache_teacher:
            # Logits and feature maps of every training row, once: K * N * C_t * L_t floats on the device.
            self.teachers.cache(train, device, input_changes=self.teacher_input_changes, taps=self._teacher_taps)

    def _teacher_outputs(self, batch: Batch) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        logits, maps = [], []
        for k in range(len(self.teachers)):
            if self.teachers.cached:
                z, f = self.teachers.lookup(batch, k)
            else:
                z, f = self.teachers.run(batch, k, taps=self._teacher_taps[k]), self._teacher_taps[k].outputs["feat"]
            logits.append(z)
            maps.append(f)
        return logits, maps

    def training_step(self, batch: Batch, step: Step) -> dict[str, torch.Tensor]:
        p = self.params
        with self._student_taps:
            s = self.networks["student"](batch["x"])
        fs, y = self._student_taps.outputs["feat"], batch["y"]
        logits, maps = self._teacher_outputs(batch)

        def inter() -> torch.Tensor:
            projected = [self.networks[f"embed{k}"](resize(fs, f.shape[2:])) for k, f in enumerate(maps)]
            # Frozen teacher pool/head, but gradients flow through them to the embeds and the student.
            heads = [t.model.head(t.model.pool(h)) for t, h in zip(self.teachers, projected)]
            return camkd_inter(projected, maps, heads, y, p.reduction, p.detach_inter_weights)[0]

        losses = {"ce": lambda: ce(s, y), "kd": lambda: camkd_kd(s, logits, y, p.temperature, p.reduction)[0],
                  "inter": inter}
        return weigh_own_terms(self.terms, losses, step, s)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "teachers": self.teachers.names,
                "teacher_cached": self.teachers.cached}
