"""``voicecall serve [--config PATH]`` (DESIGN §4): the runtime in one asyncio
process until SIGINT/SIGTERM.

Start-up: config → readiness (an unusable public URL is fatal for a real
carrier) → tunnel (its URL becomes ``publicUrl`` before the webhook listener
exists, because signatures are checked against it) → runtime (store lock,
listeners, restored calls) → start-up lines on stderr. Shutdown: the runtime
stops accepting, drains in-flight webhooks and turns, persists and closes;
then the tunnel goes. Expected failures are one ``Error:`` line, exit 1.

Also home to the small helpers the other runtime verbs share (settings
loading, one-line failures).
"""

from __future__ import annotations

import asyncio
import errno
import importlib.util
import json
import logging
import signal
import socket
import sys
from typing import TYPE_CHECKING, NoReturn

import click

if TYPE_CHECKING:
    from voicecall.engine.config import Settings
    from voicecall.engine.runtime import VoiceCallRuntime
    from voicecall.engine.tunnel import Tunnel

log = logging.getLogger("voicecall.serve")


# ---------------------------------------------------------------- shared CLI helpers

def fail(message: str, code: str = "error", as_json: bool = False) -> NoReturn:
    """Exit 1 with one ``Error:`` line (and, with --json, the error document)."""
    if as_json:
        click.echo(json.dumps({"error": {"code": code, "message": message}}, indent=2))
    click.echo(f"Error: {message}", err=True)
    sys.exit(1)


def load_or_exit(config_path: str | None, as_json: bool = False) -> Settings:
    """Settings, or every config problem on stderr and exit 1."""
    from voicecall.engine.config import ConfigError, ConfigFileError, load_settings

    try:
        return load_settings(config_path)
    except ConfigFileError as exc:
        fail(str(exc), exc.code, as_json)
    except ConfigError as exc:
        errors = [p for p in exc.problems if not p.warning]
        if not as_json:
            for problem in errors:
                click.echo(problem.format(), err=True)
        noun = "problem" if len(errors) == 1 else "problems"
        fail(f"the config has {len(errors)} {noun}" + ("" if not as_json else f": {exc}"),
             exc.code, as_json)


class _Redact(logging.Filter):
    """Never let a credential reach the log, whoever logged it."""

    def __init__(self, secrets: list[str]):
        super().__init__()
        self.secrets = [s for s in secrets if len(s) >= 4]

    def filter(self, record: logging.LogRecord) -> bool:
        if self.secrets:
            text = record.getMessage()
            if any(s in text for s in self.secrets):
                for secret in self.secrets:
                    text = text.replace(secret, "***")
                record.msg, record.args = text, None
        return True


def setup_logging(settings: Settings | None = None, level: int = logging.INFO) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
    if settings is not None:
        handler.addFilter(_Redact(list(settings.secrets())))
    root = logging.getLogger("voicecall")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False


def _http(host: str, port: int | None, path: str) -> str:
    host = f"[{host}]" if ":" in host else host
    return f"http://{host}:{port}{path}"


def _free_port(bind: str) -> int:
    # A tunnel must know the port before the listener exists (see module doc).
    family = socket.AF_INET6 if ":" in bind else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((bind, 0))
        return int(sock.getsockname()[1])


# ---------------------------------------------------------------- serve

@click.command("serve")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="Config file.")
def serve(config_path: str | None) -> None:
    """Run the runtime: webhook listener, control API, timers and the reaper."""
    settings = load_or_exit(config_path)
    if not settings.get("enabled", True):
        fail("the voice-call plugin is disabled (enabled: false); nothing to serve")
    setup_logging(settings)
    try:
        code = asyncio.run(_serve(settings))
    except KeyboardInterrupt:  # a second Ctrl+C during shutdown
        code = 1
    sys.exit(code)


async def _serve(settings: Settings) -> int:
    from voicecall.engine.errors import VoiceCallError
    from voicecall.engine.readiness import exposure, local_webhook_url, public_url_problem, run_checks
    from voicecall.engine.store import StoreError

    how = exposure(settings)
    if how in ("publicUrl", "local", "tailscale-serve"):
        url = str(settings.get("publicUrl") or local_webhook_url(settings))
        if problem := public_url_problem(settings, url):
            fail(problem, "public_url_unusable")
    tunnel: Tunnel | None = None
    runtime: VoiceCallRuntime | None = None
    stop = asyncio.Event()
    main = asyncio.current_task()

    def on_signal() -> None:
        # Before the runtime is up, abandon start-up (cleaning up what exists);
        # after, shut down gracefully.
        if runtime is not None:
            stop.set()
        elif main is not None:
            main.cancel()

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal)
    try:
        if how not in ("publicUrl", "local"):
            settings, tunnel = await _start_tunnel(settings)
        from voicecall.engine.runtime import VoiceCallRuntime

        candidate = VoiceCallRuntime(settings)
        control = importlib.util.find_spec("voicecall.engine.control") is not None
        try:
            await candidate.start(control=control)   # cleans up after itself when it fails
        except OSError as exc:
            if exc.errno not in BIND_ERRORS:
                raise
            fail(*listen_failure(settings, candidate, exc))
        runtime = candidate
        _print_started(settings, runtime, tunnel, control)
        for check in run_checks(settings):
            if not check.ok and check.name != "webhook-exposure":
                click.echo(f"warning: readiness check {check.name} failed: {check.detail}", err=True)
        click.echo("ready; stop with Ctrl+C (SIGINT) or SIGTERM", err=True)
        await stop.wait()
        click.echo("stopping: draining in-flight webhooks and turns", err=True)
        return 0
    except (VoiceCallError, StoreError) as exc:
        fail(str(exc), getattr(exc, "code", "error"))
    except OSError as exc:
        fail(f"cannot start: {exc}")
    except asyncio.CancelledError:
        fail("interrupted during start-up", "interrupted")
    finally:
        if runtime is not None:
            await runtime.stop()
        if tunnel is not None:
            await tunnel.stop()
        if stop.is_set():
            kept = len(runtime.sessions) if runtime else 0
            click.echo(f"stopped; {kept} live call{'' if kept == 1 else 's'} kept in the store", err=True)


async def _start_tunnel(settings: Settings) -> tuple[Settings, Tunnel | None]:
    from voicecall.engine.readiness import public_url_problem
    from voicecall.engine.tunnel import start_tunnel

    port = int(settings.get("serve.port", 3334))
    if port == 0:
        port = _free_port(str(settings.get("serve.bind", "127.0.0.1")))
        settings = settings.replace(serve={"port": port})
    tunnel = await start_tunnel(settings, port)
    if tunnel is None:
        return settings, None
    if problem := public_url_problem(settings, tunnel.public_url):
        await tunnel.stop()
        fail(problem, "public_url_unusable")
    return settings.replace(publicUrl=tunnel.public_url), tunnel


BIND_ERRORS = (errno.EADDRINUSE, errno.EACCES, errno.EADDRNOTAVAIL)


def listen_failure(settings: Settings, runtime: VoiceCallRuntime, exc: OSError) -> tuple[str, str]:
    """(message, code): one line naming the listener that could not bind and the likely cause."""
    # The webhook listener binds first: with no webhook port yet, it failed.
    which = "serve" if runtime.webhook_port is None else "control"
    bind = str(settings.get(f"{which}.bind", "127.0.0.1"))
    port = int(settings.get(f"{which}.port", 3334 if which == "serve" else 3335))
    if exc.errno == errno.EACCES:
        return (f"not allowed to listen on port {port} on {bind} (ports below 1024 usually need root); "
                f"choose another {which}.port", "cannot_listen")
    if exc.errno == errno.EADDRNOTAVAIL:
        return (f"cannot listen on {bind}: that address does not belong to this machine; check {which}.bind",
                "cannot_listen")
    return (f"port {port} on {bind} is already in use (another voicecall serve? "
            f"check with: lsof -i :{port})", "port_in_use")


def _print_started(settings: Settings, runtime: VoiceCallRuntime, tunnel: Tunnel | None,
                   control: bool) -> None:
    from voicecall.engine.readiness import status_callback_url

    def say(line: str) -> None:
        click.echo(line, err=True)

    serve_bind = str(settings.get("serve.bind", "127.0.0.1"))
    say(f"voicecall serve: provider {settings.provider}")
    say(f"webhook listener: {_http(serve_bind, runtime.webhook_port, str(settings.get('serve.path')))}")
    if control and runtime.control_port is not None:
        say(f"control listener: {_http(str(settings.get('control.bind')), runtime.control_port, '/rpc')}")
    else:
        say("control listener: not available in this version (operational verbs use the store)")
    if tunnel is not None:
        say(f"tunnel: {tunnel.kind} -> {tunnel.public_url}")
    elif settings.get("publicUrl") and settings.get("tunnel.provider", "none") != "none":
        say(f"tunnel: {settings.get('tunnel.provider')} not started: publicUrl is set and takes precedence")
    say(f"public webhook URL (give this to the carrier): {runtime.public_url}")
    say(f"inbound status callback URL: {status_callback_url(runtime.public_url)}")
    say(f"store: {settings.store_dir}")
    restored = len(runtime.sessions)
    if restored:
        say(f"restored {restored} live call{'s' if restored != 1 else ''}")
    for problem in settings.warnings:
        say(problem.format())
    if settings.get("skipSignatureVerification"):
        say("WARNING: skipSignatureVerification is on: webhook signatures are NOT checked and "
            "anyone who finds the URL can forge carrier events. Local testing only.")
