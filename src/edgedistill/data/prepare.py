"""From a ``DataConfig`` to train/val/test tensors: the only place where data is transformed.

Order matters and is fixed: load -> check (raw.check_raw: finite, bounded, shapes, classes) -> window -> encode
labels -> split -> check the splits -> fit normalisation on train -> tensors (normalised values checked). Splitting
happens before any statistic is computed so nothing about the validation or test data reaches training. Everything
is deterministic for ``(cfg, seed)``.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from edgedistill.config import DataConfig
from edgedistill.data.dataset import DataInfo, DataSplits, TensorData
from edgedistill.data.folds import Fold, assign_folds, check_fold_classes
from edgedistill.data.labels import encode_targets
from edgedistill.data.mapped import MappedRows, fit_rows, mapped_storage, pick_channels, pooled
from edgedistill.data.normalize import MAX_Z, check_normalized, fit_normalizer
from edgedistill.data.raw import RawData, check_raw
from edgedistill.data.splits import random_split, stratified_split, subject_split
from edgedistill.data.windowing import window_raw
from edgedistill.errors import UserInputError
from edgedistill.io import sha256_file
from edgedistill.params import signature_params
from edgedistill.registry import DATASETS

PIPELINE_VERSION = "data-v1"  # bump when prepare_data changes what it produces (invalidates cached teachers)


def load_raw(cfg: DataConfig) -> tuple[RawData, bool]:
    """The loader's ``RawData``, checked (``check_raw``), and whether it already cut windows (a CSV without a window
    column). ``data.task`` and ``data.columns`` apply here: they say what a file's y and columns mean."""
    raw, windowed = _load(cfg)
    check_raw(raw, _source(cfg))
    return raw, windowed


def _load(cfg: DataConfig) -> tuple[RawData, bool]:
    if cfg.path is not None:
        from edgedistill.data.csv_file import load_csv_windows
        from edgedistill.data.files import load_npz

        if cfg.params:
            raise UserInputError(
                f"data.params: only used with data.name (a registered dataset), not with data.path; "
                f"remove {', '.join(sorted(cfg.params))}"
            )

        suffix = Path(cfg.path).suffix.lower()
        if cfg.columns is not None and suffix != ".csv":
            raise UserInputError(
                f"data.columns: names the columns of a .csv; '{cfg.path}' is not one (an .npz has fixed array "
                f"names: x, y, group, test_x, test_y); remove data.columns"
            )
        if suffix == ".npz":
            return load_npz(cfg.path, task=cfg.task, windowed=cfg.window is not None), False
        if suffix == ".csv":
            w = cfg.window
            return load_csv_windows(cfg.path, w.length if w else None, w.stride if w else None, cfg.columns, cfg.task)
        raise UserInputError(f"data.path: '{cfg.path}' has suffix '{suffix}'; expected a .npz or .csv file")
    assert cfg.name is not None
    if cfg.columns is not None:
        raise UserInputError("data.columns: names the columns of a .csv data.path; remove it with data.name")
    entry = DATASETS.entry(cfg.name, key="data.name")
    loader = entry.obj
    signature_params(loader).parse(cfg.params, "data.params", what=f"dataset {cfg.name}")
    if entry.meta.get("archive"):  # a public archive read from a local folder (data/archives)
        raw = loader(root=cfg.root, **cfg.params)
    elif cfg.root is not None:
        raise UserInputError(f"data.root: the folder of a downloaded archive; dataset '{cfg.name}' is not one "
                             f"(edgedistill data list shows the archives); remove data.root")
    else:
        raw = loader(**cfg.params)
    if not isinstance(raw, RawData):
        raise UserInputError(f"data.name: dataset '{cfg.name}' returned {type(raw).__name__}, expected RawData")
    if cfg.task is not None and cfg.task != raw.task:
        raise UserInputError(
            f"data.task: '{cfg.task}' but dataset '{cfg.name}' is {raw.task} (data.task is for data.path files; "
            f"a dataset with a task parameter takes it in data.params)"
        )
    return raw, False


def _pool_official_test(raw: RawData) -> RawData:
    """Merge the official test split into the data, so ``split.official_test=false`` re-splits everything."""
    if raw.test_x is None or raw.test_y is None:
        return raw
    views = {k: pooled(v, raw.test_views[k]) for k, v in raw.views.items() if k in raw.test_views}
    group = None
    if raw.group is not None and raw.test_group is not None:
        group = np.concatenate([np.asarray(raw.group).astype(str), np.asarray(raw.test_group).astype(str)])
    return replace(
        raw, x=pooled(raw.x, raw.test_x), y=np.concatenate([raw.y, raw.test_y]), group=group,
        views=views, test_x=None, test_y=None, test_group=None, test_views={},
    )


def _strata(y: np.ndarray, task: str) -> np.ndarray:
    """Class codes, or for regression the quintile of the (first) target, so both sides see its whole range."""
    if task == "classification":
        return y
    first = y.reshape(len(y), -1)[:, 0]
    edges = np.quantile(first, [0.2, 0.4, 0.6, 0.8])
    return np.searchsorted(edges, first, side="right")


def _carve(by: str, idx: np.ndarray, y: np.ndarray, groups: Optional[np.ndarray], task: str,
           fraction: float, seed: int, part: str) -> tuple[np.ndarray, np.ndarray]:
    """Split positions ``idx`` into (rest, held) by the chosen strategy."""
    try:
        if by == "subject":
            assert groups is not None
            rest, held = subject_split(groups[idx], (1.0 - fraction, fraction), seed)
        elif by == "stratified":
            rest, held = stratified_split(_strata(y[idx], task), fraction, seed)
        else:
            rest, held = random_split(len(idx), fraction, seed)
    except UserInputError as exc:
        raise UserInputError(f"data.split: cannot carve the {part} split ({exc})") from None
    return idx[rest], idx[held]


def channel_views(raw: RawData, views: dict[str, list[int]]) -> RawData:
    """Add named channel subsets of the input as views; a subset named "x" replaces the student's input."""
    n_ch = raw.x.shape[1]
    for name, chans in views.items():
        if not chans or len(set(chans)) != len(chans) or any(not 0 <= c < n_ch for c in chans):
            raise UserInputError(
                f"data.views.{name}: expected distinct channel indices in 0..{n_ch - 1} (the input has {n_ch} channels), got {chans}"
            )
        if name in raw.views:
            raise UserInputError(f"data.views.{name}: the dataset already has a view named '{name}'")
    pick = lambda a, chans: None if a is None else pick_channels(a, chans)  # noqa: E731
    new_views = {**raw.views, **{k: pick(raw.x, c) for k, c in views.items() if k != "x"}}
    new_test = dict(raw.test_views)
    if raw.test_x is not None:
        new_test.update({k: pick(raw.test_x, c) for k, c in views.items() if k != "x"})
    x, test_x, names = raw.x, raw.test_x, raw.channels
    if "x" in views:
        x, test_x = pick(raw.x, views["x"]), pick(raw.test_x, views["x"])
        names = [(names or [str(i) for i in range(n_ch)])[c] for c in views["x"]]  # the report names what x holds
    return replace(raw, x=x, test_x=test_x, views=new_views, test_views=new_test, channels=names)


def _check_parts(parts: dict[str, tuple[dict[str, np.ndarray], np.ndarray, Optional[np.ndarray]]],
                 classes: Optional[list[str]], source: str, by: str) -> None:
    """Every split big enough to use, and no class that training never sees (its scores would be meaningless)."""
    for part, need in (("train", 2), ("val", 1), ("test", 1)):
        n = len(parts[part][1])
        if n < need:
            raise UserInputError(
                f"data.split: the {part} split has {n} sample(s) ({source}, split by {by}); need at least {need}: "
                f"give more data or change data.split.val/test"
            )
    if classes is None:
        return
    seen = set(np.unique(parts["train"][1]).tolist())
    for part in ("val", "test"):
        absent = sorted(set(np.unique(parts[part][1]).tolist()) - seen)
        if absent:
            names = [classes[i] for i in absent[:5]]
            raise UserInputError(
                f"data.split: class(es) {names} of {source} are in the {part} split but not in train (split by {by}); "
                f"a model cannot predict a class it never saw: give it more samples or subjects, or change data.split"
            )


def _source(cfg: DataConfig) -> str:
    return f"data.path '{cfg.path}'" if cfg.path is not None else f"dataset '{cfg.name}'"


def windowed_raw(cfg: DataConfig) -> RawData:
    """Load and check -> window -> channel views: every sample of ``cfg`` (and its official test samples),
    before any split or normalisation. ``prepare_data`` starts from this; so does anything that needs the
    windows a run sees (persistence images, edgedistill.experiment.topology)."""
    raw, windowed = load_raw(cfg)
    if cfg.window is not None and not windowed:
        raw = window_raw(raw, cfg.window.length, cfg.window.stride)
    if cfg.views:
        raw = channel_views(raw, cfg.views)
    return raw


def prepare_data(cfg: DataConfig, seed: int = 0, fold: Optional[Fold] = None) -> DataSplits:
    """Load, check, window, encode, split and normalise the data described by ``cfg``.

    A ``data.topology`` section is refused here: its "pi" view is added between windowing and splitting by
    ``edgedistill.experiment.topology.prepare_with_pis`` (what ``edgedistill run`` uses), because computing it
    needs the PI cache, a progress bar and possibly a PI-Net, none of which belong in the data layer."""
    if cfg.topology is not None:
        raise UserInputError(
            "data.topology: prepare_data does not compute persistence images; use "
            "edgedistill.experiment.topology.prepare_with_pis(cfg, seed), which adds the 'pi' view"
        )
    return split_windows(windowed_raw(cfg), cfg, seed, fold)


def split_windows(raw: RawData, cfg: DataConfig, seed: int = 0, fold: Optional[Fold] = None) -> DataSplits:
    """The rest of ``prepare_data`` on ``windowed_raw(cfg)`` (possibly with views added to it since): encode,
    split, fit normalisation on train (each view its own; ``raw.raw_views`` are kept as given), tensors.
    ``cfg.topology`` is not read here. With ``fold`` (cross-validation, data/folds.py) the test part is that fold
    of all samples (an official test split is pooled first) and validation is carved from the rest."""
    source = _source(cfg)
    has_official = raw.test_x is not None and raw.test_y is not None
    official = has_official and cfg.split.official_test and fold is None
    if not official:
        raw = _pool_official_test(raw)
    if fold is not None and has_official and cfg.split.official_test:
        raw = replace(raw, notes=[*raw.notes, f"eval.scheme {fold.scheme}: the dataset's official test split is pooled "
                                              "with its training split; the folds are formed over all samples"])
    task = raw.task

    classes, y_all, y_test_official = encode_targets(raw, official, source)

    # Subject ids become 0..G-1 over all splits jointly, so one subject keeps one id everywhere.
    gnames = sorted({str(v) for g in (raw.group, raw.test_group if official else None) if g is not None for v in g})
    gindex = {k: i for i, k in enumerate(gnames)}

    def gcodes(g: Optional[np.ndarray]) -> Optional[np.ndarray]:
        return None if g is None else np.array([gindex[str(v)] for v in np.asarray(g).reshape(-1)], dtype=np.int64)

    groups = gcodes(raw.group)
    by = cfg.split.by
    if by == "auto":
        by = "subject" if groups is not None else ("stratified" if task == "classification" else "random")
    if by == "subject" and groups is None:
        raise UserInputError(
            f"data.split.by: 'subject' needs subject ids (a 'group' array or column) but {source} has none; "
            f"use 'stratified' or 'random'"
        )
    if by == "subject":
        n_subj, need = len(np.unique(groups)), 2 if official else 3  # type: ignore[arg-type]
        if n_subj < need:
            raise UserInputError(
                f"data.split.by: 'subject' needs at least {need} subjects "
                f"({'train/val' if official else 'train/val/test'}) but {source} has {n_subj}"
            )

    everything = np.arange(len(y_all))
    rng = np.random.default_rng(seed)
    split_seeds = rng.integers(0, 2**31 - 1, size=2)
    fold_info: dict = {}
    if official:
        pool, test_idx = everything, None
    elif fold is not None:
        fold_ids, labels = assign_folds(fold, _strata(y_all, task), groups, gnames, int(split_seeds[0]), source, classes)
        if fold.index >= len(labels):
            raise UserInputError(f"eval.only: fold {fold.index} does not exist; eval.scheme '{fold.scheme}' gives "
                                 f"{len(labels)} folds of {source} (0..{len(labels) - 1})")
        check_fold_classes(fold_ids, y_all, classes, labels, fold.scheme, source)
        pool, test_idx = np.flatnonzero(fold_ids != fold.index), np.flatnonzero(fold_ids == fold.index)
        fold_info = {**fold.key(), "count": len(labels), "label": labels[fold.index], "labels": labels}
    else:
        pool, test_idx = _carve(by, everything, y_all, groups, task, cfg.split.test, int(split_seeds[0]), "test")
    train_idx, val_idx = _carve(by, pool, y_all, groups, task, cfg.split.val, int(split_seeds[1]), "validation")

    # Larger than memory (data/mapped.py): every split is row numbers into the files, read a batch at a time.
    mapped = mapped_storage(cfg.storage, raw.x, 1 + len(raw.views))
    rows = (lambda a, idx: MappedRows(a, idx)) if mapped else (lambda a, idx: np.asarray(a)[idx])  # noqa: E731

    def views_at(idx: np.ndarray, x: Any, views: dict[str, Any]) -> dict[str, Any]:
        return {"x": rows(x, idx), **{k: rows(v, idx) for k, v in views.items()}}

    def take(idx: np.ndarray) -> tuple[dict[str, Any], np.ndarray, Optional[np.ndarray]]:
        return views_at(idx, raw.x, raw.views), y_all[idx], None if groups is None else groups[idx]

    parts = {"train": take(train_idx), "val": take(val_idx)}
    if official:
        tviews = views_at(np.arange(len(raw.test_x)), raw.test_x, raw.test_views)  # type: ignore[arg-type]
        parts["test"] = (tviews, y_test_official, gcodes(raw.test_group))  # type: ignore[assignment]
    else:
        parts["test"] = take(test_idx)  # type: ignore[arg-type]

    _check_parts(parts, classes, source, by)
    # Normalisation: each view its own statistics, fitted on the training part only; a raw view (RawData.raw_views:
    # a teacher's recorded outputs) is kept as given.
    fit = fit_rows if mapped else fit_normalizer
    norms = {name: fit(arr, cfg.normalize) for name, arr in parts["train"][0].items() if name not in raw.raw_views}
    target_scale = None
    if task == "regression":
        y_train = parts["train"][1].reshape(len(parts["train"][1]), -1)
        if cfg.normalize_target:
            mu, sd = y_train.mean(axis=0), np.maximum(y_train.std(axis=0), 1e-8)
        else:
            mu, sd = np.zeros(y_train.shape[1]), np.ones(y_train.shape[1])
        target_scale = ([float(v) for v in mu], [float(v) for v in sd])

    def tensors(part: str, views: dict[str, Any], y: np.ndarray, g: Optional[np.ndarray]) -> TensorData:
        tv: dict[str, Any] = {}
        for k, v in views.items():
            if mapped:
                tv[k] = v.normalized(norms.get(k))
                tv[k].check(k, part, source)
            elif k in raw.raw_views:
                tv[k] = torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32))
            elif k in norms:
                z = norms[k].apply(v)
                check_normalized(z, norms[k], k, part, source)
                tv[k] = torch.from_numpy(z)
        if task == "classification":
            ty = torch.from_numpy(np.asarray(y, dtype=np.int64))
        else:
            t_mu, t_sd = np.asarray(target_scale[0]), np.asarray(target_scale[1])  # type: ignore[index]
            yy = (y.reshape(len(y), -1) - t_mu) / t_sd
            if cfg.normalize_target and len(yy) and np.abs(yy).max() > MAX_Z:  # training targets (nearly) constant
                raise UserInputError(
                    f"{source}: the {part} split's regression targets reach {np.abs(yy).max():.3g} training standard "
                    f"deviations (training std {float(t_sd.min()):.3g}): the training split's targets are (nearly) "
                    f"constant; check the label column or the split"
                )
            ty = torch.from_numpy(yy[:, 0] if yy.shape[1] == 1 else yy).float()
        tg = None if g is None else torch.from_numpy(np.asarray(g, dtype=np.int64))
        return TensorData(tv, ty, tg)

    out = {name: tensors(name, *p) for name, p in parts.items()}
    x_train = out["train"].views["x"]  # its shape only: .x would read a mapped split whole
    info = DataInfo(
        name=cfg.name if cfg.name is not None else Path(cfg.path).stem,  # type: ignore[arg-type]
        task=task,
        input_shape=tuple(x_train.shape[1:]),
        n_outputs=len(classes) if classes is not None else int(y_all.reshape(len(y_all), -1).shape[1]),
        classes=classes,
        views={k: tuple(v.shape[1:]) for k, v in out["train"].views.items()},
        has_groups=groups is not None,
        split_by=by,
        official_test=official,
        normalization={k: n.to_dict() for k, n in norms.items()},
        target_scale=target_scale,
        sizes={k: len(v) for k, v in out.items()},
        channels=list(raw.channels) if raw.channels else [str(i) for i in range(x_train.shape[1])],
        notes=[*raw.notes, *([f"data.storage: the splits stay in the memory-mapped windows ({_gib(raw.x)} GiB as float32) and "
                              "are read a batch at a time"] if mapped else [])],
        subjects=gnames,
        fold=fold_info,
    )
    return DataSplits(out["train"], out["val"], out["test"], info)


def _gib(x: Any) -> str:
    return f"{4 * int(np.prod(x.shape)) / 2**30:.2f}"


def dataset_fingerprint(cfg: DataConfig, seed: int = 0, fold: Optional[Fold] = None) -> str:
    """Stable sha256 of everything that determines ``prepare_data(cfg, seed)``'s output.

    A file is identified by its content hash, not its path, so moving a file keeps cached teachers valid
    and editing it invalidates them. The seed is included because it chooses the splits: a teacher trained
    on one seed's training split must never be reused where that data is validation or test.
    """
    doc = cfg.model_dump(mode="json")
    if cfg.path is not None:
        path = Path(cfg.path)
        if not path.is_file():
            raise UserInputError(f"data.path: '{path}' does not exist")
        doc["path"] = {"suffix": path.suffix.lower(), "sha256": sha256_file(path)[0]}
    if cfg.name is not None and DATASETS.entry(cfg.name, key="data.name").meta.get("archive"):
        # An archive by what its files are (not where they are): a moved archive keeps its cached teachers.
        doc.pop("root", None)
        doc["archive"] = DATASETS.get(cfg.name).fingerprint(cfg.root, cfg.params)
    doc.pop("storage", None)  # memory or mapped: the same values (data/mapped.py), so the same cached teachers
    doc["_pipeline"] = PIPELINE_VERSION
    doc["_seed"] = int(seed)
    if fold is not None:  # only then: the fingerprints (and cached teachers) of holdout runs stay as they were
        doc["_fold"] = fold.key()
    return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()
