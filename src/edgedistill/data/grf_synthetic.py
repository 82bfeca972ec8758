"""A synthetic ground-reaction-force (GRF) regression set shaped like insole-to-GRF estimation (Jeon et al., "Ground
Reaction Force Estimation via Time-aware Knowledge Distillation", arXiv 2506.10265): an insole's pressure sensors
over one stance phase in, the GRF over the same phase out, as a 2-channel time series (vertical, anterior-posterior).

No insole/GRF recording ships offline (GaitRec, docs/datasets/gaitrec.md, is downloaded by hand), so this generator
gives tests, smoke runs and benchmarks a set of that shape. The physics is deliberately simple, and it is our design:

* the stance phase is time-normalised to ``length`` points (GaitRec's processed curves have 101);
* the vertical force has the two humps of walking (loading and push-off, near 25 % and 75 % of stance) with a valley
  between them; how deep the valley and how high the humps are depends on the step's walking speed;
* the anterior-posterior force brakes in the first half of stance and propels in the second, scaled by speed;
* the centre of pressure rolls from heel to toe at a speed-dependent pace, and each of ``sensors`` sensors (placed
  heel to toe) reads the vertical force times a Gaussian footprint around the centre of pressure, times a gain that
  depends on how the subject's insole fits (per subject and sensor), plus noise;
* every force is in body weights (BW, as in GaitRec), plus 0.01 BW of force-plate noise.

So the AP force is not in the input directly: a model has to read it from how fast the pressure rolls forward and
how the humps are shaped, and through the subject's insole fit. x: (n, sensors, length), y: (n, 2 * length) =
vertical then AP curve, flattened; group = subject. Deterministic for a seed.
"""
from __future__ import annotations

import numpy as np

from edgedistill.data.raw import RawData
from edgedistill.data.synthetic import _check_int
from edgedistill.errors import UserInputError
from edgedistill.registry import DATASETS

#: The GRF components of the target, in the order they are flattened into y.
COMPONENTS = ("vertical", "anterior_posterior")


def check_synthetic_grf(n_subjects: int = 8, steps_per_subject: int = 30, sensors: int = 16, length: int = 101,
                        noise: float = 0.05, seed: int = 0) -> tuple[int, int, int, int, float, int]:
    """The parameters checked (bounds, and the total size, before anything is allocated)."""
    n_subjects = _check_int("n_subjects", n_subjects, 1, 10_000)
    steps = _check_int("steps_per_subject", steps_per_subject, 1, 100_000)
    sensors = _check_int("sensors", sensors, 2, 256)
    length = _check_int("length", length, 8, 10_000)
    if isinstance(noise, bool) or not isinstance(noise, (int, float)) or not 0 <= noise <= 100:
        raise UserInputError(f"data.params.noise: expected a number between 0 and 100, got {noise!r}")
    seed = _check_int("seed", seed, 0, 2**32 - 1)
    if n_subjects * steps * (sensors + 2) * length > 2**27:
        raise UserInputError("data.params: n_subjects x steps_per_subject x (sensors + 2) x length is above 2**27 "
                             "values (1 GiB); use fewer steps or a shorter stance")
    return n_subjects, steps, sensors, length, float(noise), seed


def _bump(t: np.ndarray, centre: np.ndarray, width: float) -> np.ndarray:
    return np.exp(-0.5 * ((t - centre) / width) ** 2)


@DATASETS.register("synthetic_grf", task="regression", kind="1d", check=check_synthetic_grf)
def synthetic_grf(n_subjects: int = 8, steps_per_subject: int = 30, sensors: int = 16, length: int = 101,
                  noise: float = 0.05, seed: int = 0) -> RawData:
    """Synthetic insole -> GRF stance phases: x (n, sensors, length) pressures, y (n, 2 * length) vertical then AP
    force in body weights, group = subject (see the module docstring)."""
    n_subjects, steps, sensors, length, noise, seed = check_synthetic_grf(
        n_subjects, steps_per_subject, sensors, length, noise, seed)
    rng = np.random.default_rng(seed)
    n = n_subjects * steps
    subject = np.repeat(np.arange(n_subjects), steps)
    t = np.linspace(0.0, 1.0, length)[None, :]  # (1, L) stance phase

    # A step: walking speed (per subject a preferred one, per step a variation) shapes both forces.
    speed = (rng.uniform(0.9, 1.3, n_subjects)[subject] * rng.uniform(0.85, 1.15, n))[:, None]
    hump = 1.0 + 0.35 * (speed - 1.1) + rng.normal(0, 0.03, (n, 1))
    valley = 0.75 - 0.4 * (speed - 1.1) + rng.normal(0, 0.03, (n, 1))
    envelope = np.sin(np.pi * t) ** 0.6
    vertical = envelope * (valley + (hump - valley) * np.maximum(_bump(t, 0.25, 0.1), _bump(t, 0.75, 0.1)))
    ap = -0.22 * speed * np.sin(2 * np.pi * t) * np.sin(np.pi * t) * (1.0 + rng.normal(0, 0.05, (n, 1)))

    # The insole: the centre of pressure rolls heel (0) to toe (1), faster at higher speed.
    cop = 0.05 + 0.9 * t ** (1.0 / (0.6 + 0.5 * speed))  # (n, L)
    place = np.linspace(0.0, 1.0, sensors)[None, :, None]  # (1, S, 1)
    footprint = _bump(place, cop[:, None, :], 0.15)  # (n, S, L)
    fit = rng.uniform(0.6, 1.4, (n_subjects, sensors))[subject][:, :, None]  # how the insole sits, per subject
    x = vertical[:, None, :] * footprint * fit + noise * rng.standard_normal((n, sensors, length))

    # The force plate's own noise (0.01 BW): also keeps every target point's variance above 0 (heel strike and toe-off
    # are 0 BW in every step otherwise, and R^2 of a constant column is undefined).
    y = np.concatenate([vertical, ap], axis=1) + 0.01 * rng.standard_normal((n, 2 * length))
    return RawData(x=x.astype(np.float32), y=y.astype(np.float64), task="regression",
                   group=subject.astype(np.int64), name="synthetic_grf",
                   channels=[f"insole_{i}" for i in range(sensors)],
                   notes=[f"synthetic insole -> GRF: y = {' then '.join(COMPONENTS)} force, {length} points each"])
