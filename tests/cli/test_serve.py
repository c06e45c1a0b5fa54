"""``voicecall serve`` as a real subprocess: start-up lines, SIGTERM, the store
lock, a taken port, and a live call that survives a restart."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from voicecall.engine.client import ControlClient
from voicecall.engine.config import load_settings
from voicecall.engine.store import StoreReader, acquire_runtime_lock

from .conftest import VOICECALL, Serve, free_port, write_config

PORT = r"(\d+)"
SID = "AC" + "0" * 32
TOKEN = "0123456789abcdef0123456789abcdef"


def mock_config(tmp_path: Path, *, serve_port: int = 0, control_port: int = 0, extra: str = "") -> str:
    return write_config(tmp_path / "voicecall.yaml", (
        "provider: mock\n"
        f"serve: {{port: {serve_port}}}\n"
        f"control: {{port: {control_port}}}\n"
        f"store: {tmp_path / 'store'}\n" + extra))


def test_start_up_lines_then_sigterm_exits_0_and_releases_the_lock(tmp_path: Path, serves: list[Serve]) -> None:
    config = mock_config(tmp_path)
    serve = Serve(config)
    serves.append(serve)
    serve.wait_for("ready;")
    lines = [ln for ln in serve.lines if "INFO" not in ln]
    store = tmp_path / "store"
    webhook = re.fullmatch(rf"webhook listener: http://127\.0\.0\.1:{PORT}/voice/webhook", lines[1])
    control = re.fullmatch(rf"control listener: http://127\.0\.0\.1:{PORT}/rpc", lines[2])
    assert webhook and control, lines
    port = webhook.group(1)
    assert port != "0" and control.group(1) not in ("0", port)
    assert lines == [
        "voicecall serve: provider mock",
        f"webhook listener: http://127.0.0.1:{port}/voice/webhook",
        f"control listener: http://127.0.0.1:{control.group(1)}/rpc",
        f"public webhook URL (give this to the carrier): http://127.0.0.1:{port}/voice/webhook",
        f"inbound status callback URL: http://127.0.0.1:{port}/voice/webhook?type=status",
        f"store: {store}",
        "ready; stop with Ctrl+C (SIGINT) or SIGTERM",
    ]
    # The listeners really are up.
    with socket.create_connection(("127.0.0.1", int(port)), timeout=5):
        pass
    assert serve.terminate() == 0
    assert serve.lines[-2:] == ["stopping: draining in-flight webhooks and turns",
                                "stopped; 0 live calls kept in the store"]
    assert not any("Traceback" in ln for ln in serve.lines)
    acquire_runtime_lock(store).release()   # released: a new runtime may take it


def test_warnings_are_printed_loudly(tmp_path: Path, serves: list[Serve]) -> None:
    config = mock_config(tmp_path, extra="skipSignatureVerification: true\n")
    serve = Serve(config)
    serves.append(serve)
    serve.wait_for("ready;")
    assert f"{config}:5: $.skipSignatureVerification: warning: webhook signatures are not checked; anyone " \
           "who finds the URL can forge carrier events (local testing only)" in serve.lines
    assert serve.line("WARNING: ") == (
        "WARNING: skipSignatureVerification is on: webhook signatures are NOT checked and anyone who "
        "finds the URL can forge carrier events. Local testing only.")
    assert serve.terminate() == 0


def test_second_runtime_on_the_same_store_refuses_naming_the_holder(tmp_path: Path, serves: list[Serve]) -> None:
    config = mock_config(tmp_path)
    first = Serve(config)
    serves.append(first)
    first.wait_for("ready;")
    second = subprocess.run([VOICECALL, "serve", "--config", config], capture_output=True, text=True, timeout=30)
    assert second.returncode == 1
    assert second.stdout == ""
    lock = tmp_path / "store" / "runtime.lock"
    assert re.fullmatch(rf"Error: another runtime \(pid {first.proc.pid} on \S+, started "
                        rf"\d{{4}}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{{3}}Z\) holds {re.escape(str(lock))}\n",
                        second.stderr), second.stderr
    assert first.terminate() == 0


def test_a_taken_port_is_one_line_without_a_traceback(tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        config = mock_config(tmp_path, serve_port=port)
        result = subprocess.run([VOICECALL, "serve", "--config", config], capture_output=True, text=True,
                                timeout=30)
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr == (f"Error: port {port} on 127.0.0.1 is already in use (another voicecall serve? "
                             f"check with: lsof -i :{port})\n")
    acquire_runtime_lock(tmp_path / "store").release()   # the failed start let go of the store


def test_a_taken_control_port_names_the_control_port(tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        config = mock_config(tmp_path, control_port=port)
        result = subprocess.run([VOICECALL, "serve", "--config", config], capture_output=True, text=True,
                                timeout=30)
    assert result.returncode == 1
    assert result.stderr.splitlines()[-1] == (f"Error: port {port} on 127.0.0.1 is already in use (another "
                                              f"voicecall serve? check with: lsof -i :{port})")
    assert "Traceback" not in result.stderr


def test_bad_config_prints_problems_and_exits_1(tmp_path: Path) -> None:
    config = write_config(tmp_path / "bad.yaml", "provider: mock\nserve: {port: 99999}\n")
    result = subprocess.run([VOICECALL, "serve", "--config", config], capture_output=True, text=True, timeout=30)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"{config}:2: $.serve.port: must be at most 65535, got 99999",
        "Error: the config has 1 problem",
    ]


def test_real_carrier_with_a_loopback_public_url_refuses_to_start(tmp_path: Path) -> None:
    config = write_config(tmp_path / "voicecall.yaml", (
        "provider: twilio\nfromNumber: '+15550001111'\n"
        "twilio: {accountSid: ACxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx, authToken: secret-token}\n"
        "staleCallReaperSeconds: 120\n"
        f"store: {tmp_path / 'store'}\n"))
    result = subprocess.run([VOICECALL, "serve", "--config", config], capture_output=True, text=True, timeout=30)
    assert result.returncode == 1
    assert result.stderr == (
        "Error: the public webhook URL http://127.0.0.1:3334/voice/webhook is in loopback address space, "
        "which twilio cannot reach; set publicUrl, or tunnel.provider ngrok or tailscale-funnel\n")


def _rpc(config: str, method: str, params: dict[str, object]) -> Any:
    return asyncio.run(ControlClient(load_settings(config), timeout=10).call(method, params))


class EmulatorThread:
    """A Twilio emulator on its own event loop and thread: a carrier that
    outlives the ``serve`` processes of a test, as a real one does."""

    def __init__(self) -> None:
        from voicecall.providers.twilio.emulator import TwilioEmulator

        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

        async def make() -> tuple[TwilioEmulator, str]:
            emulator = TwilioEmulator(SID, TOKEN)
            return emulator, await emulator.start()

        self.emulator, self.base_url = self.run(make())

    def run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(20)

    def close(self) -> None:
        self.run(self.emulator.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(20)
        self.loop.close()


@pytest.fixture
def carrier() -> Iterator[EmulatorThread]:
    emulator = EmulatorThread()
    yield emulator
    emulator.close()


def test_sigterm_mid_call_then_restart_loses_no_call(tmp_path: Path, carrier: EmulatorThread,
                                                     serves: list[Serve]) -> None:
    # A fixed webhook port: the carrier keeps calling the URLs it was given.
    config = write_config(tmp_path / "voicecall.yaml", (
        f"provider: twilio\nfromNumber: '+15005550006'\nstaleCallReaperSeconds: 120\n"
        f"twilio: {{accountSid: {SID}, authToken: {TOKEN}, apiBaseUrl: '{carrier.base_url}'}}\n"
        f"serve: {{port: {free_port()}}}\ncontrol: {{port: {free_port()}}}\nstore: {tmp_path / 'store'}\n"))
    first = Serve(config)
    serves.append(first)
    first.wait_for("ready;")
    call_id = _rpc(config, "voicecall.initiate", {"to": "+15550002222", "message": "Hello there",
                                                  "mode": "conversation"})["callId"]
    deadline = time.monotonic() + 15
    while _rpc(config, "voicecall.status", {"callId": call_id})["state"] != "listening":
        assert time.monotonic() < deadline, "the call never reached listening"
        time.sleep(0.05)
    assert first.terminate() == 0
    assert first.lines[-1] == "stopped; 1 live call kept in the store"

    reader = StoreReader(tmp_path / "store")
    record = reader.get(call_id)
    reader.close()
    assert record is not None and record.state == "listening" and not record.terminal
    assert [t.text for t in record.transcript] == ["Hello there"]

    second = Serve(config)
    serves.append(second)
    second.wait_for("ready;")
    assert "restored 1 live call" in second.lines
    shown = subprocess.run([VOICECALL, "status", "--json", "--config", config], capture_output=True,
                           text=True, timeout=30)
    assert shown.returncode == 0, shown.stderr
    calls = json.loads(shown.stdout)["calls"]
    assert [(c["callId"], c["state"], c["terminal"]) for c in calls] == [(call_id, "listening", False)]
    (emu_call,) = carrier.emulator.calls.values()
    assert emu_call.status == "in-progress"      # the carrier kept the call while serve was down
    # The restored call is still driven: ending it goes through the carrier.
    _rpc(config, "voicecall.end", {"callId": call_id})
    deadline = time.monotonic() + 15
    while not (ended := _rpc(config, "voicecall.status", {"callId": call_id}))["terminal"]:
        assert time.monotonic() < deadline, "the call never ended"
        time.sleep(0.05)
    assert ended["state"] == "hangup-bot"
    assert emu_call.status == "completed"
    assert second.terminate() == 0
    assert second.lines[-1] == "stopped; 0 live calls kept in the store"

    offline = subprocess.run([VOICECALL, "status", "--json", "--call-id", call_id, "--config", config],
                             capture_output=True, text=True, timeout=30)
    assert offline.returncode == 0, offline.stderr
    doc = json.loads(offline.stdout)
    assert (doc["callId"], doc["state"], doc["terminal"], doc["endReason"]) == \
        (call_id, "hangup-bot", True, "hangup-bot")
    assert [t["text"] for t in doc["transcript"]] == ["Hello there"]


def test_a_bind_address_not_on_this_machine(tmp_path: Path) -> None:
    config = write_config(tmp_path / "voicecall.yaml", (
        f"provider: mock\nserve: {{port: 0, bind: 192.0.2.1}}\ncontrol: {{port: 0}}\nstore: {tmp_path / 'store'}\n"))
    result = subprocess.run([VOICECALL, "serve", "--config", config], capture_output=True, text=True, timeout=30)
    assert (result.returncode, result.stderr) == (1, (
        "Error: cannot listen on 192.0.2.1: that address does not belong to this machine; check serve.bind\n"))


def test_public_url_wins_over_a_tunnel_and_says_so(tmp_path: Path, serves: list[Serve]) -> None:
    config = mock_config(tmp_path, extra="publicUrl: https://voice.example.com/voice/webhook\n"
                                         "tunnel: {provider: ngrok}\n")
    serve = Serve(config)
    serves.append(serve)
    serve.wait_for("ready;")
    assert serve.line("tunnel: ") == "tunnel: ngrok not started: publicUrl is set and takes precedence"
    assert serve.line("public webhook URL") == (
        "public webhook URL (give this to the carrier): https://voice.example.com/voice/webhook")
    assert serve.terminate() == 0


def test_status_and_smoke_go_through_a_running_serve(tmp_path: Path, serves: list[Serve]) -> None:
    port = free_port()
    config = write_config(tmp_path / "voicecall.yaml", (
        f"provider: mock\nserve: {{port: 0}}\ncontrol: {{port: {port}, token: right-token}}\n"
        f"store: {tmp_path / 'store'}\noutbound: {{notifyHangupDelaySec: 0}}\n"))
    serve = Serve(config)
    serves.append(serve)
    serve.wait_for("ready;")
    placed = subprocess.run([VOICECALL, "smoke", "--to", "+15550003333", "--yes", "--json", "--config", config],
                            capture_output=True, text=True, timeout=30)
    assert placed.returncode == 0, placed.stderr
    doc = json.loads(placed.stdout)
    assert (doc["dryRun"], doc["result"]) == (False, None)   # the call goes on inside serve
    # The store is locked by serve, so this answer can only come from serve itself.
    shown = subprocess.run([VOICECALL, "status", "--call-id", doc["callId"], "--json", "--config", config],
                           capture_output=True, text=True, timeout=30)
    assert json.loads(shown.stdout)["to"] == "+15550003333"

    wrong = write_config(tmp_path / "wrong.yaml", Path(config).read_text().replace("right-token", "wrong-token"))
    refused = subprocess.run([VOICECALL, "status", "--config", wrong], capture_output=True, text=True, timeout=30)
    assert (refused.returncode, refused.stdout) == (1, "")
    assert refused.stderr == (
        f"Error: the control listener at 127.0.0.1:{port} refused our token (HTTP 401); use the token of the "
        "running `voicecall serve` (control.token in the config)\n")
    assert serve.terminate() == 0
