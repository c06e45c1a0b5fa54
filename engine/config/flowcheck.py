"""The flows a config names: ``flows.paths`` directories and ``numbers[*].flow``.

The flow library is imported lazily: validate-config must stay fast, and the
config package must not depend on the flow engine being importable.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from pathlib import Path as FsPath
from typing import Any

from voicecall.engine.config.schema import Issue
from voicecall.engine.errors import Problem, ProblemsError

BUILTIN_FLOW_COUNT = 4  # notify, conversation, inbound_greeting, reaper


def resolve_flow_paths(paths: Any, base_dir: FsPath | None) -> list[str]:
    """``flows.paths`` made absolute; relative entries are relative to the config file."""
    out = []
    for entry in paths or ():
        path = FsPath(str(entry)).expanduser()
        if not path.is_absolute() and base_dir is not None:
            path = base_dir / path
        out.append(str(path))
    return out


def _library(paths: list[str]) -> Any:
    try:
        from voicecall.engine.flows import FlowLibrary
    except ImportError:
        return None
    return FlowLibrary([FsPath(p) for p in paths])


def check_flows(plugin: Mapping[str, Any], base_dir: FsPath | None,
                ) -> tuple[list[Issue], list[Problem], list[str]]:
    """(issues located in the config, problems located in flow files, absolute paths)."""
    issues: list[Issue] = []
    problems: list[Problem] = []
    written = list(plugin.get("flows", {}).get("paths", []))
    paths = resolve_flow_paths(written, base_dir)
    existing = []
    for index, (shown, path) in enumerate(zip(written, paths, strict=True)):
        if not FsPath(path).is_dir():
            what = "not a directory" if FsPath(path).exists() else "directory not found"
            issues.append(Issue(("flows", "paths", index), f"{what}: {shown}"))
        else:
            existing.append(path)
    try:
        library = _library(existing)
        if library is None:
            return issues, problems, paths
        problems += list(library.problems())
        problems += _capability_problems(library, str(plugin.get("provider") or "mock"))
        names = set(library.names())
        for number, route in (plugin.get("numbers") or {}).items():
            name = route.get("flow") if isinstance(route, Mapping) else None
            if isinstance(name, str) and not _known(library, name):
                close = difflib.get_close_matches(name, sorted(names), n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                issues.append(Issue(("numbers", number, "flow"), f"unknown flow {name!r}{hint}"))
    except ProblemsError as exc:
        return issues, problems + list(exc.problems), paths
    except OSError as exc:
        issues.append(Issue(("flows", "paths"), f"cannot read flows: {exc}"))
    return issues, problems, paths


def _capability_problems(library: Any, provider: str) -> list[Problem]:
    """Refuse, before any call, a flow that needs what the carrier cannot do."""
    try:
        from voicecall.providers.base import provider_class

        capabilities: frozenset[str] = getattr(provider_class(provider), "capabilities", frozenset())
    except (ImportError, KeyError):
        return []
    out: list[Problem] = []
    for name in library.names():
        try:
            out += library.get(name).unsupported(provider, capabilities)
        except ProblemsError:
            continue                      # a broken flow reports itself
    return out


def _known(library: Any, name: str) -> bool:
    """A flow of that name exists (a broken one counts: its file reports itself)."""
    try:
        library.path_of(name)
    except KeyError:
        return False
    return True


def count_flows(settings: Any) -> int:
    """How many flows the settings make available (built-ins plus ``flows.paths``)."""
    paths = [p for p in settings.get("flows.paths", ()) if FsPath(p).is_dir()]
    try:
        library = _library(paths)
        return BUILTIN_FLOW_COUNT if library is None else len(library.names())
    except (ProblemsError, OSError):
        return BUILTIN_FLOW_COUNT
