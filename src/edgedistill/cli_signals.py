"""SIGTERM on the command line (a cluster job's time limit or pre-emption, ``kill``): it takes Ctrl-C's way out.

The command stops at once, keeps what a Ctrl-C keeps and prints how to resume (which a batch job's log then shows),
and the process exits with 128 + 15. The ranks Fabric's own launcher started get the signal passed on; torchrun and
srun signal every rank themselves.
"""
from __future__ import annotations

import signal
import sys
import threading
from typing import Callable

_TERMINATED: list[int] = []


def _on_sigterm(signum: int, frame: object) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second SIGTERM ends the process outright
    _TERMINATED.append(signum)
    distributed = sys.modules.get("edgedistill.engine.distributed")  # (not imported: no ranks were launched)
    if distributed is not None:
        distributed.forward_signal(signum)  # the ranks this process launched stop with it
    raise KeyboardInterrupt


def stopping_on_sigterm(command: Callable[[], None]) -> None:
    """Run ``command`` (the typer app) with SIGTERM taken as Ctrl-C; after a SIGTERM, exit 143 instead of the Ctrl-C
    code (130), click's "Aborted!" (1), or a rank's error on losing a peer that stopped first (not a bug to show)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        command()
    except SystemExit as exc:
        if _TERMINATED and exc.code:
            sys.exit(128 + signal.SIGTERM)
        raise
    except Exception:
        if _TERMINATED:
            sys.exit(128 + signal.SIGTERM)
        raise
