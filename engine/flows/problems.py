"""Shared helpers for reporting located flow problems."""

from __future__ import annotations

import difflib
from collections.abc import Iterable

from voicecall.engine import yamlio
from voicecall.engine.errors import Problem


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """`` (did you mean 'say'?)`` or an empty string."""
    match = difflib.get_close_matches(word, sorted(set(choices)), n=1, cutoff=0.6)
    return f" (did you mean {match[0]!r}?)" if match else ""


class Reporter:
    """Collects problems for one file, turning YAML paths into lines."""

    def __init__(self, file: str, located: yamlio.Located | None = None):
        self.file = file
        self.located = located
        self.problems: list[Problem] = []

    def line(self, path: yamlio.Path) -> int | None:
        return self.located.line(path) if self.located is not None else None

    def error(self, path: yamlio.Path, message: str, *, line_of: yamlio.Path | None = None,
              line: int | None = None) -> None:
        self._add(path, message, line_of, warning=False, line=line)

    def warn(self, path: yamlio.Path, message: str, *, line_of: yamlio.Path | None = None) -> None:
        self._add(path, message, line_of, warning=True)

    def _add(self, path: yamlio.Path, message: str, line_of: yamlio.Path | None,
             *, warning: bool, line: int | None = None) -> None:
        if line is None:
            line = self.line(line_of if line_of is not None else path)
        problem = Problem(self.file, line, yamlio.json_path(path), message, warning)
        if problem not in self.problems:
            self.problems.append(problem)

    def errors(self) -> list[Problem]:
        return [p for p in self.problems if not p.warning]

    def sorted(self) -> list[Problem]:
        return sorted(self.problems, key=lambda p: (p.line or 0, p.path))
