"""BCI Competition IV data set 2a (Tangermann et al. 2012, Frontiers in Neuroscience 6:55): 4-class motor imagery
EEG (left hand, right hand, feet, tongue) of 9 subjects, 22 EEG + 3 EOG channels at 250 Hz.

Files: ``BCICIV_2a_gdf/A0<s>T.gdf`` (training session, cues marked 769-772) and ``A0<s>E.gdf`` (evaluation session,
every cue marked 783 "unknown"), read with MNE (optional extra ``eeg``; imported only here). The evaluation labels
are not in the GDFs: the competition released them afterwards as ``true_labels`` (``A0<s>E.mat``, variable
``classlabel``, 1..4 in the order 769..772), read with scipy.io.loadmat from ``BCICIV_2a_gdf/true_labels/`` or
``BCICIV_2a_gdf/``. A trial's timeline (the data set description): fixation cross at t = 0 (event 768), cue at
t = 2 s, motor imagery until t = 6 s.

Protocol: the competition's split (session T trains, session E tests, subjects pooled, group = subject), one window
per cue from ``start_s`` to ``stop_s`` after it (default 0-4 s: t = 2-6 s of the trial, the imagery period, 1000
samples), the 22 EEG channels in µV (EOG dropped), four classes. Every trial is kept, including those the
experts marked rejected (event 1023), as MOABB and braindecode do. View ``montage8``: 8 electrodes around C3, Cz, C4
(``MONTAGE8``) for cross-view distillation (a 22-channel teacher, an 8-electrode student).
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from edgedistill.data.archives.base import Archive, fill_gaps, require, resample
from edgedistill.data.archives.text_tables import announce
from edgedistill.data.raw import RawData
from edgedistill.errors import UserInputError

NAME = "bci_iv_2a"
RATE = 250.0
#: The 22 EEG electrodes in the files' channel order (the data set description's montage figure).
EEG_CHANNELS = ["Fz", "FC3", "FC1", "FCz", "FC2", "FC4", "C5", "C3", "C1", "Cz", "C2", "C4", "C6", "CP3", "CP1",
                "CPz", "CP2", "CP4", "P1", "Pz", "P2", "POz"]
MONTAGE8 = ["FC1", "FC2", "C3", "C1", "Cz", "C2", "C4", "CPz"]
#: Cue event codes of session T and the class each announces; session E marks every cue 783.
CUES = {769: "left_hand", 770: "right_hand", 771: "feet", 772: "tongue"}
UNKNOWN_CUE = 783
INSTALL = "pip install 'edgedistill[eeg]'"


def epoch_trials(signal: np.ndarray, events: np.ndarray, *, sfreq: float, cue_codes: Sequence[int],
                 start_s: float, stop_s: float, source: str = "recording") -> tuple[np.ndarray, np.ndarray]:
    """Windows of a (channels, T) recording from ``start_s`` to ``stop_s`` seconds after each event whose code is
    in ``cue_codes``: ((n, channels, round((stop_s - start_s) * sfreq)), the n cue codes), in event order.

    ``events`` is (n, 2): sample index, code. A window that leaves the recording is refused naming ``source``."""
    events = np.asarray(events, dtype=np.int64).reshape(-1, 2)
    cues = events[np.isin(events[:, 1], list(cue_codes))]
    offset = int(round(start_s * sfreq))
    length = int(round((stop_s - start_s) * sfreq))
    starts = cues[:, 0] + offset
    bad = (starts < 0) | (starts + length > signal.shape[1])
    if bad.any():
        raise UserInputError(f"dataset '{NAME}': in '{source}' the window {start_s}..{stop_s} s after the cue at "
                             f"sample {int(cues[bad][0, 0])} leaves the recording ({signal.shape[1]} samples)")
    x = np.stack([signal[:, s:s + length] for s in starts]) if len(starts) else np.empty((0, signal.shape[0], length))
    return x, cues[:, 1]


def _mne():
    try:
        import mne  # optional: only this archive needs it
    except ImportError:
        raise UserInputError(f"dataset '{NAME}': reading the GDF files needs MNE, which is not installed: "
                             f"{INSTALL}") from None
    return mne


def read_gdf(path: Path) -> tuple[np.ndarray, np.ndarray, float]:
    """A GDF as (22, T) EEG in µV, (n, 2) events (sample, code) and its sampling rate, through MNE."""
    mne = _mne()
    announce(require(path, NAME))
    try:
        raw = mne.io.read_raw_gdf(str(path), preload=True, verbose="error")
        events, ids = mne.events_from_annotations(raw, verbose="error")
    except Exception as exc:  # noqa: BLE001 - any reader failure means the file is not the archive's GDF
        raise UserInputError(f"dataset '{NAME}': '{path}' could not be read as GDF "
                             f"({type(exc).__name__}: {exc})") from None
    data = np.asarray(raw.get_data())
    if data.shape[0] < len(EEG_CHANNELS):
        raise UserInputError(f"dataset '{NAME}': '{path}' has {data.shape[0]} channels; the archive's have "
                             f"22 EEG + 3 EOG")
    code_of = {v: int(k) for k, v in ids.items() if str(k).strip().isdigit()}
    pairs = np.array([(s, code_of[i]) for s, _, i in events if i in code_of], dtype=np.int64).reshape(-1, 2)
    return data[:len(EEG_CHANNELS)] * 1e6, pairs, float(raw.info["sfreq"])


def read_true_labels(folder: Path, session: str) -> np.ndarray:
    """``classlabel`` (1..4) of ``<session>.mat`` from ``folder/true_labels`` or ``folder``."""
    from scipy.io import loadmat  # MATLAB v5 reader: data only, no code

    places = [folder / "true_labels" / f"{session}.mat", folder / f"{session}.mat"]
    path = next((p for p in places if p.exists()), None)
    if path is None:
        raise UserInputError(f"dataset '{NAME}': the evaluation labels '{places[0]}' are missing: get true_labels "
                             f"from the competition's results page (https://www.bbci.de/competition/iv/results/)")
    try:
        labels = np.asarray(loadmat(str(path))["classlabel"]).reshape(-1).astype(np.int64)
    except Exception as exc:  # noqa: BLE001 - any failure means the file is not the archive's label file
        raise UserInputError(f"dataset '{NAME}': '{path}' is not a true-labels .mat with 'classlabel' "
                             f"({exc})") from None
    if labels.size == 0 or labels.min() < 1 or labels.max() > len(CUES):
        raise UserInputError(f"dataset '{NAME}': '{path}' classlabel values must be 1..{len(CUES)}")
    return labels


def _session(folder: Path, subject: int, session: str, start_s: float, stop_s: float,
             rate: float, notes: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """One session's windows and class names."""
    name = f"A0{subject}{session}"
    path = folder / f"{name}.gdf"
    signal, events, sfreq = read_gdf(path)
    codes = [UNKNOWN_CUE] if session == "E" else list(CUES)
    x, cue = epoch_trials(signal, events, sfreq=sfreq, cue_codes=codes, start_s=start_s, stop_s=stop_s,
                          source=str(path))
    if session == "E":
        labels = read_true_labels(folder, name)
        if len(labels) != len(x):
            raise UserInputError(f"dataset '{NAME}': '{path}' has {len(x)} cues but its true labels {len(labels)}")
        cue = np.array(list(CUES))[labels - 1]
    if not np.isfinite(x).all():
        notes.append(f"{name}: {int((~np.isfinite(x)).sum())} missing sample(s) filled by linear interpolation")
        x = np.stack([fill_gaps(t.T).T for t in x])
    if rate != sfreq:
        x = np.stack([resample(t.T, sfreq, rate).T for t in x])
    return x, np.array([CUES[int(c)] for c in cue])


def _validate(subjects, start_s, stop_s, rate) -> list[int]:
    chosen = list(range(1, 10)) if subjects is None else list(subjects)
    if not chosen or any(not isinstance(s, int) or isinstance(s, bool) or not 1 <= s <= 9 for s in chosen):
        raise UserInputError(f"data.params.subjects: expected a list of subject numbers 1..9, got {subjects!r}")
    for key, value in (("start_s", start_s), ("stop_s", stop_s), ("rate", rate)):
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise UserInputError(f"data.params.{key}: expected a number, got {value!r}")
    if not -2.0 <= start_s < stop_s:
        raise UserInputError(f"data.params.stop_s: expected start_s < stop_s with start_s >= -2 (the trial's start), "
                             f"got start_s={start_s}, stop_s={stop_s}")
    if not 0 < rate <= RATE:
        raise UserInputError(f"data.params.rate: expected a rate in (0, {RATE:g}] Hz (the recordings' rate), "
                             f"got {rate}")
    return sorted(set(chosen))


def load(folder: Path, *, subjects: Optional[list[int]] = None, start_s: float = 0.0, stop_s: float = 4.0,
         rate: float = RATE) -> RawData:
    """Session T of each subject as training windows, session E (true labels) as the official test set."""
    chosen = _validate(subjects, start_s, stop_s, rate)
    folder = Path(folder)
    notes = [f"windows {start_s:g}-{stop_s:g} s after each cue, 22 EEG channels in µV (3 EOG dropped)",
             "split: session T trains, session E (competition true labels) tests"]
    if rate != RATE:
        notes.append(f"resampled {RATE:g} Hz -> {rate:g} Hz (linear interpolation, no anti-alias filter)")
    parts: dict[str, list] = {"T": [], "E": []}
    for subject in chosen:
        for session in ("T", "E"):
            x, y = _session(folder, subject, session, start_s, stop_s, rate, notes)
            parts[session].append((x, y, np.full(len(y), f"A0{subject}")))
    tr = [np.concatenate(a) for a in zip(*parts["T"])]
    te = [np.concatenate(a) for a in zip(*parts["E"])]
    pick = [EEG_CHANNELS.index(c) for c in MONTAGE8]
    return RawData(
        x=tr[0], y=tr[1], task="classification", group=tr[2], test_x=te[0], test_y=te[1], test_group=te[2],
        views={"montage8": tr[0][:, pick]}, test_views={"montage8": te[0][:, pick]},
        classes=list(CUES.values()), name=NAME, channels=list(EEG_CHANNELS), notes=notes,
    )


ARCHIVE = Archive(
    name=NAME,
    folder="BCICIV_2a_gdf",
    files=tuple(f"A0{s}{t}.gdf" for s in range(1, 10) for t in "TE"),
    task="classification",
    kind="1d",
    doc="BCI Competition IV 2a: motor-imagery EEG, 22 x 1000 (4 s at 250 Hz), 4 classes, 9 subjects, T/E sessions.",
    citation=("Tangermann et al. 2012, Review of the BCI Competition IV, Frontiers in Neuroscience 6:55; "
              "https://www.bbci.de/competition/iv/"),
    load=load,
    manual=("request BCICIV_2a_gdf.zip from https://www.bbci.de/competition/iv/#download (terms of use apply), unzip "
            "it, and put the evaluation labels (true_labels: A01E.mat..A09E.mat, from "
            "https://www.bbci.de/competition/iv/results/) in BCICIV_2a_gdf/true_labels/"),
    extras=("mne",),
)
