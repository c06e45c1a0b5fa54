"""One exception tree. The CLI maps it to exit codes, the server to HTTP
statuses, RPC to JSON-RPC error codes, the agent tool to ``{"error": ...}``."""

from __future__ import annotations

from dataclasses import dataclass


class VoiceCallError(Exception):
    """Base of every error voicecall raises on purpose."""

    code = "error"


@dataclass(frozen=True, slots=True)
class Problem:
    """One located problem in a config or flow file."""

    file: str
    line: int | None
    path: str
    message: str
    warning: bool = False

    def format(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        kind = "warning: " if self.warning else ""
        return f"{where}: {self.path}: {kind}{self.message}"

    def as_json(self) -> dict[str, object]:
        return {"file": self.file, "line": self.line, "path": self.path, "message": self.message}


class ProblemsError(VoiceCallError):
    """Carries every problem found, not just the first."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        errors = [p for p in problems if not p.warning]
        super().__init__("\n".join(p.format() for p in errors) or "invalid")


class ConfigError(ProblemsError):
    code = "invalid_config"


class FlowError(ProblemsError):
    code = "invalid_flow"


class ProviderError(VoiceCallError):
    """A carrier refused or failed a request."""

    code = "carrier_error"

    def __init__(self, message: str, *, provider: str = "", status: int | None = None,
                 carrier_code: str | int | None = None, retryable: bool = False):
        super().__init__(message)
        self.provider = provider
        self.status = status
        self.carrier_code = carrier_code
        self.retryable = retryable


class SignatureError(VoiceCallError):
    """A webhook failed authentication. The message is safe to log: no secrets."""

    code = "bad_signature"


class RenderError(VoiceCallError):
    """A template failed while rendering a step mid-call."""

    code = "render_error"


class RpcError(VoiceCallError):
    """A control-plane error with a stable JSON-RPC code and slug (DESIGN §8)."""

    rpc_code = -32000
    code = "error"

    def __init__(self, message: str, **data: object):
        super().__init__(message)
        self.data = data


def _rpc(name: str, rpc_code: int, slug: str) -> type[RpcError]:
    return type(name, (RpcError,), {"rpc_code": rpc_code, "code": slug})


InvalidParams = _rpc("InvalidParams", -32602, "invalid_params")
CallNotFound = _rpc("CallNotFound", -32001, "call_not_found")
CallEnded = _rpc("CallEnded", -32002, "call_ended")
CallNotConnected = _rpc("CallNotConnected", -32003, "call_not_connected")
ConcurrencyLimit = _rpc("ConcurrencyLimit", -32004, "concurrency_limit")
CarrierFailed = _rpc("CarrierFailed", -32005, "carrier_error")
NotAcceptedInState = _rpc("NotAcceptedInState", -32006, "not_accepted_in_state")
TurnInProgress = _rpc("TurnInProgress", -32007, "turn_in_progress")
TurnTimeout = _rpc("TurnTimeout", -32008, "turn_timeout")
DestinationNotAllowed = _rpc("DestinationNotAllowed", -32009, "destination_not_allowed")
