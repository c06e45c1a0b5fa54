"""The schema pass: ``schemas/config.schema.json`` errors turned into messages a
person can act on, plus schema-driven defaults.

Every jsonschema error becomes an ``Issue`` (a path relative to the plugin
config and a message); the loader turns issues into located ``Problem``s.
Values of secret keys are never quoted in a message.
"""

from __future__ import annotations

import copy
import difflib
import functools
import json
from dataclasses import dataclass
from importlib import resources
from typing import Any

Path = tuple[str | int, ...]

# Keys whose values are credentials: messages about them never show the value.
SECRET_KEYS = frozenset({
    "apiKey", "authToken", "accountSid", "authId", "publicKey", "connectionId",
    "ngrokAuthToken", "token",
})

E164_PATTERN = r"^\+[1-9]\d{1,14}$"
PREFIX_PATTERN = r"^\+\d{1,15}$"

_JSON_TYPES = {
    dict: "object", list: "array", str: "string", bool: "boolean", int: "integer",
    float: "number", type(None): "null",
}


@dataclass(frozen=True, slots=True)
class Issue:
    """A problem found at ``path`` (relative to the validated document)."""

    path: Path
    message: str
    warning: bool = False
    line_of: Path | None = None   # locate the line here when ``path`` is not in the file


@functools.lru_cache(maxsize=1)
def config_schema() -> dict[str, Any]:
    """The config schema shipped as package data (works from a checkout and a wheel)."""
    text = resources.files("voicecall.schemas").joinpath("config.schema.json").read_text("utf-8")
    return dict(json.loads(text))


@functools.lru_cache(maxsize=4)
def _validator(definition: str | None) -> Any:
    import jsonschema

    root = config_schema()
    schema = root if definition is None else {
        "$defs": root["$defs"], "$ref": f"#/$defs/{definition}"}
    return jsonschema.Draft202012Validator(schema)


def validate(data: Any, definition: str | None = None) -> list[Issue]:
    """Every schema problem in ``data`` (the whole config, or one ``$defs`` entry)."""
    issues: list[Issue] = []
    for error in _validator(definition).iter_errors(data):
        issues.extend(_issues(error))
    return sorted(set(issues), key=lambda issue: [str(part) for part in issue.path])


def _is_secret(path: Path) -> bool:
    return bool(path) and isinstance(path[-1], str) and path[-1] in SECRET_KEYS


def type_name(value: Any) -> str:
    return _JSON_TYPES.get(type(value), type(value).__name__)


def show(value: Any, path: Path) -> str:
    """``string '3334x'`` — or just ``string`` for a secret."""
    kind = type_name(value)
    if _is_secret(path) or isinstance(value, dict | list):
        return kind
    if isinstance(value, str):
        return f"{kind} {value!r}"
    return f"{kind} {json.dumps(value)}"


def _quote(value: Any, path: Path) -> str:
    if _is_secret(path):
        return "the value"
    return repr(value) if isinstance(value, str) else json.dumps(value)


def _issues(error: Any) -> list[Issue]:
    path: Path = tuple(error.absolute_path)
    kind = error.validator
    value = error.instance
    schema = error.schema
    if "propertyNames" in error.relative_schema_path and isinstance(value, str):
        # jsonschema reports a bad key at its object; the key itself is the culprit.
        return [Issue((*path, value), f"{value!r} is not an E.164 number (e.g. +15550001234)")]
    if kind == "additionalProperties" and isinstance(value, dict):
        allowed = sorted(schema.get("properties", {}))
        out = []
        for key in value:
            if key in allowed:
                continue
            close = difflib.get_close_matches(str(key), allowed, n=1, cutoff=0.6)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            if not close and len(allowed) <= 8:
                hint = f" (allowed: {', '.join(allowed)})"
            out.append(Issue((*path, key), f"unknown key {key!r}{hint}"))
        return out
    if kind == "type":
        wanted = error.validator_value
        expected = " or ".join(wanted) if isinstance(wanted, list) else str(wanted)
        return [Issue(path, f"expected {expected}, got {show(value, path)}")]
    if kind == "enum":
        choices = ", ".join(str(v) for v in error.validator_value)
        return [Issue(path, f"{_quote(value, path)} is not one of: {choices}")]
    if kind == "pattern":
        return [Issue(path, _pattern_message(error.validator_value, value, path))]
    if kind in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
        words = {"minimum": "at least", "maximum": "at most",
                 "exclusiveMinimum": "more than", "exclusiveMaximum": "less than"}[kind]
        return [Issue(path, f"must be {words} {error.validator_value}, got {json.dumps(value)}")]
    if kind == "minLength":
        return [Issue(path, "must not be empty")]
    if kind == "required":
        missing = [key for key in error.validator_value if key not in value]
        return [Issue((*path, key), f"missing required key {key!r}") for key in missing]
    detail = error.message if not _is_secret(path) else f"invalid value ({kind})"
    return [Issue(path, detail)]


def _pattern_message(pattern: str, value: Any, path: Path) -> str:
    shown = _quote(value, path)
    if pattern == E164_PATTERN:
        return f"{shown} is not an E.164 number (e.g. +15550001234)"
    if pattern == PREFIX_PATTERN:
        return f"{shown} is not an E.164 prefix (e.g. +1555)"
    if pattern == "^/":
        return f"{shown} must start with '/'"
    return f"{shown} does not match {pattern}"


def prune(data: Any, issues: list[Issue]) -> Any:
    """A copy of ``data`` without the nodes the issues point at, so the semantic
    pass can still run (and report) on what is valid."""
    pruned = copy.deepcopy(data)
    for issue in sorted(issues, key=lambda i: -len(i.path)):
        if not issue.path:
            return {}
        parent = pruned
        try:
            for part in issue.path[:-1]:
                parent = parent[part]
            last = issue.path[-1]
            if isinstance(parent, dict):
                parent.pop(last, None)
            elif isinstance(parent, list) and isinstance(last, int) and last < len(parent):
                parent[last] = None
        except (KeyError, IndexError, TypeError):
            continue
    return _drop_none_items(pruned)


def _drop_none_items(data: Any) -> Any:
    if isinstance(data, dict):
        return {k: _drop_none_items(v) for k, v in data.items()}
    if isinstance(data, list):
        return [_drop_none_items(v) for v in data if v is not None]
    return data


def fill_defaults(data: dict[str, Any], schema: dict[str, Any] | None = None) -> dict[str, Any]:
    """Insert every schema ``default`` that ``data`` lacks, recursively (in place)."""
    root = config_schema()
    schema = root if schema is None else schema
    schema = _resolve(schema, root)
    for key, sub in schema.get("properties", {}).items():
        sub_resolved = _resolve(sub, root)
        if key not in data and "default" in sub:
            data[key] = copy.deepcopy(sub["default"])
        elif key not in data and "default" in sub_resolved:
            data[key] = copy.deepcopy(sub_resolved["default"])
        if isinstance(data.get(key), dict):
            fill_defaults(data[key], sub_resolved)
    extra = schema.get("additionalProperties")
    if isinstance(extra, dict):
        for key, value in data.items():
            if isinstance(value, dict) and key not in schema.get("properties", {}):
                fill_defaults(value, _resolve(extra, root))
    return data


def _resolve(schema: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/$defs/"):
        return dict(root["$defs"][ref.split("/")[-1]])
    return schema
