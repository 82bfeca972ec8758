"""The recipe's ``method`` section: weighted loss terms (``TermConfig``), staged training (``StageConfig``,
docs/stages.md) and the regime with its parameters (``MethodConfig``). Re-exported by ``edgedistill.config``."""
from __future__ import annotations

from typing import Any, Literal, Optional

from pydantic import Field, field_validator, model_serializer, model_validator

from edgedistill.config_base import MAX_EPOCHS, MAX_LR, MAX_TERMS, MAX_WEIGHT, _check_free, _Open, _Strict
from edgedistill.recipe_paths import safe_name


class TermConfig(_Open):
    """One weighted loss term; every key besides ``loss``, ``weight`` and the schedule keys is a keyword of that loss.

    Schedule (per epoch, 0-based ``e``): the term is off (0) before ``start_epoch``; with ``warmup_epochs`` w > 0 its
    weight grows to full over w epochs, by the factor r = min(1, (e - start_epoch + 1) / w) (``ramp: linear``, as
    DKD's warm-up ``min(epoch / warmup, 1)`` with 1-based epochs), (1 - cos(pi r)) / 2 (``ramp: cosine``) or
    exp(-5 (1 - r)^2) (``ramp: sigmoid``, the "sigmoid ramp-up" of temporal ensembling that AMC-Loss's code uses)."""

    loss: str = Field(max_length=100)
    # >= 0: a negative weight would maximise its loss, and no registered loss is meant to be maximised.
    weight: float = Field(1.0, ge=0, le=MAX_WEIGHT)
    start_epoch: int = Field(0, ge=0, le=MAX_EPOCHS)
    warmup_epochs: int = Field(0, ge=0, le=MAX_EPOCHS)
    ramp: Literal["linear", "cosine", "sigmoid"] = "linear"

    def factor(self, epoch: int) -> float:
        """The schedule's multiplier of ``weight`` during ``epoch`` (0-based), in [0, 1]."""
        import math

        if epoch < self.start_epoch:
            return 0.0
        if self.warmup_epochs == 0:
            return 1.0
        r = min(1.0, (epoch - self.start_epoch + 1) / self.warmup_epochs)
        if self.ramp == "sigmoid":
            return math.exp(-5.0 * (1.0 - r) ** 2)
        return r if self.ramp == "linear" else 0.5 * (1.0 - math.cos(math.pi * r))

    @property
    def scheduled(self) -> bool:
        return self.start_epoch > 0 or self.warmup_epochs > 0

    @model_serializer(mode="wrap")
    def _without_default_schedule(self, handler: Any) -> dict[str, Any]:
        """Resolved recipes and cache keys keep only the schedule keys a recipe set to something other than the
        default, so an unscheduled term serialises (and hashes) exactly as before the schedule existed."""
        out = handler(self)
        for key in ("start_epoch", "warmup_epochs", "ramp"):
            if key in out and out[key] == type(self).model_fields[key].default:
                del out[key]
        return out

    @property
    def params(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class StageConfig(_Strict):
    """A stage of staged training (docs/stages.md): its terms, what it trains (default: what its terms train), its
    epochs (the last stage's default: train.epochs minus the others'), its lr (default train.lr)."""

    name: str = Field(max_length=60)
    terms: list[TermConfig] = Field(min_length=1, max_length=MAX_TERMS)
    train: Optional[list[str]] = Field(None, min_length=1, max_length=MAX_TERMS + 1)
    epochs: Optional[int] = Field(None, ge=1, le=MAX_EPOCHS)
    lr: Optional[float] = Field(None, gt=0, le=MAX_LR)
    _folder = field_validator("name")(lambda v: safe_name(v))  # each stage but the last trains in a folder so named


class MethodConfig(_Strict):
    name: str = Field("offline", max_length=100)
    terms: list[TermConfig] = Field(default_factory=list, max_length=MAX_TERMS)
    params: dict[str, Any] = Field(default_factory=dict)
    stages: list[StageConfig] = Field(default_factory=list, max_length=20)
    _params_finite = field_validator("params")(_check_free)

    @model_validator(mode="after")
    def _stages(self) -> "MethodConfig":
        names = [s.name for s in self.stages]
        if self.stages and (self.terms or self.name != "offline" or len(set(names)) != len(names)):
            raise ValueError(f"stages: staged training is for method 'offline', each stage with its own terms (no "
                             f"method.terms) and its own name; got method '{self.name}', stages {names}")
        return self

    @model_serializer(mode="wrap")
    def _no_empty_stages(self, handler: Any) -> dict[str, Any]:  # a recipe without stages hashes as it did before
        out = handler(self)
        return out if out.get("stages") else {k: v for k, v in out.items() if k != "stages"}
