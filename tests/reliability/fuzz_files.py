"""Fuzz families over the files a user brings: ``.npz`` and ``.csv`` data (NaN, inf, huge values, one class,
float or one-hot labels, channels-last, renamed or truncated files, reserved columns) and user checkpoints
(random bytes, truncated, a pickle that would run code). Each is built lazily by ``fuzz_cases.materialize``."""
from __future__ import annotations

import io
import pickle
from typing import Any, Callable, Optional

import numpy as np
from hypothesis import strategies as st


from reliability.fuzz_base import ACCEPT, BASE, CSV_DATA, EITHER, FILE_DATA, REFUSE, Case
from reliability.fuzz_base import _set  # noqa: F401


# ---------------------------------------------------------------------------------------------- data files
def _npz(**arrays: Any) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def _good_arrays(n: int = 48, rng: Optional[np.random.Generator] = None) -> dict[str, np.ndarray]:
    rng = rng or np.random.default_rng(0)
    y = np.arange(n) % 4
    x = rng.normal(size=(n, 3, 32)).astype(np.float32)
    x[np.arange(n), y % 3, :] += 1.0 + y[:, None]
    return {"x": x, "y": y.astype(np.int64), "group": np.repeat(np.arange(6), n // 6)}


def _with(**change: Any) -> Callable[[], bytes]:
    def make() -> bytes:
        a = _good_arrays()
        for k, v in change.items():
            if v is None:
                a.pop(k)
            else:
                a[k] = v(a) if callable(v) else v
        return _npz(**a)
    return make


def _poke(value: float) -> Callable[[dict], np.ndarray]:
    def f(a: dict) -> np.ndarray:
        x = a["x"].copy()
        x[3, 1, 7] = value
        return x
    return f


_NPZ: list[tuple[str, Callable[[], bytes], str]] = [
    ("valid npz", _with(), ACCEPT),
    ("x has a NaN", _with(x=_poke(np.nan)), REFUSE),
    ("x has an inf", _with(x=_poke(np.inf)), REFUSE),
    ("x has 1e30", _with(x=_poke(1e30)), REFUSE),
    ("x all 1e30 scale", _with(x=lambda a: a["x"].astype(np.float64) * 1e30), REFUSE),
    ("one class only", _with(y=lambda a: np.zeros_like(a["y"])), REFUSE),
    ("float labels 0.0..3.0", _with(y=lambda a: a["y"].astype(np.float32)), REFUSE),
    ("one-hot labels", _with(y=lambda a: np.eye(4, dtype=np.int64)[a["y"]]), REFUSE),
    ("one-hot float labels", _with(y=lambda a: np.eye(4, dtype=np.float32)[a["y"]]), REFUSE),
    ("channels-last x (n, 32, 3)", _with(x=lambda a: np.ascontiguousarray(a["x"].transpose(0, 2, 1))), REFUSE),
    ("y one row short", _with(y=lambda a: a["y"][:-1]), REFUSE),
    ("group one row short", _with(group=lambda a: a["group"][:-1]), REFUSE),
    ("empty x and y", _with(x=np.zeros((0, 3, 32), np.float32), y=np.zeros(0, np.int64), group=None), REFUSE),
    ("x 2-d", _with(x=lambda a: a["x"][:, 0, :]), REFUSE),
    ("x 5-d", _with(x=lambda a: a["x"][:, :, :, None, None]), REFUSE),
    ("x strings", _with(x=lambda a: a["x"].astype(str)), REFUSE),
    ("y missing", _with(y=None), REFUSE),
    ("labels -1..2", _with(y=lambda a: a["y"] - 1), EITHER),
    ("labels 0 and 10**9", _with(y=lambda a: np.where(a["y"] % 2 == 0, 0, 10**9)), EITHER),
    ("string labels", _with(y=lambda a: np.array(["walk", "run", "sit", "lie"])[a["y"]]), ACCEPT),
    ("bool labels", _with(y=lambda a: a["y"] % 2 == 0), EITHER),
    ("x int16", _with(x=lambda a: (a["x"] * 100).astype(np.int16)), EITHER),
    ("x float16", _with(x=lambda a: a["x"].astype(np.float16)), EITHER),
    ("x constant", _with(x=lambda a: np.ones_like(a["x"])), EITHER),
    ("three samples", _with(x=lambda a: a["x"][:3], y=lambda a: a["y"][:3], group=None), REFUSE),
    ("test_x without test_y", _with(test_x=lambda a: a["x"][:8]), REFUSE),
    ("test_x other shape", _with(test_x=lambda a: a["x"][:8, :2], test_y=lambda a: a["y"][:8]), REFUSE),
    ("test_y has a class unseen in y", _with(test_x=lambda a: a["x"][:8], test_y=np.full(8, 7)), REFUSE),
    ("view with other rows", _with(pi=lambda a: a["x"][:5]), REFUSE),
    ("task array bogus", _with(task=np.array("classify")), REFUSE),
    ("length 1", _with(x=lambda a: a["x"][:, :, :1]), REFUSE),
    ("object array (pickle)", lambda: _pickled_npz(), REFUSE),
    (".npy renamed .npz", lambda: _npy(_good_arrays()["x"]), REFUSE),
    ("text renamed .npz", lambda: b"x,y\n1,2\n", REFUSE),
    ("random bytes", lambda: np.random.default_rng(1).bytes(4096), REFUSE),
    ("truncated npz", lambda: _with()()[:700], REFUSE),
    ("zero bytes", lambda: b"", REFUSE),
    ("npy header claims 10**12 rows", lambda: _huge_header_npz(), REFUSE),
]


def _npy(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr)
    return buf.getvalue()


def _pickled_npz() -> bytes:
    a = _good_arrays()
    buf = io.BytesIO()
    np.savez(buf, x=a["x"], y=np.array([{"label": int(v)} for v in a["y"]], dtype=object))
    return buf.getvalue()


def _huge_header_npz() -> bytes:
    import zipfile

    header = _npy(np.zeros((2, 3, 32), np.float32)).replace(b"(2, 3, 32)", b"(1000000000000, 3, 32)")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("x.npy", header)
        z.writestr("y.npy", _npy(np.arange(2)))
    return buf.getvalue()


@st.composite
def npz_files(draw: Callable) -> Case:
    row = draw(st.integers(0, len(_NPZ) - 1))
    note, _, expect = _NPZ[row]
    return Case("data.npz", expect, {**BASE, "data": FILE_DATA}, note=note, lazy=("npz", row))


_DTYPES = ["float32", "float64", "float16", "int8", "uint8", "int64", "bool", "complex64", "U3", "datetime64[s]"]


def random_npz(spec: tuple) -> bytes:
    """An .npz of random shapes, dtypes and values drawn from ``spec`` (see ``npz_random``)."""
    n, c, length, xdt, ydt, classes, ydim, group, scale, seed = spec
    rng = np.random.default_rng(seed)
    x = (rng.normal(size=(n, c, length)) * scale)
    y = rng.integers(0, max(classes, 1), size=(n,) if ydim == 1 else (n, classes or 1))
    with np.errstate(all="ignore"):  # 1e30 cast to int8 is meant to overflow
        arrays = {"x": x.astype(xdt) if xdt != "datetime64[s]" else x.astype("int64").astype(xdt),
                  "y": y.astype(ydt)}
    if group:
        arrays["group"] = rng.integers(0, group, size=n)
    return _npz(**arrays)


@st.composite
def npz_random(draw: Callable) -> Case:
    """Random shapes, dtypes, class counts and scales: only tracebacks, hangs, memory and writes count."""
    spec = (draw(st.integers(0, 64)), draw(st.integers(1, 12)), draw(st.integers(0, 80)), draw(st.sampled_from(_DTYPES)),
            draw(st.sampled_from(_DTYPES)), draw(st.integers(0, 70)), draw(st.sampled_from([1, 1, 1, 2])),
            draw(st.integers(0, 9)), draw(st.sampled_from([1.0, 1e-30, 1e5, 1e30])), draw(st.integers(0, 2**16)))
    return Case("data.npz_random", EITHER, {**BASE, "data": FILE_DATA}, note=f"npz n,c,len,x,y,classes,ydim,group,scale={spec[:9]}",
                lazy=("npz_random", spec))


def _csv(rows: int = 6 * 8 * 32, drop: str = "", rename: Optional[dict] = None, extra: Optional[dict] = None,
         poke: Optional[tuple[str, Any]] = None, classes: int = 4) -> bytes:
    """A long-format CSV: 6 subjects x 8 windows x 32 rows, columns group, window, y, c0..c2 (+ extra columns)."""
    import pandas as pd

    rng = np.random.default_rng(0)
    win = np.arange(rows) // 32
    y = win % classes
    df = pd.DataFrame({"group": win // 8, "window": win, "y": y,
                       **{f"c{i}": rng.normal(size=rows) + (y == i) for i in range(3)}})
    for k, v in (extra or {}).items():
        df[k] = v(rows) if callable(v) else v
    if poke is not None:
        df[poke[0]] = df[poke[0]].astype(object)
        df.loc[40, poke[0]] = poke[1]
    if drop:
        df = df.drop(columns=[drop])
    df = df.rename(columns=rename or {})
    return df.to_csv(index=False).encode()


_CSV: list[tuple[str, Callable[[], bytes], Optional[dict], str]] = [
    ("valid csv, legacy column names (y, group, window)", lambda: _csv(), {}, ACCEPT),
    ("valid csv", lambda: _csv(), None, ACCEPT),
    ("label column missing", lambda: _csv(drop="y"), None, REFUSE),
    ("a channel named x (no data.columns)", lambda: _csv(rename={"c0": "x"}), {}, REFUSE),
    ("a channel named test_y (no data.columns)", lambda: _csv(rename={"c1": "test_y"}), {}, REFUSE),
    ("unix timestamps column (no data.columns)", lambda: _csv(extra={"timestamp": lambda n: 1.7e9 + np.arange(n) * 0.02}),
     {}, REFUSE),
    ("ISO timestamps column (no data.columns)", lambda: _csv(extra={"time": lambda n: pd_dates(n)}), {}, REFUSE),
    ("unix timestamps column, channels not listed", lambda: _csv(extra={"timestamp": lambda n: 1.7e9 + np.arange(n)}),
     None, REFUSE),
    ("timestamps named by data.columns.time", lambda: _csv(extra={"t": lambda n: 1.7e9 + np.arange(n) * 0.02}),
     {"time": "t"}, ACCEPT),
    ("own column names via data.columns", lambda: _csv(rename={"y": "activity", "group": "subject", "window": "w"}),
     {"label": "activity", "group": "subject", "window": "w", "channels": ["c0", "c1", "c2"]}, ACCEPT),
    ("data.columns names a missing column", lambda: _csv(), {"label": "nope"}, REFUSE),
    ("data.columns channel missing", lambda: _csv(), {"channels": ["c0", "zz"]}, REFUSE),
    ("data.columns label also a channel", lambda: _csv(), {"channels": ["c0", "y"]}, REFUSE),
    ("non-numeric channel", lambda: _csv(extra={"note": "abc"}), None, REFUSE),
    ("a word in a channel", lambda: _csv(poke=("c1", "oops")), None, REFUSE),
    ("NaN in a channel", lambda: _csv(poke=("c1", float("nan"))), None, REFUSE),
    ("inf in a channel", lambda: _csv(poke=("c2", "inf")), None, REFUSE),
    ("1e30 in a channel", lambda: _csv(poke=("c0", 1e30)), None, REFUSE),
    ("missing label", lambda: _csv(poke=("y", None)), None, REFUSE),
    ("one class", lambda: _csv(classes=1), None, REFUSE),
    ("float labels", lambda: _csv(rename={}, extra={"y": lambda n: ((np.arange(n) // 32) % 4).astype(float) + 0.5}), None, REFUSE),
    ("windows of unequal length", lambda: _csv(rows=6 * 8 * 32 - 5), None, REFUSE),
    ("header only", lambda: b"group,window,y,c0\n", None, REFUSE),
    ("empty file", lambda: b"", None, REFUSE),
    ("semicolon separated", lambda: _csv().replace(b",", b";"), None, REFUSE),
    ("binary garbage", lambda: np.random.default_rng(2).bytes(3000), None, REFUSE),
    ("latin-1 header", lambda: _csv().replace(b"c0", b"\xe9c0", 1), None, EITHER),
    ("duplicate column names", lambda: _csv().replace(b"c1", b"c0", 1), None, REFUSE),
]


def pd_dates(n: int) -> np.ndarray:
    return np.datetime_as_string(np.datetime64("2024-01-01T00:00:00") + np.arange(n) * np.timedelta64(20, "ms"))


@st.composite
def csv_files(draw: Callable) -> Case:
    row = draw(st.integers(0, len(_CSV) - 1))
    note, _, columns, expect = _CSV[row]
    # Explicit roles (data.columns) unless the row tests the legacy names ({}): y, group, window by name.
    roles = None if columns == {} else {"label": "y", "group": "group", "window": "window", **(columns or {})}
    data = {**CSV_DATA, **({"columns": roles} if roles else {})}
    return Case("data.csv", expect, {**BASE, "data": data}, note=note, lazy=("csv", row))


# ---------------------------------------------------------------------------------------------- user checkpoints
class _Pwn:
    """Unpickling this makes a folder in the working directory: the proof that a pickle ran code."""

    def __reduce__(self) -> tuple:
        import os

        return (os.mkdir, ("PWNED_BY_PICKLE",))


def _torch_bytes(kind: str) -> bytes:
    import torch  # only the checkpoint cases need torch to build their bytes

    buf = io.BytesIO()
    if kind == "state":
        torch.save({"w": torch.zeros(3)}, buf)
    elif kind == "object":
        torch.save({"model": _Pwn()}, buf)
    return buf.getvalue()


_CKPT: list[tuple[str, Callable[[], bytes], str]] = [
    ("random bytes", lambda: np.random.default_rng(3).bytes(2048), REFUSE),
    ("zero bytes", lambda: b"", REFUSE),
    ("raw pickle that runs code", lambda: pickle.dumps({"w": _Pwn()}), REFUSE),
    ("torch zip with a code-running object", lambda: _torch_bytes("object"), REFUSE),
    ("state dict of the wrong shapes", lambda: _torch_bytes("state"), REFUSE),
    ("truncated torch file", lambda: _torch_bytes("state")[:300], REFUSE),
    ("a text file", lambda: b"weights\n", REFUSE),
    ("an npz file", lambda: _npz(**_good_arrays()), REFUSE),
]


@st.composite
def checkpoints(draw: Callable) -> Case:
    row = draw(st.integers(0, len(_CKPT) - 1))
    note, _, expect = _CKPT[row]
    # The same damaged, code-running or wrong files as start weights, as a saved teacher (load) and as a teacher's
    # recorded outputs (issue 17): every one is refused, and no pickle ever runs.
    key = draw(st.sampled_from(["student.checkpoint", "teacher.checkpoint", "teacher.load", "teacher.outputs"]))
    recipe = _set(BASE, key, "weights.pt")
    if key == "teacher.outputs":  # a teacher given by its outputs has no model
        recipe = _set(BASE, "teacher", {"outputs": "weights.pt"})
    return Case("checkpoint", expect, recipe, note=f"{key}: {note}", lazy=("ckpt", row))
