"""The Python API: distil the modules and arrays a user holds, with the run directory, cache and report of the CLI.

``distill(teacher=..., student=..., data=...)`` turns its arguments into a recipe and runs it with
``edgedistill.experiment.runner.run``; nothing trains differently from ``edgedistill run``. Objects reach the recipe
as files and names the recipe machinery already knows, all content-addressed under the model cache folder
(``cache_dir``, ``$EDGEDISTILL_CACHE`` or ``~/.cache/edgedistill``), so the data fingerprint and the cache keys are
the same on every call with the same content:

* arrays ``(x, y)`` -> ``<cache>/arrays/<sha256>.npz`` -> ``data.path``;
* a module -> ``model: "object:<Class>.<hash>"`` (``models.objects``: class, source, options and weights), bound to the
  object only during the call; a teacher module is also written to ``<cache>/objects/<hash>.pt`` and used as a
  given teacher (``checkpoint``): evaluated and reported, never retrained.

A run made here records ``object:<Class>.<hash>`` in its ``config.yaml``: only this process, holding the object, can
rebuild it, so ``Distilled.export()`` (or ``export_run``) exports it; ``edgedistill export`` says so.
"""
from __future__ import annotations

import copy
import hashlib
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
from torch import nn

from edgedistill.errors import UserInputError
from edgedistill.io import atomic_write, make_dirs
from edgedistill.models.objects import bound_objects, object_identity, object_ref
from edgedistill.paths import default_cache_dir

#: ``method="kd"``: the setting recipes/quickstart.yaml ships (docs/findings/small-data-kd.md: 0.1 CE + 0.9 KD at
#: T = 4 had the best validation accuracy there and helped on every seed for a ~3k-parameter student; below ~1k
#: parameters KD at T = 4 was noise or harm, so check the report's "student alone" row for tiny students).
KD_METHOD = {"name": "offline", "terms": [{"loss": "ce", "weight": 0.1}, {"loss": "kd", "weight": 0.9, "temperature": 4}]}
#: The quickstart's student and teacher training (a teacher given by name is trained with TEACHER_TRAIN, cached).
TRAIN = {"epochs": 100, "batch_size": 16, "lr": 3e-3}
TEACHER_TRAIN = {"epochs": 60, "batch_size": 16, "lr": 3e-3}
#: Suffixes that make a teacher string a file (a missing one is an error, not a zoo name).
_TEACHER_FILES = (".pt", ".pth", ".ckpt", ".ts", ".pt2", ".onnx", ".npz", ".bin", ".safetensors")


@dataclass
class Distilled:
    """What ``distill`` returns: the distilled student of the seed best on validation (its best epoch, loaded from the
    run's checkpoint, eval mode), the run's summary and directory, and the preprocessing the student expects
    (``metadata.normalization``, ``metadata.classes``: ``deploy.metadata.ModelMetadata``)."""

    student: nn.Module
    summary: dict[str, Any]
    run_dir: Path
    metadata: Any

    def export(self, out: Optional[str | Path] = None, **options: Any) -> Any:
        """``edgedistill export`` for this run (ONNX, verified; ``options`` as ``deploy.export.export``)."""
        return export_run(self.run_dir, self.student, out, **options)


@dataclass
class Fitted:
    """What ``fit_teacher`` returns: the trained teacher (best epoch on validation, eval mode), its summary (with
    ``cached``: whether it was reused from the model cache) and the run directory."""

    teacher: nn.Module
    summary: dict[str, Any]
    run_dir: Path


def _flat(overrides: dict[str, Any]) -> dict[str, Any]:
    return {k.replace("__", "."): v for k, v in overrides.items()}


def _cache_root(flat: dict[str, Any]) -> Path:
    """The model cache folder, absolute (and so ``flat``'s cache_dir): the run's config.yaml reads its paths relative
    to the run directory, and the arrays and objects written here must be found again from there."""
    given = flat.get("cache_dir")
    root = default_cache_dir(Path(given) if given is not None else None).absolute()
    if given is not None:
        flat["cache_dir"] = str(root)
    return root


# -- data ---------------------------------------------------------------------------------------------------
def _as_array(value: Any, name: str) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch tensor
        value = value.detach().cpu().numpy()
    try:
        arr = np.asarray(value)
    except (TypeError, ValueError) as exc:
        raise UserInputError(f"data: '{name}' is not an array ({exc})") from None
    if arr.dtype.kind not in "biufUS":
        raise UserInputError(f"data: '{name}' must hold numbers (or string labels), got dtype {arr.dtype}")
    return arr


def _arrays(data: Any) -> dict[str, np.ndarray]:
    if isinstance(data, dict):
        arrays = {str(k): _as_array(v, str(k)) for k, v in data.items()}
    else:
        if len(data) not in (2, 3):
            raise UserInputError(f"data: expected (x, y) or (x, y, group), got a sequence of {len(data)} items")
        arrays = {k: _as_array(v, k) for k, v in zip(("x", "y", "group"), data)}
    for need in ("x", "y"):
        if need not in arrays:
            raise UserInputError(f"data: the arrays need '{need}' (given: {', '.join(sorted(arrays))})")
    x = arrays["x"]
    if x.ndim not in (3, 4) or x.dtype.kind not in "biuf":
        raise UserInputError(f"data: x must be numbers of shape (n, channels, length) or (n, channels, height, width), "
                             f"got shape {x.shape} dtype {x.dtype}")
    for name in ("y", "group"):
        if name in arrays and len(arrays[name]) != len(x):
            raise UserInputError(f"data: {name} has {len(arrays[name])} rows but x has {len(x)}; one per row of x")
    return arrays


def _write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """An .npz whose bytes depend only on the arrays (fixed member dates), so its sha256 is stable."""
    def write(fh: Any) -> None:
        with zipfile.ZipFile(fh, "w", compression=zipfile.ZIP_STORED) as zf:
            for name in sorted(arrays):
                with zf.open(zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0)), "w", force_zip64=True) as m:
                    np.lib.format.write_array(m, np.ascontiguousarray(arrays[name]), allow_pickle=False)

    atomic_write(path, write, mode="wb")


def _absolute(section: dict[str, Any], *keys: str) -> dict[str, Any]:
    """A copy of a recipe section with its file paths absolute: the run's config.yaml is read (resume, export)
    relative to the run directory, not to the folder the call was made from."""
    out = copy.deepcopy(section)
    for key in keys:
        if isinstance(out.get(key), (str, Path)):
            out[key] = str(Path(out[key]).absolute())
    return out


def _data_section(data: Any, cache: Path) -> dict[str, Any]:
    if isinstance(data, dict) and not any(isinstance(v, (np.ndarray, list)) or hasattr(v, "detach") for v in data.values()):
        return _absolute(data, "path")  # a recipe data section: {name: ...} or {path: ...} with its options
    if isinstance(data, (str, Path)):
        path = Path(data)
        if path.is_file():
            return {"path": str(path.resolve())}
        if path.suffix.lower() in (".npz", ".csv"):
            raise UserInputError(f"data: the file '{path}' does not exist")
        return {"name": str(data)}
    if not isinstance(data, (dict, tuple, list)):
        raise UserInputError(f"data: expected (x, y), (x, y, group), a dict of arrays, a .npz/.csv path or a bundled "
                             f"dataset name, got {type(data).__name__}")
    arrays = _arrays(data)
    h = hashlib.sha256()
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(f"{name}\0{a.dtype.str}{a.shape}:".encode())
        h.update(a.tobytes())
    path = make_dirs(cache / "arrays") / f"{h.hexdigest()}.npz"
    if not path.is_file():
        _write_npz(path, arrays)
    return {"path": str(path)}


# -- models -------------------------------------------------------------------------------------------------
def _teacher_section(teacher: Any, cache: Path, objects: dict[str, nn.Module]) -> Optional[dict[str, Any]]:
    from edgedistill.engine import checkpoint as ckpt

    if isinstance(teacher, Fitted):
        teacher = teacher.teacher
    if teacher is None:
        return None
    if isinstance(teacher, dict):
        return _absolute(teacher, "load", "outputs", "checkpoint")
    if isinstance(teacher, nn.Module):  # trained: used as given (evaluated, reported, never retrained)
        ref = object_ref(teacher, "teacher")
        objects[ref] = teacher
        path = make_dirs(cache / "objects") / f"{object_identity(ref)}.pt"
        if not path.is_file():  # content-addressed: the same object is the same file, and so the same cache key
            ckpt.save(path, {k: v.detach().cpu() for k, v in teacher.state_dict().items()})
        return {"model": ref, "checkpoint": str(path)}
    if isinstance(teacher, (str, Path)):
        path = Path(teacher)
        if path.is_file():
            return {"outputs" if path.suffix.lower() == ".npz" else "load": str(path.resolve())}
        if isinstance(teacher, Path) or (":" not in str(teacher) and path.suffix.lower() in _TEACHER_FILES):
            raise UserInputError(f"teacher: the file '{teacher}' does not exist")
        return {"model": str(teacher), "train": dict(TEACHER_TRAIN)}  # a zoo name or import path: trained, cached
    raise UserInputError(f"teacher: expected a trained torch.nn.Module, a zoo name or import path (trained and "
                         f"cached), a saved teacher file or outputs .npz, or a recipe teacher section (dict); "
                         f"got {type(teacher).__name__}")


def _model_section(model: Any, key: str, objects: dict[str, nn.Module]) -> dict[str, Any]:
    if isinstance(model, nn.Module):
        ref = object_ref(model, key)
        objects[ref] = model
        return {"model": ref}
    if isinstance(model, str):
        return {"model": model}
    if isinstance(model, dict):
        return _absolute(model, "checkpoint")
    raise UserInputError(f"{key}: expected a torch.nn.Module, a zoo name, an import path ('pkg.module:Class') or a "
                         f"recipe {key} section (dict), got {type(model).__name__}")


def _method_section(method: Any) -> dict[str, Any]:
    from edgedistill.registry import METHODS
    from edgedistill.yaml_io import read_yaml

    if isinstance(method, dict):
        return copy.deepcopy(method)
    if not isinstance(method, (str, Path)):
        raise UserInputError(f"method: expected 'kd', a method name or a recipe .yaml path, got {type(method).__name__}")
    if method == "kd":
        return copy.deepcopy(KD_METHOD)
    if isinstance(method, Path) or str(method).endswith((".yaml", ".yml")):
        section = read_yaml(Path(method)).get("method")
        if not isinstance(section, dict):
            raise UserInputError(f"method: the recipe '{method}' has no method section")
        return section
    METHODS.entry(method, key="method")  # an unknown name: the known ones, and the closest
    return {"name": method}


def _described(value: Any) -> str:
    if isinstance(value, nn.Module):
        return f"<{type(value).__name__} object>"
    if isinstance(value, (str, Path, int, float)) or value is None:
        return repr(str(value) if isinstance(value, Path) else value)
    return f"<{type(value).__name__}>"


# -- entry points -------------------------------------------------------------------------------------------
def distill(
    teacher: Any = None,
    student: Any = None,
    data: Any = None,
    method: Any = "kd",
    *,
    out: Optional[str | Path] = None,
    seeds: Optional[Sequence[int]] = None,
    progress: bool = True,
    **overrides: Any,
) -> Distilled:
    """Distil ``teacher`` into ``student`` on ``data``; the run directory, cache and report are the CLI's.

    * ``teacher``: a trained ``nn.Module`` (evaluated as given, never retrained), a ``Fitted``, a zoo name or import
      path (trained with 60 epochs, batch 16, lr 3e-3, and cached), a saved teacher file (``load``: TorchScript,
      ``.pt2``, ONNX) or an ``.npz`` of its outputs (``outputs``), a recipe teacher section (dict), or None for a
      method without one.
    * ``student``: an ``nn.Module`` (every seed starts from its weights, as given: seeds change the data order and
      augmentation, not the initialisation), a zoo name, an import path or a recipe student section.
    * ``data``: ``(x, y)``, ``(x, y, group)``, a dict of arrays (the keys of a data .npz), a .npz/.csv path, a
      bundled dataset name, or a recipe data section.
    * ``method``: ``"kd"`` is the quickstart's 0.1 CE + 0.9 KD at T = 4 (``KD_METHOD``); or a registered method
      name (``edgedistill list methods``), a recipe .yaml whose method section is used, or a method section.
    * ``overrides``: recipe keys, dotted or with ``__``: ``train__epochs=20``, ``cache_dir="..."``. Training
      defaults are the quickstart's (100 epochs, batch 16, lr 3e-3).
    """
    from edgedistill.deploy.profile import report_profile
    from edgedistill.deploy.runs import load_run
    from edgedistill.experiment.runner import run

    flat = _flat(overrides)
    if any(k.split(".")[0] == "eval" for k in flat):  # one student back; a cross-validation trains one per fold
        raise UserInputError("eval: distill returns one student; cross-validate with edgedistill.run(..., **{'eval.scheme': 'loso'})")
    cache = _cache_root(flat)
    objects: dict[str, nn.Module] = {}
    recipe: dict[str, Any] = {"name": "distill", "data": _data_section(data, cache),
                              "student": _model_section(student, "student", objects),
                              "method": _method_section(method), "train": dict(TRAIN)}
    section = _teacher_section(teacher, cache, objects)
    if section is not None:
        recipe["teacher"] = section
    if seeds is not None:
        recipe["seeds"] = [seeds] if isinstance(seeds, int) else list(seeds)
    command = (f"edgedistill.distill(teacher={_described(teacher)}, student={_described(student)}, "
               f"data={_described(data)}, method={_described(method)})")
    with bound_objects(objects):
        summary = run(recipe, flat, out=out, progress=progress, command=command, deploy_profile=report_profile)
        loaded = load_run(summary["run_dir"])
        return Distilled(loaded.student, summary, Path(summary["run_dir"]), loaded.metadata())


def fit_teacher(
    model: Any,
    data: Any,
    *,
    out: Optional[str | Path] = None,
    seed: int = 0,
    progress: bool = True,
    **overrides: Any,
) -> Fitted:
    """Train ``model`` (an ``nn.Module``, zoo name, import path or recipe teacher section) on ``data`` as a run
    trains its teacher: the same cache key, so a second call, or a run naming the same teacher, reuses it.

    ``train__epochs=...`` and the other ``train`` keys set the teacher's training (default 60 epochs, batch 16,
    lr 3e-3); other overrides are recipe keys (``cache_dir``, ``data__split__val``)."""
    flat = {("teacher." + k if k.startswith("train.") else k): v for k, v in _flat(overrides).items()}
    cache = _cache_root(flat)
    objects: dict[str, nn.Module] = {}
    teacher = {"train": dict(TEACHER_TRAIN), **_model_section(model, "model", objects), "seed": seed}
    if any(k in teacher for k in ("load", "outputs", "checkpoint")):
        raise UserInputError("model: fit_teacher trains a model; a saved teacher (load, outputs, checkpoint) is "
                             "already trained: pass it to distill(teacher=...)")
    student = {k: v for k, v in teacher.items() if k not in ("train", "seed", "view", "name", "train_subset")}
    recipe = {"name": "fit-teacher", "data": _data_section(data, cache), "teacher": teacher, "student": student,
              "method": {"name": "supervised"}, "baseline": False, "seeds": [seed]}
    with bound_objects(objects):
        net, summary = _fit_teacher_run(recipe, flat, out=out, progress=progress,
                                       command=f"edgedistill.fit_teacher({_described(model)}, data={_described(data)})")
    return Fitted(net.eval(), summary, Path(summary["run_dir"]))


def _fit_teacher_run(source: dict[str, Any], flat: dict[str, Any], *, out: Optional[str | Path], progress: bool,
                     command: str) -> tuple[nn.Module, dict[str, Any]]:
    """The teacher stage of a run only (``runner.run(teachers_only=True)``): planned and checked like any run (nothing
    written on bad input), the teacher trained or reused under the teacher cache key, summary.json and report.md."""
    from edgedistill.experiment.runner import run

    got: list[tuple[nn.Module, dict[str, Any]]] = []
    summary = run(source, flat, out=out, progress=progress, command=command, teachers_only=True,
                  on_teacher=lambda t, t_summary: got.append((t.model, t_summary)))
    (net, t_summary), = got
    return net, {**summary, "teacher": t_summary}


def export_run(run_dir: str | Path, student: nn.Module, out: Optional[str | Path] = None, **options: Any) -> Any:
    """``edgedistill export`` for a run whose student was a Python object: ``student`` (any module of the same
    architecture, e.g. ``Distilled.student``) stands in for the ``object:<Class>.<hash>`` its config.yaml names; the
    weights come from the run's checkpoint, as on the CLI. ``options``: those of ``deploy.export.export``."""
    from edgedistill.deploy.export import export
    from edgedistill.deploy.runs import checkpoint_path

    recipe, _, _, _ = checkpoint_path(run_dir, options.get("seed"), options.get("which", "best"))
    name = recipe.student.model
    if not name.startswith("object:"):
        raise UserInputError(f"student: the run in '{run_dir}' names its student '{name}'; export it with "
                             f"'edgedistill export {run_dir}'")
    if not isinstance(student, nn.Module):
        raise UserInputError(f"student: expected a torch.nn.Module, got {type(student).__name__}")
    with bound_objects({name: student}):
        return export(run_dir, out, **options)


class DistilledClassifier:
    """A scikit-learn-style wrapper: ``DistilledClassifier(teacher, student).fit(X, y).predict(X)``.

    ``fit`` runs ``distill`` (keyword arguments as there; ``progress`` off by default) and keeps its result as
    ``result_``; ``predict``/``predict_proba`` apply the run's preprocessing (the training split's normalisation
    from the run's metadata, as an exported model does) and return labels as given to ``fit`` (``classes_``)."""

    def __init__(self, teacher: Any, student: Any, method: Any = "kd", **options: Any) -> None:
        self.teacher, self.student, self.method = teacher, student, method
        self.options = {"progress": False, **options}

    def fit(self, X: Any, y: Any, group: Any = None) -> "DistilledClassifier":
        from edgedistill.deploy.predictor import normalizer_of

        data = (X, y) if group is None else (X, y, group)
        self.result_ = distill(self.teacher, self.student, data, self.method, **self.options)
        self.meta = self.result_.metadata
        if self.meta.task != "classification":
            raise UserInputError("y: the labels read as regression targets; DistilledClassifier classifies "
                                 "(give integer or string labels, or use edgedistill.distill for regression)")
        labels = np.unique(np.asarray(y))
        by_name = {str(v): v for v in labels}
        self.classes_ = np.asarray([by_name[c] for c in self.meta.classes])  # the run's output order
        self.normalizer = normalizer_of(self.meta)
        return self

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.meta.input_shape)

    def _logits(self, X: Any) -> np.ndarray:
        import torch

        from edgedistill.deploy.predictor import preprocess

        if not hasattr(self, "result_"):
            raise UserInputError("DistilledClassifier: call fit(X, y) before predict")
        x, _ = preprocess(self.meta, self.normalizer, X, who="DistilledClassifier")  # the Predictor's checks
        model = self.result_.student.eval()
        param = next(model.parameters(), None)
        with torch.no_grad():
            outs = [model(torch.from_numpy(x[i:i + 256]).to(param.device if param is not None else "cpu")).cpu()
                    for i in range(0, len(x), 256)]
        return torch.cat(outs).double().numpy()

    def predict_proba(self, X: Any) -> np.ndarray:
        """(n, classes) softmax probabilities, columns in ``classes_`` order."""
        from edgedistill.deploy.predictor import softmax

        return softmax(self._logits(X))

    def predict(self, X: Any) -> np.ndarray:
        """The label (as given to ``fit``) of the largest output, per window."""
        logits = self._logits(X)
        return self.classes_[logits.argmax(axis=1)]
