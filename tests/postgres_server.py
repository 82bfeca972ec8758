"""A throwaway PostgreSQL server for tests/test_sweep_postgres.py and .ci/run: ``initdb`` into a fresh folder, the
server listening only on a Unix socket in that folder (no TCP port, so nothing else on the machine can clash with
it or reach it), and a stop that removes nothing but the server's processes.

    python3 tests/postgres_server.py start DIR   # prints the SQLAlchemy URL; exit 1 and the reason on stderr if it cannot
    python3 tests/postgres_server.py stop DIR

Only the standard library: .ci/run calls it before the virtual environment exists. ``initdb`` and ``postgres``
refuse to run as root, so as root the server runs as the unprivileged user ``nobody`` (``runuser``), which then
owns DIR.
"""
from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Optional

PORT = 5432  # only names the socket file (.s.PGSQL.5432) in DIR: no TCP listener, so no clash with another server
USER = "postgres"  # the database superuser initdb creates (trust authentication: a throwaway server on a private socket)


def find(tool: str) -> Optional[str]:
    """A PostgreSQL server program: on PATH, else where Debian's postgresql-NN packages put it."""
    found = shutil.which(tool)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{tool}"))
    return candidates[-1] if candidates else None


def _as_server_user(cmd: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return cmd
    runuser = shutil.which("runuser", path=os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"]))
    if runuser is None:
        raise RuntimeError("running as root and runuser is missing (initdb refuses root)")
    return [runuser, "-u", "nobody", "--", *cmd]


def url_for(folder: Path, database: str = "postgres") -> str:
    """The SQLAlchemy URL of the server in ``folder``, over the Unix socket (the driver: SQLAlchemy's default)."""
    return f"postgresql://{USER}@/{database}?host={folder.resolve()}&port={PORT}"


def start(folder: Path) -> str:
    """Create and start a server in ``folder`` (an empty or new folder); its URL. RuntimeError says why it cannot."""
    initdb, pg_ctl = find("initdb"), find("pg_ctl")
    if not initdb or not pg_ctl:
        raise RuntimeError("PostgreSQL's initdb/pg_ctl are not installed (Debian: apt-get install postgresql)")
    folder = folder.resolve()
    if len(str(folder)) > 80:  # a Unix socket path is limited to 107 bytes
        raise RuntimeError(f"{folder}: too long a path for the server's Unix socket")
    folder.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        nobody = pwd.getpwnam("nobody")
        os.chown(folder, nobody.pw_uid, nobody.pw_gid)
    data = folder / "data"
    steps = [
        [initdb, "-D", str(data), "-A", "trust", "-U", USER, "--no-sync"],
        [pg_ctl, "-D", str(data), "-l", str(folder / "server.log"), "-w", "-t", "60",
         "-o", f"-k {folder} -p {PORT} -c listen_addresses='' -c fsync=off", "start"],
    ]
    for cmd in steps:
        done = subprocess.run(_as_server_user(cmd), capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
            raise RuntimeError(f"{Path(cmd[0]).name} failed: {tail[0]}")
    return url_for(folder)


def stop(folder: Path) -> None:
    """Stop the server in ``folder`` (immediate shutdown: it holds nothing worth keeping)."""
    pg_ctl = find("pg_ctl")
    data = folder.resolve() / "data"
    if pg_ctl and (data / "postmaster.pid").exists():
        subprocess.run(_as_server_user([pg_ctl, "-D", str(data), "-m", "immediate", "-w", "stop"]),
                       capture_output=True, timeout=60)


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in ("start", "stop"):
        print("usage: postgres_server.py start|stop DIR", file=sys.stderr)
        return 2
    try:
        if argv[0] == "start":
            print(start(Path(argv[1])))
        else:
            stop(Path(argv[1]))
    except (RuntimeError, OSError, KeyError, subprocess.TimeoutExpired) as exc:  # KeyError: no user nobody
        print(f"{type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
