"""Every export format on trained students: file size, batch-1 one-thread latency and test accuracy, fp32 and int8.

Trains (or reuses, when ``--runs`` already holds them: the same folders as benchmarks/c_export.py) two KD runs of the
quickstart recipe on OSULeaf: the quickstart student (cnn1d width 16, ~3k parameters) and a ~50k-parameter one
(cnn1d width 70), each over ``--seeds``. Every seed's best-on-validation student is exported in each of ``--formats``
(fp32 and int8, ``--calibration`` training windows, thresholds off: this measures), verified on all test windows in
the format's own runtime, and timed batch 1 on one thread (median of ``--timed`` calls after 20 warm-up calls;
format c: its source built as a shared library and called through ctypes on this host CPU, not a microcontroller;
its flash and RAM are given too). Writes
``benchmarks/results/deploy_formats.{md,json}``: per model and variant, size, size ratio fp32/int8, median latency,
test accuracy and int8's drop, mean ± std over seeds.

Run: `nice -n 10 python benchmarks/deploy_formats.py [--runs DIR] [--seeds 0 1 2] [--formats onnx tflite executorch c]`
(with --runs pointing at finished runs, a few minutes on 2 shared cores; otherwise training comes first).
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"


def _c_bench():
    """benchmarks/c_export.py: the same two students, trained the same way (its MODELS, _train and _ms)."""
    spec = importlib.util.spec_from_file_location("c_export_bench", ROOT / "benchmarks" / "c_export.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=Path, default=None, help="folder for the runs (default: a temporary one)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--formats", nargs="+", default=["onnx", "tflite", "executorch", "c"])
    parser.add_argument("--calibration", type=int, default=256)
    parser.add_argument("--timed", type=int, default=200, help="timed batch-1 calls per variant")
    args = parser.parse_args()

    from edgedistill.deploy.formats import export_format, parse_formats
    from edgedistill.deploy.macs import count_torch
    from edgedistill.deploy.profile import format_row
    from edgedistill.deploy.runs import load_run
    from edgedistill.io import write_json, write_text
    from edgedistill.models import count_params

    bench = _c_bench()
    formats = parse_formats(",".join(args.formats))
    runs = args.runs or Path(tempfile.mkdtemp(prefix="deploy-formats-bench-"))
    load_before = os.getloadavg()
    started = time.time()
    results = []
    for label, overrides in bench.MODELS.items():
        out = runs / ("quickstart" if not overrides else "quickstart_w70")
        bench._train(ROOT / "recipes" / "quickstart.yaml", out, args.seeds, overrides)
        per_seed = []
        for seed in args.seeds:
            run = load_run(out, seed=seed)
            window = np.ascontiguousarray(run.splits.test.x.numpy()[0], dtype=np.float32)
            macs = count_torch(run.student, run.splits.train.views["x"][:1])["total"]
            params = count_params(run.student)
            rows, backends = {}, {}
            with tempfile.TemporaryDirectory() as tmp:
                for name in formats:
                    res = export_format(name, run, Path(tmp) / name, int8=True, calibration=args.calibration,
                                        max_diff=None, max_int8_drop=None, stem="s")
                    backends[name] = res.backend
                    checks = {r["variant"]: r for r in res.rows}
                    rows["pytorch"] = checks["pytorch"]
                    for variant, path in res.files.items():
                        row = format_row(name, variant, path, res, checks[f"{name} {variant}"], window, macs, params,
                                         args.timed, 20)
                        row["agreement"] = checks[f"{name} {variant}"]["agreement"]
                        rows[f"{name} {variant}"] = row
            per_seed.append({"seed": seed, "params": params, "macs": macs, "rows": rows, "backends": backends,
                             "test_windows": len(run.splits.test.x)})
            print(f"{label} seed {seed}: " + "; ".join(
                f"{k} {r['score']:.3f}" + (f" {r['median_us']:.0f}us" if r.get("median_us") else "")
                for k, r in rows.items()), flush=True)
        results.append({"model": label, "overrides": overrides, "seeds": per_seed})

    info = {"command": "python benchmarks/deploy_formats.py " + " ".join(sys.argv[1:]), "seeds": args.seeds,
            "formats": formats, "calibration_windows": args.calibration, "timed_calls": args.timed,
            "checkpoint": "best on validation", "data": "OSULeaf (bundled)", "recipe": "recipes/quickstart.yaml, baseline=false",
            "backends": results[0]["seeds"][0]["backends"],
            "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, load average "
                       f"{load_before[0]:.2f} before, {os.getloadavg()[0]:.2f} after", "minutes": round((time.time() - started) / 60, 1)}
    write_json(RESULTS / "deploy_formats.json", {"info": info, "results": results})
    write_text(RESULTS / "deploy_formats.md", _markdown(info, results, bench._ms))
    print((RESULTS / "deploy_formats.md").read_text())


def _markdown(info: dict, results: list[dict], ms) -> str:
    lines = [
        "# Export formats on trained students (benchmarks/deploy_formats.py)", "",
        f"Command: `{info['command']}`. Data {info['data']}, {info['recipe']}; seeds {info['seeds']}, the "
        f"{info['checkpoint']} checkpoint of each; int8 calibrated on {info['calibration_windows']} training windows; "
        f"every test window run in the format's own runtime. Latency: median of {info['timed_calls']} batch-1 calls "
        f"on one thread after 20 warm-up calls (format c: built as a shared library, called through ctypes, on this "
        f"host CPU). "
        f"Machine: {info['machine']}; {info['minutes']} min in all. Latencies on a shared machine are upper bounds.", "",
        "Backends: " + "; ".join(f"{k}: {v}" for k, v in info["backends"].items()) + ".", "",
        "Size: the file (ONNX, .tflite, .pte), or for C the flash bytes of weights and constants (RAM: its activation "
        "arena). Mean ± std over seeds; drop = PyTorch accuracy minus the variant's, in points.", "",
        "| model | params | variant | size KB | fp32/int8 size | RAM KB | median µs | test accuracy % | agreement % | "
        "drop (points) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for res in results:
        seeds = res["seeds"]
        acc = [s["rows"]["pytorch"]["score"] for s in seeds]
        lines.append(f"| {res['model']} | {seeds[0]['params']:,} | PyTorch | | | | | {ms(acc, 100, 1)} | | |")
        for key in [k for k in seeds[0]["rows"] if k != "pytorch"]:
            rows = [s["rows"][key] for s in seeds]
            name, variant = key.split(" ")
            size = np.mean([r["size_bytes"] for r in rows]) / 1024
            ratio = ""
            if variant == "int8":
                ratio = f"{np.mean([s['rows'][f'{name} fp32']['size_bytes'] / s['rows'][key]['size_bytes'] for s in seeds]):.2f}x"
            ram = f"{rows[0]['ram_bytes'] / 1024:.1f}" if rows[0].get("ram_bytes") is not None else ""
            lat = ms([r["median_us"] for r in rows], 1, 0) if rows[0].get("median_us") is not None else "-"
            drops = [100 * (s["rows"]["pytorch"]["score"] - s["rows"][key]["score"]) for s in seeds]
            agree = ms([r["agreement"] for r in rows], 100, 1) if rows[0].get("agreement") is not None else ""
            lines.append(f"| | | {key} | {size:.1f} | {ratio} | {ram} | {lat} | {ms([r['score'] for r in rows], 100, 1)} | "
                         f"{agree} | {ms(drops, 1, 2)} |")
    lines += ["", f"Test windows per seed: {results[0]['seeds'][0]['test_windows']}.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
