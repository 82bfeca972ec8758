"""Reliability diagrams (raw and temperature-scaled) and the predictions behind them.

A diagram needs every test prediction, which summary.json does not hold: at the end of a run (the data still
loaded) each reported network is evaluated once more (the same ``engine.evaluate.predict`` and
``metrics.fit_temperature`` the table's ECE and T-scaled ECE come from), its confidences binned, and the bins
written to ``plots/reliability.json``; ``edgedistill report`` draws from that file, so a report never reloads the
data. Bins follow ``metrics.ece``: 15 equal-width bins of (0, 1], pooled over seeds, each seed scaled by the
temperature fitted on its own validation predictions.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Optional

from edgedistill.experiment.plots_common import Plot, figure, tidy

N_BINS = 15


def bins(logits: Any, y: Any, n_bins: int = N_BINS) -> dict[str, list[float]]:
    """Per bin: sample count, correct predictions and summed confidence (JSON-safe; sums pool across seeds)."""
    import torch

    prob = logits.double().softmax(dim=1)
    conf, pred = prob.max(dim=1)
    correct = (pred == y).double()
    # Bin b holds lo < conf <= hi (metrics.ece's rule): ceil(conf * n) - 1, with conf = 0 impossible after softmax.
    index = (torch.ceil(conf * n_bins).long() - 1).clamp(0, n_bins - 1)
    count = torch.bincount(index, minlength=n_bins).double()
    return {"count": count.tolist(), "correct": torch.bincount(index, weights=correct, minlength=n_bins).tolist(),
            "conf": torch.bincount(index, weights=conf, minlength=n_bins).tolist()}


def _add(a: Optional[dict[str, list[float]]], b: dict[str, list[float]]) -> dict[str, list[float]]:
    return b if a is None else {k: [x + y for x, y in zip(a[k], b[k])] for k in b}


def ece_of(b: dict[str, list[float]]) -> float:
    n = sum(b["count"])
    return sum(abs(c - s) for c, s, k in zip(b["correct"], b["conf"], b["count"]) if k) / n if n else 0.0


def network_entry(name: str, per_seed: list[tuple[Any, Any, Any, Any]]) -> dict[str, Any]:
    """``per_seed``: (val logits, val labels, test logits, test labels) of one network per seed."""
    from edgedistill.metrics import fit_temperature

    raw = scaled = None
    temps = []
    for zv, yv, zt, yt in per_seed:
        t = fit_temperature(zv, yv) if len(yv) else 1.0  # no validation split: nothing to fit, T = 1
        temps.append(t)
        raw, scaled = _add(raw, bins(zt, yt)), _add(scaled, bins(zt / t, yt))
    assert raw is not None and scaled is not None
    return {"name": name, "seeds": len(per_seed), "temperature": temps, "raw": raw, "scaled": scaled,
            "ece": ece_of(raw), "ece_ts": ece_of(scaled)}


def compute(run_dir: Path, recipe: Any, splits: Any, device: Any, warn: Callable[[str], None]) -> Optional[dict[str, Any]]:
    """Predictions of the teachers, the student alone and the distilled student (the checkpoints the table reports),
    binned. None for regression. A network that cannot be evaluated again is left out with a warning line."""
    from edgedistill.engine.checkpoint import load as load_checkpoint
    from edgedistill.engine.evaluate import predict
    from edgedistill.engine.loop import deliverable_weights
    from edgedistill.experiment.build import build_network
    from edgedistill.experiment.plots_sources import _cache_root, _read_json
    from edgedistill.registry import METHODS

    info = splits.info
    if info.task != "classification":
        return None
    cache = _cache_root(run_dir, {"cache_dir": str(recipe.cache_dir) if recipe.cache_dir else None}, False)

    def cached(folder: Path) -> dict[str, Any]:
        key = (_read_json(folder / "summary.json") or {}).get("cache_key")
        if not isinstance(key, str) or ":" in key:
            raise FileNotFoundError(f"no model-cache entry named in {folder / 'summary.json'}")
        return load_checkpoint(cache / "models" / key / "weights.pt", hint="")

    def outputs(net: Any, state: dict[str, Any], view: str) -> tuple[Any, Any, Any, Any]:
        net.load_state_dict(state)
        net = net.to(device)
        s = splits.view_as_x(view)
        return predict(net, s.val, device), s.val.y, predict(net, s.test, device), s.test.y

    networks: list[tuple[str, Callable[[int], tuple[Any, Any, Any, Any]]]] = []
    plan = METHODS.get(recipe.method.name).teacher_plan
    for spec in plan(recipe, recipe.seeds[0]):
        if spec.given:
            continue
        def teacher(seed: int, spec: Any = spec) -> tuple[Any, Any, Any, Any]:
            folder = run_dir / spec.name
            folder = folder if (folder / "summary.json").is_file() else folder / f"seed{seed}"
            return outputs(build_network(spec, info, "teacher", spec.view, seed=spec.seed), cached(folder), spec.view)
        label = "teacher" if spec.name == "teacher" else f"teacher '{spec.name}'"
        networks.append((label, teacher))
    student_cfg = recipe.student.model_copy(update={"checkpoint": None})
    if (run_dir / "student_alone").is_dir():
        networks.append(("student alone", lambda seed: outputs(build_network(student_cfg, info, "student", seed=seed),
                                                                cached(run_dir / "student_alone" / f"seed{seed}"), "x")))
    stage = run_dir / recipe.method.name
    if stage.is_dir():
        networks.append((recipe.method.name, lambda seed: outputs(build_network(student_cfg, info, "student", seed=seed),
                                                                  deliverable_weights(stage / f"seed{seed}", recipe.report.select), "x")))
    out = []
    for name, get in networks:
        try:
            # A teacher shared by every seed is one model: evaluated once.
            seeds = recipe.seeds[:1] if name.startswith("teacher") and recipe.teacher is not None and recipe.teacher.seed is not None \
                and (run_dir / "teacher" / "summary.json").is_file() else recipe.seeds
            out.append(network_entry(name, [get(s) for s in seeds]))
        except Exception as exc:  # noqa: BLE001 - the run is finished: a diagram lost is a warning, never a failed run
            warn(f"reliability diagram of {name} left out: {str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__}")
    return {"n_bins": N_BINS, "select": recipe.report.select, "networks": out} if out else None


def recompute(run_dir: Path, warn: Callable[[str], None]) -> Optional[dict[str, Any]]:
    """``compute`` for a finished run that did not save its bins (an older version, ``report.plots: false``): its data
    and networks rebuilt from config.yaml (``runner.plan``, as the run built them), the saved weights evaluated."""
    import torch

    from edgedistill.config import load_recipe
    from edgedistill.experiment.cross_validation import first_fold
    from edgedistill.experiment.plots_sources import _read_json
    from edgedistill.experiment.runner import plan

    recipe = load_recipe(run_dir / "config.yaml")
    summary = _read_json(run_dir / "summary.json") or {}
    fold = first_fold(recipe) if recipe.eval.scheme != "holdout" else None  # a fold<i>/ run: eval.only names it
    p = plan(recipe, smoke=bool(summary.get("smoke")), fold=fold)
    return compute(run_dir, p.recipe, p.splits, torch.device("cpu"), warn)


def diagram(reliability: dict[str, Any]) -> Optional[Plot]:
    """One panel per network: accuracy per confidence bin before (raw) and after temperature scaling."""
    nets = [n for n in reliability.get("networks", []) if sum(n["raw"]["count"])]
    if not nets:
        return None
    n_bins = int(reliability.get("n_bins", N_BINS))
    width = 1.0 / n_bins
    centres = [(i + 0.5) * width for i in range(n_bins)]
    fig = figure(3.6 * len(nets), 3.6)
    for i, net in enumerate(nets):
        ax = fig.add_subplot(1, len(nets), i + 1)
        for kind, col, shift, label in (("raw", "#d62728", -width / 4, "raw"), ("scaled", "#1f77b4", width / 4, "T-scaled")):
            b = net[kind]
            acc = [c / k if k else 0.0 for c, k in zip(b["correct"], b["count"])]
            ece = net["ece" if kind == "raw" else "ece_ts"]
            ax.bar([c + shift for c in centres], acc, width=width / 2, color=col, alpha=0.8,
                   label=f"{label} (ECE {ece:.3f})")
        ax.plot([0, 1], [0, 1], color="black", linestyle="--", linewidth=0.8, label="perfect calibration")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_xlabel("confidence (max softmax probability)")
        ax.set_ylabel("accuracy in bin (test)")
        temps = net.get("temperature") or []
        t_text = f"T = {temps[0]:.2f}" if len(temps) == 1 else f"T = {min(temps):.2f}-{max(temps):.2f}" if temps else ""
        ax.set_title(f"{net['name']} ({net['seeds']} seed{'s' if net['seeds'] != 1 else ''}; {t_text})", fontsize=9)
        ax.legend(fontsize=7, loc="upper left")
    tidy(fig, 1, len(nets))
    return Plot("reliability", "Reliability diagrams (test, raw and temperature-scaled)", fig,
                "Accuracy of the test predictions in each confidence bin: bars under the diagonal are over-confident, above "
                "it under-confident. *T-scaled*: logits divided by one temperature fitted on validation (accuracy unchanged). "
                "Seeds pooled.")
