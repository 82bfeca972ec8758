"""Input normalisation, fitted on the training split only.

Statistics from validation or test data would leak information about the evaluation set into training,
so ``prepare_data`` fits one ``Normalizer`` per view on the training part and applies it everywhere.
The fitted statistics are plain lists so they can be written into run metadata (JSON) and reused when a
model is exported for deployment.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np

from edgedistill.errors import UserInputError

NormMode = Literal["per_channel", "global", "none"]
STD_FLOOR = 1e-8


@dataclass
class Normalizer:
    """``(x - mean) / std``; ``mean``/``std`` have one entry per channel (per_channel), one (global), or none."""

    mode: str
    mean: list[float] = field(default_factory=list)
    std: list[float] = field(default_factory=list)

    def apply(self, x: np.ndarray) -> np.ndarray:
        """Return a float32 copy of ``x`` normalised with the fitted statistics."""
        if self.mode == "none":
            return np.array(x, dtype=np.float32)
        # Subtract in float64: a constant channel must map to exactly 0, not float32 rounding / 1e-8.
        x = np.asarray(x, dtype=np.float64)
        mean = np.asarray(self.mean, dtype=np.float64)
        std = np.asarray(self.std, dtype=np.float64)
        if self.mode == "per_channel":
            if x.ndim < 2 or x.shape[1] != len(mean):
                raise UserInputError(
                    f"normalizer: expected {len(mean)} channels (axis 1), got an array of shape {tuple(x.shape)}"
                )
            shape = (1, len(mean)) + (1,) * (x.ndim - 2)
            mean, std = mean.reshape(shape), std.reshape(shape)
        return ((x - mean) / std).astype(np.float32)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def fit_normalizer(x: np.ndarray, mode: NormMode | str) -> Normalizer:
    """Fit statistics on ``x`` of shape (n, channels, ...) (or (n,) / (n, features) for side views).

    per_channel: one mean/std per axis-1 entry, pooled over samples and time/space, so a channel's scale
    (accelerometer g vs gyroscope deg/s) no longer dominates; global: one mean/std for the whole array;
    none: identity. Std is floored at 1e-8 so a constant channel maps to 0 instead of NaN.
    """
    if mode not in ("per_channel", "global", "none"):
        raise UserInputError(f"data.normalize: expected one of per_channel, global, none; got {mode!r}")
    if mode == "none":
        return Normalizer("none")
    x = np.asarray(x, dtype=np.float64)
    if x.shape[0] == 0:
        raise UserInputError("normalizer: cannot fit on an empty training split")
    if mode == "global" or x.ndim == 1:
        mean, std = np.array([x.mean()]), np.array([x.std()])
        mode = "global"
    else:
        axes = tuple(i for i in range(x.ndim) if i != 1)
        mean, std = x.mean(axis=axes), x.std(axis=axes)
    std = np.maximum(std, STD_FLOOR)
    return Normalizer(str(mode), [float(v) for v in mean], [float(v) for v in std])


#: The largest |z| accepted after normalisation with training statistics. Within the training split |z| cannot
#: exceed sqrt(n) (Samuelson's inequality), so a larger value in any split means a channel that is (nearly) constant
#: in training (its std floored at 1e-8) but varies elsewhere, or a split on another scale: the network would see
#: numbers it was never trained on, and float32 loses them. 1e6 leaves real outliers (tens of std) far below it.
MAX_Z = 1e6


def check_normalized(z: np.ndarray, norm: Normalizer, view: str, part: str, source: str) -> None:
    """Refuse normalised values above ``MAX_Z`` (or non-finite after the float32 cast), naming view, split, channel."""
    if norm.mode == "none" or z.size == 0:
        return  # raw values: bounded by check_raw's MAX_ABS
    flat = np.abs(z.reshape(len(z), z.shape[1], -1) if z.ndim >= 2 else z.reshape(-1, 1, 1))
    if np.isfinite(flat).all() and flat.max() <= MAX_Z:
        return
    flat = np.where(np.isfinite(flat), flat, np.inf)
    per_channel = flat.max(axis=(0, 2))
    c = int(np.argmax(per_channel))
    std = norm.std[c] if norm.mode == "per_channel" else norm.std[0]
    raise UserInputError(
        f"{source}: view '{view}', channel {c}: the {part} split reaches {float(per_channel[c]):.3g} training "
        f"standard deviations (training std {std:.3g}): the channel is (nearly) constant in the training split or on "
        f"another scale in {part}; drop it (data.views), fix its units, or set data.normalize: global or none"
    )
