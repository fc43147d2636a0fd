"""Errors meant for people.

Every problem caused by user input (a recipe, a path, data, a shape, a checkpoint) is raised as a
`LayerwiseError` carrying one message that names the culprit and a hint saying what to do. The CLI
prints exactly that and exits with code 2; a traceback is shown only with `--debug`.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import Any


class LayerwiseError(Exception):
    """A problem with the user's input, explained in one message plus a hint."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        if self.hint:
            return f"{self.message}\n  hint: {self.hint}"
        return self.message


class RecipeError(LayerwiseError):
    """A recipe file is missing, malformed, or asks for something that does not exist."""


class DataError(LayerwiseError):
    """Data is missing, unreadable, inconsistent or contains values that cannot be trained on.

    `diagnosis` is the doctor's full data diagnosis when its checks refused the data, so that
    `layerwise doctor` and auto-fix can show and fix every finding, not only the first.
    """

    def __init__(self, message: str, hint: str | None = None, diagnosis: Any = None) -> None:
        super().__init__(message, hint)
        self.diagnosis = diagnosis


class ShapeError(LayerwiseError):
    """A tensor does not fit the layer or model it is fed to."""


class CheckpointError(LayerwiseError):
    """A checkpoint or run folder is corrupt, truncated, or does not match the recipe."""


class RunError(LayerwiseError):
    """A run folder cannot be created, written, found or resumed."""


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """Return a hint naming the closest valid choice, or listing all choices when none is close."""
    choices = sorted(choices)
    close = difflib.get_close_matches(name, choices, n=1, cutoff=0.5)
    if close:
        return f"did you mean '{close[0]}'? Choices: {', '.join(choices)}"
    return f"choose one of: {', '.join(choices)}"
