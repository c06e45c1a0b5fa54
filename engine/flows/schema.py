"""First pass: the JSON Schema, with every error turned into a message a
person can act on (unknown keys and actions get a close match)."""

from __future__ import annotations

import json
from functools import cache
from importlib.resources import files
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError, best_match

from voicecall.engine import yamlio

from .problems import Reporter, did_you_mean

ACTIONS: tuple[str, ...] = ("say", "play", "pause", "gather", "hangup", "reject", "dtmf", "stream",
                            "redirect", "reply", "set", "end_call", "goto")


@cache
def flow_schema() -> dict[str, Any]:
    """The packaged ``flow.schema.json`` (read once per process)."""
    text = files("voicecall.schemas").joinpath("flow.schema.json").read_text(encoding="utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


@cache
def validator() -> Draft202012Validator:
    """Built once per process: building a validator is the slow part."""
    return Draft202012Validator(flow_schema())


def check_schema(data: Any, report: Reporter) -> None:
    """Report every schema error in ``data``."""
    errors = sorted(validator().iter_errors(data), key=lambda e: list(map(str, e.absolute_path)))
    for error in errors:
        _report(error, report)


def _report(error: ValidationError, report: Reporter) -> None:
    path: yamlio.Path = tuple(error.absolute_path)
    schema = error.schema if isinstance(error.schema, dict) else {}
    is_action = "say" in schema.get("properties", {})
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        allowed = list(schema.get("properties", {}))
        for key in error.instance:
            if key in allowed:
                continue
            hint = did_you_mean(key, allowed) or (f" (allowed: {', '.join(allowed)})" if allowed else "")
            what = "action" if is_action else "key"
            report.error(path, f"unknown {what} {key!r}{hint}", line_of=(*path, key))
        return
    if error.validator in ("maxProperties", "minProperties") and is_action:
        keys = ", ".join(repr(k) for k in error.instance)
        found = f", found {len(error.instance)}: {keys}" if error.instance else ""
        report.error(path, f"an action has exactly one key (say, play, gather, ...){found}")
        return
    if error.validator == "type" and is_action:
        # ``- hangup`` (a bare word) instead of ``- hangup: {}``.
        word = error.instance if isinstance(error.instance, str) else None
        if word in ACTIONS:
            report.error(path, f"an action is a mapping: write '{word}: ...' "
                         f"(e.g. '{word}: {{}}'), not {word!r}")
        else:
            hint = did_you_mean(word, ACTIONS) if word else ""
            report.error(path, f"expected an action such as 'say: TEXT', got "
                         f"{error.instance!r}{hint}")
        return
    if error.validator == "required":
        missing = str(error.message).split("'")[1] if "'" in error.message else error.message
        report.error(path, f"missing required key {missing!r}")
        return
    if error.validator in ("anyOf", "oneOf") and error.context:
        types = [e.validator_value for e in error.context if e.validator == "type"
                 and not e.relative_path]
        if len(types) == len(error.context):
            names = " or ".join(repr(t) for t in types)
            report.error(path, f"{error.instance!r} is not of type {names}")
            return
        deepest = best_match(error.context)
        _report(deepest, report)  # its absolute_path already includes the parent's
        return
    if error.validator == "enum":
        hint = did_you_mean(str(error.instance), map(str, error.validator_value))
        choices = ", ".join(map(str, error.validator_value))
        report.error(path, f"{error.instance!r} is not allowed here (one of: {choices}){hint}")
        return
    report.error(path, error.message)

