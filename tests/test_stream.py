"""Streaming inference (deploy/stream.py, Predictor.stream, edgedistill predict --stream): the streamed labels on a
concatenated recording equal the batch predictions of the same windows, smoothing on a hand-made probability
sequence, metadata of older files, and the refusals (channels, NaN, too short)."""
import numpy as np
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from edgedistill.cli import app  # noqa: E402
from edgedistill.data.windowing import sliding_windows  # noqa: E402
from edgedistill.deploy import Predictor, to_onnx  # noqa: E402
from edgedistill.deploy.metadata import ModelMetadata, attach  # noqa: E402
from edgedistill.deploy.stream import Smoother  # noqa: E402
from edgedistill.errors import UserInputError  # noqa: E402

LENGTH, STRIDE, CHANNELS = 16, 5, 3
NAMES = ["acc_x", "acc_y", "gyro_z"]
CLASSES = ["walk", "sit", "run"]
NORM = {"mode": "per_channel", "mean": [0.5, -1.0, 2.0], "std": [2.0, 0.5, 3.0]}


def _model_file(folder, window=None, names=NAMES, rate=50.0, **meta_changes):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv1d(CHANNELS, 6, 5), nn.ReLU(), nn.AdaptiveAvgPool1d(1), nn.Flatten(),
                          nn.Linear(6, len(CLASSES))).eval()
    proto = to_onnx(model, torch.randn(2, CHANNELS, LENGTH), exporter="legacy", names=("input", "logits")).proto
    meta = ModelMetadata(task="classification", input_shape=[CHANNELS, LENGTH], normalization=NORM, classes=CLASSES,
                         window=window, channel_names=names, sampling_rate=rate, **meta_changes)
    attach(proto, meta)
    import onnx

    path = folder / "student.onnx"
    onnx.save_model(proto, str(path))
    return path


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return _model_file(tmp_path_factory.mktemp("stream"), window={"length": LENGTH, "stride": STRIDE})


@pytest.fixture(scope="module")
def recording():
    """Three recordings of different level and scale, end to end: (T, channels), as a device streams it."""
    rng = np.random.default_rng(1)
    parts = [rng.normal(loc, scale, size=(n, CHANNELS)) for loc, scale, n in ((0, 1, 61), (4, 3, 47), (-3, 0.5, 55))]
    return np.concatenate(parts)


def _chunks(x, size):
    return [x[i:i + size] for i in range(0, len(x), size)]


@pytest.mark.parametrize("size", [1, 7, None])
@pytest.mark.parametrize("hop", [None, 3, 23])  # the stored stride, overlapping more, gaps between windows
def test_streamed_labels_equal_the_windowed_predictions(model, recording, size, hop):
    predictor = Predictor(model)
    step = STRIDE if hop is None else hop
    windows = sliding_windows(recording.T, LENGTH, step)  # (n, channels, length), cut in one go
    expected = predictor.predict(windows)
    assert len(set(expected)) > 1  # the comparison means something: the labels change along the recording
    chunks = [recording] if size is None else _chunks(recording, size)
    got = list(predictor.stream(chunks, hop=hop))
    assert [r.label for r in got] == expected
    assert [r.window_label for r in got] == expected
    assert [r.end for r in got] == list(np.arange(len(windows)) * step + LENGTH - 1)
    assert np.allclose(np.stack([r.proba for r in got]), predictor.predict_proba(windows), atol=1e-6)


def test_a_raw_recording_with_more_channels_streams_the_channels_the_model_reads(tmp_path, recording):
    path = _model_file(tmp_path, window={"length": LENGTH, "stride": STRIDE}, channels=[3, 0, 1])
    wide = np.concatenate([recording[:, 1:3], recording[:, 2:3] * 2, recording[:, :1]], axis=1)  # 4 raw channels
    picked = wide[:, [3, 0, 1]]
    predictor = Predictor(path)
    expected = predictor.predict(sliding_windows(picked.T, LENGTH, STRIDE))
    assert [r.label for r in predictor.stream(_chunks(wide, 9))] == expected


def test_majority_and_mean_proba_smoothing_on_a_hand_made_sequence():
    p = np.array([[0.6, 0.3, 0.1],   # 0
                  [0.2, 0.7, 0.1],   # 1
                  [0.45, 0.1, 0.45],  # 0 (ties break to the first index in argmax)
                  [0.05, 0.9, 0.05],  # 1
                  [0.1, 0.42, 0.48],  # 2
                  [0.3, 0.0, 0.7]])  # 2
    none = [Smoother("none", 3).push(q)[0] for q in p]
    assert none == [0, 1, 0, 1, 2, 2]
    s = Smoother("majority", 3)
    # last-3 windows: [0] [0,1] [0,1,0] [1,0,1] [0,1,2] [1,2,2]; a tie goes to the newest of the tied labels
    assert [s.push(q)[0] for q in p] == [0, 1, 0, 1, 2, 2]
    s = Smoother("majority", 2)  # [0] [0,1] [1,0] [0,1] [1,2] [2,2]: every tie of two -> the newer label
    assert [s.push(q)[0] for q in p] == [0, 1, 0, 1, 2, 2]
    s = Smoother("majority", 4)  # [0] [0,1]->1 [0,1,0]->0 [0,1,0,1]->1 [1,0,1,2]->1 [0,1,2,2]->2
    assert [s.push(q)[0] for q in p] == [0, 1, 0, 1, 1, 2]
    s = Smoother("mean_proba", 3)
    means = [p[max(0, i - 2):i + 1].mean(axis=0) for i in range(len(p))]
    pushed = [s.push(q) for q in p]
    # by hand: [.6 .3 .1] [.8 1 .2]/2 [1.25 1.1 .65]/3 [.7 1.7 .6]/3 [.6 1.42 .98]/3 [.45 1.32 1.23]/3
    assert [label for label, _ in pushed] == [int(np.argmax(m)) for m in means] == [0, 1, 0, 1, 1, 1]
    assert np.allclose(np.stack([m for _, m in pushed]), np.stack(means))


def test_stream_smoothing_is_the_smoother_on_the_windows_probabilities(model, recording):
    predictor = Predictor(model)
    proba = predictor.predict_proba(sliding_windows(recording.T, LENGTH, STRIDE))
    for smoothing in ("majority", "mean_proba"):
        s = Smoother(smoothing, 4)
        expected = [CLASSES[s.push(q)[0]] for q in proba]
        got = [r.label for r in predictor.stream(_chunks(recording, 11), smoothing=smoothing, smooth_over=4)]
        assert got == expected
    assert got != [CLASSES[i] for i in proba.argmax(1)]  # smoothing changed something on this recording


def test_a_file_exported_before_streaming_loads_and_needs_the_hop(tmp_path, recording):
    path = _model_file(tmp_path)
    import onnx

    proto = onnx.load(str(path))  # drop the keys older files do not have
    keep = [(p.key, p.value) for p in proto.metadata_props
            if p.key not in ("edgedistill.channel_names", "edgedistill.sampling_rate")]
    del proto.metadata_props[:]
    for key, value in keep:
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save_model(proto, str(path))
    predictor = Predictor(path)
    assert predictor.meta.channel_names is None and predictor.meta.sampling_rate is None and predictor.meta.window is None
    with pytest.raises(UserInputError, match="stores no window stride.*hop"):
        predictor.stream([recording])
    got = [r.label for r in predictor.stream([recording], hop=4)]
    assert got == predictor.predict(sliding_windows(recording.T, LENGTH, 4))


def test_bad_streams_are_refused_with_what_was_expected(model, recording):
    predictor = Predictor(model)
    with pytest.raises(UserInputError, match="chunk 1 has 2 channel"):
        list(predictor.stream([recording[:5], recording[5:9, :2]]))
    with pytest.raises(UserInputError, match=r"chunk 0 must be \(n_samples, channels\)"):
        list(predictor.stream([recording[0]]))
    bad = recording.copy()
    bad[30, 2] = np.nan
    with pytest.raises(UserInputError, match="sample 30 .*channel 2 is nan"):
        list(predictor.stream(_chunks(bad, 7)))
    with pytest.raises(UserInputError, match="ended after 15 sample.*one window of 16"):
        list(predictor.stream(_chunks(recording[:15], 4)))
    with pytest.raises(UserInputError, match="smoothing must be one of"):
        predictor.stream([recording], smoothing="median")
    with pytest.raises(UserInputError, match="smooth_over"):
        predictor.stream([recording], smoothing="majority", smooth_over=0)
    with pytest.raises(UserInputError, match="hop must be a positive"):
        predictor.stream([recording], hop=0)


def _write_csv(path, x, header=None):
    lines = ([",".join(header)] if header else []) + [",".join(f"{v:.17g}" for v in row) for row in x]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_predict_stream_cli_prints_one_row_per_hop(model, recording, tmp_path):
    predictor = Predictor(model)
    expected = list(predictor.stream([recording], smoothing="majority", smooth_over=3))
    for header in (NAMES, None):
        csv_file = _write_csv(tmp_path / "rec.csv", recording, header)
        result = CliRunner().invoke(app, ["predict", str(model), "--stream", str(csv_file), "--smooth", "majority",
                                          "--smooth-over", "3", "--out", str(tmp_path / "hops.csv")])
        assert result.exit_code == 0, result.output
        lines = (tmp_path / "hops.csv").read_text().splitlines()
        assert lines[0] == "end_sample,end_time_s,label,window_label,p_walk,p_sit,p_run"
        rows = [line.split(",") for line in lines[1:]]
        assert [int(r[0]) for r in rows] == [r.end for r in expected]
        assert [float(r[1]) for r in rows] == pytest.approx([r.end / 50.0 for r in expected])
        assert [r[2] for r in rows] == [r.label for r in expected]
        assert np.allclose([[float(v) for v in r[4:]] for r in rows], [r.proba for r in expected], atol=1e-6)
    printed = CliRunner().invoke(app, ["predict", str(model), "--stream", str(csv_file), "--hop", "8"])
    assert printed.exit_code == 0, printed.output
    assert len(printed.stdout.splitlines()) == 1 + len(range(0, len(recording) - LENGTH + 1, 8))


@pytest.mark.parametrize("header,rows,message", [
    (["acc_x", "gyro_z", "acc_y"], None, r"columns \['acc_x', 'gyro_z', 'acc_y'\] do not match .* another order"),
    (["acc_x", "acc_y", "mag_z"], None, r"missing \['gyro_z'\]; not channels of the model \['mag_z'\]"),
    (None, "2cols", "2 column.*reads 3 channel.*acc_x, acc_y, gyro_z"),
    (NAMES, "nan", "line 12, column 'acc_y': missing or not finite"),
    (NAMES, "text", "line 5, column 'gyro_z': 'high' is not a number"),
    (NAMES, "short", "ended after 10 sample.*one window of 16"),
])
def test_predict_stream_cli_refuses_bad_recordings_with_exit_2(model, recording, tmp_path, header, rows, message):
    x = recording[:40]
    if rows == "2cols":
        x = x[:, :2]
    if rows == "short":
        x = x[:10]
    path = _write_csv(tmp_path / "rec.csv", x, header)
    text = path.read_text().splitlines()
    if rows == "nan":
        text[11] = text[11].split(",")[0] + ",," + text[11].split(",")[2]
    if rows == "text":
        text[4] = ",".join(text[4].split(",")[:2] + ["high"])
    path.write_text("\n".join(text) + "\n")
    result = CliRunner().invoke(app, ["predict", str(model), "--stream", str(path), "--out", str(tmp_path / "o.csv")])
    assert result.exit_code == 2, result.output
    assert "rec.csv" in result.output
    assert __import__("re").search(message, result.output.replace("\n", " ")), result.output
    assert not (tmp_path / "o.csv").exists()  # nothing half-written


def test_a_header_of_numbered_channel_names_is_a_header_not_a_sample(tmp_path, recording):
    from edgedistill.deploy.stream import csv_chunks

    path = _model_file(tmp_path, window={"length": LENGTH, "stride": STRIDE}, names=["0", "1", "2"])
    meta = Predictor(path).meta
    with_header = np.concatenate(list(csv_chunks(_write_csv(tmp_path / "a.csv", recording[:20], ["0", "1", "2"]), meta)))
    without = np.concatenate(list(csv_chunks(_write_csv(tmp_path / "b.csv", recording[:20]), meta, rows=6)))
    assert np.array_equal(with_header, recording[:20]) and np.array_equal(without, recording[:20])
    # numbered names mean the training data named none: any header of the right width is read in order
    renamed = np.concatenate(list(csv_chunks(_write_csv(tmp_path / "c.csv", recording[:20], ["x", "y", "z"]), meta)))
    assert np.array_equal(renamed, recording[:20])
    with pytest.raises(UserInputError, match=r"columns \['x', 'y'\] do not match"):
        list(csv_chunks(_write_csv(tmp_path / "d.csv", recording[:20, :2], ["x", "y"]), meta))


def test_predict_without_a_stream_or_with_a_file_that_is_not_onnx_exits_2(model, tmp_path):
    result = CliRunner().invoke(app, ["predict", str(model)])
    assert result.exit_code == 2 and "--stream FILE.csv" in result.output
    other = tmp_path / "x.txt"
    other.write_text("1")
    result = CliRunner().invoke(app, ["predict", str(other), "--stream", str(other)])
    assert result.exit_code == 2 and "run directory or an .onnx file" in result.output


@pytest.mark.parametrize("data,window,rate", [
    ({"name": "synthetic", "window": {"length": 32}}, {"length": 32, "stride": 32}, None),  # stride defaults to length
    ({"path": "rec.csv", "window": {"length": 10, "stride": 3}}, {"length": 10, "stride": 3}, None),  # a user's file
    ({"name": "mhealth"}, {"length": 128, "stride": 64}, 50.0),  # a stream archive: its protocol's defaults
    ({"name": "mhealth", "params": {"rate": 25, "window": 64, "stride": 32}}, {"length": 64, "stride": 32}, 25.0),
    ({"name": "uci_har"}, None, 50.0),  # pre-cut windows: the rate is known, the stride is not
    ({"name": "synthetic"}, None, None),
])
def test_run_metadata_carries_window_stride_rate_and_channel_names(data, window, rate):
    from types import SimpleNamespace

    from edgedistill.config_data import DataConfig
    from edgedistill.deploy.metadata import from_run

    info = SimpleNamespace(task="classification", input_shape=(3, 32), normalization={"x": NORM}, classes=CLASSES,
                           target_scale=None, channels=NAMES)
    student = SimpleNamespace(label="cnn1d", kwargs={})
    meta = from_run(info, DataConfig(**data), student, run_dir=".", seed=0, which="best")
    assert (meta.window, meta.sampling_rate, meta.channel_names) == (window, rate, NAMES)
    assert ModelMetadata.from_props(meta.to_props()) == meta


def test_a_regression_model_streams_its_values_and_takes_no_smoothing(tmp_path, recording):
    import onnx

    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(CHANNELS * LENGTH, 2)).eval()
    proto = to_onnx(model, torch.randn(2, CHANNELS, LENGTH), exporter="legacy", names=("input", "output")).proto
    attach(proto, ModelMetadata(task="regression", input_shape=[CHANNELS, LENGTH], normalization=NORM,
                                output_name="output", target_scale=[[1.0, -2.0], [3.0, 0.5]],
                                window={"length": LENGTH, "stride": STRIDE}))
    onnx.save_model(proto, str(tmp_path / "reg.onnx"))
    predictor = Predictor(tmp_path / "reg.onnx")
    got = list(predictor.stream(_chunks(recording, 6)))
    assert np.allclose(np.stack([r.label for r in got]), predictor.predict(sliding_windows(recording.T, LENGTH, STRIDE)))
    assert all(r.proba is None for r in got)
    with pytest.raises(UserInputError, match="needs a classifier"):
        predictor.stream([recording], smoothing="mean_proba")


@pytest.mark.slow
def test_predict_streams_a_trained_runs_student_with_its_stored_window(tmp_path):
    import edgedistill
    from edgedistill.deploy.runs import load_run

    recipe = {"name": "stream", "data": {"name": "synthetic", "params": {"n_subjects": 4, "windows_per_subject": 8,
                                                                          "length": 64},
                                         "window": {"length": 32, "stride": 8}, "split": {"by": "subject"}},
              "student": {"model": "cnn1d", "width": 4, "depth": 2}, "method": {"name": "supervised"},
              "train": {"epochs": 1, "batch_size": 16}, "seeds": [0], "baseline": False,
              "engine": {"progress": False}, "report": {"plots": False}, "cache_dir": str(tmp_path / "cache")}
    edgedistill.run(recipe, out=tmp_path / "run", progress=False)
    run = load_run(tmp_path / "run")
    norm = run.info.normalization["x"]
    raw = run.splits.test.x.numpy() * np.asarray(norm["std"])[None, :, None] + np.asarray(norm["mean"])[None, :, None]
    recording = np.concatenate(list(raw[:4]), axis=1).T
    csv_file = _write_csv(tmp_path / "rec.csv", recording, run.info.channels)  # numbered names: "0", "1", "2"
    result = CliRunner().invoke(app, ["predict", str(tmp_path / "run"), "--stream", str(csv_file),
                                      "--out", str(tmp_path / "hops.csv")])
    assert result.exit_code == 0, result.output
    assert "exported and verified for this command only" in result.output
    rows = [line.split(",") for line in (tmp_path / "hops.csv").read_text().splitlines()[1:]]
    with torch.no_grad():
        x = torch.from_numpy(sliding_windows(recording.T, 32, 8)).float()
        x = (x - torch.tensor(norm["mean"])[None, :, None]) / torch.tensor(norm["std"])[None, :, None]
        expected = [run.info.classes[i] for i in run.student(x).argmax(1).tolist()]
    assert [int(r[0]) for r in rows] == list(range(31, len(recording), 8))
    assert [r[1] for r in rows] == expected
