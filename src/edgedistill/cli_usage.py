"""A usage error on the command line (an unknown option or command, a missing argument) said in one line, as every
other refusal is (``error: ...``, exit 2), instead of click's usage box."""
from __future__ import annotations

import sys
from typing import Any

import typer
from typer.core import TyperGroup

from edgedistill.errors import one_line


class OneLineUsage(TyperGroup):
    """The root command group (``typer.Typer(cls=...)``), so the entry point and ``CliRunner`` tests behave alike: click
    runs without its standalone handling and this class does that part itself. A command group given nothing still
    shows its help (exit 2); ``typer.Exit(code)`` from a command, and success (0), exit as before."""

    def _named(self, args: tuple, kwargs: dict) -> str:
        """The (sub)command the arguments name, for an error click raised without its context (an option's missing
        value): ``edgedistill tune`` for ``tune kd --budget``."""
        words = list(args[0] if args else kwargs.get("args") or sys.argv[1:])
        path, command = [kwargs.get("prog_name") or "edgedistill"], self
        for word in words:
            sub = getattr(command, "commands", {}).get(word)
            if sub is None:
                break
            path.append(word)
            command = sub
        return " ".join(path)

    def main(self, *args: Any, standalone_mode: bool = True, **kwargs: Any) -> Any:
        if not standalone_mode:
            return super().main(*args, standalone_mode=False, **kwargs)
        try:
            code = super().main(*args, standalone_mode=False, **kwargs)
        except typer.TyperException as exc:  # (click's ClickException: usage errors and their kin)
            if type(exc).__name__ == "NoArgsIsHelpError":
                exc.show()
            else:
                where = getattr(getattr(exc, "ctx", None), "command_path", None) or self._named(args, kwargs)
                typer.echo(f"error: {one_line(exc.format_message()).rstrip('.')} (see {where} --help)", err=True)
            sys.exit(exc.exit_code)
        except typer.Abort:  # (end of input at a prompt)
            typer.echo("Aborted!", err=True)
            sys.exit(1)
        # Without standalone handling a command's typer.Exit(code) comes back as its code, a finished command as None.
        sys.exit(code if isinstance(code, int) and not isinstance(code, bool) else 0)
