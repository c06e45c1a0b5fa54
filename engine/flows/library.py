"""The flow library: built-in flows plus the user's ``flows.paths``."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from functools import lru_cache
from importlib.resources import as_file, files
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator

from voicecall.engine import yamlio
from voicecall.engine.errors import FlowError, Problem

from .loader import load_flow_file, load_flow_text
from .model import Flow
from .problems import did_you_mean

FLOW_SUFFIXES = (".yaml", ".yml")


class UnknownFlow(FlowError, KeyError):
    """No flow of that name; the message names close matches."""

    code = "unknown_flow"

    def __init__(self, message: str):
        super().__init__([Problem("<flows>", None, "$", message)])
        self.message = message

    def __str__(self) -> str:
        return self.message


def builtin_dir() -> Path:
    """Directory of the built-in flows (package data, checkout or wheel)."""
    with as_file(files("voicecall.flows")) as path:
        return Path(path)


@lru_cache(maxsize=256)
def _load_cached(path: str, text: str) -> Flow | FlowError:
    # Keyed on the text itself: an edited file is reloaded (however quick the
    # edit), an unchanged one is not parsed again.
    try:
        return load_flow_text(text, path)
    except FlowError as exc:
        return exc


def _load(path: Path) -> Flow | FlowError:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        try:
            return load_flow_file(path)  # reports why it cannot be read
        except FlowError as exc:
            return exc
    return _load_cached(str(path), text)


def _declared_name(path: Path) -> tuple[str, int | None]:
    """The ``flow:`` name of a file that failed to load, for error lookup."""
    try:
        located = yamlio.load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yamlio.YamlSyntaxError):
        return path.stem, None
    data = located.data
    if isinstance(data, dict) and isinstance(data.get("flow"), str):
        return data["flow"], located.line(("flow",))
    return path.stem, None


class FlowLibrary:
    """Built-ins first, then every ``*.yaml``/``*.yml`` in each user path.
    A user flow may not reuse a name already defined (built-in or user)."""

    def __init__(self, paths: Sequence[str | os.PathLike[str]] = ()):
        self._flows: dict[str, Flow] = {}
        self._failed: dict[str, FlowError] = {}
        self._paths: dict[str, str] = {}
        self._problems: list[Problem] = []
        self._add_files(sorted(p for p in builtin_dir().iterdir() if p.suffix in FLOW_SUFFIXES))
        for entry in paths:
            directory = Path(entry).expanduser()
            if directory.is_dir():
                self._add_files(sorted(p for p in directory.iterdir()
                                       if p.suffix in FLOW_SUFFIXES and p.is_file()))
            elif directory.is_file() and directory.suffix in FLOW_SUFFIXES:
                self._add_files([directory])
            else:
                self._problems.append(Problem(str(directory), None, "$",
                                              "flows path is not a directory"))

    def _add_files(self, paths: Iterable[Path]) -> None:
        for path in paths:
            loaded = _load(path)
            if isinstance(loaded, FlowError):
                name, _line = _declared_name(path)
                self._problems.extend(loaded.problems)
                if name not in self._paths:
                    self._failed[name] = loaded
                    self._paths[name] = str(path)
                continue
            name = loaded.name
            self._problems.extend(loaded.warnings)
            if name in self._paths:
                problem = Problem(str(path), yamlio.load(loaded.source).line(("flow",)), "$.flow",
                                  f"flow name {name!r} already defined in {self._paths[name]}")
                self._problems.append(problem)
                continue
            self._flows[name] = loaded
            self._paths[name] = str(path)

    def names(self) -> list[str]:
        """Names of the flows that loaded cleanly, sorted."""
        return sorted(self._flows)

    def flows(self) -> list[Flow]:
        return [self._flows[name] for name in self.names()]

    def get(self, name: str) -> Flow:
        """The flow called ``name``; ``FlowError`` if its file is broken,
        ``UnknownFlow`` (a ``KeyError`` too) if there is none."""
        if name in self._flows:
            return self._flows[name]
        if name in self._failed:
            raise self._failed[name]
        raise UnknownFlow(f"unknown flow {name!r}{did_you_mean(name, self._paths)}"
                          f" (known: {', '.join(self.names()) or 'none'})")

    def resolve(self, name_or_path: str | os.PathLike[str]) -> Flow:
        """A library name, or a path to a flow file outside the library."""
        text = os.fspath(name_or_path)
        if text.endswith(FLOW_SUFFIXES) or os.sep in text:
            loaded = _load(Path(text))
            if isinstance(loaded, FlowError):
                raise loaded
            return loaded
        return self.get(text)

    def path_of(self, name: str) -> str:
        if name not in self._paths:
            raise UnknownFlow(f"unknown flow {name!r}{did_you_mean(name, self._paths)}")
        return self._paths[name]

    def problems(self) -> list[Problem]:
        """Every problem (errors and warnings) found in every file."""
        return list(self._problems)


_VALIDATORS: dict[str, Draft202012Validator] = {}


def _vars_validator(flow: Flow) -> Draft202012Validator:
    # One validator per flow source (the hash pins the schema text).
    if flow.hash not in _VALIDATORS:
        _VALIDATORS[flow.hash] = Draft202012Validator(dict(flow.vars_schema))
    return _VALIDATORS[flow.hash]


def validate_vars(flow: Flow, vars: Mapping[str, Any]) -> list[str]:
    """Messages for every way ``vars`` breaks the flow's ``vars`` schema."""
    if not isinstance(vars, Mapping):
        return [f"vars must be an object, got {type(vars).__name__}"]
    if not flow.vars_schema:
        return []
    validator = _vars_validator(flow)
    out = []
    for error in sorted(validator.iter_errors(dict(vars)), key=lambda e: list(map(str, e.path))):
        where = yamlio.json_path(tuple(error.absolute_path)).replace("$", "vars", 1)
        out.append(f"{where}: {error.message}")
    return out


def vars_with_defaults(flow: Flow, vars: Mapping[str, Any]) -> dict[str, Any]:
    """``vars`` with each declared property's ``default`` filled in."""
    props = flow.vars_schema.get("properties", {})
    out = {name: spec["default"] for name, spec in props.items()
           if isinstance(spec, Mapping) and "default" in spec}
    out.update(vars)
    return out
