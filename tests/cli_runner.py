"""The `layerwise` console entry point run inside the test process, its output captured.

In-process calls cost milliseconds where a subprocess costs a second of imports, which is what
lets the bad-input catalog and the fuzzers run thousands of command lines.
"""

from __future__ import annotations

import contextlib
import io
import sys
from dataclasses import dataclass
from pathlib import Path

from layerwise import cli


@dataclass
class Outcome:
    code: int | str | None
    stdout: str
    stderr: str


def layerwise(*args: str, cwd: Path) -> Outcome:
    """Run the console entry point `main()` with `args` in `cwd`, capturing its output."""
    out, err = io.StringIO(), io.StringIO()
    argv, sys.argv = sys.argv, ["layerwise", *args]
    code: int | str | None = 0
    try:
        with (
            contextlib.chdir(cwd),
            contextlib.redirect_stdout(out),
            contextlib.redirect_stderr(err),
        ):
            try:
                cli.main()
            except SystemExit as exc:
                code = exc.code
    finally:
        sys.argv = argv
    return Outcome(code, out.getvalue(), err.getvalue())
