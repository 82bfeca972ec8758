"""Check exported files against the PyTorch model on the run's test windows.

For every variant: the largest absolute output difference from PyTorch (logits, or standardised regression
outputs), the test score (accuracy, or R² for regression, in original units) and how often its predicted
class agrees with PyTorch's. The fp32 file must match PyTorch within ``max_diff``; the int8 file may lose
at most ``max_int8_drop`` points of the score (accuracy or R² x 100). A batch of one is run too, so the
dynamic batch axis is checked.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import numpy as np

from edgedistill.errors import UserInputError


class VerificationError(UserInputError):
    """An exported file does not reproduce the PyTorch model within the thresholds (exit code 2)."""


def onnx_outputs(path: Path, x: np.ndarray, input_name: str, batch: int = 256) -> np.ndarray:
    from edgedistill.deploy.metadata import _session

    session = _session(Path(path))
    outs = [session.run(None, {input_name: x[i:i + batch]})[0] for i in range(0, len(x), batch)]
    single = session.run(None, {input_name: x[:1]})[0]
    if single.shape[0] != 1 or not np.allclose(single, outs[0][:1], rtol=1e-4, atol=1e-4):
        raise VerificationError(f"'{path}': a batch of one gives a different output than the same window in a batch")
    return np.concatenate(outs).astype(np.float64)


def score(out: np.ndarray, y: np.ndarray, task: str, target_scale: Optional[list[list[float]]]) -> float:
    """Accuracy (classification) or R² in original units (regression)."""
    if task == "classification":
        return float((out.argmax(axis=1) == y).mean())
    out, y = out.reshape(len(out), -1), y.reshape(len(y), -1).astype(np.float64)
    if target_scale is not None:
        mean, std = np.asarray(target_scale[0]), np.asarray(target_scale[1])
        out, y = out * std + mean, y * std + mean
    ss_res = ((y - out) ** 2).sum(axis=0)
    ss_tot = np.maximum(((y - y.mean(axis=0)) ** 2).sum(axis=0), 1e-12)
    return float((1 - ss_res / ss_tot).mean())


def verify(reference: np.ndarray, files: dict[str, Path], x: np.ndarray, y: np.ndarray, *, task: str,
           input_name: str, target_scale: Optional[list[list[float]]] = None, max_diff: Optional[float] = 1e-4,
           max_int8_drop: Optional[float] = 1.0) -> dict[str, Any]:
    """Rows for PyTorch and every file in ``files`` ({"fp32": path, "int8": path}); raises
    ``VerificationError`` (after measuring everything) when a threshold is exceeded (None = not checked)."""
    metric = "accuracy" if task == "classification" else "R2"
    ref_score = score(reference, y, task, target_scale)
    rows = [{"variant": "pytorch", "file": "", "max_abs_diff": 0.0, "score": ref_score, "agreement": 1.0}]
    for variant, path in files.items():
        out = onnx_outputs(path, x, input_name)
        if out.shape != reference.shape:
            raise VerificationError(f"'{path}': outputs have shape {out.shape}, PyTorch gives {reference.shape}")
        agree = float((out.argmax(1) == reference.argmax(1)).mean()) if task == "classification" else None
        rows.append({"variant": f"onnx {variant}", "file": str(path), "max_abs_diff": float(np.abs(out - reference).max()),
                     "score": score(out, y, task, target_scale), "agreement": agree})
    problems = []
    for row in rows[1:]:
        drop = 100 * (ref_score - row["score"])
        row["score_drop_points"] = drop
        if row["variant"] == "onnx fp32" and max_diff is not None and not row["max_abs_diff"] <= max_diff:
            problems.append(f"fp32 output differs from PyTorch by {row['max_abs_diff']:.3g} > {max_diff:g} (--max-diff)")
        if row["variant"] == "onnx int8" and max_int8_drop is not None and drop > max_int8_drop:
            problems.append(f"int8 loses {drop:.2f} points of test {metric} ({ref_score:.4f} -> {row['score']:.4f}) "
                            f"> {max_int8_drop:g} (--max-int8-drop)")
    result = {"metric": metric, "test_windows": int(len(x)), "rows": rows,
              "thresholds": {"max_diff": max_diff, "max_int8_drop_points": max_int8_drop}}
    if problems:
        err = VerificationError("export verification failed: " + "; ".join(problems) + "; no file was written")
        err.result = result  # type: ignore[attr-defined]
        raise err
    return result
