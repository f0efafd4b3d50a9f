"""User-facing errors: one clear message, exit code 2, no traceback.

A `UserError` names where the problem is (a file, a key path, a command-line option) and what
was expected. The command line prints `error: <where>: <message>` and exits with status 2;
anything else that escapes is a bug in the harness and keeps its traceback.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class UserError(Exception):
    """A problem with the user's input, reported without a traceback (exit code 2)."""

    exit_code = 2

    def __init__(self, message: str, *, where: str | None = None):
        super().__init__(message)
        self.message = message
        self.where = where

    def __str__(self) -> str:
        return f"{self.where}: {self.message}" if self.where else self.message


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """' (did you mean 'x'?)' for the closest choice, or '' when nothing is close."""
    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""
