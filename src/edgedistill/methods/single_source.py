"""Single-source distillation: the student only ever sees heavy augmentations of ONE recording (or one image).

Asano & Saeed, "The Augmented Image Prior: Distilling 1000 Classes by Extrapolating from a Single Image",
ICLR 2023, arXiv 2112.00725. A frozen teacher labels random crops of a
single source and the student, from scratch, matches it; labels are never used for training::

    L = mean_i KL( softmax(z^t_i / T) || softmax(z^s_i / T) ),  T = 8, no T² factor, no CE

and every batch is CutMix-ed (the teacher sees the same mixed input). The paper's source is one large photo cut
into patches; a time-series source here is one training series (``source_index`` of the training split), and
"patches" are random segments of it:

1. a segment of a uniform fraction in [``min_crop``, 1] of the series' length at a uniform position, resampled
   (linear interpolation) to the window length: the 1-D RandomResizedCrop (for images: a box with each side a
   uniform fraction in [sqrt(min_crop), 1], resized bilinearly);
2. time reversal (images: horizontal flip) with probability ``flip``;
3. ``scaling`` and ``jitter`` from edgedistill.augment.timeseries (images: a per-sample gain and Gaussian noise);
   ``time_warp`` for series;
4. ``cutmix`` from edgedistill.augment.mixing between the crops of the batch.

The loop still iterates the real training batches, only to count steps and to size the crop batch
(``len(batch["index"])`` unless ``crops_per_step`` is set): ``training_step`` never reads ``batch["x"]`` or
``batch["y"]`` (a test feeds NaN inputs). The labelled validation split is still used by the engine for
best-epoch selection; the docs report the last epoch as the label-free number.

Our choices (the paper's augmentations are for photos; the spec gives no time-series form): steps 1-3 above, their
strengths, and the source row. Every draw comes from a generator seeded by (run seed, step): resumes are exact.
"""
from __future__ import annotations

import math
from typing import Any, Optional

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from edgedistill.augment.mixing import cutmix
from edgedistill.augment.timeseries import jitter, scaling, time_warp
from edgedistill.config import Recipe
from edgedistill.data.dataset import Batch, DataInfo, TensorData
from edgedistill.errors import UserInputError
from edgedistill.losses.response import kd
from edgedistill.methods.base import Method, Step
from edgedistill.methods.teachers import TeacherNet, Teachers
from edgedistill.params import Params
from edgedistill.registry import METHODS


def kl_no_t2(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 8.0) -> torch.Tensor:
    """mean_i KL(softmax(z_t/T) || softmax(z_s/T)): Hinton KD without its T² factor (the paper's code)."""
    return kd(student_logits, teacher_logits, temperature) / temperature**2


def _uniform(n: int, lo: float, hi: float, g: torch.Generator) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=g, dtype=torch.float64)


def crop_resize_1d(source: torch.Tensor, n: int, min_crop: float, g: torch.Generator) -> torch.Tensor:
    """(n, C, L): segments of ``source`` (C, L), each a fraction in [min_crop, 1] of L at a uniform position,
    linearly resampled to L samples."""
    c, length = source.shape
    frac = _uniform(n, min_crop, 1.0, g)
    start = torch.rand(n, generator=g, dtype=torch.float64) * (1 - frac)
    # Sample positions in [0, L-1] along each segment; linear interpolation between the two neighbours.
    pos = (start[:, None] + frac[:, None] * torch.linspace(0, 1, length, dtype=torch.float64)) * (length - 1)
    lo = pos.floor().clamp(0, max(length - 2, 0)).long()
    w = (pos - lo).to(source.dtype).to(source.device)
    lo = lo.to(source.device)
    hi = (lo + 1).clamp(max=length - 1)
    return source[:, lo].permute(1, 0, 2) * (1 - w[:, None]) + source[:, hi].permute(1, 0, 2) * w[:, None]


def crop_resize_2d(source: torch.Tensor, n: int, min_crop: float, g: torch.Generator) -> torch.Tensor:
    """(n, C, H, W): boxes of ``source`` (C, H, W), each side a fraction in [sqrt(min_crop), 1], resized bilinearly."""
    _, h, w = source.shape
    side = math.sqrt(min_crop)
    fh, fw = _uniform(n, side, 1.0, g), _uniform(n, side, 1.0, g)
    oy, ox = torch.rand(n, generator=g, dtype=torch.float64) * (1 - fh), torch.rand(n, generator=g, dtype=torch.float64) * (1 - fw)
    # affine_grid works in [-1, 1] coordinates: scale by the box side, shift to the box centre.
    theta = torch.zeros(n, 2, 3, dtype=torch.float64)
    theta[:, 0, 0], theta[:, 1, 1] = fw, fh
    theta[:, 0, 2], theta[:, 1, 2] = 2 * ox + fw - 1, 2 * oy + fh - 1
    grid = F.affine_grid(theta.to(device=source.device, dtype=source.dtype), [n, source.shape[0], h, w], align_corners=True)
    return F.grid_sample(source.expand(n, *source.shape), grid, mode="bilinear", align_corners=True)


class SingleSourceParams(Params):
    source_index: int = Field(0, ge=0, description="the row of the training split whose crops are all the student "
                                                   "ever sees")
    temperature: float = Field(8.0, gt=0, description="softmax temperature of the KL (no T^2 factor)")
    min_crop: float = Field(0.1, gt=0, le=1, description="smallest crop, as a fraction of the series length (of "
                                                         "the image area)")
    flip: float = Field(0.5, ge=0, le=1, description="probability of time reversal (images: horizontal flip)")
    scaling_sigma: float = Field(0.1, ge=0, description="std of the per-sample gain")
    jitter_sigma: float = Field(0.03, ge=0, description="std of the additive Gaussian noise")
    time_warp_sigma: float = Field(0.2, ge=0, description="strength of the time warp (series only; 0: none)")
    cutmix_alpha: float = Field(1.0, ge=0, description="Beta(alpha, alpha) of CutMix between the crops (0: no CutMix)")
    crops_per_step: Optional[int] = Field(None, ge=2, le=100_000, description="crops per step; null: the loop's batch size")


@METHODS.register("single_source")
class SingleSourceDistillation(Method):
    """Student trained only on augmented crops of one training sample, to match a frozen teacher (KL, T = 8)."""

    Params = SingleSourceParams
    task = "classification"
    task_why = "matches class distributions"

    def __init__(self, student: nn.Module, info: DataInfo, teacher: Optional[nn.Module | TeacherNet],
                 train: Optional[TensorData] = None, **params: Any) -> None:
        super().__init__(student, info, **params)
        name = self.method_name()
        self.teachers = Teachers([teacher] if teacher is not None else [], info, name, maximum=1)
        self.teachers.check_new_inputs(name, "runs the teacher on crops of the one training row")
        if self.teachers[-1].view != "x":
            raise UserInputError(f"teacher.view: {name} feeds the teacher the student's crops; use view 'x'")
        self.teacher = self.teachers[-1].model
        n_train = len(train) if train is not None else info.sizes.get("train", 0)
        if not self.params.source_index < max(n_train, 1):
            raise UserInputError(f"method.params.source_index: expected a row of the training split in "
                                 f"[0, {n_train - 1}], got {self.params.source_index!r}")
        self.images = len(info.input_shape) == 3
        self._source: Optional[torch.Tensor] = None
        self.teacher_classes: list[float] = []  # share of the teacher's top class over 256 crops, set in setup
        # Drawn after the runner seeded and built the student: the same per seed, and on resume.
        self._seed = int(torch.randint(0, 2**62, (1,)))

    @classmethod
    def default_params(cls, recipe: Recipe) -> dict[str, Any]:
        # No defaults depend on the recipe; this is where a recipe section the regime would ignore is refused.
        aug = recipe.augment
        if aug is not None and (aug.student or aug.teacher or aug.mix is not None):
            raise UserInputError("augment: single_source makes its own augmentations of the source (method.params); "
                                 "remove the 'augment' section")
        return {}

    def setup(self, train: TensorData, device: torch.device, val: Optional[TensorData] = None) -> None:
        index = self.params.source_index
        if not 0 <= index < len(train):
            raise UserInputError(f"method.params.source_index: the training split has {len(train)} rows, got {index}")
        # The only training data this regime ever reads: one row of the student's view.
        self._source = train.batch(torch.tensor([index]))["x"][0].to(device)  # one row: a mapped split reads only it
        if not torch.isfinite(self._source).all():
            raise UserInputError(f"method.params.source_index: training row {index} has non-finite values")
        self.teachers.place(device)
        # Which classes the teacher sees in this source: a source whose crops it calls one class teaches only that.
        with torch.no_grad():
            top = self.teacher(self.crops(256, torch.Generator().manual_seed(0))).argmax(1)  # type: ignore[misc]
        self.teacher_classes = (torch.bincount(top.cpu(), minlength=self.info.n_outputs).float() / len(top)).tolist()

    def crops(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """n augmented, CutMix-ed crops of the source (what both networks see this step)."""
        src, g, p = self._source, generator, self.params
        if src is None:
            raise RuntimeError("single_source: setup() was not called")
        x = crop_resize_2d(src, n, p.min_crop, g) if self.images else crop_resize_1d(src, n, p.min_crop, g)
        flip = (torch.rand(n, generator=g) < p.flip).to(x.device).view(-1, *[1] * (x.dim() - 1))
        x = torch.where(flip, x.flip(-1), x)
        if self.images:  # per-sample gain and noise (augment/images.py has no photometric transforms)
            gain = 1 + p.scaling_sigma * torch.randn(n, 1, 1, 1, generator=g)
            x = x * gain.to(x) + p.jitter_sigma * torch.randn(x.shape, generator=g).to(x)
        else:
            if p.time_warp_sigma > 0:
                x = time_warp(x, g, sigma=p.time_warp_sigma)
            x = jitter(scaling(x, g, sigma=p.scaling_sigma), g, sigma=p.jitter_sigma)
        if p.cutmix_alpha > 0:
            x, _ = cutmix(x, torch.ones(n, 1, dtype=x.dtype, device=x.device), g, alpha=p.cutmix_alpha)
        return x

    def training_step(self, batch: Batch, step: Step) -> dict[str, torch.Tensor]:
        # batch["x"] and batch["y"] are deliberately not read: the loop's batch only clocks the step.
        n = self.params.crops_per_step or max(2, len(batch["index"]))
        x = self.crops(n, torch.Generator().manual_seed((self._seed + step.step) % 2**63))
        with torch.no_grad():
            t = self.teacher(x)  # type: ignore[misc]
        return {"kl": kl_no_t2(self.networks["student"](x), t, self.params.temperature)}

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "labels_used_for_training": False,
                "teacher_top_class_share_on_crops": [round(v, 3) for v in self.teacher_classes]}
