"""format c on trained students: flash, RAM, float max |diff| against PyTorch and the int8 accuracy drop.

Trains (or reuses, when ``--runs`` already holds them) two KD runs of the quickstart recipe on OSULeaf: the
quickstart student (cnn1d width 16, ~3k parameters) and a ~50k-parameter one (cnn1d width 70), each over
``--seeds``; then exports every seed's best-on-validation checkpoint with ``export_c`` (fp32 and int8, 256
calibration windows from the training split, compiled with the system compiler, verified on all test windows)
and writes ``benchmarks/results/c_export.{md,json}``: per model the flash and RAM of each variant and, over seeds,
mean ± std of the float max |diff|, the test accuracy of PyTorch / C fp32 / C int8 and int8's drop, with ONNX
Runtime's static int8 of the same checkpoint beside it.

Run: `nice -n 10 python benchmarks/c_export.py [--runs DIR] [--seeds 0 1 2]` (about 10 minutes on 2 shared cores,
most of it training; with --runs pointing at finished runs, well under a minute).
"""
from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
MODELS = {
    "quickstart student (cnn1d w16)": [],
    "50k student (cnn1d w70)": ["student.width=70"],
}


def _train(recipe: Path, out: Path, seeds: list[int], overrides: list[str]) -> None:
    if (out / "summary.json").is_file():
        return
    cmd = [str(Path(sys.executable).parent / "edgedistill"), "run", str(recipe), f"seeds=[{','.join(map(str, seeds))}]",
           "baseline=false", "report.profile=false", *overrides, "--out", str(out), "--no-progress"]
    print("$", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})


def _compiler() -> str:
    from edgedistill.deploy.c_export import find_compiler

    cc = find_compiler()
    first = subprocess.run([*cc, "--version"], capture_output=True, text=True).stdout.splitlines()
    return first[0] if first else cc[0]


def _ms(values: list[float], scale: float = 1.0, digits: int = 2) -> str:
    v = np.asarray(values) * scale
    return f"{v.mean():.{digits}f} ± {v.std(ddof=1) if len(v) > 1 else 0.0:.{digits}f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=Path, default=None, help="folder for the runs (default: a temporary one)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--calibration", type=int, default=256)
    args = parser.parse_args()

    from edgedistill.deploy.c_export import export_c
    from edgedistill.deploy.export import export_loaded
    from edgedistill.deploy.runs import load_run
    from edgedistill.io import write_json, write_text

    runs = args.runs or Path(tempfile.mkdtemp(prefix="c-export-bench-"))
    load_before = os.getloadavg()
    started = time.time()
    results = []
    for label, overrides in MODELS.items():
        out = runs / ("quickstart" if not overrides else "quickstart_w70")
        _train(ROOT / "recipes" / "quickstart.yaml", out, args.seeds, overrides)
        per_seed = []
        for seed in args.seeds:
            run = load_run(out, seed=seed)
            params = sum(p.numel() for p in run.student.parameters())
            with tempfile.TemporaryDirectory() as tmp:
                t0 = time.perf_counter()
                res = export_c(run, Path(tmp), int8=True, calibration=args.calibration, max_int8_drop=None)
                seconds = time.perf_counter() - t0
                # ONNX Runtime's static int8 of the same checkpoint (per-tensor MinMax activations, per-channel
                # weights): tells the C int8 arithmetic apart from what 8-bit activations cost this network.
                onnx = export_loaded(run, Path(tmp) / "s.onnx", Path(tmp) / "s.int8.onnx", calibration=args.calibration,
                                     max_int8_drop=None)
            rows = {r["variant"]: r for r in res.rows}
            rows["onnx int8"] = next(r for r in onnx.verification["rows"] if r["variant"] == "onnx int8")
            per_seed.append({"seed": seed, "params": params, "footprint": res.footprint, "export_s": round(seconds, 2),
                             "test_windows": len(run.splits.test.x), "rows": rows})
            print(f"{label} seed {seed}: {params} params, {res.footprint}, fp32 diff {rows['c fp32']['max_abs_diff']:.2e}, "
                  f"acc {rows['pytorch']['score']:.4f} / {rows['c fp32']['score']:.4f} / {rows['c int8']['score']:.4f}",
                  flush=True)
        results.append({"model": label, "overrides": overrides, "seeds": per_seed})

    info = {"command": "python benchmarks/c_export.py " + " ".join(sys.argv[1:]), "seeds": args.seeds,
            "calibration_windows": args.calibration, "checkpoint": "best on validation", "data": "OSULeaf (bundled)",
            "recipe": "recipes/quickstart.yaml, baseline=false", "compiler": _compiler(),
            "machine": f"{platform.machine()}, {os.cpu_count()} cores, load average {load_before[0]:.2f} before, "
                       f"{os.getloadavg()[0]:.2f} after", "minutes": round((time.time() - started) / 60, 1)}
    write_json(RESULTS / "c_export.json", {"info": info, "results": results})
    write_text(RESULTS / "c_export.md", _markdown(info, results))
    print((RESULTS / "c_export.md").read_text())


def _markdown(info: dict, results: list[dict]) -> str:
    lines = [
        "# format c on trained students (benchmarks/c_export.py)", "",
        f"Command: `{info['command']}`. Data {info['data']}, {info['recipe']}; seeds {info['seeds']}, the "
        f"{info['checkpoint']} checkpoint of each; int8 calibrated on {info['calibration_windows']} training windows. "
        f"Every test window run through the compiled C test harness ({info['compiler']}, -std=c99 -O2). "
        f"Machine: {info['machine']}; {info['minutes']} min in all.", "",
        "Flash: bytes of the weight and constant arrays (code not included). RAM: the static activation arena, the "
        "largest live input + output pair of any layer. Accuracy and differences: mean ± std over seeds.", "",
        "| model | params | variant | flash KB | RAM KB | max abs logit diff vs PyTorch | test accuracy % | "
        "top-1 agreement % | drop vs PyTorch (points) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for res in results:
        seeds = res["seeds"]
        params = seeds[0]["params"]
        acc = [s["rows"]["pytorch"]["score"] for s in seeds]
        lines.append(f"| {res['model']} | {params} | PyTorch | | | | {_ms(acc, 100, 1)} | | |")
        for variant in ("c fp32", "c int8", "onnx int8"):
            rows = [s["rows"][variant] for s in seeds]
            fp = seeds[0]["footprint"].get(variant[2:], {}) if variant.startswith("c ") else None
            flash_ram = (f"{fp['flash_bytes'] / 1024:.1f} | {fp['ram_bytes'] / 1024:.1f}" if fp else
                         "(ONNX Runtime, for comparison) | ")
            lines.append(
                f"| | | {variant.replace('c ', 'C ').replace('onnx', 'ONNX')} | {flash_ram} | "
                f"{max(r['max_abs_diff'] for r in rows):.1e} (largest) | {_ms([r['score'] for r in rows], 100, 1)} | "
                f"{_ms([r['agreement'] for r in rows], 100, 1)} | {_ms([r['score_drop_points'] for r in rows], 1, 2)} |")
    lines += ["", f"Test windows per seed: {results[0]['seeds'][0]['test_windows']}.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
