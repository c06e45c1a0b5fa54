"""The frozen settings object the loader hands down (STYLE §6: read config once).

``Settings.data`` is deep read-only: mappings are ``FrozenDict`` (a ``dict``
subclass, so ``json.dumps`` and Jinja treat it as a dict) and lists are tuples.
"""

from __future__ import annotations

import copy
import pathlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, NoReturn

from voicecall.engine.errors import Problem

# Settings flow templates may read (ARCHITECTURE "Template context"); no secrets.
TEMPLATE_KEYS = (
    "outbound", "inboundGreeting", "maxDurationSeconds", "staleCallReaperSeconds",
    "transcriptTimeoutMs", "ringTimeoutMs", "silenceTimeoutMs", "responseTimeoutMs",
)


class FrozenDict(dict[str, Any]):
    """A dict that refuses every change after construction."""

    def _refuse(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise TypeError("settings are read-only; use Settings.replace()")

    __setitem__ = __delitem__ = _refuse
    clear = pop = popitem = setdefault = update = _refuse
    __ior__ = _refuse

    def __copy__(self) -> FrozenDict:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> FrozenDict:
        return self

    def __reduce__(self) -> tuple[Any, ...]:
        return (FrozenDict, (dict(self),))

    def __hash__(self) -> int:  # type: ignore[override]
        return hash(tuple(sorted(self.items(), key=lambda kv: kv[0])))


def freeze(value: Any) -> Any:
    """Deep read-only copy: mappings → FrozenDict, lists → tuples."""
    if isinstance(value, Mapping):
        return FrozenDict({str(k): freeze(v) for k, v in value.items()})
    if isinstance(value, list | tuple):
        return tuple(freeze(v) for v in value)
    return value


def thaw(value: Any) -> Any:
    """Deep mutable copy: mappings → dict, tuples → lists."""
    if isinstance(value, Mapping):
        return {k: thaw(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [thaw(v) for v in value]
    return value


def deep_merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """``over`` on top of ``base``: mappings merge, scalars and lists from ``over`` win."""
    out = thaw(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = thaw(value)
    return out


@dataclass(frozen=True)
class Settings:
    """The validated plugin config with every default filled and env secrets merged."""

    data: Mapping[str, Any]
    source: str | None = None
    warnings: tuple[Problem, ...] = field(default=())

    def __post_init__(self) -> None:
        if not isinstance(self.data, FrozenDict):
            object.__setattr__(self, "data", freeze(self.data))
        object.__setattr__(self, "warnings", tuple(self.warnings))

    @property
    def provider(self) -> str:
        return str(self.data.get("provider", "mock"))

    @property
    def store_dir(self) -> pathlib.Path:
        """``store`` as the loader resolved it (config, $VOICECALL_STATE_DIR, ~/.voicecall)."""
        store = self.data.get("store")
        if not store:
            return pathlib.Path.home() / ".voicecall"
        return pathlib.Path(str(store)).expanduser()

    def get(self, dotted: str, default: Any = None) -> Any:
        """``settings.get("outbound.defaultMode")``; ``default`` when any part is missing."""
        node: Any = self.data
        for part in dotted.split("."):
            if isinstance(node, Mapping) and part in node:
                node = node[part]
            elif isinstance(node, tuple) and part.isdigit() and int(part) < len(node):
                node = node[int(part)]
            else:
                return default
        return node

    def template_context(self) -> dict[str, Any]:
        """Non-secret settings flows see as ``config`` (plain, mutable copies)."""
        return {key: thaw(self.data[key]) for key in TEMPLATE_KEYS if key in self.data}

    def replace(self, **changes: Any) -> Settings:
        """A copy with top-level keys changed. A mapping merges over the current
        mapping (``replace(serve={"port": 0})`` keeps ``serve.bind``); anything
        else replaces the key. Not re-validated: tests and the demo use it."""
        data = thaw(self.data)
        for key, value in changes.items():
            if isinstance(value, pathlib.PurePath):
                value = str(value)
            if isinstance(value, Mapping) and isinstance(data.get(key), Mapping):
                data[key] = deep_merge(data[key], value)
            else:
                data[key] = copy.deepcopy(thaw(value))
        return Settings(freeze(data), self.source, self.warnings)

    def secrets(self) -> Iterable[str]:
        """Every credential value held, so callers can redact them from logs."""
        from voicecall.engine.config.schema import SECRET_KEYS

        stack: list[Any] = [self.data]
        while stack:
            node = stack.pop()
            if isinstance(node, Mapping):
                for key, value in node.items():
                    if key in SECRET_KEYS and isinstance(value, str) and value:
                        yield value
                    else:
                        stack.append(value)
            elif isinstance(node, tuple):
                stack.extend(node)
