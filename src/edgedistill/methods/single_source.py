"""Single-source distillation: the student only ever sees heavy augmentations of ONE recording (or one image).

Asano & Saeed, "The Augmented Image Prior: Distilling 1000 Classes by Extrapolating from a Single Image",
ICLR 2023, arXiv 2112.00725 (spec: shared/methods/others.md §13). A frozen teacher labels random crops of a
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
from torch import nn

from edgedistill.augment.mixing import cutmix
from edgedistill.augment.timeseries import jitter, scaling, time_warp
from edgedistill.config import Recipe, check_kwargs
from edgedistill.data.dataset import Batch, DataInfo, TensorData
from edgedistill.errors import UserInputError
from edgedistill.losses.response import kd
from edgedistill.methods.base import Method, Step, TeacherNet, freeze, param_number
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


@METHODS.register("single_source")
class SingleSourceDistillation(Method):
    """Student trained only on augmented crops of one training sample, to match a frozen teacher (KL, T = 8)."""

    reserved = ("student", "info", "teacher", "train")

    def __init__(self, student: nn.Module, info: DataInfo, teacher: Optional[nn.Module], train: Optional[TensorData] = None,
                 source_index: int = 0, temperature: float = 8.0, min_crop: float = 0.1, flip: float = 0.5,
                 scaling_sigma: float = 0.1, jitter_sigma: float = 0.03, time_warp_sigma: float = 0.2,
                 cutmix_alpha: float = 1.0, crops_per_step: Optional[int] = None) -> None:
        super().__init__(student, info)
        if info.task != "classification":
            raise UserInputError(f"method.name: single_source matches class distributions; the dataset is {info.task}")
        if teacher is None:
            raise UserInputError("teacher: single_source distils from a teacher; add a 'teacher' section")
        n_train = len(train) if train is not None else info.sizes.get("train", 0)
        if isinstance(source_index, bool) or not isinstance(source_index, int) or not 0 <= source_index < max(n_train, 1):
            raise UserInputError(f"method.params.source_index: expected a row of the training split in [0, {n_train - 1}], "
                                 f"got {source_index!r}")
        self.source_index = source_index
        self.temperature = param_number("temperature", temperature, lambda v: v > 0, "a number > 0")
        self.min_crop = param_number("min_crop", min_crop, lambda v: 0 < v <= 1, "a fraction in (0, 1]")
        self.flip = param_number("flip", flip, lambda v: 0 <= v <= 1, "a probability in [0, 1]")
        self.scaling_sigma = param_number("scaling_sigma", scaling_sigma, lambda v: v >= 0, "a number >= 0")
        self.jitter_sigma = param_number("jitter_sigma", jitter_sigma, lambda v: v >= 0, "a number >= 0")
        self.time_warp_sigma = param_number("time_warp_sigma", time_warp_sigma, lambda v: v >= 0, "a number >= 0")
        self.cutmix_alpha = param_number("cutmix_alpha", cutmix_alpha, lambda v: v >= 0, "a number >= 0 (0: no CutMix)")
        if crops_per_step is not None and (isinstance(crops_per_step, bool) or not isinstance(crops_per_step, int)
                                           or crops_per_step < 2):
            raise UserInputError(f"method.params.crops_per_step: expected an integer >= 2 or null, got {crops_per_step!r}")
        self.crops_per_step = crops_per_step
        self.teacher = freeze(teacher)
        self.images = len(info.input_shape) == 3
        self._source: Optional[torch.Tensor] = None
        self.teacher_classes: list[float] = []  # share of the teacher's top class over 256 crops, set in setup
        # Drawn after the runner seeded and built the student: the same per seed, and on resume.
        self._seed = int(torch.randint(0, 2**62, (1,)))

    @classmethod
    def from_recipe(cls, recipe: Recipe, *, student: nn.Module, teacher: Optional[nn.Module], info: DataInfo,
                    train: Optional[TensorData] = None, teachers: Optional[list[TeacherNet]] = None) -> "SingleSourceDistillation":
        if recipe.method.terms:
            raise UserInputError("method.terms: single_source's loss is fixed (KL at T, no T², no CE); set method.params")
        if teachers and teachers[-1].view != "x":
            raise UserInputError("teacher.view: single_source feeds the teacher the student's crops; use view 'x'")
        aug = recipe.augment
        if aug is not None and (aug.student or aug.teacher or aug.mix is not None):
            raise UserInputError("augment: single_source makes its own augmentations of the source (method.params); "
                                 "remove the 'augment' section")
        check_kwargs(cls.__init__, recipe.method.params, "method.params", cls.reserved, what="method 'single_source'")
        return cls(student, info, teacher, train=train, **recipe.method.params)

    def setup(self, train: TensorData, device: torch.device, val: Optional[TensorData] = None) -> None:
        if not 0 <= self.source_index < len(train):
            raise UserInputError(f"method.params.source_index: the training split has {len(train)} rows, "
                                 f"got {self.source_index}")
        # The only training data this regime ever reads: one row of the student's view.
        self._source = train.x[self.source_index].to(device)
        if not torch.isfinite(self._source).all():
            raise UserInputError(f"method.params.source_index: training row {self.source_index} has non-finite values")
        self.teacher.to(device)  # type: ignore[union-attr]
        freeze(self.teacher)  # type: ignore[arg-type]
        # Which classes the teacher sees in this source: a source whose crops it calls one class teaches only that.
        with torch.no_grad():
            top = self.teacher(self.crops(256, torch.Generator().manual_seed(0))).argmax(1)  # type: ignore[misc]
        self.teacher_classes = (torch.bincount(top.cpu(), minlength=self.info.n_outputs).float() / len(top)).tolist()

    def crops(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """n augmented, CutMix-ed crops of the source (what both networks see this step)."""
        src, g = self._source, generator
        if src is None:
            raise RuntimeError("single_source: setup() was not called")
        x = crop_resize_2d(src, n, self.min_crop, g) if self.images else crop_resize_1d(src, n, self.min_crop, g)
        flip = (torch.rand(n, generator=g) < self.flip).to(x.device).view(-1, *[1] * (x.dim() - 1))
        x = torch.where(flip, x.flip(-1), x)
        if self.images:  # per-sample gain and noise (augment/images.py has no photometric transforms)
            gain = 1 + self.scaling_sigma * torch.randn(n, 1, 1, 1, generator=g)
            x = x * gain.to(x) + self.jitter_sigma * torch.randn(x.shape, generator=g).to(x)
        else:
            if self.time_warp_sigma > 0:
                x = time_warp(x, g, sigma=self.time_warp_sigma)
            x = jitter(scaling(x, g, sigma=self.scaling_sigma), g, sigma=self.jitter_sigma)
        if self.cutmix_alpha > 0:
            x, _ = cutmix(x, torch.ones(n, 1, dtype=x.dtype, device=x.device), g, alpha=self.cutmix_alpha)
        return x

    def training_step(self, batch: Batch, step: Step) -> dict[str, torch.Tensor]:
        # batch["x"] and batch["y"] are deliberately not read: the loop's batch only clocks the step.
        n = self.crops_per_step or max(2, len(batch["index"]))
        x = self.crops(n, torch.Generator().manual_seed((self._seed + step.step) % 2**63))
        with torch.no_grad():
            t = self.teacher(x)  # type: ignore[misc]
        return {"kl": kl_no_t2(self.networks["student"](x), t, self.temperature)}

    def describe(self) -> dict[str, Any]:
        return {"method": "single_source", "source_index": self.source_index, "temperature": self.temperature,
                "min_crop": self.min_crop, "flip": self.flip, "scaling_sigma": self.scaling_sigma,
                "jitter_sigma": self.jitter_sigma, "time_warp_sigma": self.time_warp_sigma,
                "cutmix_alpha": self.cutmix_alpha, "crops_per_step": self.crops_per_step or "batch size",
                "labels_used_for_training": False,
                "teacher_top_class_share_on_crops": [round(v, 3) for v in self.teacher_classes]}
