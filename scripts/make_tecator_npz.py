"""Regenerate src/edgedistill/data/bundled_data/tecator.npz from sktime's copy of the Tecator dataset.

edgedistill ships the Tecator arrays itself so that it does not depend on sktime for one small regression set.
This script is how the shipped file was made (with sktime 1.2.0); it needs sktime installed
(``pip install sktime``) and is not run by the package or its tests. The arrays are stored exactly as
``sktime.datasets.load_tecator(split=..., return_type="numpy3D")`` returns them, dtypes included
(x float64 (n, 1, 100), y float32 (n,)): the loader casts as it always did, so every number stays the same.

    python scripts/make_tecator_npz.py            # rewrite the shipped file
    python scripts/make_tecator_npz.py --check    # only compare the shipped file with sktime's arrays

The Tecator data may be redistributed only with its permission note attached (the original StatLib
description, reproduced by OpenML dataset 505, the page sktime's copy points to): the note is stored in the
npz itself (``permission``) and in tecator_PERMISSION.txt beside it.
"""
from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parent.parent / "src" / "edgedistill" / "data" / "bundled_data" / "tecator.npz"
PERMISSION = OUT.with_name("tecator_PERMISSION.txt")


def sktime_arrays() -> dict[str, np.ndarray]:
    import sktime
    from sktime.datasets import load_tecator

    x, y = load_tecator(split="train", return_type="numpy3D")
    tx, ty = load_tecator(split="test", return_type="numpy3D")
    print(f"sktime {sktime.__version__}")
    return {"x": np.asarray(x), "y": np.asarray(y), "test_x": np.asarray(tx), "test_y": np.asarray(ty)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare the shipped file with sktime, write nothing")
    args = parser.parse_args()
    arrays = sktime_arrays()
    for k, a in arrays.items():
        print(f"{k:7s} {a.dtype} {a.shape} sha256 {hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()[:16]}")
    if args.check:
        with np.load(OUT, allow_pickle=False) as f:
            same = all(f[k].dtype == a.dtype and np.array_equal(f[k], a) for k, a in arrays.items())
        print(f"{OUT.name}: {'identical to' if same else 'DIFFERS from'} sktime's arrays")
        return 0 if same else 1
    OUT.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(OUT, **arrays, permission=np.array(PERMISSION.read_text(encoding="utf-8")))
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
