"""``setup``, ``smoke`` and ``expose`` (DESIGN §5, §8).

``setup`` prints one green/red line per readiness check; ``smoke`` runs the
same checks and places a real call only with both ``--to`` and ``--yes`` —
through a running ``serve`` when one listens, else a standalone runtime that
stays up until the call ends. ``expose`` drives the ``tailscale`` CLI (or runs
the ngrok agent in the foreground for ``tunnel.provider: ngrok``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
from typing import TYPE_CHECKING, Any

import click

from .serve import fail, load_or_exit

if TYPE_CHECKING:
    from voicecall.engine.config import Settings
    from voicecall.engine.readiness import Check

SMOKE_MESSAGE = "voicecall smoke test."


def _print_checks(checks: list[Check]) -> None:
    for check in checks:
        mark = click.style("✓", fg="green") if check.ok else click.style("✗", fg="red")
        click.echo(f"{mark} {check.name}: {check.detail}")


@click.command("setup")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="Config file.")
def setup(as_json: bool, config_path: str | None) -> None:
    """Readiness checks: credentials, public webhook URL, audio mode, flows, reaper."""
    from voicecall.engine.readiness import run_checks

    settings = load_or_exit(config_path, as_json)
    checks = run_checks(settings)
    ok = all(c.ok for c in checks)
    if as_json:
        click.echo(json.dumps({"ok": ok, "checks": [c.as_json() for c in checks]}, indent=2))
    else:
        _print_checks(checks)
    if not ok:
        raise SystemExit(1)


# ---------------------------------------------------------------- smoke

@click.command("smoke")
@click.option("-t", "--to", "to", help="Number to call for a live smoke test (E.164).")
@click.option("--message", default=SMOKE_MESSAGE, show_default=True, help="What the call says.")
@click.option("--mode", type=click.Choice(["notify", "conversation"]), default="notify", show_default=True)
@click.option("--yes", is_flag=True, help="Really place the call (needs --to).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="Config file.")
def smoke(to: str | None, message: str, mode: str, yes: bool, as_json: bool, config_path: str | None) -> None:
    """Readiness checks, then a real call only with --to and --yes."""
    from voicecall.engine.readiness import run_checks

    settings = load_or_exit(config_path, as_json)
    checks = run_checks(settings)
    ok = all(c.ok for c in checks)
    doc: dict[str, Any] = {"ok": ok, "checks": [c.as_json() for c in checks], "dryRun": not (to and yes),
                           "to": to, "mode": mode, "message": message, "callId": None}
    if not as_json:
        _print_checks(checks)
    if not ok:
        if as_json:
            click.echo(json.dumps(doc, indent=2))
        fail("readiness checks failed; no call placed", "not_ready")
    if not (to and yes):
        if as_json:
            click.echo(json.dumps(doc, indent=2))
        elif to:
            click.echo(f"Dry run: would place a {mode} call to {to} saying {message!r}. "
                       "Add --yes to place it.")
        else:
            click.echo("Dry run: no call placed. Pass --to PHONE --yes to place a real call.")
        return
    call_id, outcome = _place(settings, to, message, mode, as_json)
    doc["callId"] = call_id
    doc["result"] = outcome
    if as_json:
        click.echo(json.dumps(doc, indent=2))
    else:
        click.echo(f"Placed smoke call {call_id}" + (f" ({outcome})" if outcome else ""))


def _place(settings: Settings, to: str, message: str, mode: str, as_json: bool) -> tuple[str, str | None]:
    """Through a running serve (result None: the call goes on there), else a
    standalone runtime until the call ends (result: its final state)."""
    from voicecall.engine.client import ControlClient, ControlClientError, NotListening

    params = {"to": to, "message": message, "mode": mode}
    try:
        result = asyncio.run(ControlClient(settings).call("voicecall.initiate", params))
    except NotListening:
        return asyncio.run(_standalone(settings, params, as_json))
    except ControlClientError as exc:
        fail(str(exc), exc.code, as_json)
    if not isinstance(result, dict) or not isinstance(result.get("callId"), str):
        fail("the control listener answered voicecall.initiate with an unexpected result", "rpc_error", as_json)
    return result["callId"], None


async def _standalone(settings: Settings, params: dict[str, str], as_json: bool) -> tuple[str, str | None]:
    from voicecall.engine.errors import VoiceCallError
    from voicecall.engine.runtime import VoiceCallRuntime

    from .serve import BIND_ERRORS, listen_failure

    runtime = VoiceCallRuntime(settings)
    try:
        await runtime.start()
    except OSError as exc:
        if exc.errno in BIND_ERRORS:
            fail(*listen_failure(settings, runtime, exc), as_json)
        fail(f"cannot start a standalone runtime: {exc}", "error", as_json)
    except VoiceCallError as exc:
        fail(str(exc), exc.code, as_json)
    try:
        call_id = await runtime.initiate(to=params["to"], message=params["message"], mode=params["mode"])
        if not as_json:
            click.echo(f"Calling {params['to']} (call {call_id}); waiting for the call to end", err=True)
        limit = int(settings.get("maxDurationSeconds", 300)) + int(settings.get("ringTimeoutMs", 30000)) / 1000
        record = await runtime.wait_ended(call_id, timeout=limit + 30)
        return call_id, f"{record.state}" + (f", {record.end_reason}" if record.end_reason and
                                             record.end_reason != record.state else "")
    except VoiceCallError as exc:
        fail(str(exc), exc.code, as_json)
    finally:
        await runtime.stop()


# ---------------------------------------------------------------- expose

@click.command("expose")
@click.option("--mode", type=click.Choice(["off", "serve", "funnel"]), default=None,
              help="off, serve (tailnet only) or funnel (public). [default: funnel]")
@click.option("--path", "path", help="Public path [default: tailscale.path or --serve-path].")
@click.option("--port", type=click.IntRange(1, 65535), help="Local webhook port [default: serve.port].")
@click.option("--serve-path", "serve_path", help="Local webhook path [default: serve.path].")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@click.option("--max-seconds", type=float, hidden=True, help="ngrok: stop after this long (tests).")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="Config file.")
def expose(mode: str | None, path: str | None, port: int | None, serve_path: str | None, as_json: bool,
           max_seconds: float | None, config_path: str | None) -> None:
    """Expose the webhook with Tailscale serve/funnel (or run ngrok)."""
    settings = load_or_exit(config_path, as_json)
    serve_path = serve_path or str(settings.get("serve.path", "/voice/webhook"))
    if not serve_path.startswith("/") or (path is not None and not path.startswith("/")):
        raise click.UsageError("--path and --serve-path must start with '/'")
    port = port or int(settings.get("serve.port", 3334)) or 3334
    if mode is None and settings.get("tunnel.provider") == "ngrok":
        asyncio.run(_ngrok_foreground(settings, port, serve_path, as_json, max_seconds))
        return
    mode = mode or "funnel"
    path = path or str(settings.get("tailscale.path") or serve_path)
    https_port = int(settings.get("tailscale.port", 443))
    asyncio.run(_tailscale(settings, mode, port, path, serve_path, https_port, as_json))


async def _tailscale(settings: Settings, mode: str, port: int, path: str, serve_path: str, https_port: int,
                     as_json: bool) -> None:
    from voicecall.engine.tunnel import TunnelError, start_tailscale, stop_tailscale

    target = f"http://127.0.0.1:{port}{serve_path}"
    try:
        if mode == "off":
            configured = settings.get("tunnel.provider") == "tailscale-funnel" or \
                settings.get("tailscale.mode") == "funnel"
            which = "funnel" if configured else "serve"
            await stop_tailscale(which, path=path, https_port=https_port)
            doc: dict[str, Any] = {"ok": True, "mode": "off", "path": path, "publicUrl": None}
            text = f"Tailscale {which} is off for {path}"
        else:
            tunnel = await start_tailscale(mode, port, path=path, serve_path=serve_path, https_port=https_port)
            doc = {"ok": True, "mode": mode, "path": path, "publicUrl": tunnel.public_url, "target": target}
            reach = "the internet" if mode == "funnel" else "your tailnet only"
            text = f"Tailscale {mode} is on ({reach}): {tunnel.public_url} -> {target}"
    except TunnelError as exc:
        fail(str(exc), exc.code, as_json)
    click.echo(json.dumps(doc, indent=2) if as_json else text)


async def _ngrok_foreground(settings: Settings, port: int, serve_path: str, as_json: bool,
                            max_seconds: float | None) -> None:
    from voicecall.engine.tunnel import TunnelError, start_ngrok

    try:
        tunnel = await start_ngrok(port, serve_path, authtoken=settings.get("tunnel.ngrokAuthToken"),
                                   domain=settings.get("tunnel.ngrokDomain"))
    except TunnelError as exc:
        fail(str(exc), exc.code, as_json)
    try:
        target = f"http://127.0.0.1:{port}{serve_path}"
        if as_json:
            click.echo(json.dumps({"ok": True, "mode": "ngrok", "publicUrl": tunnel.public_url,
                                   "target": target}, indent=2))
        else:
            click.echo(f"ngrok is on: {tunnel.public_url} -> {target}")
            click.echo("Set publicUrl to this URL for a runtime started elsewhere; press Ctrl+C to stop.",
                       err=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), max_seconds)
    finally:
        await tunnel.stop()
