"""Fetch an archive that has a stable URL into the data root: resumable, checked, unpacked safely.

Only ``edgedistill data prepare`` calls this (a run never touches the network). The download goes to
``<root>/<download_name>.part`` and continues from its size when interrupted (an HTTP Range request; a server
that ignores Range restarts it). The finished file is checked against the archive's published checksum (sha256,
or md5 where only md5 is published) before it is renamed and unpacked; a mismatch deletes it. A .zip or .tar.gz
is unpacked member by member, refusing absolute paths, ``..`` and links (an archive can name any path). Without
network the message names the URL and the folder to put the unpacked files in.
"""
from __future__ import annotations

import hashlib
import shutil
import tarfile
import zipfile
from pathlib import Path, PurePosixPath
from typing import Callable, Optional

from edgedistill.data.archives.base import Archive, data_root
from edgedistill.errors import UserInputError
from edgedistill.io import make_dirs

CHUNK = 1 << 20


def _digest(path: Path, expected: str) -> str:
    h = hashlib.md5() if len(expected) == 32 else hashlib.sha256()  # noqa: S324 - md5 where only md5 is published
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def _fetch(url: str, part: Path, say: Callable[[str], None]) -> None:
    import urllib.error
    import urllib.request

    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    with urllib.request.urlopen(request, timeout=60) as response:  # noqa: S310 - the archive's published URL
        resumed = have and getattr(response, "status", 200) == 206
        if have and not resumed:
            say(f"the server did not resume; downloading {url} from the start")
        total = response.headers.get("Content-Length")
        say(f"downloading {url}{' (resuming at %d bytes)' % have if resumed else ''}"
            f"{f', {int(total) + (have if resumed else 0):,} bytes' if total else ''}")
        with open(part, "ab" if resumed else "wb") as out:
            shutil.copyfileobj(response, out, CHUNK)


def _safe_members(names: list[str], archive_file: Path) -> None:
    for name in names:
        p = PurePosixPath(name)
        if p.is_absolute() or ".." in p.parts:
            raise UserInputError(f"'{archive_file}': member '{name}' would unpack outside the data root; not unpacked")


def unpack(archive_file: Path, into: Path) -> None:
    """Unpack a .zip / .tar(.gz) into ``into``, refusing members outside it and links."""
    if zipfile.is_zipfile(archive_file):
        with zipfile.ZipFile(archive_file) as z:
            _safe_members(z.namelist(), archive_file)
            z.extractall(into)
        return
    if tarfile.is_tarfile(archive_file):
        with tarfile.open(archive_file) as t:
            members = t.getmembers()
            _safe_members([m.name for m in members], archive_file)
            bad = [m.name for m in members if not (m.isfile() or m.isdir())]
            if bad:
                raise UserInputError(f"'{archive_file}': member '{bad[0]}' is a link or device; not unpacked")
            t.extractall(into, members=members)
        return
    raise UserInputError(f"'{archive_file}' is neither a zip nor a tar file; unpack it by hand into '{into}'")


def download(archive: Archive, root: Optional[str | Path] = None, say: Callable[[str], None] = print) -> Path:
    """Download, check and unpack ``archive`` into the data root; returns the root."""
    base = data_root(root)
    if archive.url is None or archive.download_name is None:
        raise UserInputError(f"dataset '{archive.name}': no stable download URL; {archive.manual} "
                             f"and unpack it into '{base}' (folder '{archive.folder}')")
    make_dirs(base)
    final = base / archive.download_name
    part = final.with_name(final.name + ".part")
    if not final.exists():
        try:
            _fetch(archive.url, part, say)
        except OSError as exc:  # no network, a refused connection, an HTTP error
            kept = f" (the partial file '{part}' is kept: the same command resumes it)" if part.exists() else ""
            raise UserInputError(
                f"dataset '{archive.name}': could not download {archive.url} ({exc}); download it by hand and unpack "
                f"it into '{base}' so that '{base / archive.folder}' exists{kept}"
            ) from None
        if archive.sha256:
            got = _digest(part, archive.sha256)
            if got != archive.sha256:
                part.unlink()
                raise UserInputError(f"dataset '{archive.name}': {archive.url} gave a file whose checksum is {got}, not "
                                     f"the published {archive.sha256}; the file was deleted, try again")
        part.replace(final)
    say(f"unpacking {final} into {base}")
    unpack(final, base)
    return base
