"""Tunnels (DESIGN §4): the ngrok agent and Tailscale serve/funnel.

``serve`` starts one before the runtime (the tunnel's URL becomes
``publicUrl``, which webhook signatures are checked against) and stops it
after. ``expose`` uses the Tailscale half directly. Each executable is found
on ``PATH``; a missing one is a ``VoiceCallError`` saying what to install.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .errors import VoiceCallError

if TYPE_CHECKING:
    from .config import Settings

log = logging.getLogger("voicecall.tunnel")

NGROK_START_TIMEOUT_S = 30.0
TAILSCALE_TIMEOUT_S = 30.0
INSTALL = {"ngrok": "https://ngrok.com/download", "tailscale": "https://tailscale.com/download"}


class TunnelError(VoiceCallError):
    code = "tunnel_error"


def executable(name: str) -> str:
    """The path of ``name`` on PATH, or a TunnelError saying what to install."""
    path = shutil.which(name)
    if path is None:
        raise TunnelError(f"the {name} CLI is not installed ({INSTALL[name]})")
    return path


@dataclass
class Tunnel:
    """A running exposure: ``public_url`` is the full webhook URL carriers get."""

    kind: str
    public_url: str
    _process: asyncio.subprocess.Process | None = None
    _drain: asyncio.Task[None] | None = None
    _off: tuple[str, ...] = ()
    _stopped: bool = field(default=False)

    async def stop(self) -> None:
        """Stop the ngrok agent, or switch Tailscale serve/funnel off. Idempotent."""
        if self._stopped:
            return
        self._stopped = True
        if self._process is not None:
            await _terminate(self._process)
        if self._drain is not None:
            self._drain.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._drain
        if self._off:
            code, _out, err = await run(self._off)
            if code != 0:
                log.warning("could not switch Tailscale %s off: %s", self.kind, err or f"exit {code}")


async def start_tunnel(settings: Settings, port: int) -> Tunnel | None:
    """Start what ``tunnel.provider`` / ``tailscale.mode`` ask for, exposing the
    local webhook on ``port``; None when ``publicUrl`` is set or nothing is configured."""
    from .readiness import exposure

    how = exposure(settings)
    webhook_path = str(settings.get("serve.path", "/voice/webhook"))
    if how == "ngrok":
        return await start_ngrok(port, webhook_path, authtoken=settings.get("tunnel.ngrokAuthToken"),
                                 domain=settings.get("tunnel.ngrokDomain"))
    if how in ("tailscale-serve", "tailscale-funnel"):
        path = str(settings.get("tailscale.path") or webhook_path)
        return await start_tailscale(how.split("-", 1)[1], port, path=path, serve_path=webhook_path,
                                     https_port=int(settings.get("tailscale.port", 443)))
    return None


# ---------------------------------------------------------------- ngrok

def ngrok_command(port: int, domain: str | None = None) -> list[str]:
    command = [executable("ngrok"), "http", str(port), "--log", "stdout", "--log-format", "json"]
    if domain:
        command += ["--domain", domain]
    return command


async def start_ngrok(port: int, webhook_path: str, *, authtoken: str | None = None,
                      domain: str | None = None, timeout_s: float = NGROK_START_TIMEOUT_S) -> Tunnel:
    """Run ``ngrok http PORT`` and wait for the URL in its JSON log."""
    command = ngrok_command(port, domain)
    env = dict(os.environ)
    if authtoken:
        env["NGROK_AUTHTOKEN"] = authtoken   # the child's env only; never on its command line
    process = await asyncio.create_subprocess_exec(
        *command, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT, env=env)
    try:
        url = await asyncio.wait_for(_read_ngrok_url(process), timeout_s)
    except TimeoutError:
        await _terminate(process)
        raise TunnelError(f"ngrok did not report a public URL within {timeout_s:g} s") from None
    except BaseException:
        await _terminate(process)
        raise
    # Keep reading its log: a full pipe would stall the agent.
    drain = asyncio.create_task(_drain(process), name="ngrok log")
    return Tunnel("ngrok", url.rstrip("/") + webhook_path, _process=process, _drain=drain)


async def _read_ngrok_url(process: asyncio.subprocess.Process) -> str:
    assert process.stdout is not None
    last_error = ""
    while True:
        line = await process.stdout.readline()
        if not line:
            code = await process.wait()
            why = f": {last_error}" if last_error else ""
            raise TunnelError(f"ngrok exited (code {code}) before reporting a public URL{why}")
        try:
            entry = json.loads(line)
        except ValueError:
            last_error = line.decode("utf-8", "replace").strip()[:300] or last_error
            continue
        if not isinstance(entry, Mapping):
            continue
        url = entry.get("url")
        if isinstance(url, str) and url.startswith(("https://", "http://")):
            return url
        if entry.get("err") not in (None, "", "<nil>"):
            last_error = str(entry["err"])[:300]
        elif entry.get("lvl") in ("eror", "crit", "error"):
            last_error = str(entry.get("msg", ""))[:300]


async def _drain(process: asyncio.subprocess.Process) -> None:
    assert process.stdout is not None
    while await process.stdout.readline():
        pass


async def _terminate(process: asyncio.subprocess.Process) -> None:
    if process.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        process.terminate()
    try:
        await asyncio.wait_for(process.wait(), 5)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()


# ---------------------------------------------------------------- tailscale

async def run(command: Sequence[str], timeout_s: float = TAILSCALE_TIMEOUT_S) -> tuple[int, str, str]:
    """Run a short command; (exit code, stdout, stderr)."""
    process = await asyncio.create_subprocess_exec(
        *command, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(process.communicate(), timeout_s)
    except TimeoutError:
        await _terminate(process)
        raise TunnelError(f"{os.path.basename(command[0])} did not finish within {timeout_s:g} s") from None
    return (process.returncode or 0, out.decode("utf-8", "replace").strip(),
            err.decode("utf-8", "replace").strip())


async def magic_dns_name(tailscale: str | None = None) -> str:
    """This node's MagicDNS name from ``tailscale status --json``."""
    tailscale = tailscale or executable("tailscale")
    code, out, err = await run([tailscale, "status", "--json"])
    if code != 0:
        raise TunnelError(f"tailscale status failed: {err or out or f'exit {code}'}")
    try:
        status = json.loads(out)
        name = str(status["Self"]["DNSName"]).rstrip(".")
    except (ValueError, KeyError, TypeError):
        raise TunnelError("tailscale status --json did not name this node (Self.DNSName); "
                          "is tailscale logged in?") from None
    if not name:
        raise TunnelError("tailscale has no MagicDNS name for this node; enable MagicDNS and HTTPS")
    return name


def tailscale_commands(tailscale: str, mode: str, *, port: int, path: str, serve_path: str,
                       https_port: int = 443) -> tuple[list[str], list[str]]:
    """The on and off commands for ``tailscale serve|funnel``."""
    if mode not in ("serve", "funnel"):
        raise TunnelError(f"unknown Tailscale mode {mode!r}: use serve or funnel")
    https = [] if https_port == 443 else [f"--https={https_port}"]
    on = [tailscale, mode, "--bg", "--yes", *https, "--set-path", path,
          f"http://127.0.0.1:{port}{serve_path}"]
    off = [tailscale, mode, "--yes", *https, "--set-path", path, "off"]
    return on, off


def tailscale_url(dns_name: str, path: str, https_port: int = 443) -> str:
    host = dns_name if https_port == 443 else f"{dns_name}:{https_port}"
    return f"https://{host}{path}"


async def start_tailscale(mode: str, port: int, *, path: str, serve_path: str,
                          https_port: int = 443) -> Tunnel:
    """Switch ``tailscale serve|funnel`` on for ``path`` → the local webhook."""
    tailscale = executable("tailscale")
    name = await magic_dns_name(tailscale)
    on, off = tailscale_commands(tailscale, mode, port=port, path=path, serve_path=serve_path,
                                 https_port=https_port)
    code, out, err = await run(on)
    if code != 0:
        raise TunnelError(f"tailscale {mode} failed: {err or out or f'exit {code}'}")
    return Tunnel(f"tailscale-{mode}", tailscale_url(name, path, https_port), _off=tuple(off))


async def stop_tailscale(mode: str, *, path: str, https_port: int = 443) -> None:
    """Switch ``tailscale serve|funnel`` off for ``path``."""
    tailscale = executable("tailscale")
    _on, off = tailscale_commands(tailscale, mode, port=0, path=path, serve_path="", https_port=https_port)
    code, out, err = await run(off)
    if code != 0:
        raise TunnelError(f"tailscale {mode} off failed: {err or out or f'exit {code}'}")
