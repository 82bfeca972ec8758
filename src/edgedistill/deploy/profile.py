"""``edgedistill profile RUN_DIR|MODEL.onnx``: what decides whether a student fits a device.

Parameters, file size, MACs per window and batch-1 latency (median and p95 over timed runs after warm-up,
one thread) with ONNX Runtime and, for a run, with PyTorch eager. Latency is wall-clock time on a machine
that other processes may share: the load average before and after is recorded beside the numbers, and
latencies measured under load are upper bounds. A run's profile also goes into its ``report.md`` (section
"Deployment profile") and ``profile.json``.
"""
from __future__ import annotations

import os
import platform
import shlex
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from edgedistill.errors import EdgeDistillError, UserInputError

SECTION = "## Deployment profile"


def machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next((line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")), cpu)
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "load": [round(v, 2) for v in os.getloadavg()]}


def _timed(call: Callable[[], Any], runs: int, warmup: int) -> dict[str, float]:
    for _ in range(warmup):
        call()
    times = np.empty(runs)
    for i in range(runs):
        start = time.perf_counter_ns()
        call()
        times[i] = (time.perf_counter_ns() - start) / 1e3
    return {"median_us": float(np.median(times)), "p95_us": float(np.percentile(times, 95)), "runs": runs}


def ort_latency(path: Path, window: np.ndarray, runs: int = 200, warmup: int = 20) -> dict[str, float]:
    """Batch-1 latency with ONNX Runtime on one thread (intra- and inter-op), all graph optimisations."""
    from edgedistill.deploy.metadata import _session

    session = _session(Path(path), threads=1)
    name = session.get_inputs()[0].name
    feed = {name: np.ascontiguousarray(window[None], dtype=np.float32)}
    return _timed(lambda: session.run(None, feed), runs, warmup)


def torch_latency(model: Any, window: np.ndarray, runs: int = 200, warmup: int = 20) -> dict[str, float]:
    """Batch-1 latency of the PyTorch model in eager mode on one thread (the thread count is restored)."""
    import torch

    threads = torch.get_num_threads()
    x = torch.from_numpy(np.ascontiguousarray(window[None], dtype=np.float32))
    model.eval()
    torch.set_num_threads(1)
    try:
        with torch.inference_mode():
            return _timed(lambda: model(x), runs, warmup)
    finally:
        torch.set_num_threads(threads)


def onnx_params(proto: Any) -> int:
    """Stored weights: initializers except Q/DQ scales and zero points and single numbers (shapes, axes)."""
    qdq = {n for node in proto.graph.node if node.op_type in ("QuantizeLinear", "DequantizeLinear") for n in node.input[1:]}
    return sum(int(np.prod(i.dims)) for i in proto.graph.initializer if i.name not in qdq and int(np.prod(i.dims)) > 2)


class BudgetExceeded(EdgeDistillError):
    """A ``--max-*`` budget of ``edgedistill profile`` is exceeded (exit 1: the profile ran, the model does not fit)."""

    exit_code = 1


def profile(target: str | Path, *, seed: Optional[int] = None, which: str = "best", int8: bool = True,
            calibration: Optional[int] = None, runs: int = 200, warmup: int = 20, write_report: bool = True,
            exporter: str = "auto", formats: tuple[str, ...] = ("onnx",)) -> dict[str, Any]:
    """Profile a run's student (exported in every format of ``formats`` to a temporary folder, fp32 and with
    ``int8`` also int8) or an ``.onnx`` file. For a run, ``write_report`` adds the section to ``report.md`` and
    writes ``profile.json``."""
    if runs < 1 or warmup < 0:
        raise UserInputError(f"--runs must be >= 1 and --warmup >= 0, got {runs} and {warmup}")
    from edgedistill.deploy.metadata import require_onnx, require_onnxruntime

    path = Path(target)
    if path.suffix == ".onnx" or path.is_file():
        require_onnx(), require_onnxruntime()
        return profile_onnx(path, runs=runs, warmup=warmup)
    if "onnx" in formats:
        require_onnx(), require_onnxruntime()
    return profile_run(path, seed=seed, which=which, int8=int8, calibration=calibration, runs=runs, warmup=warmup,
                       write_report=write_report, exporter=exporter, formats=formats)


def profile_onnx(path: Path, *, runs: int = 200, warmup: int = 20) -> dict[str, Any]:
    from edgedistill.deploy.macs import count_onnx
    from edgedistill.deploy.metadata import ModelMetadata, _session, require_onnx

    onnx = require_onnx()
    session = _session(path)  # a readable model file, or a one-line error
    proto = onnx.load(str(path))
    props = {p.key: p.value for p in proto.metadata_props}
    try:
        meta: Optional[ModelMetadata] = ModelMetadata.from_props(props, f"'{path}'")
        shape = list(meta.input_shape)  # type: ignore[union-attr]
    except UserInputError:
        meta = None
        dims = session.get_inputs()[0].shape[1:]
        if not all(isinstance(d, int) for d in dims):
            raise UserInputError(f"'{path}': the per-window input shape {dims} is not fixed; cannot time it") from None
        shape = list(dims)
    window = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    before = machine()
    macs = count_onnx(proto)
    quant = meta.quantization if meta else "unknown"
    row = {"variant": "onnxruntime int8" if meta and meta.quantization != "none" else "onnxruntime",
           "params": onnx_params(proto), "size_bytes": path.stat().st_size, "macs": macs["total"],
           **ort_latency(path, window, runs, warmup)}
    return {"target": str(path), "input_shape": shape, "quantization": quant, "macs": macs["total"],
            "macs_source": macs["source"], "threads": 1, "runs": runs, "warmup": warmup,
            "machine": {**before, "load_after": machine()["load"]}, "rows": [row]}


def profile_run(run_dir: Path, *, seed: Optional[int] = None, which: str = "best", int8: bool = True,
                calibration: Optional[int] = None, runs: int = 200, warmup: int = 20, write_report: bool = True,
                exporter: str = "auto", formats: tuple[str, ...] = ("onnx",)) -> dict[str, Any]:
    """Export the run's student in every format of ``formats`` to a temporary folder (measure only: no thresholds,
    ``edgedistill export`` enforces them) and profile each file; the first row is PyTorch eager."""
    from edgedistill.deploy.export import _state_dict_bytes
    from edgedistill.deploy.formats import export_format
    from edgedistill.deploy.macs import count_torch
    from edgedistill.deploy.quantize import DEFAULT_CALIBRATION
    from edgedistill.deploy.runs import load_run
    from edgedistill.models import count_params

    t_start = time.perf_counter()
    run = load_run(run_dir, seed, which)
    meta = run.metadata()
    x_test = run.splits.test.x.numpy()
    window = np.ascontiguousarray(x_test[0], dtype=np.float32)
    t0 = time.perf_counter()
    backends, exported = {}, {}
    with tempfile.TemporaryDirectory(prefix="edgedistill-profile-") as tmp:
        for name in formats:
            options = {"exporter": exporter} if name == "onnx" else {}
            exported[name] = export_format(name, run, Path(tmp), int8=int8, calibration=calibration or DEFAULT_CALIBRATION,
                                           max_diff=None, max_int8_drop=None, stem="student", **options)
            backends[name] = exported[name].backend
        export_s = time.perf_counter() - t0
        before = machine()
        macs = count_torch(run.student, run.splits.train.views["x"][:1])
        first = next(iter(exported.values()))
        reference = first.rows[0]
        rows = [{"variant": "pytorch eager", "params": count_params(run.student), "size_bytes": _state_dict_bytes(run.student),
                 "macs": macs["total"], "score": reference["score"], "max_abs_diff": None,
                 **torch_latency(run.student, window, runs, warmup)}]
        for name, result in exported.items():
            checks = {r["variant"]: r for r in result.rows}
            for variant, path in result.files.items():
                rows.append(format_row(name, variant, path, result, checks[f"{name} {variant}"], window, macs["total"],
                                       rows[0]["params"], runs, warmup))
    out = {
        "target": str(run_dir), "seed": run.seed, "checkpoint": which, "model": meta.model,
        "input_shape": meta.input_shape, "metric": first.metric, "formats": list(formats), "backends": backends,
        "test_windows": int(len(x_test)), "exporter": backends.get("onnx", ""),
        "macs": macs["total"], "macs_source": macs["source"], "macs_per_layer": macs["per_layer"],
        "threads": 1, "runs": runs, "warmup": warmup, "export_seconds": round(export_s, 2),
        "seconds": round(time.perf_counter() - t_start, 2),
        "machine": {**before, "load_after": machine()["load"]}, "rows": rows,
    }
    if write_report:
        write_into_run(Path(run_dir), out)
    return out


def format_row(name: str, variant: str, path: Path, result: Any, check: dict[str, Any], window: np.ndarray, macs: int,
               torch_params: int, runs: int, warmup: int) -> dict[str, Any]:
    """One profile row: a format's file, its size (for C: flash and RAM), accuracy and batch-1 one-thread latency."""
    row: dict[str, Any] = {"variant": f"{'onnxruntime' if name == 'onnx' else name} {variant}", "format": name,
                           "size_bytes": result.sizes.get(variant, 0), "macs": macs, "score": check["score"],
                           "max_abs_diff": check["max_abs_diff"]}
    if name == "onnx":
        import onnx

        row["params"] = onnx_params(onnx.load(str(path)))
        row.update(ort_latency(path, window, runs, warmup))
        return row
    row["params"] = torch_params  # the same weights, in the format's own layout
    row.update({k: v for k, v in result.footprint.get(variant, {}).items()})
    call = latency_call(name, path, window)
    row.update(_timed(call, runs, warmup) if call is not None else {"median_us": None, "p95_us": None, "runs": 0})
    return row


def latency_call(name: str, path: Path, window: np.ndarray) -> Optional[Callable[[], Any]]:
    """A one-window, one-thread call of the file's own runtime (C: the exported source built as a shared library and
    called through ctypes, on the host CPU, not a microcontroller), or None for a format with no timer."""
    if name == "tflite":
        from edgedistill.deploy.export_tflite import single_window_call

        return single_window_call(path, window)
    if name == "executorch":
        from edgedistill.deploy.export_executorch import single_window_call as et_call

        return et_call(path, window)
    if name == "c":
        from edgedistill.deploy.c_export import single_window_call as c_call

        return c_call(path, window)
    return None


def check_budgets(result: dict[str, Any], *, max_params: Optional[int] = None, max_ram_kb: Optional[float] = None,
                  max_latency_us: Optional[float] = None) -> list[str]:
    """One line per budget exceeded: the parameters of the student, the RAM of every variant that has an estimate
    (format c), and the median latency of every exported variant (PyTorch eager is not a deployment target)."""
    problems = []
    rows = result["rows"]
    if max_params is not None and rows[0]["params"] > max_params:
        problems.append(f"--max-params: the student has {rows[0]['params']:,} parameters > {max_params:,} allowed")
    if max_ram_kb is not None:
        with_ram = [r for r in rows if r.get("ram_bytes") is not None]
        if not with_ram:
            raise UserInputError("--max-ram-kb: no profiled format estimates RAM; add c to --format")
        problems += [f"--max-ram-kb: {r['variant']} needs {r['ram_bytes'] / 1024:.1f} KB of RAM > {max_ram_kb:g} KB allowed"
                     for r in with_ram if r["ram_bytes"] / 1024 > max_ram_kb]
    if max_latency_us is not None:
        timed = [r for r in rows[1:] if r.get("median_us") is not None]
        problems += [f"--max-latency-us: {r['variant']} takes {r['median_us']:.0f} µs (median, batch 1, one thread) > "
                     f"{max_latency_us:g} µs allowed" for r in timed if r["median_us"] > max_latency_us]
    return problems


def table(result: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Header and cells of the profile table."""
    has_score = any(r.get("score") is not None for r in result["rows"])
    has_ram = any(r.get("ram_bytes") is not None for r in result["rows"])
    header = ["variant", "params", "size KB", "MACs/window"]
    if has_ram:
        header += ["RAM KB"]
    if has_score:
        header += [f"test {result.get('metric', 'score')}", "max |diff|"]
    header += ["median µs", "p95 µs"]
    cells = []
    for r in result["rows"]:
        row = [r["variant"], f"{r['params']:,}", f"{r['size_bytes'] / 1024:.1f}", f"{r['macs']:,}"]
        if has_ram:
            row += ["-" if r.get("ram_bytes") is None else f"{r['ram_bytes'] / 1024:.1f}"]
        if has_score:
            diff = r.get("max_abs_diff")
            row += [f"{r['score']:.4f}", "-" if diff is None else f"{diff:.1e}"]
        row += ["-" if r.get("median_us") is None else f"{r['median_us']:.0f}",
                "-" if r.get("p95_us") is None else f"{r['p95_us']:.0f}"]
        cells.append(row)
    return header, cells


def describe(result: dict[str, Any]) -> str:
    m = result["machine"]
    return (f"Batch 1, one thread, median and p95 of {result['runs']} runs after {result['warmup']} warm-up runs, on "
            f"{m['cpu']} ({m['cores']} cores; load average {m['load'][0]:.2f} before, {m['load_after'][0]:.2f} after: "
            f"{'the CPU was shared, latencies are upper bounds' if max(m['load'][0], m['load_after'][0]) > 0.5 else 'an idle machine'}). "
            f"MACs per window {result['macs_source']}.")


def markdown(result: dict[str, Any]) -> str:
    header, cells = table(result)
    model = result.get("model", {})
    what = (f"Student `{model.get('name', '?')}` (seed {result['seed']}, {result['checkpoint']} checkpoint), input "
            f"{tuple(result['input_shape'])} per window; exported with {'; '.join(result.get('backends', {}).values())} "
            f"(ONNX int8 = static QDQ per-channel); test scores on the {result['test_windows']} test windows, max |diff| = largest output "
            "difference from PyTorch. Size: the file (PyTorch: its state dict saved with torch.save); ONNX params: the "
            "weights stored in the graph, after BatchNorm is folded into the convolutions.")
    cell = lambda text: text.replace("|", "\\|")  # noqa: E731 - "max |diff|" inside a Markdown table
    lines = [SECTION, "", what + " " + describe(result), "",
             "| " + " | ".join(map(cell, header)) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(map(cell, c)) + " |" for c in cells]
    fmts = ",".join(result.get("formats", ["onnx"]))
    lines += ["", f"Command: `edgedistill profile {result['target']} --format {fmts}` (`edgedistill export "
                  f"{result['target']} --format {fmts} --int8` "
                  "writes the verified files).", ""]
    return "\n".join(lines)


def with_section(report: str, section: str) -> str:
    """``report`` with its "Deployment profile" section replaced by (or appended as) ``section``."""
    start = report.find(SECTION)
    if start < 0:
        return report.rstrip("\n") + "\n\n" + section
    nxt = report.find("\n## ", start + len(SECTION))
    rest = report[nxt + 1:] if nxt >= 0 else ""
    return report[:start] + section + ("\n" + rest if rest else "")


def write_into_run(run_dir: Path, result: dict[str, Any]) -> None:
    from edgedistill.io import write_json, write_text

    write_json(run_dir / "profile.json", result)
    report = run_dir / "report.md"
    text = report.read_text() if report.is_file() else f"# {run_dir.name}\n"
    write_text(report, with_section(text, markdown(result)))


def report_profile(run_dir: Path, smoke: bool) -> None:
    """``report.profile``: add the student's ONNX size / MACs / latency to report.md, after a run (the runner calls
    it through the ``deploy_profile`` its entry points pass, since experiment may not import deploy)."""
    import importlib.util
    import sys

    if smoke:
        print("report.profile: skipped in a smoke run (nothing worth timing)", file=sys.stderr)
        return
    missing = [m for m in ("onnx", "onnxruntime") if importlib.util.find_spec(m) is None]
    if missing:
        print(f"report.profile: skipped, {' and '.join(missing)} not installed (pip install 'edgedistill[deploy]')",
              file=sys.stderr)
        return
    from edgedistill.errors import EdgeDistillError

    try:
        profile_run(run_dir)
    except EdgeDistillError as exc:  # the run itself is complete: say why the profile is missing, keep going
        print(f"report.profile: no deployment profile: {exc}", file=sys.stderr)
    except Exception as exc:  # noqa: BLE001 - a profiling failure must not hide the finished run's results
        print(f"report.profile: no deployment profile ({type(exc).__name__}: {exc}); the run itself is complete; "
              f"retry with: edgedistill profile {shlex.quote(str(run_dir))}", file=sys.stderr)
