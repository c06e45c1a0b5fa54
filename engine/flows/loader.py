"""Load a flow: YAML → schema pass → build (compiling every template once)
→ semantic pass (lint.py). Every problem is collected; nothing is built
from a file that has errors."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from jinja2 import TemplateSyntaxError

from voicecall.engine import yamlio
from voicecall.engine.errors import FlowError, Problem

from . import lint
from .model import Action, Flow, State, TimerSpec, Transition
from .problems import Reporter
from .render import DTMF_DIGITS, Tpl, compile_expression, compile_text, is_template
from .schema import check_schema


def load_flow_text(text: str, file: str = "<flow>") -> Flow:
    """Parse, validate and compile one flow. Raises ``FlowError`` carrying
    every problem found (warnings ride along on ``Flow.warnings``)."""
    report = Reporter(file)
    try:
        located = yamlio.load(text)
    except yamlio.YamlSyntaxError as exc:
        report.problems.append(Problem(file, exc.line, "$", str(exc)))
        raise FlowError(report.problems) from None
    report.located = located
    for path, line in located.duplicates:
        report.error(path, f"duplicate key {path[-1]!r}", line=line)
    if located.data is None:
        report.error((), "flow file is empty")
        raise FlowError(report.problems)
    check_schema(located.data, report)
    if report.errors():
        raise FlowError(report.sorted())
    flow = _Builder(located.data, report).build(text, file)
    lint.check(flow, located.data, report)
    if report.errors():
        raise FlowError(report.sorted())
    return _with_warnings(flow, report)


def load_flow_file(path: str | Path) -> Flow:
    """Load a flow from disk; an unreadable file is a ``FlowError`` too."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise FlowError([Problem(str(path), None, "$", f"cannot read flow file: {reason}")]) from None
    return load_flow_text(text, str(path))


def _with_warnings(flow: Flow, report: Reporter) -> Flow:
    warnings = tuple(p for p in report.sorted() if p.warning)
    if warnings:
        object.__setattr__(flow, "warnings", warnings)
    return flow


class _Builder:
    """Turns validated data into the model, compiling templates as it goes.
    Every compiled template is kept on ``Flow.templates`` for lint."""

    def __init__(self, data: Mapping[str, Any], report: Reporter):
        self.data = data
        self.report = report
        self.file = report.file
        self.templates: list[lint.TemplateUse] = []

    def build(self, text: str, file: str) -> Flow:
        data = self.data
        states = {name: self._state(name, body or {}) for name, body in data["states"].items()}
        transitions = tuple(self._transition(i, t) for i, t in enumerate(data.get("transitions", [])))
        flow = Flow(
            name=data["flow"], mode=data.get("mode", data["flow"]), kind=data.get("kind", "call"),
            description=data.get("description", ""), initial=data["initial"], states=states,
            transitions=transitions, vars_schema=data.get("vars", {}), source=text,
            hash=hashlib.sha256(text.encode("utf-8")).hexdigest(), file=file)
        object.__setattr__(flow, "templates", tuple(self.templates))
        return flow

    # -- states and transitions

    def _state(self, name: str, body: Mapping[str, Any]) -> State:
        path: yamlio.Path = ("states", name)
        do = self._actions(body.get("do", []), (*path, "do"), owner=f"state:{name}")
        after = tuple(
            TimerSpec(t["event"], self._seconds(t["seconds"], (*path, "after", i, "seconds"),
                                                owner=f"timer:{name}"))
            for i, t in enumerate(body.get("after", [])))
        goto = next((a.args["state"] for a in do if a.kind == "goto"), None)
        return State(name=name, do=do, opening=bool(body.get("opening", False)),
                     final=bool(body.get("final", False)), after=after,
                     tags=frozenset(body.get("tags", [])), goto=goto)

    def _transition(self, index: int, body: Mapping[str, Any]) -> Transition:
        path: yamlio.Path = ("transitions", index)
        on = body["on"]
        sources = body.get("from", "*")
        when = None
        if "when" in body:
            when = self._compile(body["when"], (*path, "when"), owner="when", expression=True)
        return Transition(
            on=frozenset([on] if isinstance(on, str) else on),
            sources=None if sources == "*" else frozenset([sources] if isinstance(sources, str) else sources),
            dest=body["to"], when=when,
            do=self._actions(body.get("do", []), (*path, "do"), owner="transition"),
            line=self.report.line(path))

    # -- actions

    def _actions(self, raw: list[Mapping[str, Any]], path: yamlio.Path, owner: str) -> tuple[Action, ...]:
        return tuple(self._action(item, (*path, i), owner) for i, item in enumerate(raw))

    def _action(self, item: Mapping[str, Any], path: yamlio.Path, owner: str) -> Action:
        kind, value = next(iter(item.items()))
        vpath = (*path, kind)
        args: dict[str, Any] = {}
        text = lambda v, p: self._compile(v, p, owner)  # noqa: E731
        if kind in ("say", "play"):
            main = "text" if kind == "say" else "url"
            value = {main: value} if isinstance(value, str) else value
            for key, v in value.items():
                sub = (*vpath, key) if isinstance(item[kind], dict) else vpath
                args[key] = self._seconds(v, sub, owner) if key == "loop" else text(v, sub)
        elif kind == "pause":
            args["seconds"] = self._seconds(value, vpath, owner)
        elif kind == "gather":
            args["input"] = {"both": "speech dtmf"}.get(value.get("input", "speech"),
                                                        value.get("input", "speech"))
            for key in ("timeout", "numDigits", "speechTimeout"):
                if key in value:
                    if key == "speechTimeout" and value[key] == "auto":
                        args[key] = "auto"
                    else:
                        args[key] = self._seconds(value[key], (*vpath, key), owner)
            for key in ("finishOnKey", "language"):
                if key in value:
                    args[key] = text(value[key], (*vpath, key))
            args["prompt"] = self._actions(value.get("prompt", []), (*vpath, "prompt"), owner)
        elif kind in ("hangup", "reject", "end_call"):
            for key, v in (value or {}).items():
                args[key] = text(v, (*vpath, key))
        elif kind == "dtmf":
            args["digits"] = text(value, vpath)
            if not is_template(value) and not DTMF_DIGITS.match(value):
                self.report.error(vpath, f"DTMF digits must match [0-9*#wW]+, got {value!r}")
        elif kind == "stream":
            args["url"] = text(value["url"], (*vpath, "url"))
            args["parameters"] = {k: text(v, (*vpath, "parameters", k))
                                  for k, v in value.get("parameters", {}).items()}
        elif kind == "redirect":
            if value.startswith("https://") and not is_template(value):
                args["url"] = value
            else:
                args["state"] = value  # lint checks it is a state
        elif kind == "goto":
            args["state"] = value
        elif kind == "set":
            for key, v in value.items():
                args[key] = text(v, (*vpath, key)) if isinstance(v, str) else v
        line = self.report.line(path)
        return Action(kind, args, self.file, line, yamlio.json_path(path))

    # -- templates

    def _compile(self, source: str, path: yamlio.Path, owner: str, *,
                 expression: bool = False) -> Tpl | str | None:
        if expression and is_template(source):
            self.report.error(path, "'when' is a Jinja expression: write it without {{ }}")
            return None
        try:
            compiled: Tpl | str = compile_expression(source) if expression else compile_text(source)
        except TemplateSyntaxError as exc:
            where = f" (template line {exc.lineno})" if exc.lineno and exc.lineno > 1 else ""
            self.report.error(path, f"template syntax error: {exc.message}{where}")
            return None
        if isinstance(compiled, Tpl):
            self.templates.append(lint.TemplateUse(path, compiled, owner))
        return compiled

    def _seconds(self, value: Any, path: yamlio.Path, owner: str) -> Any:
        if isinstance(value, int):
            return value
        if is_template(value):
            return self._compile(value, path, owner)
        if re.fullmatch(r"\s*\d+\s*", value):
            return int(value)
        self.report.error(path, f"expected whole seconds or a template, got {value!r}")
        return 0
