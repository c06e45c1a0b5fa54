"""The Jinja sandbox: templates are compiled once when a flow loads and
rendered per call with data from the runtime.

Runtime data (the RPC message, caller speech, responder output, vars) only
ever enters as *values* of the context: Jinja inserts them, it never
evaluates them again, so ``message: "{{7*7}}"`` is spoken literally.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any

from jinja2 import StrictUndefined, TemplateError, Undefined, nodes
from jinja2.meta import find_undeclared_variables
from jinja2.sandbox import ImmutableSandboxedEnvironment

from voicecall.engine.errors import RenderError
from voicecall.engine.program import Step

from .model import Action, TimerSpec, Transition

# The names a template may use; the loader rejects anything else.
CONTEXT_NAMES: frozenset[str] = frozenset({"call", "vars", "event", "config", "state", "turn"})
TEMPLATE_MARKERS = ("{{", "{%", "{#")
_SINGLE = re.compile(r"^\{\{(.*)\}\}$", re.DOTALL)
DTMF_DIGITS = re.compile(r"^[0-9*#wW]+$")


def _finalize(value: Any) -> Any:
    # A missing optional value (None) must not be spoken as "None".
    return "" if value is None else value


# Immutable: a template cannot append to a list or update a dict it was given.
ENV = ImmutableSandboxedEnvironment(
    undefined=StrictUndefined, autoescape=False, finalize=_finalize, keep_trailing_newline=False)


class Tpl:
    """A compiled template string. A value that is exactly one ``{{ expr }}``
    renders to the expression's native value (an int stays an int)."""

    __slots__ = ("_expr", "_template", "attrs", "names", "source")

    def __init__(self, source: str, *, expression: bool = False):
        self.source = source
        ast = ENV.parse(source if not expression else "{{ " + source + " }}")
        self.names: frozenset[str] = frozenset(find_undeclared_variables(ast))
        self.attrs: frozenset[tuple[str, str]] = frozenset(_attributes(ast))
        single = _SINGLE.match(source)
        native = expression or (single is not None and _is_single_output(ast))
        self._expr = ENV.compile_expression(
            source if expression else single.group(1), undefined_to_none=False) if native else None  # type: ignore[union-attr]
        self._template = None if native else ENV.from_string(source)

    def __repr__(self) -> str:
        return f"Tpl({self.source!r})"

    def render(self, ctx: Mapping[str, Any]) -> Any:
        """Native value for single expressions, text otherwise.
        Raises ``TemplateError`` (the caller adds where it came from)."""
        if self._expr is not None:
            value = self._expr(**ctx)
            if isinstance(value, Undefined):
                value._fail_with_undefined_error()
            return value
        assert self._template is not None
        return self._template.render(**ctx)


def _is_single_output(ast: nodes.Template) -> bool:
    return (len(ast.body) == 1 and isinstance(ast.body[0], nodes.Output)
            and len(ast.body[0].nodes) == 1 and not isinstance(ast.body[0].nodes[0], nodes.TemplateData))


def _attributes(ast: nodes.Node) -> list[tuple[str, str]]:
    """``(name, attribute)`` for every ``name.attr`` / ``name['attr']`` used."""
    found: list[tuple[str, str]] = []
    for node in ast.find_all(nodes.Getattr):
        if isinstance(node.node, nodes.Name):
            found.append((node.node.name, node.attr))
    for item in ast.find_all(nodes.Getitem):
        if (isinstance(item.node, nodes.Name) and isinstance(item.arg, nodes.Const)
                and isinstance(item.arg.value, str)):
            found.append((item.node.name, item.arg.value))
    return found


def is_template(text: str) -> bool:
    return any(marker in text for marker in TEMPLATE_MARKERS)


@lru_cache(maxsize=4096)
def compile_text(source: str) -> Tpl | str:
    """Compile ``source`` if it holds template syntax; plain text stays a str.
    Cached per process: the same text in many flows compiles once."""
    return Tpl(source) if is_template(source) else source


@lru_cache(maxsize=1024)
def compile_expression(source: str) -> Tpl:
    return Tpl(source, expression=True)


# ---------------------------------------------------------------- rendering

def _value(value: Any, ctx: Mapping[str, Any]) -> Any:
    return value.render(ctx) if isinstance(value, Tpl) else value


def _text(value: Any, ctx: Mapping[str, Any]) -> str:
    out = _value(value, ctx)
    return "" if out is None else str(out)


def _int(value: Any, ctx: Mapping[str, Any], what: str, *, minimum: int = 0) -> int:
    out = _value(value, ctx)
    if isinstance(out, str) and re.fullmatch(r"\s*-?\d+\s*", out):
        out = int(out)
    if isinstance(out, float) and out.is_integer():
        out = int(out)
    if isinstance(out, bool) or not isinstance(out, int):
        raise ValueError(f"{what} must be a whole number, got {out!r}")
    if out < minimum:
        raise ValueError(f"{what} must be at least {minimum}, got {out}")
    return out


def _where(action: Action) -> str:
    return f"{action.file}:{action.line}" if action.line else action.file


def render_actions(actions: Sequence[Action], ctx: Mapping[str, Any]) -> list[Step]:
    """Render compiled actions into provider-neutral steps.

    A ``say`` whose text renders empty and a ``pause`` of 0 seconds are
    dropped (an empty ``<Say>`` is an error on some carriers). Raises
    ``RenderError`` naming the file, line and JSON path of the action.
    """
    steps: list[Step] = []
    for action in actions:
        try:
            step = _render_one(action, ctx)
        except RenderError:
            raise
        except (TemplateError, ValueError, TypeError, ArithmeticError, LookupError) as exc:
            raise RenderError(f"{_where(action)}: {action.path}: cannot render {action.kind}: "
                              f"{exc}") from None
        if step is not None:
            steps.append(step)
    return steps


def _render_one(action: Action, ctx: Mapping[str, Any]) -> Step | None:
    kind, args = action.kind, action.args
    params: dict[str, Any] = {}
    if kind == "say":
        text = _text(args["text"], ctx)
        if not text.strip():
            return None
        params["text"] = text
        for key in ("voice", "language"):
            if key in args:
                params[key] = _text(args[key], ctx)
    elif kind == "play":
        params["url"] = _text(args["url"], ctx)
        if "loop" in args:
            params["loop"] = _int(args["loop"], ctx, "loop")
    elif kind == "pause":
        seconds = _int(args["seconds"], ctx, "pause seconds")
        if seconds == 0:
            return None
        params["seconds"] = seconds
    elif kind == "gather":
        params["input"] = args["input"]
        params["timeout"] = _int(args.get("timeout", 5), ctx, "gather timeout", minimum=1)
        if "numDigits" in args:
            params["numDigits"] = _int(args["numDigits"], ctx, "numDigits", minimum=1)
        for key in ("finishOnKey", "language"):
            if key in args:
                params[key] = _text(args[key], ctx)
        if "speechTimeout" in args:
            raw = _value(args["speechTimeout"], ctx)
            params["speechTimeout"] = "auto" if raw == "auto" else _int(raw, ctx, "speechTimeout")
        params["prompt"] = tuple(render_actions(args.get("prompt", ()), ctx))
        params["token"] = None  # the engine fills in the turn token
    elif kind in ("hangup", "reject", "end_call"):
        if "reason" in args:
            params["reason"] = _text(args["reason"], ctx)
        elif kind == "reject":
            params["reason"] = "rejected"
    elif kind == "dtmf":
        digits = _text(args["digits"], ctx).strip()
        if not DTMF_DIGITS.match(digits):
            raise ValueError(f"DTMF digits must match [0-9*#wW]+, got {digits!r}")
        params["digits"] = digits
    elif kind == "stream":
        params["url"] = _text(args["url"], ctx)
        params["parameters"] = {k: _text(v, ctx) for k, v in args.get("parameters", {}).items()}
    elif kind in ("redirect", "goto"):
        params.update(args)  # literal state or https URL, checked at load
    elif kind == "set":
        params.update({name: _value(value, ctx) for name, value in args.items()})
    elif kind != "reply":
        raise ValueError(f"unknown action {kind!r}")
    return Step(kind, params)


def eval_when(transition: Transition, ctx: Mapping[str, Any]) -> bool:
    """True when the transition has no ``when`` or its expression is truthy."""
    if transition.when is None:
        return True
    try:
        return bool(transition.when.render(ctx))
    except (TemplateError, ValueError, TypeError, ArithmeticError, LookupError) as exc:
        line = f":{transition.line}" if transition.line else ""
        raise RenderError(f"transition{line}: cannot evaluate when "
                          f"{transition.when.source!r}: {exc}") from None


def timer_seconds(spec: TimerSpec, ctx: Mapping[str, Any]) -> float:
    """Seconds until ``timer.<event>``; 0 or less means the timer is off."""
    try:
        value = _value(spec.seconds, ctx)
        if isinstance(value, str):
            value = float(value.strip())
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"seconds must be a number, got {value!r}")
        return float(value)
    except (TemplateError, ValueError, TypeError, ArithmeticError, LookupError) as exc:
        raise RenderError(f"timer {spec.event!r}: cannot render seconds: {exc}") from None
