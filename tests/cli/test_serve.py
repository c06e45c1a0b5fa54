"""``voicecall serve`` as a real subprocess: start-up lines, SIGTERM, the store
lock, a taken port, and a live call that survives a restart."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import subprocess
import time
from pathlib import Path

from voicecall.engine.client import ControlClient
from voicecall.engine.config import load_settings
from voicecall.engine.store import StoreReader, acquire_runtime_lock

from .conftest import VOICECALL, Serve, free_port, write_config

PORT = r"(\d+)"


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


def _rpc(config: str, method: str, params: dict[str, object]) -> object:
    return asyncio.run(ControlClient(load_settings(config), timeout=10).call(method, params))


def test_sigterm_mid_call_then_restart_loses_no_call(tmp_path: Path, serves: list[Serve]) -> None:
    config = mock_config(tmp_path, control_port=free_port())
    first = Serve(config)
    serves.append(first)
    first.wait_for("ready;")
    call_id = _rpc(config, "voicecall.initiate", {"to": "+15550002222", "message": "Hello there",
                                                  "mode": "conversation"})["callId"]  # type: ignore[index]
    deadline = time.monotonic() + 15
    while _rpc(config, "voicecall.status", {"callId": call_id})["state"] != "listening":  # type: ignore[index]
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
    assert second.terminate() == 0
    assert second.lines[-1] == "stopped; 1 live call kept in the store"

    # With no serve running, status reads the store and still has the call.
    offline = subprocess.run([VOICECALL, "status", "--json", "--call-id", call_id, "--config", config],
                             capture_output=True, text=True, timeout=30)
    assert offline.returncode == 0, offline.stderr
    doc = json.loads(offline.stdout)
    assert (doc["callId"], doc["state"], doc["terminal"], doc["answeredAt"] is not None) == \
        (call_id, "listening", False, True)
