"""The ``voice_call`` agent tool (DESIGN §6): one JSON Schema for function
calling (OpenAI tools format), and ``voice_call(target, **args)``, a callable
over an embedded ``VoiceCallRuntime`` or a ``ControlClient``. ``voicecall mcp``
serves the same schema.

The tool never raises for a bad request or a failed call: an agent gets
``{"error": "..."}`` it can read and act on.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from .errors import VoiceCallError

log = logging.getLogger("voicecall.tool")

ACTIONS: dict[str, tuple[str, tuple[str, ...], tuple[str, ...]]] = {
    # action -> (RPC method, required args, optional args)
    "initiate_call": ("voicecall.initiate", ("message",), ("to", "mode", "dtmfSequence")),
    "continue_call": ("voicecall.continue", ("callId", "message"), ()),
    "speak_to_user": ("voicecall.speak", ("callId", "message"), ()),
    "send_dtmf": ("voicecall.dtmf", ("callId", "digits"), ()),
    "end_call": ("voicecall.end", ("callId",), ()),
    "get_status": ("voicecall.status", (), ("callId",)),
}

TOOL_DESCRIPTION = (
    "Make and control phone calls. initiate_call places a call and returns its callId "
    "(mode notify speaks the message and hangs up; conversation stays on the line). "
    "continue_call says a message and waits for the caller's answer (returns the transcript); "
    "speak_to_user says something without waiting; send_dtmf sends keypad digits; end_call hangs up; "
    "get_status returns one call record, or the active calls when callId is omitted."
)

TOOL_PARAMETERS: dict[str, Any] = {
    "type": "object",
    "properties": {
        "action": {"type": "string", "enum": list(ACTIONS), "description": "What to do."},
        "message": {"type": "string", "description": "initiate_call, continue_call, speak_to_user: what to say."},
        "to": {"type": "string", "description": "initiate_call: E.164 number like +15550001234 "
               "(default: the configured toNumber)."},
        "mode": {"type": "string", "enum": ["notify", "conversation"],
                 "description": "initiate_call: notify (say and hang up) or conversation (default: the configured "
                 "outbound.defaultMode)."},
        "dtmfSequence": {"type": "string", "pattern": "^[0-9*#wW]{1,64}$",
                         "description": "initiate_call, conversation mode only: digits to send once answered "
                         "(w = half-second wait)."},
        "callId": {"type": "string", "description": "The call, for every action but initiate_call."},
        "digits": {"type": "string", "pattern": "^[0-9*#wW]{1,64}$",
                   "description": "send_dtmf: digits 0-9, *, # and w (half-second wait)."},
    },
    "required": ["action"],
    "additionalProperties": False,
}

VOICE_CALL_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {"name": "voice_call", "description": TOOL_DESCRIPTION, "parameters": TOOL_PARAMETERS},
}


def check_args(args: Mapping[str, Any]) -> tuple[str, str, dict[str, Any]]:
    """``(action, method, params)``; raises ValueError with a message an agent can act on."""
    action = args.get("action")
    if not isinstance(action, str) or action not in ACTIONS:
        raise ValueError(f"'action' must be one of {', '.join(ACTIONS)}; got {action!r}")
    method, required, optional = ACTIONS[action]
    allowed = {"action", *required, *optional}
    problems = [f"{action} takes no {k!r} (it takes {', '.join(required + optional) or 'nothing else'})"
                for k in args if k not in allowed]
    params: dict[str, Any] = {}
    for name in required + optional:
        value = args.get(name)
        if value is None:
            if name in required:
                problems.append(f"{action} needs {name!r}")
        elif not isinstance(value, str):
            problems.append(f"{name!r} must be a string")
        elif name in required and not value.strip():
            problems.append(f"{name!r} must not be empty")
        else:
            params[name] = value
    mode = params.get("mode")
    if mode is not None and mode not in ("notify", "conversation"):
        problems.append(f"'mode' must be notify or conversation, got {mode!r}")
    if problems:
        raise ValueError("; ".join(problems))
    return action, method, params


async def voice_call(target: Any, **args: Any) -> dict[str, Any]:
    """Run one tool call against a ``VoiceCallRuntime`` or a ``ControlClient``.

    Returns the action's result (``{"callId"}``, ``{"transcript"}``,
    ``{"ok": true}``, a call record or ``{"calls": [...]}``) or ``{"error": "..."}``.
    """
    try:
        action, method, params = check_args(args)
        if hasattr(target, "initiate"):
            return await _on_runtime(target, action, params)
        timeout = None
        if action == "continue_call":
            settings = getattr(target, "settings", None)
            ms = settings.get("transcriptTimeoutMs", 180000) if settings is not None else 180000
            timeout = int(ms) / 1000 + 30
        result = await target.call(method, params, timeout=timeout)
        return result if isinstance(result, dict) else {"result": result}
    except ValueError as exc:
        return {"error": str(exc)}
    except VoiceCallError as exc:
        if exc.code == "serve_not_running":
            return {"error": f"{exc}; start `voicecall serve` first"}
        return {"error": str(exc)}
    except Exception as exc:   # the tool must never raise into an agent loop
        log.error("voice_call %s failed unexpectedly", args.get("action"), exc_info=exc)
        return {"error": f"internal error ({type(exc).__name__}); see the voicecall log"}


async def _on_runtime(runtime: Any, action: str, p: dict[str, Any]) -> dict[str, Any]:
    if action == "initiate_call":
        call_id = await runtime.initiate(to=p.get("to"), message=p["message"], mode=p.get("mode"),
                                         dtmf_sequence=p.get("dtmfSequence"))
        return {"callId": call_id}
    if action == "continue_call":
        return {"transcript": await runtime.continue_(p["callId"], p["message"])}
    if action == "speak_to_user":
        await runtime.speak(p["callId"], p["message"])
    elif action == "send_dtmf":
        await runtime.dtmf(p["callId"], p["digits"])
    elif action == "end_call":
        await runtime.end(p["callId"])
    else:
        return dict(await runtime.status(p.get("callId")))
    return {"ok": True}
