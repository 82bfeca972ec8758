"""What ``edgedistill tune`` searches: the distillation regimes that apply to a recipe's data and models, each with
its key hyperparameters as Optuna distributions, and optionally the student's width and depth within a size or
latency limit.

The candidates are one table (``CANDIDATES``), declared once: a name, the recipe's ``method`` section it becomes
(placeholders ``Val("knob")`` filled with the sampled values, ``SUPERVISED`` the data's own label loss), the knobs
with their ranges (around the defaults the loss's or regime's docs page gives), and what it needs of the recipe.
Whether a candidate applies is read, not listed per name: the task from the loss/method registries, "needs"
(several teachers, a teacher on another channel view, data-free opt-in) from the recipe, and the rest (taps that
exist and match, shapes) by building the regime on the recipe's data exactly as ``edgedistill run`` would. Every
exclusion keeps its reason; the report lists them.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from edgedistill.errors import UserInputError

SUPERVISED = "$supervised"  # the data's label loss: ce (classification) or mse (regression)
LABEL_LOSS = {"classification": "ce", "regression": "mse"}


@dataclass(frozen=True)
class Val:
    """A sampled knob's value in a template; ``complement``: 1 - value (the label term's share of a mix)."""

    knob: str
    complement: bool = False


@dataclass(frozen=True)
class Knob:
    name: str
    low: float = 0.0
    high: float = 0.0
    log: bool = False
    choices: tuple[Any, ...] = ()  # a categorical knob instead of a range
    # The value the loss's or regime's docs page gives (the paper's or official code's), tried first (tune_select);
    # None: the range's middle.
    default: Any = None

    def suggest(self, trial: Any, key: str) -> Any:
        if self.choices:
            return trial.suggest_categorical(key, list(self.choices))
        return trial.suggest_float(key, self.low, self.high, log=self.log)

    def distribution(self) -> Any:
        from optuna.distributions import CategoricalDistribution, FloatDistribution

        if self.choices:
            return CategoricalDistribution(list(self.choices))
        return FloatDistribution(self.low, self.high, log=self.log)


@dataclass(frozen=True)
class Candidate:
    name: str
    method: dict[str, Any]  # the recipe's method section, with Val placeholders
    knobs: tuple[Knob, ...]
    needs: frozenset[str] = frozenset()  # "teachers" (>= 2), "views" (a teacher on another view), "data_free"
    doc: str = ""


T = Knob("temperature", 1.0, 8.0, log=True, default=4.0)
ALPHA = Knob("alpha", 0.1, 0.95, default=0.9)  # the distillation term's share; the label term gets 1 - alpha


def _mix(loss: str, *extra: Knob, **fixed: Any) -> dict[str, Any]:
    """Label loss (1 - alpha) + ``loss`` (alpha) with its knobs: the response-based losses."""
    term = {"loss": loss, "weight": Val("alpha"), **fixed, **{k.name: Val(k.name) for k in extra}}
    return {"name": "offline", "terms": [{"loss": SUPERVISED, "weight": Val("alpha", True)}, term]}


def _feature(loss: str, tap: str, **fixed: Any) -> dict[str, Any]:
    """Label loss (weight 1) + a feature/relation loss on both networks' ``tap`` with a tuned weight (its scale is
    the loss's own: the ranges bracket RepDistiller's defaults, as the docs pages give them)."""
    return {"name": "offline", "terms": [{"loss": SUPERVISED, "weight": 1.0},
                                         {"loss": loss, "weight": Val("weight"), "student_tap": tap, "teacher_tap": tap, **fixed}]}


CANDIDATES: tuple[Candidate, ...] = (
    Candidate("kd", _mix("kd", T), (T, ALPHA), doc="docs/losses/kd.md"),
    Candidate("reverse_kd", _mix("reverse_kd", T), (T, ALPHA), doc="docs/losses/reverse_kd.md"),
    Candidate("std_normalized_kd", _mix("std_normalized_kd", Knob("temperature", 0.5, 4.0, log=True)),
              (Knob("temperature", 0.5, 4.0, log=True, default=1.0), ALPHA), doc="docs/losses/std_normalized_kd.md"),
    Candidate("dist", {"name": "offline", "terms": [{"loss": SUPERVISED, "weight": 1.0},
                                                    {"loss": "dist", "weight": Val("weight"), "beta": 1.0, "gamma": 1.0,
                                                     "temperature": Val("temperature")}]},
              (Knob("weight", 0.5, 4.0, log=True, default=2.0), T), doc="docs/losses/dist.md"),
    Candidate("dkd", {"name": "offline", "terms": [{"loss": SUPERVISED, "weight": 1.0},
                                                   {"loss": "dkd", "weight": 1.0, "alpha": Val("alpha"), "beta": Val("beta"),
                                                    "temperature": Val("temperature")}]},
              (Knob("alpha", 0.5, 2.0, default=1.0), Knob("beta", 1.0, 16.0, log=True, default=8.0), T), doc="docs/losses/dkd.md"),
    Candidate("mse_to_teacher", _mix("mse_to_teacher"), (ALPHA,), doc="docs/losses/mse_to_teacher.md"),
    Candidate("fitnet", _feature("fitnet", "feat"), (Knob("weight", 1.0, 300.0, log=True, default=100.0),), doc="docs/losses/fitnet.md"),
    Candidate("at", _feature("at", "feat", p=2), (Knob("weight", 100.0, 3000.0, log=True, default=1000.0),), doc="docs/losses/at.md"),
    Candidate("sp", _feature("sp", "feat"), (Knob("weight", 300.0, 10000.0, log=True, default=3000.0),), doc="docs/losses/sp.md"),
    Candidate("rkd", _feature("rkd", "emb", distance_weight=25, angle_weight=50), (Knob("weight", 0.3, 3.0, log=True, default=1.0),),
              doc="docs/losses/rkd.md"),
    Candidate("pkt", _feature("pkt", "emb"), (Knob("weight", 3000.0, 100000.0, log=True, default=30000.0),), doc="docs/losses/pkt.md"),
    Candidate("multi_teacher", {**_mix("kd", T), "name": "multi_teacher", "params": {"space": Val("space")}},
              (T, ALPHA, Knob("space", choices=("probs", "logits"))), frozenset({"teachers"}), "docs/methods/multi_teacher.md"),
    Candidate("camkd", {"name": "camkd", "params": {"temperature": Val("temperature"), "reduction": "code"},
                        "terms": [{"loss": "ce", "weight": 1.0}, {"loss": "kd", "weight": 1.0},
                                  {"loss": "inter", "weight": Val("inter_weight"), "start_epoch": 1}]},
              (T, Knob("inter_weight", 5.0, 100.0, log=True, default=50.0)), frozenset({"teachers"}), "docs/methods/camkd.md"),
    Candidate("skkd", {"name": "skkd", "params": {"temperature": Val("temperature"), "kd_weight": Val("alpha"),
                                                  "ce_weight": Val("alpha", True), "sk_weight": Val("sk_weight")}},
              (T, ALPHA, Knob("sk_weight", 0.3, 3.0, log=True)), frozenset({"views"}), "docs/methods/skkd.md"),
    Candidate("pskd", {"name": "pskd", "params": {"temperature": Val("temperature"), "alpha": Val("alpha")}},
              (T, Knob("alpha", 0.5, 1.0)), frozenset({"views", "teachers"}), "docs/methods/pskd.md"),
    Candidate("dfad", {"name": "dfad", "params": {"generator_lr": Val("generator_lr"), "adv": Val("adv")}},
              (Knob("generator_lr", 1e-4, 1e-2, log=True), Knob("adv", 0.3, 3.0, log=True)), frozenset({"data_free"}),
              "docs/methods/dfad.md"),
    # (CuDFKD's adversarial weight starts at 0 and grows by adv_step per epoch in the official schedule)
    Candidate("cudfkd", {"name": "cudfkd", "params": {"generator_lr": Val("generator_lr"), "adv_step": Val("adv_step")}},
              (Knob("generator_lr", 1e-4, 1e-2, log=True), Knob("adv_step", 0.05, 1.0, log=True)), frozenset({"data_free"}),
              "docs/methods/cudfkd.md"),
)
BY_NAME = {c.name: c for c in CANDIDATES}
#: Student shapes tried under --max-params / --max-latency-us (the models' ``width`` and ``depth`` keywords).
WIDTHS, DEPTHS = (4, 8, 12, 16, 24, 32, 48, 64), (2, 3, 4, 5)


def fill(template: Any, values: dict[str, Any], task: str) -> Any:
    """``template`` with every ``Val`` replaced by its sampled value and ``SUPERVISED`` by the task's label loss."""
    if isinstance(template, Val):
        v = values[template.knob]
        return round(1.0 - v, 6) if template.complement else v
    if template == SUPERVISED:
        return LABEL_LOSS[task]
    if isinstance(template, dict):
        return {k: fill(v, values, task) for k, v in template.items()}
    if isinstance(template, list):
        return [fill(v, values, task) for v in template]
    return template


def match(template: Any, actual: Any, task: str, found: Optional[dict[str, Any]] = None) -> Optional[dict[str, Any]]:
    """The knob values that make ``template`` equal the recipe's ``actual`` method section, or None if no values do
    (``fill``'s inverse: how the recipe's own setting is recognised as a point of the space)."""
    found = {} if found is None else found
    if isinstance(template, Val):
        numeric = isinstance(actual, (int, float)) and not isinstance(actual, bool)
        if not (numeric or isinstance(actual, str)) or (template.complement and not numeric):
            return None
        value = round(1.0 - actual, 6) if template.complement else actual
        if template.knob in found and (found[template.knob] != value if not numeric else abs(found[template.knob] - value) > 1e-6):
            return None
        found[template.knob] = value
        return found
    if template == SUPERVISED:
        return found if actual == LABEL_LOSS[task] else None
    if isinstance(template, dict):
        if not isinstance(actual, dict) or set(actual) - set(template) - {"params", "terms"}:
            return None
        for k, v in template.items():
            if k not in actual or match(v, actual[k], task, found) is None:
                return None
        return found
    if isinstance(template, list):
        if not isinstance(actual, list) or len(actual) != len(template):
            return None
        return found if all(match(t, a, task, found) is not None for t, a in zip(template, actual)) else None
    return found if template == actual or (isinstance(template, float) and actual == template) else None


def recipe_point(candidates: list[Candidate], method: dict[str, Any], task: str) -> Optional[dict[str, Any]]:
    """The recipe's own method section as a point of the space (``{"method": name, "<name>.<knob>": value}``), when
    one candidate's template gives it with every knob inside its range: the search evaluates it first, so the tuned
    result is measured against the recipe's setting on the same validation split."""
    for c in candidates:
        values = match(c.method, method, task)
        if values is None or set(values) != {k.name for k in c.knobs}:
            continue
        if all(values[k.name] in k.choices if k.choices else k.low <= values[k.name] <= k.high for k in c.knobs):
            return {"method": c.name, **{f"{c.name}.{k}": v for k, v in values.items()}}
    return None


def defaults(c: Candidate) -> dict[str, Any]:
    """Every knob at its documented default, else inside its range (the first choice, the geometric middle of a log
    range, the middle of a linear one): the point the applicability check builds and the search tries first."""
    def one(k: Knob) -> Any:
        if k.default is not None:
            return k.default
        return k.choices[0] if k.choices else (k.low * k.high) ** 0.5 if k.log else (k.low + k.high) / 2
    return {k.name: one(k) for k in c.knobs}


def _needs(c: Candidate, recipe: Any, info: Any, include_data_free: bool) -> Optional[str]:
    """Why ``c`` does not apply to the recipe (None: it may; the build check decides the rest)."""
    from edgedistill.registry import LOSSES, METHODS

    teachers = recipe.teacher_specs()
    if "data_free" in c.needs and not include_data_free:
        return "data-free (never reads the training data); pass --include-data-free to search it"
    if not teachers:
        return "the recipe has no teacher"
    if "teachers" in c.needs and len(teachers) < 2:
        return "needs several teachers (the recipe's 'teachers' list)"
    if "views" in c.needs and (len(info.views) < 2 or all(t.view == "x" for t in teachers)):
        return "cross-view: needs data.views and a teacher reading a view other than the student's"
    task = METHODS.get(c.method["name"]).task
    losses = [t["loss"] for t in c.method.get("terms", []) if t["loss"] != SUPERVISED]
    task = task or next((LOSSES.entry(n).meta.get("task") for n in losses if n in LOSSES and LOSSES.entry(n).meta.get("task")), None)
    if task is not None and task != info.task:
        return f"needs {task} data (this recipe's is {info.task})"
    return None


@dataclass
class Space:
    task: str
    metric: str
    direction: str
    candidates: list[Candidate]
    excluded: dict[str, str]  # candidate -> why not searched
    students: list[dict[str, int]] = field(default_factory=list)  # allowed {width, depth}; [] = the recipe's student
    student_note: str = ""

    def describe(self) -> dict[str, Any]:
        """The space as data: the tune's identity (a resumed study must search the same space) and the report."""
        return {"task": self.task, "metric": self.metric, "students": self.students,
                "candidates": {c.name: {k.name: list(k.choices) if k.choices else [k.low, k.high, "log" if k.log else "linear"]
                                        for k in c.knobs} for c in self.candidates}}

    def suggest(self, trial: Any) -> tuple[str, dict[str, Any], dict[str, Any]]:
        """Sample one point (define-by-run: each regime's knobs are their own parameters, ``<regime>.<knob>``).
        Returns (regime, its knob values, the recipe overrides)."""
        name = trial.suggest_categorical("method", [c.name for c in self.candidates])
        c = BY_NAME[name]
        values = {k.name: k.suggest(trial, f"{name}.{k.name}") for k in c.knobs}
        overrides: dict[str, Any] = {"method": fill(c.method, values, self.task)}
        if self.students:
            shape = trial.suggest_categorical("student", [f"{s['width']}x{s['depth']}" for s in self.students])
            width, depth = (int(v) for v in shape.split("x"))
            overrides.update({"student.width": width, "student.depth": depth})
            values["student"] = shape
        return name, values, overrides


def _students(recipe: Any, info: Any, max_params: Optional[int], max_latency_us: Optional[float],
              latency: Optional[Callable[..., dict[str, float]]]) -> tuple[list[dict[str, int]], str]:
    """Every (width, depth) of the recipe's student model within the limits; the limits measured, not guessed:
    parameters counted on the built network, latency timed batch-1 on one thread by ``latency(model, window, runs,
    warmup)`` (the deploy layer's ``profile.torch_latency``, which sits above this one and is passed down)."""
    import numpy as np

    from edgedistill.experiment.build import build_network
    from edgedistill.models.size import count_params

    if max_params is None and max_latency_us is None:
        return [], ""
    option = "--max-params" if max_params is not None else "--max-latency-us"
    if max_latency_us is not None and latency is None:
        raise UserInputError("--max-latency-us: no latency measure was given (edgedistill tune passes the deployment "
                             "profile's; from Python pass latency=edgedistill.deploy.profile.torch_latency)")
    kept, tried = [], 0
    for depth in DEPTHS:
        for width in WIDTHS:
            cfg = type(recipe.student).model_validate({**recipe.student.model_dump(), "width": width, "depth": depth})
            try:
                net = build_network(cfg, info, "student")
            except (UserInputError, TypeError, ValueError) as exc:
                raise UserInputError(f"{option}: searches the student's width and depth, and student.model "
                                     f"'{recipe.student.model}' does not take them ({exc})") from None
            tried += 1
            if max_params is not None and (count_params(net) or 0) > max_params:
                continue
            if max_latency_us is not None:
                window = np.zeros(tuple(info.input_shape), dtype=np.float32)
                stats = latency(net, window, runs=30, warmup=5)
                if stats.get("median_us", stats.get("mean_us", float("inf"))) > max_latency_us:
                    continue
            kept.append({"width": width, "depth": depth})
    if not kept:
        limits = " and ".join(x for x in (f"--max-params {max_params}" if max_params is not None else "",
                                          f"--max-latency-us {max_latency_us}" if max_latency_us is not None else "") if x)
        raise UserInputError(f"{option}: none of the {tried} student shapes (width {WIDTHS[0]}..{WIDTHS[-1]}, depth "
                             f"{DEPTHS[0]}..{DEPTHS[-1]}) of '{recipe.student.model}' fits {limits}")
    return kept, f"{len(kept)} of {tried} student shapes fit"


def build_space(base: dict[str, Any], *, smoke: bool = False, methods: Optional[list[str]] = None, include_data_free: bool = False,
                max_params: Optional[int] = None, max_latency_us: Optional[float] = None,
                students: Optional[list[dict[str, int]]] = None,
                latency: Optional[Callable[..., dict[str, float]]] = None) -> Space:
    """The search space for the recipe ``base`` (a dict); raises UserInputError when nothing applies, saying why.
    ``students``: the student shapes a resumed tune measured under the same limits (latency is not re-timed)."""
    from edgedistill.config import load_recipe
    from edgedistill.experiment.build import build_method
    from edgedistill.experiment.runner import plan
    from edgedistill.experiment.sweep_report import MAXIMIZE

    if methods:
        unknown = [m for m in methods if m not in BY_NAME]
        if unknown:
            raise UserInputError(f"--methods: unknown {', '.join(repr(m) for m in unknown)}; expected names from: "
                                 f"{', '.join(BY_NAME)}")
    recipe = load_recipe(base)
    if smoke:
        from edgedistill.experiment.smoke import smoke_recipe

        recipe = smoke_recipe(recipe)
    if recipe.eval.scheme != "holdout":
        raise UserInputError(f"eval.scheme: tune selects on one validation split; '{recipe.eval.scheme}' runs folds "
                             "(tune on the holdout recipe, then cross-validate the winner with edgedistill run)")
    p = plan(recipe, smoke)  # the data, teachers and student, loaded and checked once
    info = p.splits.info
    from edgedistill.experiment.build import build_network
    from edgedistill.methods.base import TeacherNet

    # The recipe's own teachers (what every candidate distils from), untrained: the check builds, it does not train.
    teachers = [TeacherNet(t.name, build_network(t, info, t.name, t.view), t) for t in recipe.teacher_specs()]
    kept, excluded = [], {}
    for c in CANDIDATES:
        if methods and c.name not in methods:
            continue
        why = _needs(c, recipe, info, include_data_free)
        if why is None:
            try:  # what `edgedistill run` checks: terms bound to taps that exist and fit, params within bounds
                rc = load_recipe({**base, "method": fill(c.method, defaults(c), info.task)})
                rc = recipe.model_copy(update={"method": rc.method})
                build_method(rc, p.student, teachers, p.splits, p.augmenter)
            except UserInputError as exc:
                why = f"does not fit this recipe: {exc}"
        if why is None:
            kept.append(c)
        else:
            excluded[c.name] = why
    if not kept:
        said = "; ".join(f"{k}: {v}" for k, v in excluded.items())
        raise UserInputError(f"{'--methods' if methods else 'recipe'}: no applicable method for {info.task} data "
                             f"({recipe.data.name or recipe.data.path}): {said}")
    metric = "acc" if info.task == "classification" else "rmse"
    if students is not None and (max_params is not None or max_latency_us is not None):
        note = f"{len(students)} student shapes fit (measured when this tune started)"
    else:
        students, note = _students(recipe, info, max_params, max_latency_us, latency)
    return Space(info.task, metric, "maximize" if metric in MAXIMIZE else "minimize", kept, excluded, students, note)


def read_recipe(recipe: str | Path | dict[str, Any], overrides: Optional[list[str]]) -> tuple[dict[str, Any], str]:
    """The recipe as a dict (relative paths resolved against its file, as ``edgedistill run`` does), and its name."""
    from edgedistill.recipe_paths import resolve_recipe_paths
    from edgedistill.yaml_io import apply_overrides, read_yaml

    if isinstance(recipe, dict):
        data = dict(recipe)
    else:
        data = resolve_recipe_paths(read_yaml(Path(recipe)), Path(recipe).parent)
    if overrides:
        data = apply_overrides(data, overrides)
    data.pop("sweep", None)  # a sweep recipe's grid is not the tuner's space
    return data, str(data.get("name", "run"))
