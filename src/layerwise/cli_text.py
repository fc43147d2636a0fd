"""How the `layerwise` command talks to people: help as paragraphs, flags as flags, and output
that survives a closed pipe.

Typer keeps the line breaks of a docstring inside a paragraph, so help text wrapped at 100
columns in the source came out broken mid-sentence at 80; and it shows every option's type, so a
flag read `--quiet <bool>`. The command and group classes here reflow prose paragraphs to the
terminal and show flags bare. `PipeSafeStream` stops printing, instead of failing, once the
reader of stdout has gone (`layerwise train … | head -2`), so training goes on to the end.
"""

from __future__ import annotations

import errno
import inspect
import os
from typing import TYPE_CHECKING, Any, TextIO

from typer.core import TyperCommand, TyperGroup

if TYPE_CHECKING:
    import click as _click  # typer's own copy of click in recent versions


def reflow(text: str | None) -> str | None:
    """Join the lines of each prose paragraph so the terminal wraps it; a paragraph starting with
    `Example` keeps its lines (one command per line)."""
    if not text:
        return text
    paragraphs = [p.strip() for p in inspect.cleandoc(text).split("\n\n")]
    kept = [p if p.startswith("Example") else " ".join(p.split()) for p in paragraphs]
    return "\n\n".join(p for p in kept if p)


def _show_flags_bare(params: list[_click.Parameter]) -> list[_click.Parameter]:
    """A flag takes no value, so its help shows no type: `--quiet`, not `--quiet <bool>`."""
    for param in params:
        if getattr(param, "is_flag", False) and param.metavar is None:
            param.metavar = ""
    return params


class ReadableHelpCommand(TyperCommand):
    """A command whose help reads as paragraphs and shows flags as flags."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.help = reflow(self.help)

    def get_params(self, ctx: _click.Context) -> list[_click.Parameter]:
        return _show_flags_bare(super().get_params(ctx))


class ReadableHelpGroup(TyperGroup):
    """A group of commands whose help reads as paragraphs and shows flags as flags."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.help = reflow(self.help)

    def get_params(self, ctx: _click.Context) -> list[_click.Parameter]:
        return _show_flags_bare(super().get_params(ctx))


class PipeSafeStream:
    """Wrap stdout so that a reader going away (EPIPE) silences the output instead of raising.

    Python ignores SIGPIPE and raises `BrokenPipeError` at the next write or flush instead, which
    would end training from inside a progress line. Here the first broken write points the file
    descriptor at /dev/null (as the Python docs advise for SIGPIPE), so later writes, and the
    flush at exit, go nowhere quietly. Everything else is the wrapped stream's.
    """

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self.broken = False

    def write(self, text: str) -> int:
        if self.broken:
            return len(text)
        try:
            return self._stream.write(text)
        except OSError as exc:
            self._silence(exc)
            return len(text)

    def flush(self) -> None:
        if self.broken:
            return
        try:
            self._stream.flush()
        except OSError as exc:
            self._silence(exc)

    def _silence(self, exc: OSError) -> None:
        if not isinstance(exc, BrokenPipeError) and exc.errno != errno.EPIPE:
            raise exc
        self.broken = True
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self._stream.fileno())
            os.close(devnull)
        except (OSError, ValueError):  # no real file descriptor: nothing else will be written
            pass

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)
