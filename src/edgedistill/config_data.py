"""The recipe's ``data`` section (split, window, topology, csv columns): split from config.py to keep each file
under the ~400-line limit, as the one section that is self-contained."""
from __future__ import annotations

from typing import Annotated, Any, Literal, Optional

from pydantic import Field, field_validator, model_validator

from edgedistill.config_base import MAX_SEED, MAX_THREADS, _check_free, _Strict
from edgedistill.recipe_paths import RecipePath


class SplitConfig(_Strict):
    by: Literal["auto", "subject", "stratified", "random"] = "auto"
    val: float = Field(0.2, gt=0.0, lt=1.0)
    # Fraction held out for test when the dataset has no official test split (or `official_test` is off).
    test: float = Field(0.2, gt=0.0, lt=1.0)
    official_test: bool = True
    seed: int = Field(0, ge=0, le=MAX_SEED)  # fixed across training seeds so every seed sees the same test set

    @model_validator(mode="after")
    def _leaves_train(self) -> "SplitConfig":
        if self.val + self.test >= 1.0:
            raise ValueError(f"val + test is {self.val + self.test:g}: the two must sum to less than 1 to leave "
                             "rows to train on")
        return self


class EvalConfig(_Strict):
    """How the test numbers are obtained: one held-out split (``holdout``, data.split) or cross-validation, where
    every fold holds out a part as test, trains teacher, student alone and method on the rest (validation carved
    from it by subject where subjects exist) and the report gives mean +- std over folds x seeds
    (docs/evaluation.md). ``loso``: one fold per subject; ``group_kfold``: ``folds`` folds of whole subjects;
    ``stratified_kfold``: ``folds`` folds of samples, each with every class in proportion (no subjects needed)."""

    scheme: Literal["holdout", "loso", "group_kfold", "stratified_kfold"] = "holdout"
    folds: Optional[int] = Field(None, ge=2, le=1000)  # group_kfold / stratified_kfold (default 5); not for loso
    # Run only these folds (0-based), e.g. to spread one cross-validation over machines; default every fold.
    only: Optional[list[Annotated[int, Field(ge=0, le=999)]]] = Field(None, min_length=1, max_length=1000)

    @model_validator(mode="after")
    def _folds_fit_scheme(self) -> "EvalConfig":
        if self.scheme in ("holdout", "loso") and self.folds is not None:
            raise ValueError(f"folds: eval.scheme '{self.scheme}' has no fold count "
                             f"({'one fold per subject' if self.scheme == 'loso' else 'one split, data.split'}); remove it")
        if self.scheme == "holdout" and self.only is not None:
            raise ValueError("only: names folds of a cross-validation; eval.scheme is holdout")
        return self


class WindowConfig(_Strict):
    length: int = Field(gt=1, le=1_000_000)  # samples per window; the data's length is checked when it is read
    stride: Optional[int] = Field(None, gt=0, le=1_000_000)


class TopologyConfig(_Strict):
    """Persistence images of every input channel as the privileged view "pi" (data/topology.py, docs/topology.md).
    Defaults are the PAMAP2 settings of the topological-KD work (sources in docs/methods/topo_kd.md): 64x64
    pixels, spread 0.015, range [-1, 1]."""

    resolution: int = Field(64, ge=2, le=256)
    spread: float = Field(0.015, gt=0, le=100)
    min_bd: float = Field(-1.0, ge=-1e6)
    max_bd: float = Field(1.0, gt=0, le=1e6)
    threshold: float = Field(0.01, ge=0, le=1e6)  # pairs with lifetime <= threshold are dropped
    rips: bool = False  # also the H1 PI of each channel's delay embedding (Vietoris-Rips): 2C channels
    embed_dim: int = Field(3, ge=2, le=64)
    delay: int = Field(1, ge=1, le=100_000)
    source: Literal["exact", "pinet"] = "exact"  # exact: gudhi; pinet: a trained PI-Net (`edgedistill topo pinet`)
    pinet: Optional[RecipePath] = None  # the PI-Net checkpoint for source: pinet
    workers: Optional[int] = Field(None, ge=1, le=MAX_THREADS)  # processes computing PIs (default min(4, CPUs))

    @model_validator(mode="after")
    def _pinet_path(self) -> "TopologyConfig":
        if self.min_bd >= self.max_bd:
            raise ValueError(f"data.topology: min_bd ({self.min_bd:g}) must be below max_bd ({self.max_bd:g})")
        if (self.source == "pinet") != (self.pinet is not None):
            raise ValueError("data.topology.pinet: give a PI-Net checkpoint exactly when source is 'pinet'")
        return self


class CsvColumns(_Strict):
    """Which columns of a user's ``.csv`` are what (``data.columns``; docs/data.md). Without it the legacy names are
    used: ``y`` the label, ``group`` the subject, ``window`` the window id, every other column a channel."""

    label: str = "y"  # the class label or regression target of each row
    group: Optional[str] = None  # the subject (or recording) id: splits are by subject when given
    window: Optional[str] = None  # rows sharing an id form one window (else data.window cuts windows)
    time: Optional[str] = None  # a timestamp column: used to order and check rows, never a channel
    channels: Optional[list[str]] = Field(None, min_length=1)  # the input channels, in order (default: every other)


class DataConfig(_Strict):
    name: Optional[str] = None
    path: Optional[RecipePath] = None
    # The columns of a .csv (data.path): label, group, window, time, channels. Left out of dumps when unset.
    columns: Optional[CsvColumns] = Field(None, exclude_if=lambda v: v is None)
    # What y means, when the file's dtype should not decide (float class ids, integer targets): never guessed
    # silently; the loader says what it inferred. Left out of dumps when unset.
    task: Optional[Literal["classification", "regression"]] = Field(None, exclude_if=lambda v: v is None)
    params: dict[str, Any] = Field(default_factory=dict)
    # A public archive's local folder (data/archives): default $EDGEDISTILL_DATA or ~/.cache/edgedistill/data.
    # Left out of dumps when unset, so the fingerprints of recipes without it do not change.
    root: Optional[RecipePath] = Field(None, exclude_if=lambda v: v is None)
    _params_finite = field_validator("params")(_check_free)
    # Where the splits live (data/mapped.py): memory; mapped (read from an archive's memory-mapped windows a batch at a
    # time: a set larger than memory); auto: mapped when the windows are on disk and above a quarter of free memory.
    storage: Literal["auto", "memory", "mapped"] = Field("auto", exclude_if=lambda v: v == "auto")
    split: SplitConfig = Field(default_factory=SplitConfig)
    normalize: Literal["per_channel", "global", "none"] = "per_channel"
    window: Optional[WindowConfig] = None
    # Named channel subsets of the input, for cross-view distillation: ``{x: [0, 1, 2], full: [0, 1, 2, 3, 4, 5]}``
    # gives the student ("x") three channels and a teacher (``view: full``) all six.
    views: dict[str, list[Annotated[int, Field(ge=0, le=1_000_000)]]] = Field(default_factory=dict)
    # Regression targets are standardised on the training split; metrics are reported in original units.
    normalize_target: bool = True
    # Persistence images of the (windowed) input as the view "pi", for topological teachers (docs/topology.md).
    # Left out of dumps when unset, so data fingerprints (and cached teachers) of recipes without it do not change.
    topology: Optional[TopologyConfig] = Field(None, exclude_if=lambda v: v is None)

    @model_validator(mode="after")
    def _name_or_path(self) -> "DataConfig":
        if (self.name is None) == (self.path is None):
            both = self.name is not None
            raise ValueError("give exactly one of data.name (a bundled dataset) or data.path (.npz or .csv file)" + (
                f"; to use your file in place of a recipe's '{self.name}' on the command line, clear the name too: "
                f"data.name= data.path={self.path}" if both else ""))
        return self
