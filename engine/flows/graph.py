"""Draw a flow: mermaid ``stateDiagram-v2`` or Graphviz DOT.

Transitions ``from: "*"`` are drawn once, from a pseudo state ``*``, rather
than from every live state (a notify flow would otherwise grow 27 edges).
"""

from __future__ import annotations

import re

from .model import Flow

ANY = "*"


def _edges(flow: Flow) -> list[tuple[str, str, str]]:
    """``(source, dest, label)`` in file order; sources may be ``*``."""
    edges: list[tuple[str, str, str]] = []
    for transition in flow.transitions:
        label = ", ".join(sorted(transition.on))
        if transition.when is not None:
            label += f" [{transition.when.source}]"
        label = " ".join(label.split())
        names = sorted(transition.sources) if transition.sources is not None else [ANY]
        order = list(flow.states)
        names.sort(key=lambda n: order.index(n) if n in order else -1)
        edges.extend((src, transition.dest, label) for src in names)
    for state in flow.states.values():
        for action in state.do:
            if action.kind in ("goto", "redirect") and "state" in action.args:
                edges.append((state.name, action.args["state"], action.kind))
    return edges


def _mermaid_id(name: str) -> str:
    return "any_state" if name == ANY else re.sub(r"[^A-Za-z0-9_]", "_", name)


def to_mermaid(flow: Flow) -> str:
    """A mermaid ``stateDiagram-v2`` of the flow (ends with a newline)."""
    edges = _edges(flow)
    lines = ["stateDiagram-v2"]
    names = list(flow.states) + ([ANY] if any(src == ANY for src, _, _ in edges) else [])
    for name in names:
        if _mermaid_id(name) != name:
            lines.append(f'    state "{name}" as {_mermaid_id(name)}')
    lines.append(f"    [*] --> {_mermaid_id(flow.initial)}")
    for src, dest, label in edges:
        lines.append(f"    {_mermaid_id(src)} --> {_mermaid_id(dest)}: {label}")
    for state in flow.states.values():
        if state.final:
            lines.append(f"    {_mermaid_id(state.name)} --> [*]")
    return "\n".join(lines) + "\n"


def _dot_str(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def to_dot(flow: Flow) -> str:
    """A Graphviz ``digraph`` of the flow (ends with a newline)."""
    edges = _edges(flow)
    lines = [f"digraph {_dot_str(flow.name)} {{", "    rankdir=LR;",
             "    node [shape=box, style=rounded];",
             '    "__start__" [shape=point, label=""];']
    for name, state in flow.states.items():
        attrs = ["shape=doublecircle"] if state.final else []
        if state.opening:
            attrs.append("penwidth=2")
        lines.append(f"    {_dot_str(name)}" + (f" [{', '.join(attrs)}];" if attrs else ";"))
    if any(src == ANY for src, _, _ in edges):
        lines.append(f'    {_dot_str(ANY)} [shape=plaintext, label="* (any live state)"];')
    lines.append(f'    "__start__" -> {_dot_str(flow.initial)};')
    for src, dest, label in edges:
        style = ", style=dashed" if label in ("goto", "redirect") else ""
        lines.append(f"    {_dot_str(src)} -> {_dot_str(dest)} [label={_dot_str(label)}{style}];")
    lines.append("}")
    return "\n".join(lines) + "\n"
