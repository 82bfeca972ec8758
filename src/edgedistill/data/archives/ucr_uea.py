"""UCR/UEA time series classification archive: one problem's official train/test ``.ts`` files, read with aeon.

The archive's 2018 releases (Dau et al. 2019, univariate; Bagnall et al. 2018, multivariate) unpack as
``Univariate_ts/<Name>/<Name>_TRAIN.ts`` and ``Multivariate_ts/<Name>/<Name>_TEST.ts``. A problem is already a
set of fixed windows with one label each, so the protocol is the archive's own: the official split as given, no
windowing, no resampling. ``aeon.datasets.load_from_ts_file`` parses the format (header tags ``@problemName``,
``@equalLength``, ``@classLabel true <labels>``, then one case per line: channels separated by ':', values by ',',
the label last; '?' or 'NaN' for a missing value). aeon lower-cases every line it reads, so labels come back
lower-case; the class order is the header's ``@classLabel`` list. Unequal-length problems (e.g. PLAID) are refused:
a model here takes one length. Missing values (a few univariate problems, e.g. DodgerLoopDay) are filled per
series by linear interpolation (``base.fill_gaps``), said in ``notes``.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from edgedistill.data.archives.base import Archive, fill_gaps, require
from edgedistill.data.archives.text_tables import announce
from edgedistill.data.raw import RawData
from edgedistill.errors import UserInputError

NAME = "ucr_uea"
#: The folders the archive's two zips unpack to; a problem is looked for in ``folder`` first, then in these
#: siblings of it (both zips unpacked side by side under the data root).
RELEASE_FOLDERS = ("Multivariate_ts", "Univariate_ts")
#: A problem name is one folder name: letters, digits, '_', '-' (the archive's names, e.g. "BasicMotions",
#: "Fungi", "ECG200", "GesturePebbleZ1"); nothing that could leave the archive folder.
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,99}$")


def problem_folder(folder: Path, dataset: str) -> Path:
    """Where the problem's two files are: ``<folder>/<dataset>``, else the same problem in a sibling release folder,
    else ``<dataset>`` beside ``folder`` (one problem's zip unpacked into the data root); refused naming every place.
    ``folder`` is the archive folder (``<root>/Multivariate_ts``), which need not exist itself."""
    folder = Path(folder)
    places = ([folder / dataset] + [folder.parent / r / dataset for r in RELEASE_FOLDERS if r != folder.name]
              + [folder.parent / dataset])
    for place in places:
        if (place / f"{dataset}_TRAIN.ts").exists():
            return place
    looked = ", ".join(f"'{p / (dataset + '_TRAIN.ts')}'" for p in places)
    raise UserInputError(
        f"dataset '{NAME}': data.params.dataset '{dataset}' not found (looked for {looked}); unpack the archive's "
        f"Univariate2018_ts.zip / Multivariate2018_ts.zip under the data root, or the problem's own zip as "
        f"'<root>/Multivariate_ts/{dataset}/'"
    )


def _read_ts(path: Path) -> tuple[np.ndarray, np.ndarray, dict]:
    """One ``.ts`` file as (cases, channels, length) float64, labels and aeon's header dict; any parse failure or an
    unequal-length problem is refused naming the file."""
    from aeon.datasets import load_from_ts_file  # aeon costs ~1.5 s to import: only when a problem is read

    announce(require(path, NAME))
    try:
        x, y, meta = load_from_ts_file(str(path), return_meta_data=True)
    except (OSError, ValueError, IndexError, UnicodeDecodeError) as exc:
        raise UserInputError(f"dataset '{NAME}': '{path}' is not a .ts file as the archive writes it ({exc})") from None
    if not meta.get("equallength", True) or not isinstance(x, np.ndarray) or x.ndim != 3:
        raise UserInputError(
            f"dataset '{NAME}': '{path}' holds series of unequal length (@equalLength false); only equal-length "
            f"problems are supported (the archive ships padded '_eq' versions of some, e.g. JapaneseVowels_eq)"
        )
    if not meta.get("classlabel", False):
        raise UserInputError(f"dataset '{NAME}': '{path}' has no class labels (@classLabel false): not a "
                             f"classification problem")
    return np.asarray(x, dtype=np.float64), np.asarray(y).astype(str), meta


def _filled(x: np.ndarray, path: Path, notes: list[str]) -> np.ndarray:
    """NaN (the file's '?' / 'NaN') linearly interpolated within each series, with a note naming the file."""
    missing = ~np.isfinite(x)
    if not missing.any():
        return x
    out = np.stack([fill_gaps(case.T).T for case in x])
    notes.append(f"{path.name}: {int(missing.sum())} missing value(s) filled by linear interpolation in time")
    return out


def load(folder: Path, *, dataset: str = "BasicMotions") -> RawData:
    """The problem ``dataset``: its ``_TRAIN.ts`` as x/y and ``_TEST.ts`` as the official test split."""
    place = problem_folder(Path(folder), _checked(dataset))
    notes: list[str] = []
    x, y, meta = _read_ts(place / f"{dataset}_TRAIN.ts")
    tx, ty, test_meta = _read_ts(require(place / f"{dataset}_TEST.ts", NAME))
    if x.shape[1:] != tx.shape[1:]:
        raise UserInputError(
            f"dataset '{NAME}': '{place / (dataset + '_TEST.ts')}' has cases of shape {tx.shape[1:]}, the train "
            f"file {x.shape[1:]} (channels, length): the two files do not belong together"
        )
    x = _filled(x, place / f"{dataset}_TRAIN.ts", notes)
    tx = _filled(tx, place / f"{dataset}_TEST.ts", notes)
    classes = [str(c) for c in meta.get("class_values") or sorted(set(y))]
    unknown = sorted((set(y) | set(ty)) - set(classes))
    if unknown:
        raise UserInputError(
            f"dataset '{NAME}': labels {unknown[:5]} in '{place}' are not in the header's @classLabel list {classes}"
        )
    notes.append(f"{dataset}: official split {len(x)} train / {len(tx)} test cases; labels lower-cased by aeon's "
                 f"reader")
    return RawData(
        x=x, y=y, task="classification", test_x=tx, test_y=ty, classes=classes, name=dataset,
        channels=[f"dim_{i}" for i in range(x.shape[1])], notes=notes,
    )


def _checked(dataset: object) -> str:
    """A problem name checked before it becomes part of a path."""
    if not isinstance(dataset, str) or not _SAFE_NAME.fullmatch(dataset):
        raise UserInputError(
            f"data.params.dataset: expected a UCR/UEA problem name (letters, digits, '_' or '-', e.g. "
            f"'BasicMotions'), got {dataset!r}"
        )
    return dataset


def _locate(folder: Path, protocol: dict) -> Path:
    """The problem's folder for the window cache (``Archive.locate``)."""
    return problem_folder(folder, _checked(protocol.get("dataset")))


ARCHIVE = Archive(
    locate=_locate,
    name=NAME,
    folder="Multivariate_ts",
    files=(),  # which files prove presence depends on data.params.dataset: the loader checks them
    task="classification",
    kind="1d",
    doc="UCR/UEA archive: one equal-length problem (data.params.dataset) from its official .ts train/test files.",
    citation=(
        "Dau et al. 2019, The UCR time series archive, IEEE/CAA J. Autom. Sinica 6(6); Bagnall et al. 2018, The UEA "
        "multivariate time series classification archive, arXiv:1811.00075; https://www.timeseriesclassification.com"
    ),
    load=load,
    manual=(
        "download Univariate2018_ts.zip / Multivariate2018_ts.zip (or one problem's zip) from "
        "https://www.timeseriesclassification.com/dataset.php and unpack it under the data root "
        "(<root>/Multivariate_ts/<Name>/<Name>_TRAIN.ts)"
    ),
)
