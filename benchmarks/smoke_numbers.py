"""Every shipped (non-sweep) recipe in ``--smoke`` mode, and the metrics of every row of its summary, as JSON.

A refactoring that must not change behaviour is checked by running this before and after and comparing:

    python benchmarks/smoke_numbers.py --out before.json                 # on the old commit
    python benchmarks/smoke_numbers.py --compare before.json             # on the new one: lists any difference
    python benchmarks/smoke_numbers.py --recipes kd camkd --compare before.json

Smoke runs are one epoch on tiny synthetic data with fixed seeds, so equal code gives equal numbers on one
machine; ``--tol`` is the allowed absolute difference per metric (float rounding of reordered sums).
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def smoke_numbers(names: list[str] | None = None) -> dict:
    import edgedistill

    out = {}
    for path in sorted((ROOT / "recipes").glob("*.yaml")):
        if (names and path.stem not in names) or "sweep" in (yaml.safe_load(path.read_text()) or {}):
            continue
        with tempfile.TemporaryDirectory() as d:
            try:
                s = edgedistill.run(path, out=Path(d) / "run", smoke=True, progress=False)
                out[path.stem] = [{"label": f"{r['model']} ({r['role']})", "metrics": r["metrics"], "val_metrics": r["val_metrics"]}
                                  for r in s["rows"]]
            except Exception as exc:  # noqa: BLE001 - recorded, so a broken recipe shows in the comparison
                out[path.stem] = f"ERROR {type(exc).__name__}: {exc}"
        print(path.stem, flush=True, file=sys.stderr)
    return out


def differences(before: dict, after: dict, tol: float) -> list[str]:
    diffs = []
    for name in sorted(set(before) | set(after)):
        a, b = before.get(name), after.get(name)
        if a is None or b is None:
            continue
        if isinstance(a, str) or isinstance(b, str) or len(a) != len(b):
            if a != b:
                diffs.append(f"{name}: {a if isinstance(a, str) else len(a)} -> {b if isinstance(b, str) else len(b)}")
            continue
        for ra, rb in zip(a, b):
            fa, fb = _flat({"test": ra["metrics"], "val": ra.get("val_metrics", {})}), _flat(
                {"test": rb["metrics"], "val": rb.get("val_metrics", {})})
            if ra["label"] != rb["label"]:
                diffs.append(f"{name}: row {ra['label']} -> {rb['label']}")
            for key, va in fa.items():
                vb = fb.get(key)
                same = (va == vb) or (isinstance(va, float) and isinstance(vb, float)
                                      and (math.isclose(va, vb, abs_tol=tol) or (math.isnan(va) and math.isnan(vb))))
                if not same:
                    diffs.append(f"{name} / {ra['label']} / {key}: {va} -> {vb}")
    return diffs


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipes", nargs="*", help="recipe names (file stems); default: all")
    ap.add_argument("--out", type=Path, help="write the numbers here")
    ap.add_argument("--compare", type=Path, help="numbers from an earlier run to compare against")
    ap.add_argument("--tol", type=float, default=1e-6)
    args = ap.parse_args()
    numbers = smoke_numbers(args.recipes)
    if args.out:
        args.out.write_text(json.dumps(numbers, indent=1, sort_keys=True, default=str))
    if args.compare:
        diffs = differences(json.loads(args.compare.read_text()), numbers, args.tol)
        print("\n".join(diffs) if diffs else f"identical: {len(numbers)} recipes")
        return 1 if diffs else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
