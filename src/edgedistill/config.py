"""Typed recipe configuration (pydantic): a recipe mapping (``yaml_io`` reads it and applies overrides) validated.

Every key is validated before anything trains: a misspelt key, a wrong type or an out-of-range value
fails with the key's dotted path and what was expected. YAML is read with ``safe_load``; no tag or value
is ever evaluated. The one key that names code is a model's import path (``model: my_pkg.nets:WristNet``), which
``models.user`` imports, within the bounds docs/models.md states (never the standard library or edgedistill, only an
``nn.Module`` subclass, none at all with ``EDGEDISTILL_NO_USER_CODE=1``). Keys that a model factory or a loss takes as keyword arguments (``width``,
``temperature``) are checked against that callable's signature when the run is built.
"""
from __future__ import annotations

import copy
import shlex
from pathlib import Path
from typing import Annotated, Any, Literal, Optional

from pydantic import Field, ValidationError, field_validator, model_validator

# The shared bounds and bases, the data section and the method section live in config_base.py, config_data.py and
# config_method.py; re-exported here.
from edgedistill.config_base import (
    MAX_BATCH, MAX_EPOCHS, MAX_LR, MAX_RUNS, MAX_SEED, MAX_TERMS, MAX_THREADS, MAX_WEIGHT, _Open, _Strict,
)
from edgedistill.config_data import CsvColumns, DataConfig, EvalConfig, SplitConfig, TopologyConfig, WindowConfig
from edgedistill.config_method import MethodConfig, StageConfig, TermConfig
from edgedistill.errors import UserInputError
from edgedistill.recipe_paths import RecipePath, resolve_recipe_paths, safe_name  # noqa: F401 - re-exported
from edgedistill.errors import short_repr as _short
from edgedistill.yaml_io import apply_overrides, read_yaml

# Every public name, the re-exported ones included (``from edgedistill.config import DataConfig, MAX_SEED`` works).
__all__ = [
    "MAX_BATCH", "MAX_EPOCHS", "MAX_LR", "MAX_RUNS", "MAX_SEED", "MAX_TERMS", "MAX_THREADS", "MAX_WEIGHT", "OUTPUTS_VIEW",
    "AugmentConfig", "AugmentStep", "CsvColumns", "DataConfig", "EngineConfig", "EvalConfig", "MethodConfig", "ModelConfig",
    "Recipe", "RecipePath", "ReportConfig", "SplitConfig", "StageConfig", "TeacherConfig", "TermConfig", "TopologyConfig",
    "TrainConfig", "WindowConfig", "load_recipe", "recipe_to_dict", "resolve_recipe_paths", "safe_name",
]

#: The data view holding a teacher's recorded outputs (``teacher.outputs``): this prefix + the teacher's name.
OUTPUTS_VIEW = "outputs."


class TrainConfig(_Strict):
    epochs: int = Field(100, ge=1, le=MAX_EPOCHS)
    batch_size: int = Field(64, ge=1, le=MAX_BATCH)
    optimizer: Literal["adamw", "adam", "sgd"] = "adamw"
    lr: float = Field(3e-3, gt=0, le=MAX_LR)
    weight_decay: float = Field(1e-2, ge=0, le=10)
    momentum: float = Field(0.9, ge=0, lt=1)
    schedule: Literal["cosine", "constant", "step"] = "cosine"
    # Fractions of `epochs` (step schedule), each in (0, 1), increasing.
    milestones: list[Annotated[float, Field(gt=0, lt=1)]] = Field(default_factory=lambda: [0.5, 0.75], max_length=100)
    gamma: float = Field(0.1, gt=0, le=10)
    grad_clip: Optional[float] = Field(None, gt=0, le=1e6)

    @field_validator("milestones")
    @classmethod
    def _increasing(cls, v: list[float]) -> list[float]:
        if any(b <= a for a, b in zip(v, v[1:])):
            raise ValueError(f"milestones must increase strictly, got {v}")
        return v


class ModelConfig(_Open):
    """``model`` names a zoo entry or the user's class by import path (``pkg.mod:Class``, ``./nets.py:Class``;
    docs/models.md); every other key is a keyword argument of that model's factory or constructor."""

    # Long enough for a file path to the user's class; a zoo name is at most a few words.
    model: str = Field(max_length=1000)
    checkpoint: Optional[RecipePath] = None  # start from these weights (state_dict file, loaded weights-only)

    @property
    def kwargs(self) -> dict[str, Any]:
        return dict(self.model_extra or {})

    @property
    def label(self) -> str:
        """What reports call the model: its zoo name, the class name of an import path, or for a module passed to the
        Python API (``object:<Class>.<hash>``) its class and the hash's first digits."""
        if self.model.startswith("object:"):
            cls, _, digest = self.model[len("object:"):].rpartition(".")
            return f"{cls} (object {digest[:8]})"
        return self.model.rsplit(":", 1)[-1] if ":" in self.model else self.model


class TeacherConfig(ModelConfig):
    """A teacher: trained from ``model`` (cached), or given: ``load`` (a saved teacher: weights of ``model``, a
    TorchScript, ``torch.export`` or ONNX file) or ``outputs`` (an ``.npz`` of its outputs on every row of the
    data, for a teacher from another framework). A given teacher is evaluated, never trained (docs/models.md)."""

    # Optional here: a program file (TorchScript, .pt2, ONNX) or an outputs file needs no model class.
    model: Optional[str] = Field(None, max_length=1000)  # type: ignore[assignment]
    load: Optional[RecipePath] = None
    outputs: Optional[RecipePath] = None
    train: TrainConfig = Field(default_factory=lambda: TrainConfig(epochs=100))
    seed: int = Field(0, ge=0, le=MAX_SEED)
    view: str = "x"  # the batch view the teacher reads (a privileged view for cross-modal teachers)
    # In a ``teachers`` list: the name methods and reports use (default teacher1, teacher2, ...).
    name: Optional[str] = None
    # Train on this fraction of the training rows, drawn with ``seed`` (RoS-KD's overlapping subsets).
    train_subset: Optional[float] = Field(None, gt=0, le=1)
    # Distil this network from an earlier teacher of the list with ``terms`` (teacher-assistant chains).
    distill_from: Optional[str] = None
    terms: list[TermConfig] = Field(default_factory=list, max_length=MAX_TERMS)
    # Which weights of a trained teacher distil: best on validation, the last epoch, or the average of the last
    # epochs' weights (stochastic weight averaging); docs/evaluation.md says when each is the safer choice.
    select: Literal["best", "last", "swa"] = "best"

    @field_validator("name")
    @classmethod
    def _name_is_not_a_path(cls, value: Optional[str]) -> Optional[str]:
        return None if value is None else safe_name(value)

    @model_validator(mode="after")
    def _one_source(self) -> "TeacherConfig":
        given = [k for k in ("load", "outputs", "checkpoint") if getattr(self, k) is not None]
        if len(given) > 1:
            raise ValueError(f"{' and '.join(given)}: give one of load (a saved teacher), outputs (its outputs on the "
                             "data) or checkpoint (weights of model), not several")
        if self.outputs is not None and (self.model is not None or self.kwargs):
            raise ValueError("outputs: a teacher given by its outputs has no model; remove 'model' and its options")
        if self.model is None and self.load is None and self.outputs is None:
            raise ValueError("model: a teacher needs a model to train (a zoo name or an import path), or load: PATH "
                             "(a saved teacher) or outputs: PATH (its outputs on the data)")
        if self.model is None and self.kwargs:
            raise ValueError(f"{next(iter(self.kwargs))}: model options need a 'model'")
        if (self.load is not None or self.outputs is not None) and (self.distill_from or self.terms):
            raise ValueError("distill_from: a given teacher (load or outputs) is not trained, so it is not distilled")
        if self.given and self.select != "best":
            raise ValueError(f"select: '{self.select}' chooses among a trained teacher's epochs; a given teacher "
                             "(load, outputs or checkpoint) is used as it is; remove 'select'")
        # (Recipe.teacher_specs sets the view of its recorded outputs, OUTPUTS_VIEW + name; that one passes.)
        if self.outputs is not None and self.view != "x" and not self.view.startswith(OUTPUTS_VIEW):
            raise ValueError("view: a teacher given by its outputs reads its recorded outputs, not a view of the data; "
                             "remove 'view' (record the outputs on the inputs that teacher read)")
        return self

    @property
    def given(self) -> bool:
        """A teacher that is evaluated as given (loaded, read from outputs, or a checkpoint), never trained."""
        return self.load is not None or self.outputs is not None or self.checkpoint is not None

    @property
    def label(self) -> str:
        if self.model is not None:
            return super().label
        return Path(str(self.load or self.outputs)).name


class EngineConfig(_Strict):
    accelerator: Literal["cpu", "cuda", "mps", "auto"] = "cpu"
    # Processes per machine (one per GPU; on CPU, each a share of the cores) x machines: with more than one, DDP or
    # FSDP through Lightning Fabric (engine/distributed.py, docs/scale.md). What the machine lacks is refused there.
    devices: int = Field(1, ge=1, le=1024)
    num_nodes: int = Field(1, ge=1, le=4096)
    strategy: Literal["auto", "ddp", "fsdp"] = "auto"  # auto: DDP on more than one process
    precision: Literal["32-true", "bf16-mixed", "16-mixed", "64-true"] = "32-true"
    threads: Optional[int] = Field(None, ge=1, le=MAX_THREADS)
    progress: bool = True
    deterministic: bool = True
    # Where each epoch's record also goes, through Fabric's logger interface: csv, tensorboard (the tensorboard
    # extra) and mlflow (the mlflow extra). Files go under the stage's folder unless a tracking URI is configured.
    loggers: list[Literal["csv", "tensorboard", "mlflow"]] = Field(default_factory=list, max_length=3)


class AugmentStep(_Open):
    """One augmentation: ``name`` (``edgedistill list augmentations``); every other key is its parameter."""

    name: str = Field(max_length=100)

    @property
    def params(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


def _steps(value: Any) -> Any:
    """A bare name is shorthand for ``{name: ...}``: ``student: [jitter, shift]``."""
    if isinstance(value, (str, dict)):
        value = [value]
    return [{"name": v} if isinstance(v, str) else v for v in value] if isinstance(value, list) else value


class AugmentConfig(_Strict):
    # Sample-level augmentations applied in order to the student's input, a fresh draw every step.
    student: list[AugmentStep] = Field(default_factory=list, max_length=MAX_TERMS)
    # What a teacher reading the student's view sees: the same augmented input (MIX-KD, the usual KD
    # choice: its soft targets describe what the student saw), the clean input (then its outputs are
    # cached), or its own separate augmentation (``teacher``).
    teacher_sees: Literal["same", "clean", "separate"] = "same"
    teacher: list[AugmentStep] = Field(default_factory=list, max_length=MAX_TERMS)
    # One batch-level mixing augmentation (mixup, partial_mixup, cutmix) after the sample-level ones.
    mix: Optional[AugmentStep] = None

    @field_validator("student", "teacher", mode="before")
    @classmethod
    def _bare_names(cls, v: Any) -> Any:
        return _steps(v)

    @field_validator("mix", mode="before")
    @classmethod
    def _bare_mix(cls, v: Any) -> Any:
        return {"name": v} if isinstance(v, str) else v

    @model_validator(mode="after")
    def _consistent(self) -> "AugmentConfig":
        if self.teacher and self.teacher_sees != "separate":
            raise ValueError("augment.teacher: a teacher pipeline is only used with teacher_sees: separate")
        if self.mix is not None and self.teacher_sees != "same":
            raise ValueError("augment.mix: a mixed batch must reach the teacher too; use teacher_sees: same")
        return self


class ReportConfig(_Strict):
    # Which checkpoint's test numbers the summary reports: best on validation, or the last epoch.
    select: Literal["best", "last"] = "best"
    # After the run, export the best-on-validation seed's student to ONNX (fp32 + int8, in a temporary folder) and add its
    # size / MACs / latency to report.md ("Deployment profile"); needs the deploy extra, skipped in smoke runs.
    profile: bool = False
    # At the end of a run, draw its plots (learning curves, reliability, confusion, paired seed differences) as PNG
    # under plots/ and write report.html beside report.md (`edgedistill report` redraws them on demand); a smoke run
    # writes only plots/reliability.json.
    plots: bool = True
    # Classical baselines trained beside the networks (rows of the report, with size and latency): does a network
    # pay off at all? minirocket / multirocket (aeon) and forest (a random forest on window features).
    classical: list[Literal["minirocket", "multirocket", "forest"]] = Field(default_factory=list, max_length=3)

    @field_validator("classical")
    @classmethod
    def _once_each(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError(f"lists a baseline twice: {value}")
        return value


class Recipe(_Strict):
    name: str = "run"

    @field_validator("name")
    @classmethod
    def _name_is_not_a_path(cls, value: str) -> str:
        return safe_name(value)
    data: DataConfig
    student: ModelConfig
    teacher: Optional[TeacherConfig] = None
    # Several teachers (multi-teacher regimes, assistant chains, cross-view teachers), in training order.
    teachers: list[TeacherConfig] = Field(default_factory=list, max_length=MAX_TERMS)
    method: MethodConfig = Field(default_factory=MethodConfig)
    augment: Optional[AugmentConfig] = None
    train: TrainConfig = Field(default_factory=TrainConfig)
    seeds: list[Annotated[int, Field(ge=0, le=MAX_SEED)]] = Field(default_factory=lambda: [0], max_length=MAX_RUNS)
    # Also train the student alone (same budget) so the report can say whether distillation helped.
    baseline: bool = True
    engine: EngineConfig = Field(default_factory=EngineConfig)
    report: ReportConfig = Field(default_factory=ReportConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)  # holdout, or cross-validation over folds
    cache_dir: Optional[RecipePath] = None  # trained-model cache; default ~/.cache/edgedistill or $EDGEDISTILL_CACHE

    @model_validator(mode="after")
    def _teachers(self) -> "Recipe":
        if self.teacher is not None and self.teachers:
            raise ValueError("give either 'teacher' (one) or 'teachers' (a list), not both")
        seen: set[str] = set()
        for i, t in enumerate(self.teachers):
            name = t.name or f"teacher{i + 1}"
            if name in seen:
                raise ValueError(f"teachers[{i}].name: '{name}' is used twice")
            if t.distill_from is not None and t.distill_from not in seen:
                raise ValueError(
                    f"teachers[{i}].distill_from: '{t.distill_from}' is not an earlier teacher of the list "
                    f"(earlier: {', '.join(sorted(seen)) or 'none'})"
                )
            if t.distill_from is None and t.terms:
                raise ValueError(f"teachers[{i}].terms: only a teacher with 'distill_from' takes loss terms")
            if t.distill_from is not None and t.view != "x":
                raise ValueError(f"teachers[{i}].view: a teacher distilled from another reads the student's view 'x'")
            if t.distill_from is not None and not t.terms:
                raise ValueError(f"teachers[{i}].terms: a teacher distilled from '{t.distill_from}' needs loss terms, "
                                 "e.g. [{loss: ce, weight: 0.1}, {loss: kd, weight: 0.9, temperature: 4}]")
            seen.add(name)
        if self.teacher is not None and (self.teacher.distill_from or self.teacher.terms):
            raise ValueError("teacher.distill_from: a single teacher has nothing to be distilled from; use 'teachers'")
        return self

    def teacher_keys(self) -> list[str]:
        """The recipe key of each of ``teacher_specs()``, for messages: ``teacher``, or ``teachers[0]``, ...."""
        return ["teacher"] if self.teacher is not None else [f"teachers[{i}]" for i in range(len(self.teachers))]

    def teacher_specs(self) -> list[TeacherConfig]:
        """Every teacher, named: ``teacher`` as [that one, named "teacher"], or the ``teachers`` list. A teacher
        given by its ``outputs`` reads the view ``OUTPUTS_VIEW + name``: its recorded outputs, which the runner
        adds to the data before the split (experiment.teacher_outputs), so they follow every row like ``x``."""
        named = ([(self.teacher, self.teacher.name or "teacher")] if self.teacher is not None else
                 [(t, t.name or f"teacher{i + 1}") for i, t in enumerate(self.teachers)])
        return [t.model_copy(update={"name": name, **({"view": OUTPUTS_VIEW + name} if t.outputs is not None else {})})
                for t, name in named]

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, v: list[int]) -> list[int]:
        if not v:
            raise ValueError("seeds must list at least one seed")
        if len(set(v)) != len(v):
            raise ValueError("seeds must not repeat")
        return v


# --------------------------------------------------------------------------------------------------
def _format_validation_error(err: ValidationError, source: str) -> str:
    """``source: teachers.1.terms.0.weight: Input should be greater than or equal to 0 (got -1.0)`` for the first
    three errors: the exact dotted key, the bound it breaks and the value given (its repr cut to 60 characters)."""
    parts = []
    errors = err.errors()
    for e in errors[:3]:
        key = ".".join(str(p) for p in e["loc"])
        msg = e["msg"].removeprefix("Value error, ")  # our validators' messages read as they are written
        if msg.startswith("@"):  # check_free_values names the sub-key: "@temperature: why"
            sub, _, msg = msg[1:].partition(": ")
            key = f"{key}.{sub}" if key else sub
        if e["type"] == "extra_forbidden" and key == "sweep":  # (a sweep recipe given to `run`, `tune`, ...)
            path = shlex.quote(source[len("recipe '"):-1]) if source.startswith("recipe '") else "<recipe>"
            msg = f"a sweep's grid, read only by `edgedistill sweep`: run it with `edgedistill sweep {path}`"
        elif e["type"] == "extra_forbidden":
            msg = "unknown key"
        elif e["type"] == "finite_number":
            msg = "expected a finite number (not nan or inf)"
        got = e.get("input")
        got_s = "" if isinstance(got, (dict, list)) or got is None or e["type"] == "value_error" else f" (got {_short(got)})"
        parts.append(f"{key or '<root>'}: {msg}{got_s}")
    more = f" (+{len(errors) - 3} more)" if len(errors) > 3 else ""
    return f"{source}: " + "; ".join(parts) + more


def load_recipe(
    source: str | Path | dict[str, Any], overrides: list[str] | dict[str, Any] | None = None
) -> Recipe:
    """Load a recipe from a YAML path or a dict, apply overrides, validate. Raises ``UserInputError``."""
    if isinstance(source, dict):
        data, where = copy.deepcopy(source), "recipe"
    else:
        data, where = read_yaml(Path(source)), f"recipe '{source}'"
        data = resolve_recipe_paths(data, Path(source).parent)
    if overrides:
        data = apply_overrides(data, overrides)
    try:
        return Recipe.model_validate(data)
    except ValidationError as err:
        raise UserInputError(_format_validation_error(err, where)) from None


def recipe_to_dict(recipe: Recipe) -> dict[str, Any]:
    """JSON/YAML-safe dict of a validated recipe (paths as strings)."""
    return recipe.model_dump(mode="json")
