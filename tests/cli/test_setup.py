"""Readiness rules, ``setup``, ``smoke`` and ``expose`` (with stand-in
``tailscale`` / ``ngrok`` executables first on PATH)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from voicecall.engine.cli import cli
from voicecall.engine.config import Settings, deep_merge, default_settings
from voicecall.engine.readiness import CHECK_NAMES, exposure, public_url_problem, run_checks

from .conftest import free_port, stand_in, write_config

TWILIO: dict[str, Any] = {"provider": "twilio", "fromNumber": "+15550001111", "staleCallReaperSeconds": 120,
                          "twilio": {"accountSid": "AC" + "0" * 32, "authToken": "tok-secret"}}
LOOPBACK = "http://127.0.0.1:3334/voice/webhook"
UNREACHABLE = ("the public webhook URL {url} is in {space} address space, which twilio cannot reach; "
               "set publicUrl, or tunnel.provider ngrok or tailscale-funnel")
TAILNET_ONLY = ("Tailscale serve is reachable only inside your tailnet, so twilio cannot reach the webhook; "
                "use tunnel.provider tailscale-funnel or ngrok, or set publicUrl")


def twilio(**over: Any) -> Settings:
    return default_settings(**deep_merge(TWILIO, over))


@pytest.mark.parametrize(("settings", "url", "problem"), [
    (twilio(), LOOPBACK, UNREACHABLE.format(url=LOOPBACK, space="loopback")),
    (twilio(), "http://localhost:3334/voice/webhook",
     UNREACHABLE.format(url="http://localhost:3334/voice/webhook", space="loopback")),
    (twilio(), "http://192.168.1.20/voice/webhook",
     UNREACHABLE.format(url="http://192.168.1.20/voice/webhook", space="private")),
    (twilio(), "https://[fd00::1]/voice/webhook",
     UNREACHABLE.format(url="https://[fd00::1]/voice/webhook", space="private")),
    (twilio(), "https://voice.example.com/voice/webhook", None),
    (twilio(), "ftp://voice.example.com/hook", "the public webhook URL 'ftp://voice.example.com/hook' is not an "
                                               "http(s) URL"),
    # A carrier that is itself on loopback (a local emulator) can reach a loopback webhook.
    (twilio(twilio={"apiBaseUrl": "http://127.0.0.1:9900"}), LOOPBACK, None),
    (twilio(twilio={"apiBaseUrl": "http://10.0.0.5:9900"}), "http://192.168.1.20/voice/webhook", None),
    (twilio(twilio={"apiBaseUrl": "https://api.example.com"}), LOOPBACK, UNREACHABLE.format(url=LOOPBACK,
                                                                                            space="loopback")),
    (default_settings(), LOOPBACK, None),
    (default_settings(), "http://10.1.2.3/x", None),
    (twilio(tunnel={"provider": "tailscale-serve"}), "https://node.example.ts.net/voice/webhook", TAILNET_ONLY),
    (twilio(tailscale={"mode": "serve"}), "https://node.example.ts.net/voice/webhook", TAILNET_ONLY),
    (twilio(tunnel={"provider": "tailscale-funnel"}), "https://node.example.ts.net/voice/webhook", None),
    (default_settings(tunnel={"provider": "tailscale-serve"}), "https://node.example.ts.net/x", None),
])
def test_public_url_rules(settings: Settings, url: str, problem: str | None) -> None:
    assert public_url_problem(settings, url) == problem


@pytest.mark.parametrize(("over", "how"), [
    ({}, "local"),
    ({"publicUrl": "https://v.example.com/voice/webhook", "tunnel": {"provider": "ngrok"}}, "publicUrl"),
    ({"tunnel": {"provider": "ngrok"}}, "ngrok"),
    ({"tailscale": {"mode": "funnel"}}, "tailscale-funnel"),
    ({"tunnel": {"provider": "tailscale-serve"}, "tailscale": {"mode": "serve"}}, "tailscale-serve"),
])
def test_exposure_precedence(over: dict[str, Any], how: str) -> None:
    assert exposure(default_settings(**over)) == how


def test_checks_for_the_mock_defaults() -> None:
    checks = run_checks(default_settings())
    assert tuple(c.name for c in checks) == CHECK_NAMES
    assert [(c.ok, c.detail) for c in checks] == [
        (True, "<built-in defaults> (provider mock)"),
        (True, "mock carrier: no credentials needed"),
        (True, f"{LOOPBACK} from serve (no publicUrl or tunnel); inbound status callback: {LOOPBACK}?type=status"),
        (True, "carrier voice and speech recognition (no media stream)"),
        (True, "4 flows: conversation, inbound_greeting, notify, reaper"),
        (True, "stale-call reaping is off; calls end after 300 s"),
    ]


def test_checks_for_twilio_without_a_public_url(bin_dir: Path) -> None:
    by_name = {c.name: c for c in run_checks(twilio(staleCallReaperSeconds=0))}
    assert by_name["provider-credentials"].detail == "twilio: accountSid, authToken set; calls from +15550001111"
    assert "tok-secret" not in json.dumps([c.as_json() for c in by_name.values()])
    assert not by_name["webhook-exposure"].ok
    assert by_name["webhook-exposure"].detail == UNREACHABLE.format(url=LOOPBACK, space="loopback")
    assert (by_name["reaper"].ok, by_name["reaper"].detail) == (
        True, "stale-call reaping is off (120-300 recommended); calls end after 300 s")
    serve_only = {c.name: c for c in run_checks(twilio(tunnel={"provider": "tailscale-serve"}))}
    assert (serve_only["webhook-exposure"].ok, serve_only["webhook-exposure"].detail) == (False, TAILNET_ONLY)
    ngrok = {c.name: c for c in run_checks(twilio(tunnel={"provider": "ngrok"}))}
    assert (ngrok["webhook-exposure"].ok, ngrok["webhook-exposure"].detail) == (
        False, "tunnel ngrok needs the ngrok CLI, which is not installed (https://ngrok.com/download)")
    stand_in(bin_dir, "ngrok", "exit 0\n")
    ngrok = {c.name: c for c in run_checks(twilio(tunnel={"provider": "ngrok", "ngrokAuthToken": "t0k3n"}))}
    assert (ngrok["webhook-exposure"].ok, ngrok["webhook-exposure"].detail) == (
        True, "ngrok tunnel started by serve; its URL is printed at start")


# ---------------------------------------------------------------- setup / smoke

def mock_config(tmp_path: Path, extra: str = "") -> str:
    return write_config(tmp_path / "voicecall.yaml", (
        f"provider: mock\nserve: {{port: 0}}\ncontrol: {{port: {free_port()}}}\n"
        f"store: {tmp_path / 'store'}\noutbound: {{notifyHangupDelaySec: 0}}\n{extra}"))


def twilio_config(tmp_path: Path) -> str:
    return write_config(tmp_path / "twilio.yaml", (
        "provider: twilio\nfromNumber: '+15550001111'\nstaleCallReaperSeconds: 120\n"
        "twilio: {accountSid: AC00000000000000000000000000000000, authToken: tok-secret}\n"
        f"store: {tmp_path / 'store'}\n"))


def invoke(*args: str) -> Any:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_setup_prints_a_line_per_check(tmp_path: Path) -> None:
    config = mock_config(tmp_path)
    result = invoke("setup", "--config", config)
    assert result.exit_code == 0
    url = "http://127.0.0.1:0/voice/webhook"
    assert result.stdout == (
        f"✓ config: {config} (provider mock)\n"
        "✓ provider-credentials: mock carrier: no credentials needed\n"
        f"✓ webhook-exposure: {url} from serve (no publicUrl or tunnel); inbound status callback: {url}?type=status\n"
        "✓ audio-mode: carrier voice and speech recognition (no media stream)\n"
        "✓ flows: 4 flows: conversation, inbound_greeting, notify, reaper\n"
        "✓ reaper: stale-call reaping is off; calls end after 300 s\n")


def test_setup_fails_for_a_real_carrier_on_loopback(tmp_path: Path) -> None:
    config = twilio_config(tmp_path)
    result = invoke("setup", "--config", config)
    assert result.exit_code == 1
    assert f"✗ webhook-exposure: {UNREACHABLE.format(url=LOOPBACK, space='loopback')}\n" in result.stdout
    as_json = invoke("setup", "--json", "--config", config)
    assert as_json.exit_code == 1
    doc = json.loads(as_json.stdout)
    assert doc["ok"] is False
    assert [(c["name"], c["ok"]) for c in doc["checks"]] == [
        ("config", True), ("provider-credentials", True), ("webhook-exposure", False), ("audio-mode", True),
        ("flows", True), ("reaper", True)]
    assert set(doc["checks"][0]) == {"name", "ok", "detail"}


def test_setup_json_passes_with_a_public_url(tmp_path: Path) -> None:
    config = twilio_config(tmp_path)
    with open(config, "a", encoding="utf-8") as handle:
        handle.write("publicUrl: https://voice.example.com/voice/webhook\n")
    doc = json.loads(invoke("setup", "--json", "--config", config).stdout)
    assert doc["ok"] is True
    assert doc["checks"][2] == {
        "name": "webhook-exposure", "ok": True,
        "detail": "https://voice.example.com/voice/webhook from publicUrl; inbound status callback: "
                  "https://voice.example.com/voice/webhook?type=status"}


def test_setup_with_a_missing_config_file(tmp_path: Path) -> None:
    result = invoke("setup", "--json", "--config", str(tmp_path / "nope.yaml"))
    assert result.exit_code == 1
    assert json.loads(result.stdout) == {"error": {"code": "config_unreadable",
                                                   "message": f"config file not found: {tmp_path / 'nope.yaml'}"}}
    assert result.stderr == f"Error: config file not found: {tmp_path / 'nope.yaml'}\n"


def test_smoke_is_a_dry_run_without_to_and_yes(tmp_path: Path) -> None:
    config = mock_config(tmp_path)
    plain = invoke("smoke", "--config", config)
    assert plain.exit_code == 0
    assert plain.stdout.splitlines()[-1] == "Dry run: no call placed. Pass --to PHONE --yes to place a real call."
    to_only = invoke("smoke", "--to", "+15550002222", "--config", config)
    assert to_only.stdout.splitlines()[-1] == (
        "Dry run: would place a notify call to +15550002222 saying 'voicecall smoke test.'. Add --yes to place it.")
    doc = json.loads(invoke("smoke", "-t", "+15550002222", "--mode", "conversation", "--json",
                            "--config", config).stdout)
    assert {k: v for k, v in doc.items() if k != "checks"} == {
        "ok": True, "dryRun": True, "to": "+15550002222", "mode": "conversation",
        "message": "voicecall smoke test.", "callId": None}
    assert not (tmp_path / "store" / "calls.sqlite3").exists()   # nothing was placed


def test_smoke_refuses_when_checks_fail(tmp_path: Path) -> None:
    result = invoke("smoke", "--to", "+15550002222", "--yes", "--config", twilio_config(tmp_path))
    assert result.exit_code == 1
    assert result.stderr == "Error: readiness checks failed; no call placed\n"


def test_smoke_with_to_and_yes_places_a_real_call(tmp_path: Path) -> None:
    config = mock_config(tmp_path)
    result = invoke("smoke", "--to", "+15550002222", "--yes", "--json", "--config", config)
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["dryRun"] is False and doc["result"] == "hangup-bot"
    shown = json.loads(invoke("status", "--call-id", doc["callId"], "--json", "--config", config).stdout)
    assert (shown["to"], shown["mode"], shown["state"]) == ("+15550002222", "notify", "hangup-bot")
    assert [t["text"] for t in shown["transcript"]] == ["voicecall smoke test."]


def test_smoke_rejects_a_bad_number_without_a_traceback(tmp_path: Path) -> None:
    result = invoke("smoke", "--to", "12", "--yes", "--config", mock_config(tmp_path))
    assert result.exit_code == 1
    assert result.stderr.splitlines()[-1] == "Error: 'to' must be an E.164 number like +15550001234, got '12'"


# ---------------------------------------------------------------- expose

def tailscale(bin_dir: Path, log: Path, fail_with: str = "") -> None:
    failure = f'echo "{fail_with}" >&2; exit 1' if fail_with else "exit 0"
    stand_in(bin_dir, "tailscale", f"""echo "$@" >> {log}
case "$1" in
  status) echo '{{"BackendState": "Running", "Self": {{"DNSName": "node.example.ts.net."}}}}' ;;
  serve|funnel) {failure} ;;
esac
""")


def test_expose_funnel_drives_tailscale(tmp_path: Path, bin_dir: Path) -> None:
    log = tmp_path / "tailscale.log"
    tailscale(bin_dir, log)
    config = write_config(tmp_path / "v.yaml", f"provider: mock\nstore: {tmp_path / 'store'}\n")
    result = invoke("expose", "--config", config)
    assert (result.exit_code, result.stdout) == (0, (
        "Tailscale funnel is on (the internet): https://node.example.ts.net/voice/webhook -> "
        "http://127.0.0.1:3334/voice/webhook\n"))
    assert log.read_text().splitlines() == [
        "status --json",
        "funnel --bg --yes --set-path /voice/webhook http://127.0.0.1:3334/voice/webhook"]


def test_expose_serve_with_paths_and_port_as_json(tmp_path: Path, bin_dir: Path) -> None:
    log = tmp_path / "tailscale.log"
    tailscale(bin_dir, log)
    config = write_config(tmp_path / "v.yaml", f"provider: mock\nstore: {tmp_path / 'store'}\n")
    result = invoke("expose", "--mode", "serve", "--path", "/hooks/voice", "--port", "4100",
                    "--serve-path", "/vc", "--json", "--config", config)
    assert result.exit_code == 0
    assert json.loads(result.stdout) == {"ok": True, "mode": "serve", "path": "/hooks/voice",
                                         "publicUrl": "https://node.example.ts.net/hooks/voice",
                                         "target": "http://127.0.0.1:4100/vc"}
    assert log.read_text().splitlines()[-1] == "serve --bg --yes --set-path /hooks/voice http://127.0.0.1:4100/vc"


def test_expose_off_and_a_non_default_https_port(tmp_path: Path, bin_dir: Path) -> None:
    log = tmp_path / "tailscale.log"
    tailscale(bin_dir, log)
    config = write_config(tmp_path / "v.yaml", (
        f"provider: mock\nstore: {tmp_path / 'store'}\ntailscale: {{mode: funnel, port: 8443, path: /pub}}\n"))
    off = invoke("expose", "--mode", "off", "--config", config)
    assert (off.exit_code, off.stdout) == (0, "Tailscale funnel is off for /pub\n")
    on = invoke("expose", "--mode", "funnel", "--config", config)
    assert on.stdout == ("Tailscale funnel is on (the internet): https://node.example.ts.net:8443/pub -> "
                         "http://127.0.0.1:3334/voice/webhook\n")
    assert log.read_text().splitlines() == [
        "funnel --yes --https=8443 --set-path /pub off",
        "status --json",
        "funnel --bg --yes --https=8443 --set-path /pub http://127.0.0.1:3334/voice/webhook"]


def test_expose_without_tailscale_says_what_to_install(tmp_path: Path, bin_dir: Path) -> None:
    config = write_config(tmp_path / "v.yaml", f"provider: mock\nstore: {tmp_path / 'store'}\n")
    result = invoke("expose", "--mode", "serve", "--config", config)
    assert (result.exit_code, result.stdout, result.stderr) == (
        1, "", "Error: the tailscale CLI is not installed (https://tailscale.com/download)\n")
    as_json = invoke("expose", "--json", "--config", config)
    assert json.loads(as_json.stdout) == {"error": {
        "code": "tunnel_error", "message": "the tailscale CLI is not installed (https://tailscale.com/download)"}}


def test_expose_reports_a_tailscale_failure(tmp_path: Path, bin_dir: Path) -> None:
    tailscale(bin_dir, tmp_path / "tailscale.log", fail_with="Funnel not available; HTTPS is disabled")
    config = write_config(tmp_path / "v.yaml", f"provider: mock\nstore: {tmp_path / 'store'}\n")
    result = invoke("expose", "--config", config)
    assert (result.exit_code, result.stderr) == (
        1, "Error: tailscale funnel failed: Funnel not available; HTTPS is disabled\n")


def test_expose_with_ngrok_runs_the_agent_and_stops_it(tmp_path: Path, bin_dir: Path) -> None:
    stand_in(bin_dir, "ngrok", f"""echo "$@" > {tmp_path}/ngrok.args
echo "${{NGROK_AUTHTOKEN:-none}}" > {tmp_path}/ngrok.env
echo $$ > {tmp_path}/ngrok.pid
echo '{{"lvl":"info","msg":"no configuration paths supplied","t":"2026-11-22T03:00:00Z"}}'
echo 'not json at all'
echo '{{"lvl":"info","msg":"started tunnel","obj":"tunnels","name":"command_line","url":"https://ab12.ngrok.app"}}'
exec sleep 60
""")
    config = write_config(tmp_path / "v.yaml", (
        f"provider: mock\nstore: {tmp_path / 'store'}\nserve: {{port: 4200}}\n"
        "tunnel: {provider: ngrok, ngrokAuthToken: tok-from-config, ngrokDomain: voice.example.dev}\n"))
    result = invoke("expose", "--config", config, "--max-seconds", "0.2")
    assert result.exit_code == 0
    assert result.stdout == "ngrok is on: https://ab12.ngrok.app/voice/webhook -> http://127.0.0.1:4200/voice/webhook\n"
    assert (tmp_path / "ngrok.args").read_text() == (
        "http 4200 --log stdout --log-format json --domain voice.example.dev\n")
    assert (tmp_path / "ngrok.env").read_text() == "tok-from-config\n"
    with pytest.raises(ProcessLookupError):   # the agent was stopped on exit
        os.kill(int((tmp_path / "ngrok.pid").read_text()), 0)


def test_setup_and_serve_refuse_a_disabled_plugin(tmp_path: Path) -> None:
    config = write_config(tmp_path / "off.yaml", f"enabled: false\nprovider: twilio\nstore: {tmp_path / 's'}\n")
    result = invoke("setup", "--config", config)
    assert result.exit_code == 1
    assert result.stdout.splitlines()[0] == f"✗ config: {config}: the voice-call plugin is disabled (enabled: false)"
    served = invoke("serve", "--config", config)
    assert (served.exit_code, served.stderr) == (
        1, "Error: the voice-call plugin is disabled (enabled: false); nothing to serve\n")
