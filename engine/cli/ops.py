"""Operational verbs: ``call``, ``start``, ``continue``, ``speak``, ``dtmf``,
``end`` (DESIGN §5).

Each talks to a running ``voicecall serve`` over the control listener. Only
when nothing listens there (connection refused) do ``call``/``start`` run a
standalone runtime until the call ends and ``end`` hangs up through the
carrier's REST API; ``continue``/``speak``/``dtmf`` then say that ``serve``
must run. A refused token or a time-out exits 1 with advice and never starts
a second runtime. aiohttp and the runtime are imported only inside functions.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sys
from typing import TYPE_CHECKING, Any, NoReturn

import click

from voicecall.engine.errors import VoiceCallError

if TYPE_CHECKING:
    from voicecall.engine.config import Settings

MODES = click.Choice(["notify", "conversation"])


def _config_option(f: Any) -> Any:
    return click.option("--config", "config_path", type=click.Path(dir_okay=False),
                        help="Config file (default: $VOICECALL_CONFIG, ./voicecall.yaml, built-in).")(f)


def _json_option(f: Any) -> Any:
    return click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")(f)


def fail(code: str, message: str, as_json: bool) -> NoReturn:
    """One ``Error: …`` line on stderr (and the JSON error document with --json); exit 1."""
    from voicecall.engine.cli.serve import fail as fail_one_line

    fail_one_line(message, code, as_json)


def load(config_path: str | None, as_json: bool) -> Settings:
    """Settings, or every config problem on stderr and exit 1 (the same text as ``serve``)."""
    from voicecall.engine.cli.serve import load_or_exit

    return load_or_exit(config_path, as_json)


def rpc(settings: Settings, method: str, params: dict[str, Any], timeout: float | None = None) -> Any:
    """One RPC; raises NotListening (the caller decides the fallback) or another VoiceCallError."""
    from voicecall.engine.client import ControlClient

    return asyncio.run(ControlClient(settings).call(method, params, timeout=timeout))


def _run(settings: Settings, method: str, params: dict[str, Any], as_json: bool, *,
         timeout: float | None = None, fallback: Any = None) -> Any:
    """Delegate to serve; on connection refused call ``fallback()`` (or fail)."""
    from voicecall.engine.client import NotListening

    try:
        return rpc(settings, method, params, timeout)
    except NotListening as exc:
        if fallback is None:
            verb = method.removeprefix("voicecall.")
            fail("serve_not_running", f"{exc}: `voicecall serve` must run for `{verb}` "
                 "(it needs the live call's runtime)", as_json)
        try:
            return fallback()
        except VoiceCallError as err:
            fail(err.code, str(err), as_json)
    except VoiceCallError as exc:
        fail(exc.code, str(exc), as_json)


def _print_call_id(call_id: str, as_json: bool) -> None:
    click.echo(json.dumps({"callId": call_id}) if as_json else call_id)
    sys.stdout.flush()


def _standalone_call(settings: Settings, params: dict[str, Any], as_json: bool) -> str:
    """Run a runtime here until the call ends: print the id as soon as it is placed."""
    from voicecall.engine.cli.serve import setup_logging
    from voicecall.engine.runtime import VoiceCallRuntime

    setup_logging(settings, logging.WARNING)

    async def run() -> str:
        runtime = VoiceCallRuntime(settings)
        try:
            await runtime.start(webhook=True)
        except OSError as exc:
            # Most likely a serve whose control listener is elsewhere (DESIGN §5: name it, no raw EADDRINUSE).
            port = settings.get("serve.port", 3334)
            raise VoiceCallError(
                f"cannot listen for webhooks on port {port} ({exc.strerror or exc}); another `voicecall serve` "
                f"probably holds it: point control.port at that serve's control listener") from None
        call_id = ""
        try:
            call_id = await runtime.initiate(
                to=params.get("to"), message=params.get("message"), mode=params.get("mode"),
                flow=params.get("flow"), vars=params.get("vars"), dtmf_sequence=params.get("dtmfSequence"))
            _print_call_id(call_id, as_json)
            limit = float(settings.get("maxDurationSeconds", 300)) + float(settings.get("ringTimeoutMs", 30000)) / 1000
            try:
                record = await runtime.wait_ended(call_id, timeout=limit + 60)
            except VoiceCallError as exc:
                # The id is already on stdout (the one JSON document with --json): stderr only.
                click.echo(f"Error: {exc}", err=True)
                sys.exit(1)
            click.echo(f"call {call_id} ended: {record.end_reason or record.state}", err=True)
            return call_id
        finally:
            if call_id and call_id in runtime.sessions:   # interrupted: do not leave the phone ringing
                with contextlib.suppress(VoiceCallError):
                    await runtime.end(call_id)
            await runtime.stop()

    return asyncio.run(run())


def _place(method: str, params: dict[str, Any], config_path: str | None, as_json: bool) -> None:
    settings = load(config_path, as_json)
    params = {k: v for k, v in params.items() if v is not None}
    printed: list[str] = []

    def fallback() -> None:
        printed.append(_standalone_call(settings, params, as_json))

    result = _run(settings, method, params, as_json, fallback=fallback)
    if not printed:
        _print_call_id(str(result["callId"]), as_json)


def parse_vars(items: tuple[str, ...]) -> dict[str, Any]:
    """``K=V`` sets a string; ``K:=JSON`` a JSON value (number, bool, list, object)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key or key == ":":
            raise click.BadParameter(f"expected K=V or K:=JSON, got {item!r}", param_hint="--var")
        if key.endswith(":"):
            key = key[:-1]
            try:
                out[key] = json.loads(value)
            except ValueError:
                raise click.BadParameter(f"{key}:= needs a JSON value, got {value!r}", param_hint="--var") from None
        else:
            out[key] = value
    return out


@click.command("call")
@click.option("-m", "--message", required=True, help="What to say when the call connects.")
@click.option("-t", "--to", help="E.164 number to call (default: toNumber).")
@click.option("--mode", type=MODES, help="notify (say and hang up) or conversation (default: outbound.defaultMode).")
@click.option("--flow", help="Flow to run instead of the mode's built-in flow.")
@click.option("--var", "var_items", multiple=True, metavar="K=V", help="Call variable; K:=JSON for a JSON value.")
@click.option("--dtmf-sequence", help="Digits sent once answered (conversation only; w = half-second wait).")
@_json_option
@_config_option
def call(message: str, to: str | None, mode: str | None, flow: str | None, var_items: tuple[str, ...],
         dtmf_sequence: str | None, as_json: bool, config_path: str | None) -> None:
    """Place an outbound call; print its call id."""
    params = {"to": to, "message": message, "mode": mode, "flow": flow,
              "vars": parse_vars(var_items) or None, "dtmfSequence": dtmf_sequence}
    _place("voicecall.initiate", params, config_path, as_json)


@click.command("start")
@click.option("-t", "--to", required=True, help="E.164 number to call.")
@click.option("-m", "--message", help="What to say when the call connects.")
@click.option("--mode", type=MODES, help="notify or conversation (default: outbound.defaultMode).")
@click.option("--dtmf-sequence", help="Digits sent once answered (conversation only; w = half-second wait).")
@_json_option
@_config_option
def start(to: str, message: str | None, mode: str | None, dtmf_sequence: str | None, as_json: bool,
          config_path: str | None) -> None:
    """Place a call to --to (alias of call); print its call id."""
    _place("voicecall.start", {"to": to, "message": message, "mode": mode, "dtmfSequence": dtmf_sequence},
           config_path, as_json)


@click.command("continue")
@click.option("--call-id", required=True, help="The call.")
@click.option("-m", "--message", required=True, help="What to say before listening.")
@_json_option
@_config_option
def continue_(call_id: str, message: str, as_json: bool, config_path: str | None) -> None:
    """Say something and wait for the caller's answer; print it."""
    settings = load(config_path, as_json)
    timeout = int(settings.get("transcriptTimeoutMs", 180000)) / 1000 + 30
    result = _run(settings, "voicecall.continue", {"callId": call_id, "message": message}, as_json, timeout=timeout)
    click.echo(json.dumps({"transcript": result["transcript"]}) if as_json else result["transcript"])


def _simple(method: str, params: dict[str, Any], config_path: str | None, as_json: bool) -> None:
    settings = load(config_path, as_json)
    _run(settings, method, params, as_json)
    click.echo(json.dumps({"ok": True}) if as_json else "ok")


@click.command("speak")
@click.option("--call-id", required=True, help="The call.")
@click.option("-m", "--message", required=True, help="What to say.")
@_json_option
@_config_option
def speak(call_id: str, message: str, as_json: bool, config_path: str | None) -> None:
    """Say something on a live call without waiting."""
    _simple("voicecall.speak", {"callId": call_id, "message": message}, config_path, as_json)


@click.command("dtmf")
@click.option("--call-id", required=True, help="The call.")
@click.option("--digits", required=True, help="0-9, *, # and w (half-second wait).")
@_json_option
@_config_option
def dtmf(call_id: str, digits: str, as_json: bool, config_path: str | None) -> None:
    """Send DTMF digits on a live call."""
    _simple("voicecall.dtmf", {"callId": call_id, "digits": digits}, config_path, as_json)


@click.command("end")
@click.option("--call-id", required=True, help="The call.")
@_json_option
@_config_option
def end(call_id: str, as_json: bool, config_path: str | None) -> None:
    """Hang up a call (through serve, else through the carrier's REST API)."""
    settings = load(config_path, as_json)

    def hang_up() -> None:
        asyncio.run(_standalone_end(settings, call_id))

    _run(settings, "voicecall.end", {"callId": call_id}, as_json, fallback=hang_up)
    click.echo(json.dumps({"ok": True}) if as_json else "ok")


async def _standalone_end(settings: Settings, call_id: str) -> None:
    from voicecall.engine.cli.serve import setup_logging
    from voicecall.engine.runtime import VoiceCallRuntime

    setup_logging(settings, logging.WARNING)
    runtime = VoiceCallRuntime(settings)
    await runtime.start(webhook=False)
    try:
        await runtime.end(call_id)
    finally:
        await runtime.stop()   # waits for the hang-up request to finish
