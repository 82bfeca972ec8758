"""Persistence diagrams and persistence images (PIs) of sensor windows: the privileged ``pi`` view.

As the TDA_KD / Sublevel-Set-TDA / TGD code computes them. Per channel x in R^L:

1. preprocessing (our reading of Sublevel-Set-TDA): subtract the window's channel mean, divide by a per-channel
   scale = the largest |x - mean| over the dataset's windows (label-free; fitted on the windows given, see
   ``pi_scale``), so values lie in [-1, 1];
2. 0-dim sublevel-set persistence of the path graph with vertex values x (edges carry max(x_i, x_{i+1})):
   gudhi ``CubicalComplex(vertices=x)``; ``union_find_diagram`` is our own elder-rule implementation of the
   same thing, used by the tests as a cross-check;
3. drop the infinite class and every pair with lifetime <= max(1e-3, threshold);
4. persim ``PersImage`` parameterisation: coordinates (birth, persistence), linear weight p / max(p), a Gaussian
   of std ``spread`` integrated over pixel boxes, birth bins starting at linspace(min(min_bd, 0), max_bd, R),
   persistence bins at linspace(0, max_bd, R), both of width max_bd / R (the gaps persim leaves when
   min_bd < 0 are reproduced), output ``img.T[::-1]`` (high persistence on top), then divided by its max.

Optionally (``rips: true``, our choice of embedding) each channel also gets the H1 PI of its delay embedding
(``embed_dim`` coordinates ``delay`` samples apart) by Vietoris-Rips, same grid: the view then has 2C channels.

PIs of a dataset are computed in chunks, in a process pool, behind a progress bar; each finished chunk is written
atomically under ``<cache>/pi/<key>/`` where key hashes the window bytes, the scale and the PI parameters, so an
interrupted computation resumes where it stopped and a second run reuses everything. Each chunk
``rows_<a>_<b>.npy`` has a sidecar ``rows_<a>_<b>.sha256`` (its size and sha256, written after it); a chunk is
reused only when it matches its sidecar and loads as a (rows, C', R, R) float32 array. One that does not is moved
to ``<cache>/quarantine/`` with a one-line warning and computed again. A chunk written before sidecars existed is
adopted (its sidecar written) when it loads with that shape and finite values in [0, 1] (each PI is scaled by its
maximum): atomic writes exclude truncation, and recomputing every cached PI would cost far more than the flipped
bits such a check might miss.

This module is the PI maths and its cache only. Adding the "pi" view to a recipe's data (exact or by a PI-Net),
the windows of a recipe's splits and the ``edgedistill topo`` commands are in ``edgedistill.experiment.topology``.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional

import numpy as np
from scipy.special import ndtr

from edgedistill.errors import UserInputError
from edgedistill.io import content_record, make_dirs, remove_stale_temp, write_bytes, write_json

if TYPE_CHECKING:
    from edgedistill.config import TopologyConfig

PI_FORMAT = 2  # bump when what a cached chunk holds changes
MIN_LIFETIME = 1e-3
RIPS_MAX_POINTS = 128  # Rips up to triangles grows as n^3: longer embeddings are strided down to this many points


def sublevel_diagram(signal: np.ndarray) -> np.ndarray:
    """Finite (birth, death) pairs, shape (k, 2), of the 0-dim sublevel-set persistence of a 1-D signal
    (vertex values on a path graph), by gudhi. Pairs of zero lifetime and the essential class are dropped;
    rows are sorted by (birth, death)."""
    import gudhi

    x = np.asarray(signal, dtype=np.float64).reshape(-1)
    if x.size == 0 or not np.isfinite(x).all():
        raise UserInputError(f"sublevel_diagram: expected a non-empty finite 1-D signal, got shape {np.shape(signal)}")
    cc = gudhi.CubicalComplex(vertices=x)
    cc.compute_persistence(homology_coeff_field=2, min_persistence=0.0)
    dg = np.asarray(cc.persistence_intervals_in_dimension(0), dtype=np.float64).reshape(-1, 2)
    dg = dg[np.isfinite(dg[:, 1]) & (dg[:, 1] > dg[:, 0])]
    return dg[np.lexsort((dg[:, 1], dg[:, 0]))]


def union_find_diagram(signal: np.ndarray) -> np.ndarray:
    """The same diagram as ``sublevel_diagram`` by our own union-find (elder rule: when two components merge
    at value v the one born later dies at v). Pure numpy; used to check gudhi."""
    x = np.asarray(signal, dtype=np.float64).reshape(-1)
    n = len(x)
    parent = np.full(n, -1)

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    pairs = []
    for i in np.argsort(x, kind="stable"):
        parent[i] = i
        for j in (i - 1, i + 1):
            if 0 <= j < n and parent[j] != -1:
                ri, rj = find(i), find(j)
                if ri == rj:
                    continue
                young, old = (ri, rj) if x[ri] > x[rj] or (x[ri] == x[rj] and ri > rj) else (rj, ri)
                if x[i] > x[young]:
                    pairs.append((x[young], x[i]))
                parent[young] = old
    dg = np.array(pairs, dtype=np.float64).reshape(-1, 2)
    return dg[np.lexsort((dg[:, 1], dg[:, 0]))]


def rips_diagram(signal: np.ndarray, embed_dim: int = 3, delay: int = 1, dim: int = 1) -> np.ndarray:
    """Finite (birth, death) pairs in dimension ``dim`` of the Vietoris-Rips filtration of the delay embedding
    [x_t, x_{t+delay}, ..., x_{t+(embed_dim-1)delay}] of a 1-D signal (gudhi). An embedding of more than
    ``RIPS_MAX_POINTS`` points keeps every k-th point (our choice: bounded cost, loops larger than the stride
    survive)."""
    import gudhi

    x = np.asarray(signal, dtype=np.float64).reshape(-1)
    n = len(x) - (embed_dim - 1) * delay
    if n < 2:
        return np.zeros((0, 2))
    pts = np.stack([x[k * delay: k * delay + n] for k in range(embed_dim)], axis=1)
    if n > RIPS_MAX_POINTS:
        pts = pts[:: -(-n // RIPS_MAX_POINTS)]
    st = gudhi.RipsComplex(points=pts).create_simplex_tree(max_dimension=dim + 1)
    st.compute_persistence(homology_coeff_field=2, min_persistence=0.0)
    dg = np.asarray(st.persistence_intervals_in_dimension(dim), dtype=np.float64).reshape(-1, 2)
    return dg[np.isfinite(dg[:, 1]) & (dg[:, 1] > dg[:, 0])]


def persistence_image(diagram: np.ndarray, resolution: int = 64, spread: float = 0.015, min_bd: float = -1.0,
                      max_bd: float = 1.0, normalize: bool = False) -> np.ndarray:
    """(resolution, resolution) persistence image of finite (birth, death) pairs, persim ``PersImage`` style.

    Rows are persistence (highest on top), columns birth. An empty diagram gives zeros. With ``normalize``
    the image is divided by its maximum (so it lies in [0, 1]); the raw image is the sum over pairs of
    (p / max p) times the Gaussian mass of each pixel box."""
    if resolution < 1 or spread <= 0 or max_bd <= 0:
        raise UserInputError(f"persistence_image: need resolution >= 1, spread > 0 and max_bd > 0, "
                             f"got {resolution}, {spread}, {max_bd}")
    dg = np.asarray(diagram, dtype=np.float64).reshape(-1, 2)
    if len(dg) == 0:
        return np.zeros((resolution, resolution))
    birth, pers = dg[:, 0], dg[:, 1] - dg[:, 0]
    dx = max_bd / resolution
    xs = np.linspace(min(min_bd, 0.0), max_bd, resolution)
    ys = np.linspace(0.0, max_bd, resolution)
    # Gaussian mass of each pixel box: a difference of CDFs, per pair (k, R).
    bx = ndtr((xs[None, :] + dx - birth[:, None]) / spread) - ndtr((xs[None, :] - birth[:, None]) / spread)
    by = ndtr((ys[None, :] + dx - pers[:, None]) / spread) - ndtr((ys[None, :] - pers[:, None]) / spread)
    w = pers / pers.max()
    img = np.einsum("k,kx,ky->xy", w, bx, by)
    img = img.T[::-1]
    if normalize:
        top = img.max()
        img = img / top if top > 0 else img
    return np.ascontiguousarray(img)


def pi_params(cfg: "TopologyConfig") -> dict[str, Any]:
    """The parameters that decide a window's PIs (the cache key and the PI-Net checkpoint hold them)."""
    return {k: v for k, v in cfg.model_dump(mode="json").items() if k not in ("source", "pinet", "workers")}


def pi_scale(x: np.ndarray) -> np.ndarray:
    """Per-channel scale (C,): the largest |x - window mean| over all windows (1 for a flat channel)."""
    x = np.asarray(x, dtype=np.float64)
    dev = np.abs(x - x.mean(axis=-1, keepdims=True)).max(axis=(0, 2))
    return np.where(dev > 0, dev, 1.0)


def preprocess(x: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """(N, C, L) windows -> mean-subtracted, scaled by ``scale`` per channel (float64)."""
    x = np.asarray(x, dtype=np.float64)
    return (x - x.mean(axis=-1, keepdims=True)) / np.asarray(scale, dtype=np.float64).reshape(1, -1, 1)


def window_pis(window: np.ndarray, params: dict[str, Any]) -> np.ndarray:
    """(C', R, R) float32 PIs of one preprocessed (C, L) window: one sublevel PI per channel (+ one H1 Rips PI
    per channel with ``rips``), each divided by its max."""
    r, keep = params["resolution"], max(MIN_LIFETIME, params["threshold"])
    grid = dict(resolution=r, spread=params["spread"], min_bd=params["min_bd"], max_bd=params["max_bd"], normalize=True)
    out = []
    for kind in ("sublevel", "rips") if params.get("rips") else ("sublevel",):
        for ch in window:
            if kind == "sublevel":
                dg = sublevel_diagram(ch)
            else:
                dg = rips_diagram(ch, params["embed_dim"], params["delay"])
            dg = dg[dg[:, 1] - dg[:, 0] > keep]
            out.append(persistence_image(dg, **grid))
    return np.stack(out).astype(np.float32)


def _chunk(windows: np.ndarray, params: dict[str, Any]) -> np.ndarray:
    return np.stack([window_pis(w, params) for w in windows]) if len(windows) else np.zeros((0,), np.float32)


def _key(x: np.ndarray, scale: np.ndarray, params: dict[str, Any]) -> str:
    h = hashlib.sha256()
    h.update(json.dumps({"format": PI_FORMAT, "shape": list(x.shape), **params}, sort_keys=True).encode())
    h.update(np.ascontiguousarray(x, dtype=np.float64).tobytes())
    h.update(np.ascontiguousarray(scale, dtype=np.float64).tobytes())
    return h.hexdigest()[:32]


def _save_atomic(path: Path, arr: np.ndarray) -> None:
    """The chunk, then its sidecar (size and sha256): a chunk is trusted only when the two agree."""
    import io as _io

    buf = _io.BytesIO()
    np.save(buf, np.ascontiguousarray(arr, dtype=np.float32))
    data = buf.getvalue()
    write_bytes(path, data)
    write_json(path.with_suffix(".sha256"), content_record(data))


def _checked_chunk(path: Path, rows: int) -> tuple[Optional[np.ndarray], str]:
    """(the chunk's PIs, "") when the saved chunk can be used, else (None, why not; "" when there is no chunk)."""
    import io as _io

    if not path.is_file():
        return None, ""
    try:
        data = path.read_bytes()
    except OSError as exc:
        return None, f"cannot be read ({exc.strerror or type(exc).__name__})"
    side = path.with_suffix(".sha256")
    if side.is_file():
        try:
            want = json.loads(side.read_text())
            ok = content_record(data) == {"bytes": want["bytes"], "sha256": want["sha256"]}
        except (OSError, ValueError, KeyError, TypeError):
            return None, f"its sidecar {side.name} is unreadable"
        if not ok:
            return None, f"does not match the size and sha256 in {side.name} (corrupted or truncated)"
    try:
        arr = np.load(_io.BytesIO(data), allow_pickle=False)
    except Exception as exc:  # noqa: BLE001 - whatever np.load makes of damaged bytes, the chunk is unusable
        return None, f"cannot be loaded as .npy ({type(exc).__name__})"
    if arr.dtype != np.float32 or arr.ndim != 4 or len(arr) != rows:
        return None, f"holds {arr.dtype} {arr.shape}, not ({rows}, channels, R, R) float32"
    if not side.is_file():  # a chunk from before sidecars: adopted when it loads and holds what a PI can hold
        if not (np.isfinite(arr).all() and arr.min(initial=0.0) >= 0.0 and arr.max(initial=0.0) <= 1.0):
            return None, "holds values outside [0, 1] (each PI is scaled by its maximum)"
        write_json(side, content_record(data))
    return arr, ""


def _quarantine_chunk(path: Path, root: Path, why: str) -> None:
    """Move a damaged chunk (and its sidecar) to ``<cache>/quarantine/`` and say so in one line on stderr."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    target = make_dirs(root / "quarantine") / f"pi-{path.parent.name}-{path.stem}-{stamp}"
    for src, suffix in ((path, ".npy"), (path.with_suffix(".sha256"), ".sha256")):
        if src.exists():
            os.replace(src, target.with_name(target.name + suffix))
    print(f"warning: persistence-image chunk '{path}' {why}; moved to '{target}.npy' (delete it when no longer "
          f"needed); computing it again", file=sys.stderr)


def compute_pis(x: np.ndarray, params: dict[str, Any], scale: Optional[np.ndarray] = None,
                cache_dir: Optional[Path] = None, workers: Optional[int] = None, chunk: Optional[int] = None,
                progress: bool = True, on_chunk: Optional[Callable[[int], None]] = None) -> np.ndarray:
    """(N, C', R, R) float32 PIs of (N, C, L) windows, cached and resumable.

    ``scale`` defaults to ``pi_scale(x)``. Chunks of ``chunk`` windows (default: n/16, between 4 and 64, so the
    bar moves and an interruption loses little) are computed by ``workers`` processes
    (default: up to 4, at most the CPU count; 1 = in this process) and saved atomically under
    ``cache_dir/pi/<key>`` as they finish; on a rerun (after Ctrl-C, or for another recipe on the same data and
    parameters) saved chunks are loaded instead of computed. ``on_chunk(i)`` is called after each new chunk."""
    from edgedistill.paths import default_cache_dir

    x = np.asarray(x)
    if x.ndim != 3 or len(x) == 0:
        raise UserInputError(f"data.topology: PIs need windows of shape (n, channels, length), got {x.shape}")
    scale = pi_scale(x) if scale is None else np.asarray(scale, dtype=np.float64)
    key = _key(x, scale, params)
    root = default_cache_dir(cache_dir)
    folder = make_dirs(root / "pi" / key)
    remove_stale_temp(folder)
    chunk = max(4, min(64, -(-len(x) // 16))) if chunk is None else max(1, int(chunk))
    bounds = [(s, min(s + chunk, len(x))) for s in range(0, len(x), chunk)]
    # Files are named by their row range, so a different chunk size never misreads another's files.
    path = lambda i: folder / f"rows_{bounds[i][0]:08d}_{bounds[i][1]:08d}.npy"  # noqa: E731
    results: dict[int, np.ndarray] = {}
    for i, (a, b) in enumerate(bounds):
        arr, why = _checked_chunk(path(i), b - a)
        if arr is not None:
            results[i] = arr
        elif why:
            _quarantine_chunk(path(i), root, why)
    todo = [i for i in range(len(bounds)) if i not in results]
    workers = min(4, os.cpu_count() or 1) if workers is None else max(1, int(workers))
    xp = preprocess(x, scale)

    from edgedistill.progress import StageProgress

    with StageProgress(enabled=progress) as bar:
        bar.start(f"persistence images ({len(x)} windows)", len(bounds), done=len(bounds) - len(todo))
        if todo and (workers == 1 or len(todo) == 1):
            for i in todo:
                results[i] = _chunk(xp[slice(*bounds[i])], params).astype(np.float32)
                _save_atomic(path(i), results[i])
                bar.advance()
                if on_chunk is not None:
                    on_chunk(i)
        elif todo:
            pool = ProcessPoolExecutor(max_workers=min(workers, len(todo)))
            try:
                running = {pool.submit(_chunk, xp[slice(*bounds[i])], params): i for i in todo}
                while running:
                    done, _ = wait(running, return_when=FIRST_COMPLETED)
                    for fut in done:
                        i = running.pop(fut)
                        results[i] = fut.result().astype(np.float32)
                        _save_atomic(path(i), results[i])
                        bar.advance()
                        if on_chunk is not None:
                            on_chunk(i)
            except BaseException:
                # Ctrl-C or an error: finished chunks are on disk; drop queued ones and stop running workers
                # rather than wait for them (a terminal's Ctrl-C reaches them too, a plain kill of us does not).
                for proc in list((getattr(pool, "_processes", None) or {}).values()):
                    proc.terminate()
                pool.shutdown(wait=False, cancel_futures=True)
                raise
            pool.shutdown(wait=True)
        bar.finish(f"{len(todo)} chunk(s) computed, {len(bounds) - len(todo)} reused from {folder}")
    return np.concatenate([results[i] for i in range(len(bounds))])
