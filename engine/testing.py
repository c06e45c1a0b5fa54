"""Run a flow against a scripted callee and see everything it did.

Users test their own flows the way our suite does::

    from voicecall.testing import simulate

    def test_reminder_confirms(snapshot):
        result = simulate("examples/flows/appointment_reminder.yaml", "scenarios/press1.yaml")
        assert result.record["state"] == "confirmed"
        assert result.snapshot() == snapshot

A scenario file (see docs/ARCHITECTURE.md, "Scenario files")::

    flow: notify                   # a flow name or a path (relative to the scenario file)
    provider: mock                 # mock (default), or twilio / plivo / telnyx (their local emulators)
    call: {direction: outbound, to: "+15550001111", message: "Hi", vars: {}}
    config: {inboundPolicy: open}  # settings overrides for this run
    callee: [{answer: {after: 1}}, {say: "yes"}, hangup]
    rpc: [{at: 3, speak: "One moment"}]   # control verbs, seconds after answer

Everything runs for real on loopback (runtime, webhook server, carrier,
signatures, SQLite) on a clock sped up by ``scale``.
"""

from __future__ import annotations

import asyncio
import re
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import VoiceCallError

SCENARIO_KEYS = frozenset({"flow", "provider", "call", "config", "callee", "rpc", "description", "name"})
CALL_KEYS = frozenset({"direction", "to", "from", "message", "mode", "vars", "dtmfSequence"})
RPC_VERBS = ("speak", "continue", "dtmf", "end")
TEST_TWILIO = {"accountSid": "AC" + "0" * 32, "authToken": "0123456789abcdef0123456789abcdef"}
TEST_PLIVO = {"authId": "MAZDQ1ZWE4NTK3MTQ0ZW", "authToken": "MzY4ZjQ3YjE4ZWI5NjY1ZjM4YzM3ZmI4NjE4ZDUx"}


class ScenarioError(VoiceCallError):
    code = "invalid_scenario"


@dataclass(frozen=True)
class Scenario:
    flow: str
    provider: str = "mock"
    call: Mapping[str, Any] = field(default_factory=dict)
    config: Mapping[str, Any] = field(default_factory=dict)
    callee: Sequence[Any] = ()
    rpc: Sequence[Mapping[str, Any]] = ()
    base: Path = Path(".")


def load_scenario(path: str | Path) -> Scenario:
    """Read and check a scenario file; ScenarioError names the problem."""
    from . import yamlio

    path = Path(path)
    try:
        data = yamlio.load(path.read_text(encoding="utf-8")).data
    except OSError as exc:
        raise ScenarioError(f"cannot read scenario {path}: {exc.strerror}") from None
    except yamlio.YamlSyntaxError as exc:
        raise ScenarioError(f"{path}:{exc.line or 1}: {exc}") from None
    if not isinstance(data, dict):
        raise ScenarioError(f"{path}: a scenario is a mapping with at least 'flow'")
    unknown = sorted(set(data) - SCENARIO_KEYS)
    if unknown:
        raise ScenarioError(f"{path}: unknown key(s) {', '.join(unknown)} (known: {', '.join(sorted(SCENARIO_KEYS))})")
    call = data.get("call") or {}
    if not isinstance(call, dict) or set(call) - CALL_KEYS:
        raise ScenarioError(f"{path}: 'call' takes {', '.join(sorted(CALL_KEYS))}")
    for item in data.get("rpc") or ():
        if not isinstance(item, dict) or "at" not in item or not any(v in item for v in RPC_VERBS):
            raise ScenarioError(f"{path}: each rpc item is {{at: SECONDS, speak|continue|dtmf|end: VALUE}}")
    if "flow" not in data:
        raise ScenarioError(f"{path}: 'flow' is required")
    return Scenario(flow=str(data["flow"]), provider=str(data.get("provider") or "mock"), call=call,
                    config=data.get("config") or {}, callee=data.get("callee") or (), rpc=data.get("rpc") or (),
                    base=path.parent)


@dataclass
class SimulationResult:
    record: dict[str, Any]
    timeline: list[tuple[float, str, str]]
    documents: list[Any]
    rpc_results: list[Any] = field(default_factory=list)

    def timeline_text(self) -> str:
        lines = [f"+{at:7.2f}s  {who:<8} {what}" for at, who, what in self.timeline]
        r = self.record
        lines.append(f"call {r['callId']}: {r['state']} ({r['endReason']}), {r['turnCount']} caller turn(s)")
        return "\n".join(lines)

    def snapshot(self) -> dict[str, Any]:
        """Stable facts for snapshot tests: no ids, times or tokens."""
        r = self.record
        return {
            "state": r["state"], "endReason": r["endReason"], "turnCount": r["turnCount"],
            "transcript": [f"{t['role']}: {t['text']}" for t in r["transcript"]],
            # Engine and carrier each log in order; their interleaving can vary.
            "engine": [what for _, who, what in self.timeline if who == "engine"],
            "carrier": [f"{who} {what}" for _, who, what in self.timeline if who != "engine"],
            "documents": self.documents, "rpc": self.rpc_results,
        }


def simulate(flow: str | Path, scenario: str | Path | Scenario, *, provider: str | None = None,
             settings: Any = None, scale: float = 0.002) -> SimulationResult:
    """Synchronous wrapper of :func:`run_scenario` for scripts and tests."""
    loaded = scenario if isinstance(scenario, Scenario) else load_scenario(scenario)
    loaded = Scenario(str(flow or loaded.flow), provider or loaded.provider, loaded.call, loaded.config,
                      loaded.callee, loaded.rpc, loaded.base)
    return asyncio.run(run_scenario(loaded, settings=settings, scale=scale))


async def run_scenario(sc: Scenario, *, settings: Any = None, scale: float = 0.002,
                       store: Path | None = None) -> SimulationResult:
    """Run one scenario on a fresh runtime and carrier."""
    flow_name, flow_dirs = _resolve_flow(sc)
    config = {"flows": {"paths": flow_dirs}, **sc.config}
    async with Harness(sc.provider, settings=settings, config=config, scale=scale, store=store) as harness:
        return await harness.run(sc, flow_name)


class Harness:
    """A runtime and its carrier on loopback, for scenarios, tests and the demo."""

    def __init__(self, provider: str = "mock", *, settings: Any = None, config: Mapping[str, Any] | None = None,
                 scale: float = 0.002, store: Path | None = None, chaos: Any = None):
        from .clock import ScaledClock
        from .config import default_settings

        if provider != "mock" and provider not in EMULATORS:
            raise ScenarioError(f"provider {provider!r} cannot be simulated ({', '.join(['mock', *EMULATORS])})")
        self.provider = provider
        self.clock = ScaledClock(scale)
        self._tmp = tempfile.TemporaryDirectory(prefix="voicecall-sim-")
        self.overrides: dict[str, Any] = {"store": str(store or self._tmp.name),
                                          "serve": {"port": 0, "bind": "127.0.0.1"}, "maxConcurrentCalls": 4,
                                          **(config or {})}
        self.base = settings or default_settings()
        self.chaos = chaos
        self.emulator: Any = None
        self.runtime: Any = None

    async def __aenter__(self) -> Harness:
        from .runtime import VoiceCallRuntime

        options: dict[str, Any] = {}
        self.overrides["provider"] = self.provider
        if self.provider in EMULATORS:
            self.emulator, overrides = await EMULATORS[self.provider](self.clock, self.chaos)
            self.overrides.update(provider=self.provider, **overrides)
        else:
            from voicecall.providers.mock import MockCarrier

            from .security import load_or_create_mock_secret

            secret = load_or_create_mock_secret(Path(self.overrides["store"]))
            self.emulator = MockCarrier(secret=secret, clock=self.clock, chaos=self.chaos)
            options["api_base_url"] = await self.emulator.start()
        self.runtime = VoiceCallRuntime(self.base.replace(**self.overrides), clock=self.clock,
                                        provider_options=options)
        try:
            await self.runtime.start()
        except BaseException:
            await self._stop_emulator()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        try:
            await self.runtime.stop()
        finally:
            await self._stop_emulator()
            self._tmp.cleanup()

    async def _stop_emulator(self) -> None:
        if self.emulator is not None:
            await self.emulator.stop()

    @property
    def carrier(self) -> Any:
        return self.emulator

    async def run(self, sc: Scenario, flow_name: str | None = None) -> SimulationResult:
        from voicecall.providers.callee import Callee

        runtime, carrier = self.runtime, self.carrier
        callee = Callee.from_script(list(sc.callee))
        started = self.clock.now()
        call_id, sid = await _place(runtime, carrier, sc, flow_name or sc.flow, callee)
        rpc_results = await _drive_rpc(runtime, sc, call_id, started) if call_id else []
        record = await runtime.wait_ended(call_id, timeout=60) if call_id else None
        if sid is not None:
            await carrier.wait_ended(sid, timeout=30)
        events = await runtime.store.events(call_id) if call_id else []
        return _result(record, events, carrier.log(sid) if sid else [], started, rpc_results, runtime)


def _resolve_flow(sc: Scenario) -> tuple[str, list[str]]:
    candidate = (sc.base / sc.flow) if not Path(sc.flow).is_absolute() else Path(sc.flow)
    if sc.flow.endswith((".yaml", ".yml")) or candidate.is_file():
        if not candidate.is_file():
            raise ScenarioError(f"flow file not found: {candidate}")
        from .flows import load_flow_file

        flow = load_flow_file(candidate)
        return flow.name, [str(candidate.parent.resolve())]
    return sc.flow, []


async def _start_twilio(clock: Any, chaos: Any) -> tuple[Any, dict[str, Any]]:
    from voicecall.providers.twilio import TwilioEmulator

    emulator = TwilioEmulator(TEST_TWILIO["accountSid"], TEST_TWILIO["authToken"], clock=clock, chaos=chaos)
    base_url = await emulator.start()
    return emulator, {"twilio": {**TEST_TWILIO, "apiBaseUrl": base_url}, "fromNumber": "+15005550006"}


async def _start_telnyx(clock: Any, chaos: Any) -> tuple[Any, dict[str, Any]]:
    from voicecall.providers.telnyx import TelnyxEmulator

    emulator = TelnyxEmulator("KEY-voicecall-simulation", clock=clock, chaos=chaos)
    await emulator.start()
    return emulator, {"telnyx": emulator.settings(), "fromNumber": "+15550001000"}


async def _start_plivo(clock: Any, chaos: Any) -> tuple[Any, dict[str, Any]]:
    from voicecall.providers.plivo import PlivoEmulator

    emulator = PlivoEmulator(TEST_PLIVO["authId"], TEST_PLIVO["authToken"], clock=clock, chaos=chaos)
    base_url = await emulator.start()
    return emulator, {"plivo": {**TEST_PLIVO, "apiBaseUrl": base_url}, "fromNumber": "+15550000000"}


# Local emulators of real carriers, by provider name: (emulator, settings overrides).
EMULATORS = {"twilio": _start_twilio, "plivo": _start_plivo, "telnyx": _start_telnyx}


async def _place(runtime: Any, carrier: Any, sc: Scenario, flow: str, callee: Any) -> tuple[str, str | None]:
    call = dict(sc.call)
    if call.get("direction") == "inbound":
        caller = str(call.get("from", "+15550002222"))
        dialed = str(call.get("to", runtime.settings.get("fromNumber") or "+15550000000"))
        sid = await carrier.dial_in(caller, dialed, runtime.public_url, callee)
        for _ in range(3000):
            found = next((s for s in runtime.sessions.values() if s.record.provider_call_id == sid), None)
            if found is not None:
                return found.record.call_id, sid
            record = await _refused(runtime, sid)
            if record is not None:
                return "", sid
            await asyncio.sleep(0.005)
        raise ScenarioError("the inbound call never reached the runtime")
    to = str(call.get("to", "+15550001111"))
    carrier.set_callee(to, callee)
    call_id = await runtime.initiate(to=to, message=call.get("message"), mode=call.get("mode"), flow=flow,
                                     vars=call.get("vars"), dtmf_sequence=call.get("dtmfSequence"))
    record = runtime.sessions[call_id].record if call_id in runtime.sessions else await runtime.store.get(call_id)
    return call_id, record.provider_call_id if record else None


async def _refused(runtime: Any, sid: str) -> dict[str, Any] | None:
    rows = await runtime.store.audit_rows("inbound_refused")
    return next((r for r in rows if r.get("data", {}).get("providerCallId") == sid), None)


async def _drive_rpc(runtime: Any, sc: Scenario, call_id: str, started: float) -> list[Any]:
    results: list[Any] = []
    for item in sorted(sc.rpc, key=lambda i: float(i["at"])):
        answered = None
        while answered is None:
            s = runtime.sessions.get(call_id)
            if s is None:
                return results
            answered = s.record.answered_at
            if answered is None:
                await asyncio.sleep(0.005)
        await runtime.clock.sleep(max(0.0, answered + float(item["at"]) - runtime.clock.now()))
        verb = next(v for v in RPC_VERBS if v in item)
        try:
            if verb == "speak":
                out: Any = await runtime.speak(call_id, str(item[verb]))
            elif verb == "continue":
                out = {"transcript": await runtime.continue_(call_id, str(item[verb]))}
            elif verb == "dtmf":
                out = await runtime.dtmf(call_id, str(item[verb]))
            else:
                out = await runtime.end(call_id)
            results.append({verb: out if out is not None else "ok"})
        except VoiceCallError as exc:
            results.append({verb: {"error": getattr(exc, "code", "error"), "message": str(exc)}})
    return results


def _result(record: Any, events: list[dict[str, Any]], log: list[Any], started: float,
            rpc_results: list[Any], runtime: Any) -> SimulationResult:
    timeline: list[tuple[float, str, str]] = []
    for e in events:
        data = e.get("data") or {}
        if e["type"].startswith(("rpc.initiate", "metrics.")):
            continue
        detail = ", ".join(f"{k}={data[k]!r}" for k in ("text", "digits", "reason") if k in data)
        timeline.append((e["at"] - started, "engine", f"{e['type']}{' ' + detail if detail else ''}: "
                                                      f"{data.get('outcome', '')}"))
    documents = []
    for entry in log:
        kind, detail = entry.kind, entry.detail
        if kind == "command":                     # command carriers (Telnyx): one request per step
            documents.append(normalise(detail, runtime))
            timeline.append((entry.at - started, "carrier", f"command {detail.get('name')}"))
        elif kind == "document":
            documents.append(normalise(detail, runtime))
            timeline.append((entry.at - started, "carrier",
                             f"document ({detail.get('source')}): "
                             f"{normalise(describe(detail.get('commands')), runtime)}"))
        elif kind in ("heard", "said", "pressed", "dtmf", "played", "ended", "error", "time-limit"):
            who = "callee" if kind in ("said", "pressed") else "carrier"
            timeline.append((entry.at - started, who, f"{kind} {detail!r}"))
    timeline.sort(key=lambda item: item[0])
    public = record.to_public() if record is not None else {
        "callId": "", "state": "refused", "endReason": "rejected", "turnCount": 0, "transcript": []}
    return SimulationResult(public, timeline, documents, rpc_results)


_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_TOKEN = re.compile(r"token=[A-Za-z0-9_-]+")
# Values that differ on every run: turn tokens, Telnyx command ids and client state.
VOLATILE_KEYS = frozenset({"token", "command_id", "client_state"})


def normalise(value: Any, runtime: Any) -> Any:
    """Replace what differs run to run (ids, ports, tokens) with stable markers."""
    if isinstance(value, dict):
        return {k: (f"<{k}>" if k in VOLATILE_KEYS else normalise(v, runtime)) for k, v in value.items()
                if k != "source"}
    if isinstance(value, list):
        return [normalise(v, runtime) for v in value]
    if isinstance(value, str):
        value = value.replace(runtime.public_url, "<webhook>")
        return _TOKEN.sub("token=<token>", _UUID.sub("<callId>", value))
    return value


def describe(commands: Any) -> str:
    """One line for a document: ``say 'Hi' | gather speech | redirect resume``."""
    if isinstance(commands, str):
        return " ".join(commands.split())
    parts = []
    for command in commands or ():
        ((kind, params),) = command.items() if isinstance(command, dict) and len(command) == 1 else (("?", {}),)
        if kind == "say":
            parts.append(f"say {params.get('text')!r}")
        elif kind == "gather":
            prompt = " ".join(repr(p["say"]["text"]) for p in params.get("prompt", ()) if "say" in p)
            parts.append(f"gather {params.get('input')}" + (f" ({prompt})" if prompt else ""))
        elif kind == "redirect":
            url = str(params.get("url", ""))
            parts.append("redirect " + (url.rsplit("type=", 1)[-1].split("&")[0] if "type=" in url else url))
        elif kind == "pause":
            parts.append(f"pause {params.get('seconds')}s")
        else:
            parts.append(" ".join([kind, *(str(v) for v in params.values())]).strip())
    return " | ".join(parts)
