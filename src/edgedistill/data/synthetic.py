"""Synthetic data with the structure of real wearable studies, for tests, demos and HAR-scale benchmarks.

No offline human-activity set of realistic size exists on these machines, so ``synthetic`` generates one:
activities are periodic movements (a cadence, a harmonic mix, an intensity and a direction of motion per
sensor), and every subject wears the sensor differently (cadence, gain, orientation, offset). That
between-subject variation is what makes a subject split harder than a random split, as in real data.
Everything is vectorised numpy and deterministic for a seed.
"""
from __future__ import annotations

import numpy as np

from edgedistill.data.raw import RawData
from edgedistill.errors import UserInputError
from edgedistill.registry import DATASETS

_HARMONICS = 3


def _check_int(name: str, value: object, lo: int, hi: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise UserInputError(f"data.params.{name}: expected an integer, got {value!r}")
    if value < lo or (hi is not None and value > hi):
        rng = f">= {lo}" if hi is None else f"between {lo} and {hi}"
        raise UserInputError(f"data.params.{name}: expected an integer {rng}, got {value}")
    return int(value)


#: The most generated values (float64) a synthetic set may hold: 2**28 (2 GiB), far above any test or demo and far
#: below what would swap a laptop; the bound is checked before anything is allocated.
MAX_VALUES = 2**28


def _check_total(values: int, what: str) -> None:
    if values > MAX_VALUES:
        raise UserInputError(f"data.params: {what} make {values:,} values ({values * 8 / 2**30:.1f} GiB), above the "
                             f"{MAX_VALUES:,} a synthetic set may hold; use fewer or shorter windows")


def _rotations(rng: np.random.Generator, n: int, max_angle: float) -> np.ndarray:
    """``n`` random 3x3 rotations about random axes by up to ``max_angle`` radians (Rodrigues' formula)."""
    axis = rng.normal(size=(n, 3))
    axis /= np.linalg.norm(axis, axis=1, keepdims=True)
    angle = rng.uniform(0.0, max_angle, size=n)
    k = np.zeros((n, 3, 3))
    k[:, 0, 1], k[:, 0, 2], k[:, 1, 2] = -axis[:, 2], axis[:, 1], -axis[:, 0]
    k -= k.transpose(0, 2, 1)
    s, c = np.sin(angle)[:, None, None], np.cos(angle)[:, None, None]
    return np.eye(3)[None] + s * k + (1 - c) * (k @ k)


def check_synthetic(
    n_subjects: int = 6, windows_per_subject: int = 40, n_classes: int = 4, channels: int = 3, length: int = 128,
    task: str = "classification", noise: float = 0.3, seed: int = 0,
) -> tuple[int, int, int, int, int, str, float, int]:
    """``synthetic``'s parameters checked (bounds, and the total size before anything is allocated), as it uses them:
    also what ``--smoke`` runs, so a shrunk smoke run refuses what the real one would."""
    n_subjects = _check_int("n_subjects", n_subjects, 1, 100_000)
    wps = _check_int("windows_per_subject", windows_per_subject, 1, 10_000_000)
    n_classes = _check_int("n_classes", n_classes, 2, 50)
    channels = _check_int("channels", channels, 3, 9)
    length = _check_int("length", length, 16, 10_000_000)
    if task not in ("classification", "regression"):
        raise UserInputError(f"data.params.task: expected 'classification' or 'regression', got {task!r}")
    if isinstance(noise, bool) or not isinstance(noise, (int, float)) or not 0 <= noise <= 1e6:
        raise UserInputError(f"data.params.noise: expected a number between 0 and 1e6, got {noise!r}")
    seed = _check_int("seed", seed, 0, 2**32 - 1)
    _check_total(n_subjects * wps * 3 * -(-channels // 3) * length, "n_subjects x windows_per_subject x axes x length")
    return n_subjects, wps, n_classes, channels, length, task, float(noise), seed


@DATASETS.register("synthetic", task="classification", kind="1d", check=check_synthetic)
def synthetic(
    n_subjects: int = 6,
    windows_per_subject: int = 40,
    n_classes: int = 4,
    channels: int = 3,
    length: int = 128,
    task: str = "classification",
    noise: float = 0.3,
    seed: int = 0,
) -> RawData:
    """Synthetic multi-subject wearable windows: channels (3-9) x length, n_classes activities, subject ids."""
    n_subjects, wps, n_classes, channels, length, task, noise, seed = check_synthetic(
        n_subjects, windows_per_subject, n_classes, channels, length, task, noise, seed)
    rng = np.random.default_rng(seed)
    n_groups = -(-channels // 3)  # sensors of 3 axes each (accelerometer, gyroscope, ...)
    n_axes = 3 * n_groups

    # Activity prototypes. Cadences (cycles per window) are spread out but close enough that a subject's
    # cadence scale can push one activity into the next one's range: frequency alone does not separate them.
    cadence = np.linspace(2.0, 2.0 + 1.1 * (n_classes - 1), n_classes) * rng.uniform(0.95, 1.05, n_classes)
    cadence = rng.permutation(cadence)
    harmonics = rng.dirichlet(np.full(_HARMONICS, 0.7), size=n_classes)  # (C, H) harmonic mix
    intensity = rng.uniform(0.6, 1.6, n_classes)
    direction = rng.normal(size=(n_classes, n_axes))  # per-class axis coupling
    direction /= np.linalg.norm(direction.reshape(n_classes, n_groups, 3), axis=2).repeat(3, axis=1)
    lag = rng.uniform(0, 2 * np.pi, size=(n_classes, n_axes))  # per-axis phase lag: the movement's shape in 3-D

    # Subjects: how each person moves and wears the sensor.
    sub_cadence = rng.uniform(0.85, 1.15, n_subjects)
    sub_gain = rng.uniform(0.7, 1.3, n_subjects)
    sub_rot = _rotations(rng, n_subjects * n_groups, np.deg2rad(35)).reshape(n_subjects, n_groups, 3, 3)
    sub_offset = rng.normal(0.0, 0.5, size=(n_subjects, n_axes))

    # Windows: balanced classes per subject, in shuffled order.
    n = n_subjects * wps
    subject = np.repeat(np.arange(n_subjects), wps)
    label = np.concatenate([rng.permutation(np.arange(wps) % n_classes) for _ in range(n_subjects)])
    freq = cadence[label] * sub_cadence[subject] * rng.uniform(0.95, 1.05, n)
    level = intensity[label] * rng.uniform(0.7, 1.3, n)  # the hidden effort of this window
    phase = rng.uniform(0, 2 * np.pi, size=(n, 1))

    # The bulk arrays are float32: 8000 windows of 9 x 128 take ~0.1 s instead of ~0.5 s in float64.
    t = (np.arange(length) / length).astype(np.float32)
    h = np.arange(1, _HARMONICS + 1, dtype=np.float32)
    theta = (2 * np.pi * freq[:, None] * h[None, :]).astype(np.float32)[:, :, None] * t + (phase * h).astype(
        np.float32
    )[:, :, None]
    waves = np.concatenate([np.sin(theta), np.cos(theta)], axis=1)  # (n, 2H, L)
    amp = harmonics[label] * level[:, None]  # (n, H)
    # sin(theta + lag) = sin(theta) cos(lag) + cos(theta) sin(lag), per axis, weighted by the class direction.
    wa = direction[label] * np.cos(lag[label])  # (n, A)
    wb = direction[label] * np.sin(lag[label])
    mix = np.concatenate([wa[:, :, None] * amp[:, None, :], wb[:, :, None] * amp[:, None, :]], axis=2)
    x = np.matmul(mix.astype(np.float32), waves)  # (n, A, L)
    x = np.matmul(sub_rot[subject].astype(np.float32), x.reshape(n, n_groups, 3, length)).reshape(n, n_axes, length)
    x = x[:, :channels]
    x *= sub_gain[subject, None, None].astype(np.float32)
    x += sub_offset[subject, :channels, None].astype(np.float32)
    x += np.float32(noise) * rng.standard_normal(size=x.shape, dtype=np.float32)

    if task == "regression":
        # A smooth function of the hidden effort and cadence (energy expenditure grows with both); the
        # subject's sensor gain does not enter, so a model must see past how the sensor was worn.
        y = (level * (1.0 + 0.15 * freq)).astype(np.float64)
    else:
        y = label.astype(np.int64)
    return RawData(x=x, y=y, task=task, group=subject.astype(np.int64), name="synthetic")  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------------
def _pattern(kind: int, xx: np.ndarray, yy: np.ndarray, angle: np.ndarray, width: np.ndarray) -> np.ndarray:
    """One of four families, drawn in rotated coordinates: bar, open ring, cross, grating."""
    u = xx * np.cos(angle) + yy * np.sin(angle)
    v = -xx * np.sin(angle) + yy * np.cos(angle)
    if kind == 0:  # bar
        return np.exp(-(v / width) ** 2) * (np.abs(u) < 0.7)
    if kind == 1:  # open ring ("C"), the gap pointing along the angle
        r = np.sqrt(u**2 + v**2)
        return np.exp(-((r - 0.45) / width) ** 2) * (u < 0.25)
    if kind == 2:  # cross
        arms = np.maximum(np.exp(-(u / width) ** 2), np.exp(-(v / width) ** 2))
        return arms * (np.maximum(np.abs(u), np.abs(v)) < 0.6)
    return 0.5 * (1 + np.cos(np.pi * u / (1.5 * width + 0.1))) * (u**2 + v**2 < 0.5)  # grating


def check_synthetic_images(
    n: int = 200, n_classes: int = 4, channels: int = 1, size: int = 16, noise: float = 0.6, seed: int = 0
) -> tuple[int, int, int, int, float, int]:
    """``synthetic_images``' parameters checked as it uses them (what ``--smoke`` runs too)."""
    n = _check_int("n", n, 2, 10_000_000)
    n_classes = _check_int("n_classes", n_classes, 2, 32)
    channels = _check_int("channels", channels, 1, 16)
    size = _check_int("size", size, 8, 128)
    if isinstance(noise, bool) or not isinstance(noise, (int, float)) or not 0 <= noise <= 1e6:
        raise UserInputError(f"data.params.noise: expected a number between 0 and 1e6, got {noise!r}")
    seed = _check_int("seed", seed, 0, 2**32 - 1)
    _check_total(n * channels * size * size, "n x channels x size x size")
    return n, n_classes, channels, size, float(noise), seed


@DATASETS.register("synthetic_images", task="classification", kind="2d", check=check_synthetic_images)
def synthetic_images(
    n: int = 200, n_classes: int = 4, channels: int = 1, size: int = 16, noise: float = 0.6, seed: int = 0
) -> RawData:
    """Synthetic small images: channels x size x size (default 1 x 16 x 16), n_classes shape/orientation classes."""
    n, n_classes, channels, size, noise, seed = check_synthetic_images(n, n_classes, channels, size, noise, seed)
    rng = np.random.default_rng(seed)
    label = rng.permutation(np.arange(n) % n_classes)
    # Class k is a shape family (k % 4) at a base orientation; orientations of one family are spread over
    # the family's symmetry, so classes that share a family differ only by angle (harder than by shape).
    family = np.arange(n_classes) % 4
    per_family = np.bincount(family, minlength=4)
    slot = np.arange(n_classes) // 4
    symmetry = np.array([np.pi, 2 * np.pi, np.pi / 2, np.pi])[family]  # rotation that maps the shape to itself
    base_angle = symmetry * slot / np.maximum(per_family[family], 1)
    grid = (np.arange(size) + 0.5) / size * 2 - 1
    yy, xx = np.meshgrid(grid, grid, indexing="ij")
    shift = rng.uniform(-0.3, 0.3, size=(n, 2))
    jitter = rng.normal(0.0, 0.08, n)
    width = rng.uniform(0.12, 0.22, n)
    gx, gy = xx[None] - shift[:, :1, None], yy[None] - shift[:, 1:, None]
    img = np.zeros((n, size, size))
    for k in range(4):
        sel = family[label] == k
        if sel.any():
            a = (base_angle[label[sel]] + jitter[sel])[:, None, None]
            img[sel] = _pattern(k, gx[sel], gy[sel], a, width[sel][:, None, None])
    # A distractor blob of random place and strength, so no single pixel region gives the class away.
    centre = rng.uniform(-0.8, 0.8, size=(n, 2))
    blob = np.exp(-((xx[None] - centre[:, :1, None]) ** 2 + (yy[None] - centre[:, 1:, None]) ** 2) / 0.03)
    img = img + rng.uniform(0.0, 1.0, size=(n, 1, 1)) * blob
    colour = rng.uniform(0.5, 1.5, size=(n, channels))  # per-channel gain, like a colour
    x = img[:, None] * colour[:, :, None, None] * rng.uniform(0.6, 1.4, size=(n, 1, 1, 1))
    x = x + rng.normal(0.0, 0.1, size=(n, channels, 1, 1)) + noise * rng.normal(size=x.shape)
    return RawData(x=x.astype(np.float64), y=label.astype(np.int64), task="classification", name="synthetic_images")
