"""BCI IV 2a: the epoching on arrays, the loader's wiring through a stand-in for MNE (MNE is an optional extra, not
installed for the tests), the true-labels .mat files, the message when MNE is absent, and refused params."""
from __future__ import annotations

import sys
import types
from pathlib import Path

import numpy as np
import pytest
from scipy.io import savemat

from edgedistill.data.archives import bci_iv_2a
from edgedistill.data.archives.bci_iv_2a import ARCHIVE, EEG_CHANNELS, MONTAGE8, epoch_trials, load
from edgedistill.errors import UserInputError

SFREQ = 250.0


def test_epoch_trials_cuts_windows_after_each_cue_in_event_order():
    signal = np.arange(3 * 100, dtype=float).reshape(3, 100)
    events = np.array([[5, 768], [10, 770], [30, 1023], [40, 769], [60, 783]])
    x, codes = epoch_trials(signal, events, sfreq=10.0, cue_codes=[769, 770], start_s=0.5, stop_s=1.5)
    assert x.shape == (2, 3, 10) and list(codes) == [770, 769]
    np.testing.assert_array_equal(x[0, 1], signal[1, 15:25])  # cue at 10, +0.5 s at 10 Hz = sample 15
    np.testing.assert_array_equal(x[1, 2], signal[2, 45:55])
    with pytest.raises(UserInputError, match="leaves the recording"):
        epoch_trials(signal, events, sfreq=10.0, cue_codes=[783], start_s=0.0, stop_s=5.0)


class FakeRaw:
    def __init__(self, data: np.ndarray):
        self._data = data
        self.info = {"sfreq": SFREQ}

    def get_data(self) -> np.ndarray:
        return self._data


def fake_mne(recordings: dict[str, tuple[np.ndarray, list]]) -> types.ModuleType:
    """Stands in for mne.io.read_raw_gdf / mne.events_from_annotations on in-memory recordings (volts)."""
    mne = types.ModuleType("mne")
    mne.io = types.SimpleNamespace(read_raw_gdf=lambda path, **_: FakeRaw(recordings[Path(path).name][0]))

    def events_from_annotations(raw, **_):
        name = next(k for k, v in recordings.items() if v[0] is raw._data)
        ids = {"768": 1, "769": 2, "770": 3, "771": 4, "772": 5, "783": 6, "1023": 7, "32766": 8}
        return np.array([[s, 0, ids[str(c)]] for s, c in recordings[name][1]]), ids
    mne.events_from_annotations = events_from_annotations
    return mne


def write_subject(folder: Path, subject: int, recordings: dict, true_labels: list[int]) -> None:
    """Session T: cues 769..772 at known samples; session E: cues 783 and a true_labels .mat."""
    n = 25 * 250
    for session, cues in (("T", [(500, 772), (2000, 769)]), ("E", [(700, 783), (3000, 783), (4500, 783)])):
        name = f"A0{subject}{session}.gdf"
        data = np.random.default_rng(subject * 10 + len(session)).normal(size=(25, n)) * 1e-5
        events = [(s - 500, 768) for s, _ in cues] + list(cues) + [(cues[0][0] - 500, 1023)]
        recordings[name] = (data, events)
        (folder / name).write_bytes(b"GDF stand-in")
    (folder / "true_labels").mkdir(exist_ok=True)
    savemat(folder / "true_labels" / f"A0{subject}E.mat", {"classlabel": np.array(true_labels, np.uint8)[:, None]})


@pytest.fixture
def archive(tmp_path, monkeypatch):
    folder = tmp_path / "BCICIV_2a_gdf"
    folder.mkdir()
    recordings: dict = {}
    write_subject(folder, 1, recordings, [2, 4, 1])
    write_subject(folder, 3, recordings, [3, 3, 2])
    monkeypatch.setitem(sys.modules, "mne", fake_mne(recordings))
    return folder, recordings


def test_loader_windows_sessions_labels_subjects_and_the_montage_view(archive):
    folder, recordings = archive
    raw = load(folder, subjects=[1, 3])
    assert raw.x.shape == (4, 22, 1000) and raw.test_x.shape == (6, 22, 1000)
    assert list(raw.y) == ["tongue", "left_hand", "tongue", "left_hand"]
    assert list(raw.test_y) == ["right_hand", "tongue", "left_hand", "feet", "feet", "right_hand"]
    assert list(raw.group) == ["A01", "A01", "A03", "A03"] and list(raw.test_group[3:]) == ["A03"] * 3
    np.testing.assert_allclose(raw.x[1], recordings["A01T.gdf"][0][:22, 2000:3000] * 1e6)  # µV, EOG dropped
    np.testing.assert_allclose(raw.test_x[4], recordings["A03E.gdf"][0][:22, 3000:4000] * 1e6)
    pick = [EEG_CHANNELS.index(c) for c in MONTAGE8]
    np.testing.assert_array_equal(raw.views["montage8"], raw.x[:, pick])
    assert raw.test_views["montage8"].shape == (6, 8, 1000) and raw.channels == EEG_CHANNELS
    assert raw.classes == ["left_hand", "right_hand", "feet", "tongue"]


def test_window_and_rate_params(archive):
    folder, recordings = archive
    raw = load(folder, subjects=[1], start_s=0.5, stop_s=2.5, rate=125)
    assert raw.x.shape == (2, 22, 250)
    np.testing.assert_allclose(raw.x[0, 3, 0], recordings["A01T.gdf"][0][3, 625] * 1e6)
    assert any("250 Hz -> 125 Hz" in n for n in raw.notes)


@pytest.mark.parametrize("params,key", [
    ({"subjects": [0]}, "subjects"), ({"subjects": [10]}, "subjects"), ({"subjects": []}, "subjects"),
    ({"start_s": 2.0, "stop_s": 1.0}, "stop_s"), ({"rate": 0}, "rate"), ({"rate": 500}, "rate"),
    ({"start_s": "0"}, "start_s"),
])
def test_bad_params_are_refused_naming_the_key(archive, params, key):
    with pytest.raises(UserInputError, match=f"data.params.{key}"):
        load(archive[0], **params)


def test_missing_files_and_label_mismatch_are_named(archive):
    folder, _ = archive
    savemat(folder / "true_labels" / "A03E.mat", {"classlabel": np.array([[1], [2]], np.uint8)})
    with pytest.raises(UserInputError, match="A03E.gdf.*3 cues.*2"):
        load(folder, subjects=[3])
    (folder / "true_labels" / "A01E.mat").unlink()
    with pytest.raises(UserInputError, match="A01E.mat"):
        load(folder, subjects=[1])
    (folder / "A01T.gdf").unlink()
    with pytest.raises(UserInputError, match="A01T.gdf"):
        load(folder, subjects=[1])


def test_without_mne_the_message_says_how_to_install_it(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "mne", None)  # import mne -> ImportError
    with pytest.raises(UserInputError, match=r"pip install 'edgedistill\[eeg\]'"):
        load(tmp_path, subjects=[1])


def test_archive_entry():
    assert ARCHIVE.extras == ("mne",) and "A09E.gdf" in ARCHIVE.files and ARCHIVE.url is None
    assert bci_iv_2a.INSTALL == "pip install 'edgedistill[eeg]'"
    assert len(MONTAGE8) == 8 and set(MONTAGE8) <= set(EEG_CHANNELS)
