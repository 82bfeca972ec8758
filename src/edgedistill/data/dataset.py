"""Datasets with named views, batched by index (no per-sample __getitem__ + collate).

A view is a tensor in memory, or for a data set larger than memory a ``MappedRows`` (data/mapped.py) that reads its
rows from memory-mapped files when a batch asks for them.

A batch is a plain dict: ``x`` (what the student sees), optional privileged views (``pi``,
``x_full``, ...), ``y``, ``index`` (positions in this dataset, for cached teacher outputs) and
``group`` (subject id, ``-1`` where unknown).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Literal, Optional

import torch

from edgedistill.data.mapped import MappedRows
from edgedistill.errors import UserInputError

Task = Literal["classification", "regression"]
Batch = dict[str, torch.Tensor]


@dataclass
class TensorData:
    views: dict[str, torch.Tensor | MappedRows]  # "x" required; every view has the same first dimension
    y: torch.Tensor  # int64 (n,) for classification, float32 (n,) or (n, k) for regression
    group: Optional[torch.Tensor] = None  # int64 (n,) subject ids

    def __post_init__(self) -> None:
        if "x" not in self.views:
            raise UserInputError("dataset: the view 'x' (what the student sees) is missing")
        n = len(self.y)
        for name, v in self.views.items():
            if v.shape[0] != n:
                raise UserInputError(f"dataset: view '{name}' has {v.shape[0]} rows but y has {n}")
        if self.group is not None and len(self.group) != n:
            raise UserInputError(f"dataset: group has {len(self.group)} rows but y has {n}")

    @property
    def x(self) -> torch.Tensor:
        return self.tensor("x")

    def tensor(self, view: str) -> torch.Tensor:
        """Every row of ``view`` as one tensor: for a mapped view, the whole split read into memory."""
        v = self.views[view]
        return v.load() if isinstance(v, MappedRows) else v

    @property
    def mapped(self) -> bool:
        return any(isinstance(v, MappedRows) for v in self.views.values())

    def __len__(self) -> int:
        return len(self.y)

    def subset(self, index: torch.Tensor | list[int]) -> "TensorData":
        idx = torch.as_tensor(index, dtype=torch.long)
        return TensorData(
            {k: v.rows_of(idx) if isinstance(v, MappedRows) else v[idx] for k, v in self.views.items()},
            self.y[idx],
            None if self.group is None else self.group[idx],
        )

    def batch(self, index: torch.Tensor) -> Batch:
        out: Batch = {k: v[index] for k, v in self.views.items()}
        out["y"] = self.y[index]
        out["index"] = index
        out["group"] = self.group[index] if self.group is not None else torch.full_like(index, -1)
        return out

    def batches(
        self,
        batch_size: int,
        *,
        shuffle: bool = False,
        generator: Optional[torch.Generator] = None,
        drop_last: bool = False,
    ) -> Iterator[Batch]:
        """Yield index-sliced batches. ``drop_last`` drops an incomplete final batch only when at least one
        full batch exists (a BatchNorm layer fed a batch of 1-2 samples gives noisy statistics)."""
        n = len(self)
        order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
        stop = n - n % batch_size if (drop_last and n >= batch_size) else n
        for start in range(0, stop, batch_size):
            yield self.batch(order[start : start + batch_size])

    def num_batches(self, batch_size: int, drop_last: bool = False) -> int:
        n = len(self)
        return n // batch_size if (drop_last and n >= batch_size) else -(-n // batch_size)


def outputs_by_batch(fn: Callable[[torch.Tensor], Any], data: TensorData, view: str, device: torch.device,
                     batch_size: int = 256) -> Any:
    """``fn`` over every row of ``data[view]`` in row order, batch by batch, written into one tensor allocated
    at the first batch (a tuple of tensors when ``fn`` returns a tuple: a teacher's logits and tapped features).
    Not ``torch.cat`` of a list: hundreds of small per-batch outputs kept alive between the batches' freed
    activations fragment glibc's heap, which then never shrinks. A teacher pass over 64k windows grew the
    process by ~2 GiB that way and by ~0.2 GiB like this (benchmarks/speed.py, docs/benchmarks.md)."""
    out: Optional[list[torch.Tensor]] = None
    single = True
    start = 0
    for b in data.batches(batch_size):
        z = fn(b[view].to(device))
        single = torch.is_tensor(z)
        parts = [z] if single else list(z)
        if out is None:
            out = [p.new_empty((len(data), *p.shape[1:])) for p in parts]
        for o, p in zip(out, parts):
            o[start:start + len(p)] = p
        start += len(parts[0])
    if out is None:
        return torch.empty(0)
    return out[0] if single else tuple(out)


@dataclass
class DataInfo:
    """What the rest of the toolkit needs to know about a prepared dataset."""

    name: str
    task: Task
    input_shape: tuple[int, ...]  # per-sample shape of "x": (channels, length) or (channels, h, w)
    n_outputs: int  # classes, or regression targets
    classes: Optional[list[str]] = None
    views: dict[str, tuple[int, ...]] = field(default_factory=dict)  # per-sample shape of every view
    has_groups: bool = False
    split_by: str = "stratified"
    official_test: bool = False  # True: test is the dataset's own test split; False: held out by `split_by`
    normalization: dict[str, Any] = field(default_factory=dict)  # per-view mean/std lists, fitted on train
    target_scale: Optional[tuple[list[float], list[float]]] = None  # regression (mean, std), fitted on train
    sizes: dict[str, int] = field(default_factory=dict)
    channels: list[str] = field(default_factory=list)  # the name of each channel of "x" (indices when unnamed)
    notes: list[str] = field(default_factory=list)  # what the loader inferred or changed (task, order), for the report
    subjects: list[str] = field(default_factory=list)  # original subject ids by group code (group g is subjects[g])
    # Cross-validation: scheme, folds, index, count, label (what the test part holds) and every fold's label; else {}.
    fold: dict[str, Any] = field(default_factory=dict)

    def subject_name(self, group: int) -> str:
        """The original id of group code ``group`` (the code itself where unknown: summaries made before names)."""
        return self.subjects[group] if 0 <= group < len(self.subjects) else str(group)


@dataclass
class DataSplits:
    train: TensorData
    val: TensorData
    test: TensorData
    info: DataInfo

    def train_subset(self, fraction: float, seed: int) -> "DataSplits":
        """The same splits with training rows reduced to ``fraction`` of them, drawn with ``seed`` (RoS-KD's subsets)."""
        n = len(self.train)
        keep = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[: max(1, round(fraction * n))].sort().values
        return DataSplits(self.train.subset(keep), self.val, self.test, self.info)

    def view_as_x(self, view: str) -> "DataSplits":
        """The same splits with ``view`` in the "x" slot: a teacher trains and evaluates on its own view."""
        if view == "x":
            return self
        swap = lambda d: TensorData({**d.views, "x": d.views[view]}, d.y, d.group)  # noqa: E731
        return DataSplits(swap(self.train), swap(self.val), swap(self.test), self.info)
