"""A small JSON-RPC client for the control listener (DESIGN §4), used by the
operational CLI verbs and ``voicecall mcp``.

It tells apart the failures the CLI must treat differently (DESIGN §5): nothing
listening (the only case where a verb may fall back to a standalone runtime),
a refused token, a time-out, and an RPC error carrying its code and slug.
aiohttp is imported inside ``call`` so importing this module stays cheap.

The control token file (``<store>/control.token``) is read here and created
here (by the listener, once): both sides agree on one place.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import pathlib
import secrets
from typing import TYPE_CHECKING, Any

from .errors import VoiceCallError

if TYPE_CHECKING:
    from .config import Settings

log = logging.getLogger("voicecall.control")

TOKEN_FILE = "control.token"
DEFAULT_TIMEOUT_S = 30.0
# Slugs for the JSON-RPC protocol codes, when a server sends no data.reason.
PROTOCOL_SLUGS = {-32700: "parse_error", -32600: "invalid_request", -32601: "method_not_found",
                  -32602: "invalid_params", -32603: "internal_error"}


def token_path(settings: Settings) -> pathlib.Path:
    return settings.store_dir / TOKEN_FILE


def read_token(settings: Settings) -> str | None:
    """``control.token`` from the config, else ``<store>/control.token``; None when neither exists."""
    configured = settings.get("control.token")
    if configured:
        return str(configured)
    try:
        return token_path(settings).read_text(encoding="utf-8").strip() or None
    except (FileNotFoundError, NotADirectoryError):
        return None


def load_or_create_token(settings: Settings) -> str:
    """``control.token`` from the config, else ``<store>/control.token``,
    generated once with mode 0600 (O_EXCL, so two starts never disagree)."""
    configured = settings.get("control.token")
    if configured:
        return str(configured)
    path = token_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        token = path.read_text(encoding="utf-8").strip()
        if not token:
            raise VoiceCallError(f"{path} is empty; delete it and start again to generate a new token") from None
        if path.stat().st_mode & 0o077:
            log.warning("%s was readable by others; setting its mode to 0600", path)
            os.chmod(path, 0o600)
        return token
    token = secrets.token_urlsafe(32)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(token + "\n")
    log.info("generated the control token in %s", path)
    return token


def control_address(settings: Settings) -> tuple[str, int]:
    """Where the listener is reachable: a wildcard bind is reached on loopback."""
    bind = str(settings.get("control.bind", "127.0.0.1") or "127.0.0.1")
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(bind, bind)
    return host, int(settings.get("control.port", 3335))


class ControlClientError(VoiceCallError):
    """The control listener could not be used; the message says what to do."""

    code = "control_unavailable"


class NotListening(ControlClientError):
    """Connection refused: no ``voicecall serve`` on the control port."""

    code = "serve_not_running"


class AuthFailed(ControlClientError):
    code = "unauthorized"


class ControlTimeout(ControlClientError):
    code = "timeout"


class RemoteError(ControlClientError):
    """A JSON-RPC error from the server: ``rpc_code``, ``code`` (slug), message, ``data``."""

    def __init__(self, rpc_code: int, message: str, data: dict[str, Any] | None = None):
        super().__init__(message)
        self.rpc_code = rpc_code
        self.data = dict(data or {})
        reason = self.data.get("reason")
        self.code = str(reason) if isinstance(reason, str) and reason else PROTOCOL_SLUGS.get(rpc_code, "rpc_error")


class ControlClient:
    """``await ControlClient(settings).call("voicecall.status", {})`` → the result."""

    def __init__(self, settings: Settings, *, token: str | None = None, timeout: float = DEFAULT_TIMEOUT_S):
        self.settings = settings
        self.host, self.port = control_address(settings)
        self.token = token if token is not None else read_token(settings)
        self.timeout = timeout
        self._ids = itertools.count(1)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/rpc"

    @property
    def where(self) -> str:
        return f"{self.host}:{self.port}"

    def _refused(self) -> bool:
        """A plain TCP probe, so the common "nothing listens" case costs no aiohttp import."""
        import socket

        try:
            with socket.create_connection((self.host, self.port), timeout=1.0):
                return False
        except ConnectionRefusedError:
            return True
        except OSError:
            return False          # let the real request report what is wrong

    async def call(self, method: str, params: dict[str, Any] | None = None, timeout: float | None = None) -> Any:
        if self._refused():
            raise NotListening(f"nothing listens on the control listener at {self.where}")
        import aiohttp

        request_id = next(self._ids)
        body = {"jsonrpc": "2.0", "id": request_id, "method": method, "params": params or {}}
        headers = {"Content-Type": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        limit = self.timeout if timeout is None else timeout
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=limit)) as session, \
                    session.post(self.url, data=json.dumps(body), headers=headers) as resp:
                text = await resp.text()
                status = resp.status
        except aiohttp.ClientConnectorError as exc:
            if isinstance(exc.os_error, ConnectionRefusedError):
                raise NotListening(f"nothing listens on the control listener at {self.where}") from None
            raise ControlClientError(f"cannot reach the control listener at {self.where}: {exc.os_error}") from None
        except TimeoutError:
            raise ControlTimeout(
                f"no answer from the control listener at {self.where} within {limit:g} s; "
                "check that `voicecall serve` is healthy (GET /healthz)") from None
        except aiohttp.ClientError as exc:
            raise ControlClientError(f"the control listener at {self.where} failed: {exc}") from None
        return self._result(status, text, request_id)

    def _result(self, status: int, text: str, request_id: int) -> Any:
        if status == 401:
            source = "control.token in the config" if self.settings.get("control.token") else \
                f"{token_path(self.settings)}"
            raise AuthFailed(f"the control listener at {self.where} refused our token (HTTP 401); "
                             f"use the token of the running `voicecall serve` ({source})")
        if status != 200:
            raise ControlClientError(f"the control listener at {self.where} answered HTTP {status}: "
                                     f"{text.strip()[:200]}")
        try:
            doc = json.loads(text)
        except ValueError:
            raise ControlClientError(f"the control listener at {self.where} answered with a body "
                                     "that is not JSON") from None
        if not isinstance(doc, dict) or doc.get("id") != request_id:
            raise ControlClientError(f"the control listener at {self.where} answered with an unexpected document")
        error = doc.get("error")
        if isinstance(error, dict):
            data = error.get("data")
            raise RemoteError(int(error.get("code", -32603)), str(error.get("message", "error")),
                              data if isinstance(data, dict) else None)
        return doc.get("result")
