"""The archive machinery every loader shares: finding the folder, the prepared-window cache, the download, the
`edgedistill data` commands and data.root in a recipe. (Each archive's own format: tests/test_archive_<name>.py.)"""
import http.server
import os
import io
import tarfile
import threading
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from edgedistill.cli import app
from edgedistill.data.archives import registered
from edgedistill.data.archives.base import Archive, find_folder, stream_windows
from edgedistill.data.archives.download import download, unpack
from edgedistill.data.raw import RawData
from edgedistill.errors import UserInputError

CALLS: list[int] = []


def toy_load(folder: Path, *, window: int = 4) -> RawData:
    """A stream of 24 steps, 2 channels, labels a/b, windowed without overlap."""
    CALLS.append(window)
    from edgedistill.data.archives.base import read_numeric_table

    table = read_numeric_table(folder / "rec.txt", "toy")
    x, y = stream_windows(table[:, :2], np.where(table[:, 2] > 0, "b", "a"), window, window)
    return RawData(x=x, y=y, task="classification", group=np.arange(len(y)) % 3, classes=["a", "b"], name="toy",
                   channels=["c0", "c1"], notes=[f"window {window}"])


TOY = Archive(name="toy", folder="Toy_Data", files=("rec.txt",), task="classification", kind="1d", doc="toy",
              citation="none", load=toy_load, url=None, manual="copy it from the toy page")


def write_toy(root: Path) -> Path:
    folder = root / "Toy_Data"
    folder.mkdir(parents=True, exist_ok=True)
    rows = np.c_[np.arange(24), np.arange(24) * 2.0, (np.arange(24) >= 12).astype(float)]
    np.savetxt(folder / "rec.txt", rows)
    return folder


def test_the_folder_is_found_under_the_root_or_as_the_root(tmp_path):
    folder = write_toy(tmp_path)
    assert find_folder(TOY, tmp_path) == folder
    assert find_folder(TOY, folder) == folder
    with pytest.raises(UserInputError, match=r"not found under .*Toy_Data.*rec.txt.*copy it from the toy page"):
        find_folder(TOY, tmp_path / "elsewhere")


def test_windows_are_cached_memory_mapped_and_prepared_again_when_a_file_changes(tmp_path):
    folder, cache = write_toy(tmp_path / "data"), tmp_path / "cache"
    CALLS.clear()
    first, cached = registered.load_cached(TOY, tmp_path / "data", {}, cache_root=cache)
    assert not cached and CALLS == [4] and first.x.shape == (6, 2, 4)
    again, cached = registered.load_cached(TOY, tmp_path / "data", {}, cache_root=cache)
    assert cached and CALLS == [4] and isinstance(again.x, np.memmap)
    assert again.y.tolist() == first.y.tolist() == ["a"] * 3 + ["b"] * 3 and again.notes == ["window 4"]
    registered.load_cached(TOY, tmp_path / "data", {"window": 6}, cache_root=cache)  # another protocol: its own entry
    assert CALLS == [4, 6]
    with open(folder / "rec.txt", "a") as fh:  # the archive changed: prepared again
        fh.write("24 48 1\n")
    registered.load_cached(TOY, tmp_path / "data", {}, cache_root=cache)
    assert CALLS == [4, 6, 4]
    for p in (cache / "windows").iterdir():  # damaged entries: prepared again, not an error
        (p / "meta.json").write_text("{")
    registered.load_cached(TOY, tmp_path / "data", {}, cache_root=cache)
    assert CALLS[-1] == 4 and len(CALLS) == 4


def test_the_registered_loader_takes_the_protocol_keys_only():
    loader = registered.ArchiveLoader(TOY)
    from edgedistill.params import signature_params

    model = signature_params(loader)
    model.parse({"window": 8}, "data.params", what="dataset toy")
    with pytest.raises(UserInputError, match="data.params"):
        model.parse({"folder": "x"}, "data.params", what="dataset toy")


def test_data_root_is_refused_for_a_dataset_that_is_not_an_archive(tmp_path):
    from edgedistill.config import load_recipe
    from edgedistill.data.prepare import prepare_data

    cfg = load_recipe({"data": {"name": "synthetic", "root": str(tmp_path)}, "student": {"model": "cnn1d"}}).data
    with pytest.raises(UserInputError, match="data.root"):
        prepare_data(cfg)


# -- download ------------------------------------------------------------------------------------------------------
def _tar(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as t:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    return buf.getvalue()


class _RangeHandler(http.server.BaseHTTPRequestHandler):
    payload = b""

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        start = int(self.headers.get("Range", "bytes=0-")[6:].split("-")[0])
        body = self.payload[start:]
        self.send_response(206 if start else 200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def server():
    httpd = http.server.HTTPServer(("127.0.0.1", 0), _RangeHandler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield httpd
    httpd.shutdown()


def test_download_resumes_checks_and_unpacks(tmp_path, server):
    import hashlib

    payload = _tar({"Toy_Data/rec.txt": b"0 0 0\n"})
    _RangeHandler.payload = payload
    url = f"http://127.0.0.1:{server.server_port}/toy.tar.gz"
    archive = Archive(**{**TOY.__dict__, "url": url, "download_name": "toy.tar.gz",
                         "sha256": hashlib.sha256(payload).hexdigest()})
    (tmp_path / "toy.tar.gz.part").write_bytes(payload[:10])  # an interrupted download
    download(archive, tmp_path, say=lambda s: None)
    assert (tmp_path / "Toy_Data" / "rec.txt").read_bytes() == b"0 0 0\n"
    wrong = Archive(**{**archive.__dict__, "download_name": "other.tar.gz", "sha256": "0" * 64})
    with pytest.raises(UserInputError, match="checksum"):
        download(wrong, tmp_path, say=lambda s: None)
    assert not (tmp_path / "other.tar.gz.part").exists()


def test_no_network_names_the_url_and_the_folder(tmp_path):
    archive = Archive(**{**TOY.__dict__, "url": "http://127.0.0.1:9/toy.zip", "download_name": "toy.zip"})
    with pytest.raises(UserInputError, match=r"could not download http://127.0.0.1:9/toy.zip .*Toy_Data"):
        download(archive, tmp_path, say=lambda s: None)


def test_unpack_refuses_members_outside_the_root(tmp_path):
    bad = tmp_path / "bad.tar.gz"
    bad.write_bytes(_tar({"../escape.txt": b"x"}))
    with pytest.raises(UserInputError, match="outside the data root"):
        unpack(bad, tmp_path / "into")
    assert not (tmp_path / "escape.txt").exists()


# -- the commands ----------------------------------------------------------------------------------------------------
def test_data_commands_list_and_refuse_what_is_absent(tmp_path, monkeypatch):
    monkeypatch.setattr(registered, "archives", lambda: {"toy": TOY})
    listed = CliRunner().invoke(app, ["data", "list", "--root", str(tmp_path)])
    assert listed.exit_code == 0 and "archives" in listed.output
    unknown = CliRunner().invoke(app, ["data", "info", "no_such_archive", "--root", str(tmp_path)])
    assert unknown.exit_code == 2 and "unknown archive" in unknown.output
    absent = CliRunner().invoke(app, ["data", "prepare", "toy", "--root", str(tmp_path), "--no-download"])
    assert absent.exit_code == 2 and "not found under" in absent.output
    write_toy(tmp_path)
    prepared = CliRunner().invoke(app, ["data", "prepare", "toy", "--root", str(tmp_path)])
    assert prepared.exit_code == 0 and "6 training windows" in prepared.output, prepared.output
    assert "reading rec.txt (1;" in prepared.output  # a line per file parsed
    info = CliRunner().invoke(app, ["data", "info", "toy", "window=6", "--root", str(tmp_path)])
    assert info.exit_code == 0 and "train: 4 windows of shape (2, 6), 3 subjects" in info.output, info.output


def test_an_archive_located_by_its_protocol_is_found_and_keyed_by_that_problem(tmp_path):
    """UCR/UEA: one problem of many, in whichever release folder holds it (Archive.locate)."""
    import shutil

    import aeon.datasets

    from edgedistill.data.archives import ucr_uea

    shipped = Path(aeon.datasets.__file__).parent / "data" / "ArrowHead"
    shutil.copytree(shipped, tmp_path / "Univariate_ts" / "ArrowHead")  # only the univariate zip unpacked
    raw, cached = registered.load_cached(ucr_uea.ARCHIVE, tmp_path, {"dataset": "ArrowHead"}, cache_root=tmp_path / "c")
    assert not cached and raw.x.shape[1:] == (1, 251) and raw.test_x is not None
    assert registered.load_cached(ucr_uea.ARCHIVE, tmp_path, {"dataset": "ArrowHead"}, cache_root=tmp_path / "c")[1]
    with pytest.raises(UserInputError, match="data.params.dataset"):
        registered.load_cached(ucr_uea.ARCHIVE, tmp_path, {"dataset": "../ArrowHead"}, cache_root=tmp_path / "c")


def test_large_tables_are_parsed_in_worker_processes_in_order(tmp_path, monkeypatch):
    from edgedistill.data.archives import text_tables

    paths = []
    for k in range(3):
        paths.append(tmp_path / f"t{k}.txt")
        np.savetxt(paths[-1], np.arange(12.0).reshape(4, 3) + 100 * k)
    monkeypatch.setattr(text_tables, "PARALLEL_BYTES", 0)  # parallel however small: the path large archives take
    assert text_tables._workers(paths) >= min(2, len(paths)) or (os.cpu_count() or 1) < 2
    seen = []
    token = text_tables.ON_FILE.set(seen.append)
    try:
        tables = list(text_tables.read_tables(paths, "toy", columns=3))
    finally:
        text_tables.ON_FILE.reset(token)
    assert [t[0, 0] for t in tables] == [0.0, 100.0, 200.0] and seen == paths
    paths[1].write_text("1 2 x\n")  # a worker's refusal reaches the caller naming the file
    with pytest.raises(UserInputError, match="t1.txt"):
        list(text_tables.read_tables(paths, "toy", columns=3))


def test_stream_bounds_cut_at_pauses_and_refuse_broken_time(tmp_path):
    from edgedistill.data.archives.base import stream_bounds

    t = np.array([0.0, 1.0, 2.0, 10.0, 11.0])
    assert stream_bounds(t, 2.0, tmp_path / "f.dat", "toy", "column 1") == [(0, 3), (3, 5)]
    with pytest.raises(UserInputError, match=r"f.dat': time \(column 1\) goes back at row 3"):
        stream_bounds(np.array([0.0, 2.0, 1.0]), 2.0, tmp_path / "f.dat", "toy", "column 1")
    with pytest.raises(UserInputError, match="missing time value"):
        stream_bounds(np.array([0.0, np.nan]), 2.0, tmp_path / "f.dat", "toy", "column 1")


def test_loaders_that_do_not_read_text_tables_announce_their_files_too(tmp_path):
    """``data prepare`` prints a line per file from ON_FILE: the pickle, .ts, GDF and WISDM readers tell it as well."""
    from edgedistill.data.archives import cifar, text_tables, wisdm
    from tests.test_archive_cifar import write_cifar10
    from tests.test_archive_wisdm import small_stream, write_archive

    seen: list[Path] = []
    token = text_tables.ON_FILE.set(seen.append)
    try:
        cifar.load(write_cifar10(tmp_path / "c"))
        with pytest.raises(UserInputError):  # small_stream holds malformed records on purpose: read, then refused
            wisdm.load(write_archive(tmp_path / "w", small_stream()))
    finally:
        text_tables.ON_FILE.reset(token)
    names = [p.name for p in seen]
    assert {f"data_batch_{i}" for i in range(1, 6)} | {"test_batch", "batches.meta"} <= set(names)
    assert names[-1] == "WISDM_ar_v1.1_raw.txt"
