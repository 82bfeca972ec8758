"""Bounds and base models shared by every recipe section: split from config.py so config_data.py can use them
without importing config.py (which imports config_data.py)."""
from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, model_validator

from edgedistill.params import check_free_values

# Bounds every recipe number is checked against (docs/reliability.md says why each): a value outside is a typo or an
# attack, refused with its key before anything is read or written.
#: Seeds are numpy's range: ``np.random.seed`` takes [0, 2**32 - 1].
MAX_SEED = 2**32 - 1
#: Epochs of one training stage: a typo (1e9) would otherwise look like a hang.
MAX_EPOCHS = 100_000
MAX_BATCH = 100_000
#: Learning rates above 10 diverge with every optimizer here; the largest recipe value is 0.1.
MAX_LR = 10.0
#: A loss weight beyond this is a typo (attention transfer's 1000 is the largest in the literature).
MAX_WEIGHT = 1e6
MAX_THREADS = 256
#: Runs and terms in one recipe: each seed and teacher is a full training run.
MAX_RUNS = 1_000
MAX_TERMS = 64


def _check_free(values: dict[str, Any]) -> dict[str, Any]:
    check_free_values(values)
    return values


class _Strict(BaseModel):
    # NaN and infinity are refused in every float field: a NaN learning rate or weight trains to meaningless numbers.
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


class _Open(BaseModel):
    """A section whose extra keys are another callable's keywords (a model's knobs, a loss's hyperparameters)."""

    model_config = ConfigDict(extra="allow", allow_inf_nan=False)

    @model_validator(mode="after")
    def _finite_extras(self) -> "_Open":
        check_free_values(dict(self.model_extra or {}))
        return self
