"""The one teacher component every regime uses: checks, freezes and places the teachers, reads each one's view,
caches their outputs (and tapped features) by training row, and knows when that cache would be wrong.

A frozen teacher in eval mode gives the same outputs for the same input every epoch, so a regime looks them up
by ``batch["index"]`` instead of running the teacher each step (12.3 s -> ~4 s per epoch on a HAR-sized
set, a one-off measurement on a 2-core CPU machine).
The cache is invalid when the teacher reads the student's view and the augmentation changes that input
every step (``augment.teacher_sees: same``): then the teachers run live, on ``batch["x_teacher"]``.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Iterator, Optional, Sequence

import torch
from torch import nn

from edgedistill.config import TeacherConfig
from edgedistill.data.dataset import Batch, DataInfo, TensorData, outputs_by_batch
from edgedistill.data.shared_outputs import outputs_once
from edgedistill.errors import UserInputError
from edgedistill.models.modes import evaluating

__all__ = ["FEATURE_CACHE_BYTES", "TeacherNet", "Teachers", "as_teacher", "evaluating", "freeze"]

# Tapped feature maps are cached by row only up to this size (a 128-channel x 128-step map is 64 KiB a row, so
# 512 MiB holds ~8k rows); beyond it the teacher runs every step, which costs time, not memory.
FEATURE_CACHE_BYTES = 512 * 2**20


@dataclass
class TeacherNet:
    """A trained (or, while a recipe is checked, untrained) teacher and how it was specified."""

    name: str
    model: nn.Module
    config: TeacherConfig

    @property
    def view(self) -> str:
        return self.config.view


def freeze(model: nn.Module) -> nn.Module:
    """Frozen teacher: eval mode (BatchNorm uses running statistics) and no gradients, including any left over
    from its own training in the same process (they would only hold memory and confuse a gradient check)."""
    model.eval()
    model.requires_grad_(False)
    for p in model.parameters():
        p.grad = None
    return model


def as_teacher(model: nn.Module | TeacherNet, name: str = "teacher", view: str = "x") -> TeacherNet:
    """A bare module (a user's, or a test's) as a TeacherNet reading ``view``."""
    if isinstance(model, TeacherNet):
        return model
    return TeacherNet(name, model, TeacherConfig.model_validate({"model": type(model).__name__, "view": view}))


class Teachers:
    """The frozen teachers of one regime, in order; ``teachers[-1]`` is the one a single-teacher regime uses.

    Checks (each naming the recipe key): at least ``minimum`` and at most ``maximum`` teachers and every view in
    the dataset (the task is the regime's own declaration, ``Method.task``); ``hint`` ends the count error."""

    def __init__(self, teachers: Sequence[nn.Module | TeacherNet] | None, info: DataInfo, method: str, *,
                 minimum: int = 1, maximum: Optional[int] = None, hint: str = "", view: str = "x") -> None:
        nets = [as_teacher(t, f"teacher{i}" if len(teachers or []) > 1 else "teacher", view)
                for i, t in enumerate(teachers or [])]
        if len(nets) < minimum or (maximum is not None and len(nets) > maximum):
            want = f"at least {minimum}" if maximum is None else (
                f"{minimum}" if minimum == maximum else f"{minimum} to {maximum}")
            where = "a 'teacher' section" if maximum == 1 else "a 'teachers:' list"
            raise UserInputError(f"teachers: method '{method}' needs {want} teacher{'s' if want != '1' else ''} in "
                                 f"{where}, got {len(nets)}{hint}")
        for i, t in enumerate(nets):
            if t.view not in info.views:
                key = "teacher.view" if len(nets) == 1 and maximum == 1 else f"teachers[{i}].view"
                raise UserInputError(f"{key}: the dataset has no view '{t.view}'; available views: "
                                     f"{', '.join(info.views)}")
            freeze(t.model)
        self.nets = nets
        self._cached: Optional[list[tuple[torch.Tensor, ...]]] = None
        self.declined = ""  # why the last cache() did not cache, for describe()
        self._stack: Optional[torch.Tensor] = None

    @classmethod
    def single(cls, teacher: Optional[nn.Module | TeacherNet], info: DataInfo, method: str, *, view: str = "x",
               required: bool = False, **checks: Any) -> "Teachers":
        """The one teacher of a single-teacher regime (none allowed unless ``required``); a bare module reads ``view``."""
        return cls([teacher] if teacher is not None else [], info, method, minimum=int(required), maximum=1,
                   view=view, **checks)

    @staticmethod
    def named(teachers: Sequence[TeacherNet], names: Sequence[str], key: str) -> list[TeacherNet]:
        """The teachers called ``names``, in that order (a regime's ``experts`` or ``members``); an unknown or
        repeated name fails naming ``key``."""
        by_name = {t.name: t for t in teachers}
        for n in names:
            if n not in by_name:
                raise UserInputError(f"{key}: no teacher named '{n}'; teachers are: {', '.join(by_name)}")
        if len(set(names)) != len(names):
            raise UserInputError(f"{key}: a name is listed twice: {list(names)}")
        return [by_name[n] for n in names]

    def check_new_inputs(self, method: str, why: str, *, gradients: bool = False) -> None:
        """For a regime that runs its teachers on inputs it makes (``why``: generated samples, crops): a teacher given
        by its recorded outputs cannot run on them, and with ``gradients`` one run outside torch (onnxruntime) passes
        them none. Refused when the regime is built, before the run directory exists, naming the teacher."""
        for t in self.nets:
            source = getattr(t.model, "edgedistill_outputs_only", "the teacher")
            if getattr(t.model, "edgedistill_recorded", False):
                raise UserInputError(f"teacher: method '{method}' {why}; {source} is the teacher's outputs on the data's "
                                     "rows and cannot run on them: give the teacher as a model (model, or model + load)")
            if gradients and getattr(t.model, "edgedistill_no_input_gradients", False):
                raise UserInputError(f"teacher: method '{method}' {why} and back-propagates through the teacher into "
                                     f"them; {source} passes no gradients to its input: give the teacher as "
                                     "TorchScript, torch.export (.pt2) or model + weights")

    # -- what they are
    def __len__(self) -> int:
        return len(self.nets)

    def __iter__(self) -> Iterator[TeacherNet]:
        return iter(self.nets)

    def __getitem__(self, k: int) -> TeacherNet:
        return self.nets[k]

    @property
    def models(self) -> list[nn.Module]:
        return [t.model for t in self.nets]

    @property
    def names(self) -> list[str]:
        return [t.name for t in self.nets]

    def reorder(self, order: Sequence[int]) -> None:
        """Keep the teachers in ``order`` (indices into the current list), e.g. by size or admission; drops the cache."""
        self.nets = [self.nets[k] for k in order]
        self._cached, self._stack = None, None

    # -- placing and reading
    def place(self, device: torch.device) -> None:
        """Move every teacher to ``device``, frozen (after the engine moved the networks it trains)."""
        for t in self.nets:
            freeze(t.model.to(device))

    def input(self, batch: Batch, k: int = -1) -> torch.Tensor:
        """What teacher ``k`` reads: its own view, or for view "x" what ``augment.teacher_sees`` gives it."""
        view = self.nets[k].view
        return batch.get("x_teacher", batch["x"]) if view == "x" else batch[view]

    @torch.no_grad()
    def run(self, batch: Batch, k: int = -1, taps: Any = None) -> torch.Tensor:
        """Teacher ``k`` on the batch, live (no grad); with ``taps`` (a FeatureTaps) its features are captured. The
        input goes where the teacher is: a method's shape probe runs on the CPU before the engine places anything,
        while a teacher trained (or evaluated) earlier in the run may already be on the GPU."""
        model, x = self.nets[k].model, self.input(batch, k)
        x = x.to(next(model.parameters(), x).device)  # (an outputs-only teacher has no parameters)
        with taps or contextlib.nullcontext():
            return model(x)

    @torch.no_grad()
    def outputs(self, data: TensorData, device: torch.device, k: int = -1) -> torch.Tensor:
        """Teacher ``k``'s outputs on every row of ``data`` (its own view, eval mode), in row order; computed once per
        run for the same teacher and rows (every seed's stage caches them: data/shared_outputs.py)."""
        t = self.nets[k]
        return outputs_once(t.model, data, t.view, device, "teacher", lambda: outputs_by_batch(t.model, data, t.view, device))

    def stacked_outputs(self, data: TensorData, device: torch.device) -> torch.Tensor:
        """(K, N, C): every teacher's outputs on every row of ``data``."""
        return torch.stack([self.outputs(data, device, k) for k in range(len(self))])

    # -- the cache by training row
    def cache(self, train: TensorData, device: torch.device, *, input_changes: bool = False,
              taps: Optional[Sequence[Any]] = None, max_feature_bytes: int = FEATURE_CACHE_BYTES) -> bool:
        """Compute every teacher's outputs (and, with ``taps[k]``, the features it taps, in the order of the
        taps' names) on every training row, once. Skipped, and False returned, when a teacher reads an input the
        augmentation changes every step, or when the tapped features of every row would take more than
        ``max_feature_bytes`` (``declined`` then says why and the teachers run live each step)."""
        self._cached, self._stack, self.declined = None, None, ""
        if input_changes and any(t.view == "x" for t in self.nets):
            self.declined = "a teacher reads the student's input, which the augmentation changes every step"
            return False
        taps = list(taps) if taps is not None else [None] * len(self)
        extractors = [None if tap is None else self._with_features(t.model, tap) for t, tap in zip(self.nets, taps)]
        per_row = sum(self._row_bytes(fn, train, t.view, device) for fn, t in zip(extractors, self.nets) if fn)
        if per_row * len(train) > max_feature_bytes:
            self.declined = (f"the tapped teacher features of {len(train)} rows would take "
                             f"{per_row * len(train) / 2**20:.0f} MiB (more than {max_feature_bytes / 2**20:.0f} MiB)")
            return False
        self._cached = [(self.outputs(train, device, k),) if fn is None else outputs_by_batch(fn, train, t.view, device)
                        for k, (fn, t) in enumerate(zip(extractors, self.nets))]
        return True

    @staticmethod
    def _with_features(model: nn.Module, tap: Any) -> Any:
        def run(x: torch.Tensor) -> tuple[torch.Tensor, ...]:
            with torch.no_grad(), tap:
                out = model(x)
            return (out, *(tap.outputs[name] for name in tap.paths))
        return run

    @staticmethod
    def _row_bytes(fn: Any, train: TensorData, view: str, device: torch.device) -> int:
        """Bytes of one row's tapped features, from one forward pass on the first row."""
        first = next(train.batches(1), None)
        if first is None:
            return 0
        return sum(f.numel() * f.element_size() for f in fn(first[view].to(device))[1:])

    @property
    def cached(self) -> bool:
        return self._cached is not None

    def lookup(self, batch: Batch, k: int = -1) -> tuple[torch.Tensor, ...]:
        """Teacher ``k``'s cached outputs (and features) for the batch's rows."""
        assert self._cached is not None, "Teachers.cache() runs in setup() before training"
        entry = self._cached[k]
        idx = batch["index"].to(entry[0].device)
        return tuple(e[idx] for e in entry)

    def logits(self, batch: Batch, k: int = -1) -> torch.Tensor:
        """Teacher ``k``'s outputs for the batch: from the cache when there is one, else live."""
        return self.lookup(batch, k)[0] if self._cached is not None else self.run(batch, k)

    def all_logits(self, batch: Batch) -> list[torch.Tensor]:
        """Every teacher's outputs for the batch, in order."""
        if self._cached is not None:
            stacked = self.cached_stack()
            return list(stacked[:, batch["index"].to(stacked.device)])
        return [self.run(batch, k) for k in range(len(self))]

    def cached_stack(self) -> torch.Tensor:
        """(K, N, C) cached outputs of every teacher on the training rows."""
        assert self._cached is not None, "Teachers.cache() runs in setup() before training"
        if self._stack is None:
            self._stack = torch.stack([e[0] for e in self._cached])
        return self._stack
