"""Standard per-channel window features: what a random forest on a wearable recording is usually given.

Each channel of each window (channels, length) is summarised by the same handful of numbers used in
activity-recognition work since the early accelerometer studies (e.g. the time-domain and band-energy features
of Anguita et al. 2013, "A public domain dataset for human activity recognition using smartphones"):
location and spread, order statistics, how much the signal moves, how often it crosses zero or its own mean,
the shape of its distribution and where its spectral power lies. They are fixed functions (nothing is fitted),
so the only learned part of the baseline is the forest on top.
"""
from __future__ import annotations

import numpy as np

#: Percentiles of each channel (the median among them).
PERCENTILES = (10, 25, 50, 75, 90)
#: Equal-width frequency bands (DC excluded) whose share of the window's spectral power is a feature.
BANDS = 4

FEATURES: tuple[str, ...] = (
    "mean", "std", "min", "max", *(f"p{q}" for q in PERCENTILES), "mean_abs_diff", "energy",
    "zero_cross_rate", "mean_cross_rate", "skew", "kurtosis", *(f"band{b + 1}_power" for b in range(BANDS)),
)

#: Windows summarised at once: bounds the temporary copies (percentiles sort a copy) to a few tens of MB.
CHUNK = 2048


def feature_names(channels: list[str]) -> list[str]:
    """The column names of ``window_features``: ``<channel>:<feature>``, channel-major."""
    return [f"{c}:{f}" for c in channels for f in FEATURES]


def _crossing_rate(x: np.ndarray) -> np.ndarray:
    """Fraction of consecutive pairs whose signs differ (0 for a window of one sample)."""
    if x.shape[-1] < 2:
        return np.zeros(x.shape[:-1], dtype=x.dtype)
    return (np.signbit(x[..., 1:]) != np.signbit(x[..., :-1])).mean(axis=-1)


def _band_power(x: np.ndarray) -> np.ndarray:
    """Share of the spectral power (|rfft|^2 of the mean-removed window, DC left out) in each of ``BANDS`` equal
    frequency bands, (..., BANDS); all zeros for a constant window or one too short to have a band."""
    power = np.abs(np.fft.rfft(x - x.mean(axis=-1, keepdims=True), axis=-1))[..., 1:] ** 2
    bands = np.stack([p.sum(axis=-1) for p in np.array_split(power, BANDS, axis=-1)], axis=-1)
    total = bands.sum(axis=-1, keepdims=True)
    return np.divide(bands, total, out=np.zeros_like(bands), where=total > 0)


def _chunk_features(x: np.ndarray) -> np.ndarray:
    """(n, C, L) float64 -> (n, C, len(FEATURES))."""
    mean = x.mean(axis=-1)
    std = x.std(axis=-1)
    centred = x - mean[..., None]
    safe = np.where(std > 0, std, 1.0)
    z = centred / safe[..., None]
    skew = np.where(std > 0, (z**3).mean(axis=-1), 0.0)
    kurt = np.where(std > 0, (z**4).mean(axis=-1) - 3.0, 0.0)
    diff = np.abs(np.diff(x, axis=-1)).mean(axis=-1) if x.shape[-1] > 1 else np.zeros_like(mean)
    pct = np.moveaxis(np.percentile(x, PERCENTILES, axis=-1), 0, -1)
    parts = [mean[..., None], std[..., None], x.min(axis=-1)[..., None], x.max(axis=-1)[..., None], pct,
             diff[..., None], (x**2).mean(axis=-1)[..., None], _crossing_rate(x)[..., None],
             _crossing_rate(centred)[..., None], skew[..., None], kurt[..., None], _band_power(x)]
    return np.concatenate(parts, axis=-1)


def window_features(x: np.ndarray) -> np.ndarray:
    """(n, channels, length) windows -> (n, channels * len(FEATURES)) float32 features, channel-major (the
    columns ``feature_names`` names). Computed in float64 chunks of ``CHUNK`` windows."""
    x = np.asarray(x)
    if x.ndim != 3:
        raise ValueError(f"window_features: expected (windows, channels, length), got shape {x.shape}")
    n, c, _ = x.shape
    out = np.empty((n, c * len(FEATURES)), dtype=np.float32)
    for start in range(0, n, CHUNK):
        part = x[start:start + CHUNK].astype(np.float64)
        out[start:start + len(part)] = _chunk_features(part).reshape(len(part), -1)
    return out
