"""Flows: YAML state machines, loaded in two passes and compiled once.

The runtime codes against this module's names; see docs/ARCHITECTURE.md,
"Flow semantics the engine implements".
"""

from __future__ import annotations

from .graph import to_dot, to_mermaid
from .library import FlowLibrary, UnknownFlow, validate_vars, vars_with_defaults
from .loader import load_flow_file, load_flow_text
from .model import Action, Flow, State, TimerSpec, Transition
from .render import eval_when, render_actions, timer_seconds

__all__ = [
    "Action",
    "Flow",
    "FlowLibrary",
    "State",
    "TimerSpec",
    "Transition",
    "UnknownFlow",
    "eval_when",
    "load_flow_file",
    "load_flow_text",
    "render_actions",
    "timer_seconds",
    "to_dot",
    "to_mermaid",
    "validate_vars",
    "vars_with_defaults",
]
