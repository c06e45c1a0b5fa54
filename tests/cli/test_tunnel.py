"""Tunnels: the ngrok agent and Tailscale serve/funnel, started and stopped by
``serve`` and by ``engine.tunnel`` directly, with stand-in executables."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from voicecall.engine.config import default_settings
from voicecall.engine.tunnel import TunnelError, start_ngrok, start_tunnel

from .conftest import Serve, stand_in, write_config

NGROK_URL_LINE = '{"lvl":"info","msg":"started tunnel","obj":"tunnels","url":"https://ab12.ngrok.app"}'


def ngrok(bin_dir: Path, log: Path, body: str) -> None:
    stand_in(bin_dir, "ngrok", f'echo "$@" > {log}.args\necho $$ > {log}.pid\n{body}')


def gone(pid_file: Path) -> bool:
    try:
        os.kill(int(pid_file.read_text()), 0)
    except ProcessLookupError:
        return True
    return False


def test_serve_starts_ngrok_adopts_its_url_and_stops_it(tmp_path: Path, bin_dir: Path,
                                                        serves: list[Serve]) -> None:
    log = tmp_path / "ngrok"
    ngrok(bin_dir, log, f"echo '{NGROK_URL_LINE}'\nexec sleep 60\n")
    config = write_config(tmp_path / "v.yaml", (
        f"provider: mock\nserve: {{port: 0}}\ncontrol: {{port: 0}}\nstore: {tmp_path / 'store'}\n"
        "tunnel: {provider: ngrok}\n"))
    serve = Serve(config)
    serves.append(serve)
    serve.wait_for("ready;")
    assert serve.line("tunnel: ") == "tunnel: ngrok -> https://ab12.ngrok.app/voice/webhook"
    assert serve.line("public webhook URL") == (
        "public webhook URL (give this to the carrier): https://ab12.ngrok.app/voice/webhook")
    assert serve.line("inbound status callback URL") == (
        "inbound status callback URL: https://ab12.ngrok.app/voice/webhook?type=status")
    port = serve.line("webhook listener: ").rsplit(":", 1)[1].split("/")[0]
    assert Path(f"{log}.args").read_text() == f"http {port} --log stdout --log-format json\n"
    assert not gone(Path(f"{log}.pid"))
    assert serve.terminate() == 0
    assert gone(Path(f"{log}.pid"))


def test_serve_switches_tailscale_funnel_on_and_off(tmp_path: Path, bin_dir: Path, serves: list[Serve]) -> None:
    log = tmp_path / "tailscale.log"
    stand_in(bin_dir, "tailscale", f"""echo "$@" >> {log}
[ "$1" = status ] && echo '{{"Self": {{"DNSName": "box.example.ts.net."}}}}'
exit 0
""")
    config = write_config(tmp_path / "v.yaml", (
        f"provider: mock\nserve: {{port: 0}}\ncontrol: {{port: 0}}\nstore: {tmp_path / 'store'}\n"
        "tunnel: {provider: tailscale-funnel}\n"))
    serve = Serve(config)
    serves.append(serve)
    serve.wait_for("ready;")
    assert serve.line("public webhook URL") == (
        "public webhook URL (give this to the carrier): https://box.example.ts.net/voice/webhook")
    port = serve.line("webhook listener: ").rsplit(":", 1)[1].split("/")[0]
    assert serve.terminate() == 0
    assert log.read_text().splitlines() == [
        "status --json",
        f"funnel --bg --yes --set-path /voice/webhook http://127.0.0.1:{port}/voice/webhook",
        "funnel --yes --set-path /voice/webhook off"]


def test_serve_without_the_ngrok_cli_says_what_to_install(tmp_path: Path, bin_dir: Path,
                                                          serves: list[Serve]) -> None:
    config = write_config(tmp_path / "v.yaml", (
        f"provider: mock\nstore: {tmp_path / 'store'}\ntunnel: {{provider: ngrok}}\n"))
    serve = Serve(config)
    serves.append(serve)
    assert serve.finish() == 1
    assert serve.lines == ["Error: the ngrok CLI is not installed (https://ngrok.com/download)"]


async def test_ngrok_that_exits_reports_its_error(tmp_path: Path, bin_dir: Path) -> None:
    ngrok(bin_dir, tmp_path / "ngrok", """echo '{"lvl":"eror","msg":"session closed","err":"authentication failed: \
Your authtoken is invalid"}'
exit 1
""")
    with pytest.raises(TunnelError) as caught:
        await start_ngrok(3334, "/voice/webhook", authtoken="bad")
    assert str(caught.value) == ("ngrok exited (code 1) before reporting a public URL: authentication failed: "
                                 "Your authtoken is invalid")


async def test_ngrok_that_never_reports_a_url_times_out_and_is_stopped(tmp_path: Path, bin_dir: Path) -> None:
    log = tmp_path / "ngrok"
    ngrok(bin_dir, log, "echo '{\"lvl\":\"info\",\"msg\":\"waiting\"}'\nexec sleep 60\n")
    with pytest.raises(TunnelError) as caught:
        await start_ngrok(3334, "/voice/webhook", timeout_s=0.5)
    assert str(caught.value) == "ngrok did not report a public URL within 0.5 s"
    assert gone(Path(f"{log}.pid"))


async def test_start_tunnel_is_none_without_a_tunnel_or_with_public_url(bin_dir: Path) -> None:
    assert await start_tunnel(default_settings(), 3334) is None
    with_url = default_settings(publicUrl="https://v.example.com/voice/webhook", tunnel={"provider": "ngrok"})
    assert await start_tunnel(with_url, 3334) is None   # publicUrl wins; nothing is started


def test_sigterm_while_waiting_for_ngrok_stops_it(tmp_path: Path, bin_dir: Path, serves: list[Serve]) -> None:
    log = tmp_path / "ngrok"
    ngrok(bin_dir, log, "exec sleep 60\n")
    config = write_config(tmp_path / "v.yaml", (
        f"provider: mock\nserve: {{port: 0}}\ncontrol: {{port: 0}}\nstore: {tmp_path / 'store'}\n"
        "tunnel: {provider: ngrok}\n"))
    serve = Serve(config)
    serves.append(serve)
    pid_file = Path(f"{log}.pid")
    deadline = time.monotonic() + 20
    while not (pid_file.exists() and pid_file.read_text().strip()):
        assert time.monotonic() < deadline, "ngrok was never started"
        time.sleep(0.02)
    assert serve.terminate() == 1
    assert serve.lines == ["Error: interrupted during start-up"]
    assert gone(pid_file)
