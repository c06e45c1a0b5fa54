"""``voicecall validate-config``: the exact lines a user sees, and exit codes.

One parametrised table of broken configs (file text → expected stdout), then
the cases that are not one file: missing paths, directories, --json, env.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from voicecall.engine.cli import cli

TWILIO_OK = ("provider: twilio\nfromNumber: '+15550001234'\nstaleCallReaperSeconds: 180\n"
             "twilio:\n  accountSid: AC0123\n  authToken: s3cr3t-token\n")
STALE_WARNING = ("$.staleCallReaperSeconds: warning: 0 turns the stale-call reaper off; calls "
                 "whose carrier events stop are never cleaned up (120-300 recommended)")
SKIP_WARNING = ("$.skipSignatureVerification: warning: webhook signatures are not checked; "
                "anyone who finds the URL can forge carrier events (local testing only)")
TWILIO_SID = ("$.twilio.accountSid: provider twilio needs an account SID: set twilio.accountSid "
              "or TWILIO_ACCOUNT_SID")
TWILIO_TOKEN = ("$.twilio.authToken: provider twilio needs an auth token: set twilio.authToken "
                "or TWILIO_AUTH_TOKEN")
TWILIO_FROM = ("$.fromNumber: provider twilio needs fromNumber, the E.164 number calls come "
               "from: set fromNumber or TWILIO_FROM_NUMBER")
OC = '$.plugins.entries["voice-call"]'

# (id, file name, text, expected stdout lines)
BROKEN: list[tuple[str, str, str, list[str]]] = [
    ("top-level typo", "c.yaml", "provder: mock\n",
     ["c.yaml:1: $.provder: unknown key 'provder' (did you mean 'provider'?)"]),
    ("nested typo", "c.yaml", "serve:\n  prot: 3334\n",
     ["c.yaml:2: $.serve.prot: unknown key 'prot' (did you mean 'port'?)"]),
    ("deep typo", "c.yaml", "streaming:\n  providers:\n    openai:\n      modle: x\n",
     ["c.yaml:4: $.streaming.providers.openai.modle: unknown key 'modle' (did you mean 'model'?)"]),
    ("unknown key, no close match", "c.yaml", "serve:\n  zzz: 1\n",
     ["c.yaml:2: $.serve.zzz: unknown key 'zzz' (allowed: bind, path, port)"]),
    ("integer expected", "c.yaml", "serve:\n  port: 3334x\n",
     ["c.yaml:2: $.serve.port: expected integer, got string '3334x'"]),
    ("YAML 1.1 yes stays a string", "c.yaml", "enabled: yes\n",
     ["c.yaml:1: $.enabled: expected boolean, got string 'yes'"]),
    ("list expected", "c.yaml", "allowFrom: '+15550001234'\n",
     ["c.yaml:1: $.allowFrom: expected array, got string '+15550001234'"]),
    ("object expected", "c.yaml", "serve: 3334\n",
     ["c.yaml:1: $.serve: expected object, got integer 3334"]),
    ("bad provider", "c.yaml", "provider: sms\n",
     ["c.yaml:1: $.provider: 'sms' is not one of: twilio, telnyx, plivo, mock"]),
    ("bad mode", "c.yaml", "outbound:\n  defaultMode: chat\n",
     ["c.yaml:2: $.outbound.defaultMode: 'chat' is not one of: notify, conversation"]),
    ("bad region", "c.yaml", "twilio:\n  region: eu1\n",
     ["c.yaml:2: $.twilio.region: 'eu1' is not one of: us1, ie1, au1"]),
    ("bad inbound policy", "c.yaml", "inboundPolicy: everyone\n",
     ["c.yaml:1: $.inboundPolicy: 'everyone' is not one of: disabled, allowlist, pairing, open"]),
    ("spaces in a number", "c.yaml", "fromNumber: '+1 555 123'\n",
     ["c.yaml:1: $.fromNumber: '+1 555 123' is not an E.164 number (e.g. +15550001234)"]),
    ("unquoted number is an int", "c.yaml", "toNumber: 15550001234\n",
     ["c.yaml:1: $.toNumber: expected string, got integer 15550001234"]),
    ("bad allowFrom entry", "c.yaml",
     "inboundPolicy: allowlist\nallowFrom:\n  - '+15550001234'\n  - '555-0100'\n",
     ["c.yaml:4: $.allowFrom[1]: '555-0100' is not an E.164 number (e.g. +15550001234)"]),
    ("bad numbers key", "c.yaml", "numbers:\n  '555 0100':\n    inboundGreeting: Hi\n",
     ["c.yaml:2: $.numbers[\"555 0100\"]: '555 0100' is not an E.164 number (e.g. +15550001234)"]),
    ("impossible number", "c.yaml", "fromNumber: '+12'\n",
     ["c.yaml:1: $.fromNumber: '+12' is not a possible phone number"]),
    ("bad allowTo prefix", "c.yaml", "outbound:\n  allowTo: ['1555']\n",
     ["c.yaml:2: $.outbound.allowTo[0]: '1555' is not an E.164 prefix (e.g. +1555)"]),
    ("numbers out of range", "c.yaml", "maxDurationSeconds: 0\nstaleCallReaperSeconds: -5\n",
     ["c.yaml:1: $.maxDurationSeconds: must be at least 1, got 0",
      "c.yaml:2: $.staleCallReaperSeconds: must be at least 0, got -5"]),
    ("port out of range", "c.yaml", "serve:\n  port: 70000\n",
     ["c.yaml:2: $.serve.port: must be at most 65535, got 70000"]),
    ("twilio without credentials", "c.yaml", "provider: twilio\n",
     [f"c.yaml:1: {TWILIO_SID}", f"c.yaml:1: {TWILIO_TOKEN}", f"c.yaml:1: {TWILIO_FROM}",
      f"c.yaml:1: {STALE_WARNING}"]),
    ("telnyx without credentials", "c.yaml",
     "provider: telnyx\nfromNumber: '+15550001234'\nstaleCallReaperSeconds: 120\n",
     ["c.yaml:1: $.telnyx.apiKey: provider telnyx needs an API key: set telnyx.apiKey or "
      "TELNYX_API_KEY",
      "c.yaml:1: $.telnyx.connectionId: provider telnyx needs a connection ID: set "
      "telnyx.connectionId or TELNYX_CONNECTION_ID",
      "c.yaml:1: $.telnyx.publicKey: provider telnyx needs the webhook public key to verify "
      "events: set telnyx.publicKey or TELNYX_PUBLIC_KEY (skipSignatureVerification: true only "
      "for local testing)"]),
    ("plivo without auth token", "c.yaml",
     "provider: plivo\nfromNumber: '+15550001234'\nstaleCallReaperSeconds: 120\n"
     "plivo:\n  authId: MA123\n",
     ["c.yaml:1: $.plivo.authToken: provider plivo needs an auth token: set plivo.authToken or "
      "PLIVO_AUTH_TOKEN"]),
    ("plivo without from number", "c.yaml",
     "staleCallReaperSeconds: 120\nprovider: plivo\nplivo: {authId: MA1, authToken: s3cr3t-p}\n",
     ["c.yaml:2: $.fromNumber: provider plivo needs fromNumber, the E.164 number calls come "
      "from: set fromNumber"]),
    ("YAML that does not parse", "c.yaml", "provider: mock\nserve:\n  port: [3334\n",
     ["c.yaml:3: $: invalid YAML: expected ',' or ']', but got '<stream end>'"]),
    ("YAML with a tab", "c.yaml", "serve:\n\tport: 1\n",
     ["c.yaml:2: $: invalid YAML: found character '\\t' that cannot start any token"]),
    ("JSON missing comma", "c.json", '{\n  "provider": "mock",\n  "serve": {"port": 3334}\n'
     '  "x": 1\n}\n',
     ['c.json:4: $: invalid JSON: unexpected """ at column 3']),
    ("JSON5 missing comma", "c.json5", "{\n  provider: 'mock'\n  serve: {}\n}\n",
     ['c.json5:3: $: invalid JSON5: unexpected "s" at column 3']),
    ("not a mapping", "c.yaml", "- provider\n- mock\n",
     ["c.yaml:1: $: expected a mapping of settings, got array"]),
    ("duplicate key", "c.yaml", "provider: sms\nprovider: mock\n",
     ["c.yaml:2: $.provider: duplicate key 'provider' (the last one wins)"]),
    ("JSON duplicate key", "c.json",
     '{\n  "provider": "mock",\n  "serve": {\n    "port": 1,\n    "port": 2\n  }\n}\n',
     ["c.json:5: $.serve.port: duplicate key 'port' (the last one wins)"]),
    ("streaming refused", "c.yaml", TWILIO_OK + "streaming:\n  enabled: true\n",
     ["c.yaml:8: $.streaming.enabled: media streaming is not supported yet; remove it or set "
      "enabled: false (calls use the carrier's own voice and speech recognition)"]),
    ("streaming refused, not twilio", "c.yaml", "streaming: {enabled: true}\n",
     ["c.yaml:1: $.streaming.enabled: media streaming is not supported yet (and it will need "
      "provider twilio); remove it or set enabled: false (calls use the carrier's own voice and "
      "speech recognition)"]),
    ("realtime refused", "c.yaml", "realtime:\n  enabled: true\n  provider: openai\n",
     ["c.yaml:2: $.realtime.enabled: realtime voice is not supported yet; remove it or set "
      "enabled: false"]),
    ("publicUrl without path", "c.yaml", "publicUrl: https://voice.example.com\n",
     ["c.yaml:1: $.publicUrl: must include the webhook path, e.g. "
      "https://voice.example.com/voice/webhook"]),
    ("publicUrl not http", "c.yaml", "publicUrl: ftp://voice.example.com/voice/webhook\n",
     ["c.yaml:1: $.publicUrl: must be an http(s) URL, e.g. "
      "https://voice.example.com/voice/webhook"]),
    ("tunnel conflicts", "c.yaml", "tunnel:\n  provider: ngrok\ntailscale:\n  mode: funnel\n"
     "  port: 444\n",
     ["c.yaml:4: $.tailscale.mode: conflicts with tunnel.provider 'ngrok': choose one way to "
      "expose the webhook (tunnel.provider is preferred)",
      "c.yaml:5: $.tailscale.port: Tailscale Funnel only serves ports 443, 8443 or 10000, "
      "got 444"]),
    ("base URLs", "c.yaml", TWILIO_OK + "  apiBaseUrl: http://api.example.com/2010-04-01\n"
     "response:\n  baseUrl: http://llm.example.com/v1\ntts:\n  openai: {baseUrl: 'https://x/v1?a=1'}\n",
     ["c.yaml:7: $.twilio.apiBaseUrl: must be scheme://host[:port] with no path; the client "
      "adds the API paths",
      "c.yaml:9: $.response.baseUrl: must use https unless the host is loopback or private",
      "c.yaml:11: $.tts.openai.baseUrl: must not have a query or fragment"]),
    ("unset ${VAR}", "c.yaml", TWILIO_OK.replace("s3cr3t-token", "${MY_TWILIO_TOKEN}"),
     ["c.yaml:6: $.twilio.authToken: environment variable MY_TWILIO_TOKEN is not set"]),
    ("secrets of the wrong type", "c.yaml",
     "twilio:\n  authToken: [s3cr3t-a, s3cr3t-b]\ncontrol:\n  token: 987654321\n",
     ["c.yaml:2: $.twilio.authToken: expected string, got array",
      "c.yaml:4: $.control.token: expected string, got integer"]),
    ("ports clash", "c.yaml", "serve: {port: 4000}\ncontrol: {port: 4000}\n",
     ["c.yaml:2: $.control.port: must differ from serve.port (4000): the control API must "
      "never share the webhook port"]),
    ("flows directory missing", "c.yaml", "flows:\n  paths: [./myflows]\n",
     ["c.yaml:2: $.flows.paths[0]: directory not found: ./myflows"]),
    ("OpenClaw document without the plugin", "c.json5",
     "{plugins: {entries: {telegram: {enabled: true}}}}\n",
     ["c.json5:1: $.plugins.entries: no 'voice-call' here: the voice-call plugin config belongs "
      'at $.plugins.entries["voice-call"].config']),
    ("OpenClaw envelope errors", "c.json5",
     "{\n  messages: {tts: {provider: 'polly'}},\n  plugins: {entries: {'voice-call': {\n"
     "    enabled: 'yes',\n    confg: {},\n  }}},\n}\n",
     ["c.json5:2: $.messages.tts.provider: 'polly' is not one of: openai, elevenlabs, edge, "
      "microsoft",
      f"c.json5:4: {OC}.enabled: expected boolean, got string 'yes'",
      f"c.json5:5: {OC}.confg: warning: unknown key 'confg' in the plugin entry (did you mean "
      "'config'?)"]),
    ("OpenClaw errors at full paths", "c.json",
     '{\n  "plugins": {\n    "entries": {\n      "voice-call": {\n        "config": {\n'
     '          "provider": "twilio",\n          "fromNumber": "+15550001234",\n'
     '          "staleCallReaperSeconds": 180,\n          "inboundPolicy": "friends",\n'
     '          "numbers": {"+15550009999": {"greeting": "Hi"}}\n        }\n      }\n'
     '    }\n  }\n}\n',
     [f"c.json:6: {OC}.config{TWILIO_SID[1:]}",
      f"c.json:6: {OC}.config{TWILIO_TOKEN[1:]}",
      f"c.json:9: {OC}.config.inboundPolicy: 'friends' is not one of: disabled, allowlist, "
      "pairing, open",
      f'c.json:10: {OC}.config.numbers["+15550009999"].greeting: unknown key \'greeting\' '
      "(did you mean 'inboundGreeting'?)"]),
]


def run(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(cli, ["validate-config", *args], env=env)


def flow_count() -> int:
    try:
        from voicecall.engine.flows import FlowLibrary
    except ImportError:
        return 4
    return len(FlowLibrary().names())


def ok_line(file: str, provider: str) -> str:
    count = flow_count()
    return f"OK: {file} (provider {provider}, {count} flow{'' if count == 1 else 's'})"


def test_the_table_is_big_enough() -> None:
    assert len({case[0] for case in BROKEN}) >= 30


@pytest.mark.parametrize(("name", "text", "expected"),
                         [(c[1], c[2], c[3]) for c in BROKEN], ids=[c[0] for c in BROKEN])
def test_broken_config(tmp_path: Path, name: str, text: str, expected: list[str]) -> None:
    (tmp_path / name).write_text(text)
    result = run(name)
    assert result.output.splitlines() == expected
    assert result.exit_code == 1
    assert "Traceback" not in result.output


@pytest.mark.parametrize(("name", "text", "expected"),
                         [(c[1], c[2], c[3]) for c in BROKEN], ids=[c[0] for c in BROKEN])
def test_broken_config_json(tmp_path: Path, name: str, text: str, expected: list[str]) -> None:
    (tmp_path / name).write_text(text)
    result = run(name, "--json")
    doc = json.loads(result.output)
    assert doc["ok"] is False
    assert result.exit_code == 1
    lines = [f"{p['file']}:{p['line']}: {p['path']}: {p['message']}" for p in doc["errors"]]
    lines += [f"{p['file']}:{p['line']}: {p['path']}: warning: {p['message']}"
              for p in doc["warnings"]]
    assert sorted(lines) == sorted(expected)


SECRETS = ("s3cr3t-token", "s3cr3t-a", "s3cr3t-b", "987654321", "s3cr3t-p", "sk-live-xyz")


def test_secrets_never_printed(tmp_path: Path) -> None:
    texts = [case[2] for case in BROKEN] + [
        "twilio:\n  authToken: sk-live-xyz\n  authTokn: sk-live-xyz\nprovider: twilio\n",
        "telnyx:\n  publicKey: ''\n  apiKey: {nested: sk-live-xyz}\n",
        "response:\n  apiKey: 42\n  baseUrl: http://user:sk-live-xyz@example.com\n",
        "tts:\n  openai:\n    apiKey: [sk-live-xyz]\n",
        # pasted into the wrong key: still not echoed, because it is a known secret
        "twilio: {authToken: sk-live-xyz}\nfromNumber: sk-live-xyz\nprovider: sk-live-xyz\n",
    ]
    for index, text in enumerate(texts):
        (tmp_path / f"s{index}.yaml").write_text(text)
        for args in ((f"s{index}.yaml",), (f"s{index}.yaml", "--json")):
            output = run(*args).output
            assert not any(secret in output for secret in SECRETS), output


def test_empty_file(tmp_path: Path) -> None:
    (tmp_path / "empty.yaml").write_text("")
    (tmp_path / "comments.yaml").write_text("# nothing here\n")
    (tmp_path / "blank.json5").write_text("  \n")
    for name in ("empty.yaml", "comments.yaml", "blank.json5"):
        result = run(name)
        assert result.output == f"{name}:1: $: config file is empty\n"
        assert result.exit_code == 1


def test_missing_file() -> None:
    result = run("nope.yaml")
    assert result.exit_code == 1
    assert result.stderr == "Error: config file not found: nope.yaml\n"
    assert result.stdout == ""


def test_directory_instead_of_file(tmp_path: Path) -> None:
    (tmp_path / "conf").mkdir()
    result = run("conf")
    assert result.exit_code == 1
    assert result.stderr == "Error: config path is a directory, not a file: conf\n"
    assert result.stdout == ""


def test_missing_file_json() -> None:
    result = run("nope.yaml", "--json")
    assert result.exit_code == 1
    doc = json.loads(result.stdout)
    assert doc["ok"] is False
    assert doc["errors"] == [{"file": "nope.yaml", "line": None, "path": "$",
                              "message": "config file not found"}]
    assert doc["error"]["code"] == "config_unreadable"


def test_clean_config_json(tmp_path: Path) -> None:
    (tmp_path / "c.yaml").write_text("provider: mock\nskipSignatureVerification: true\n")
    result = run("c.yaml", "--json")
    assert result.exit_code == 0
    assert json.loads(result.output) == {
        "ok": True, "errors": [],
        "warnings": [{"file": "c.yaml", "line": 2, "path": "$.skipSignatureVerification",
                      "message": SKIP_WARNING.split("warning: ", 1)[1]}]}


def test_warnings_do_not_fail(tmp_path: Path) -> None:
    (tmp_path / "c.yaml").write_text(
        "skipSignatureVerification: true\ntts:\n  provider: edge\n  summaryModel: gpt\n"
        "inboundPolicy: allowlist\n")
    result = run("c.yaml")
    assert result.exit_code == 0
    assert result.output.splitlines() == [
        f"c.yaml:1: {SKIP_WARNING}",
        "c.yaml:1: $.allowFrom: warning: inboundPolicy is 'allowlist' but allowFrom is empty, "
        "so every inbound call is refused",
        "c.yaml:3: $.tts.provider: warning: tts provider 'edge' is ignored for calls (telephony "
        "needs PCM audio); calls use the carrier's voice",
        "c.yaml:4: $.tts.summaryModel: warning: core TTS key 'summaryModel' is ignored for calls",
        ok_line("c.yaml", "mock"),
    ]


def test_json5_comments_and_trailing_commas(tmp_path: Path) -> None:
    (tmp_path / "c.json5").write_text(
        "// voicecall\n{\n  provider: 'mock', /* inline */\n  fromNumber: \"+15550001234\",\n"
        "  allowFrom: ['+15550001111',], inboundPolicy: 'allowlist',\n}\n")
    result = run("c.json5")
    assert result.output.splitlines() == [ok_line("c.json5", "mock")]
    assert result.exit_code == 0


def test_json_file_accepts_json5_like_openclaw(tmp_path: Path) -> None:
    (tmp_path / "c.json").write_text('{\n  // comment\n  "provider": "mock",\n}\n')
    assert run("c.json").output.splitlines() == [ok_line("c.json", "mock")]


def test_telnyx_with_skip_is_clean_but_warns(tmp_path: Path) -> None:
    (tmp_path / "c.yaml").write_text(
        "provider: telnyx\nfromNumber: '+15550001234'\nstaleCallReaperSeconds: 120\n"
        "skipSignatureVerification: true\ntelnyx: {apiKey: KEY123, connectionId: '42'}\n")
    result = run("c.yaml")
    assert result.output.splitlines() == [f"c.yaml:4: {SKIP_WARNING}",
                                          ok_line("c.yaml", "telnyx")]


def test_local_api_base_url_is_fine(tmp_path: Path) -> None:
    (tmp_path / "c.yaml").write_text(TWILIO_OK + "  apiBaseUrl: http://127.0.0.1:8089\n"
                                     "response: {baseUrl: 'http://10.0.0.5:8000/v1'}\n")
    assert run("c.yaml").output.splitlines() == [ok_line("c.yaml", "twilio")]


def test_env_fallbacks(tmp_path: Path) -> None:
    (tmp_path / "c.yaml").write_text("provider: twilio\nstaleCallReaperSeconds: 200\n")
    env = {"TWILIO_ACCOUNT_SID": "AC0123", "TWILIO_AUTH_TOKEN": "s3cr3t-token",
           "TWILIO_FROM_NUMBER": "+15550001234"}
    result = run("c.yaml", env=env)
    assert result.output.splitlines() == [ok_line("c.yaml", "twilio")]
    result = run("c.yaml", env={**env, "TWILIO_FROM_NUMBER": "555-1234"})
    assert result.output.splitlines() == [
        "c.yaml:1: $.fromNumber: TWILIO_FROM_NUMBER '555-1234' is not an E.164 number "
        "(e.g. +15550001234)"]
    assert result.exit_code == 1


def test_env_var_references(tmp_path: Path) -> None:
    (tmp_path / "c.yaml").write_text(TWILIO_OK.replace("s3cr3t-token", "${MY_TOKEN}"))
    assert run("c.yaml", env={"MY_TOKEN": "abc"}).exit_code == 0


def test_config_lookup(tmp_path: Path) -> None:
    assert run().output.splitlines() == [ok_line("<built-in defaults>", "mock")]
    (tmp_path / "other.yaml").write_text("provider: sms\n")
    assert run(env={"VOICECALL_CONFIG": "other.yaml"}).output.startswith("other.yaml:1:")
    (tmp_path / "voicecall.yaml").write_text("provder: mock\n")
    assert run().output.startswith("voicecall.yaml:1: $.provder")
    assert run("--config", "other.yaml").output.startswith("other.yaml:1:")
    result = run("other.yaml", "--config", "voicecall.yaml")
    assert result.exit_code == 2


def test_flow_problems_and_routes(tmp_path: Path) -> None:
    flows = tmp_path / "myflows"
    flows.mkdir()
    (flows / "broken.yaml").write_text("flow: broken\nstates: 3\n")
    (tmp_path / "c.yaml").write_text(
        "flows:\n  paths: [myflows]\nnumbers:\n  '+15550009999':\n    flow: notfy\n")
    result = run("c.yaml")
    assert result.exit_code == 1
    lines = result.output.splitlines()
    assert lines[0] == "c.yaml:5: $.numbers[\"+15550009999\"].flow: unknown flow 'notfy' " \
                       "(did you mean 'notify'?)"
    assert any(line.startswith(str(flows / "broken.yaml")) for line in lines[1:])


def test_route_and_tunnel_warnings(tmp_path: Path) -> None:
    (tmp_path / "w.yaml").write_text(
        "tunnel:\n  ngrokDomain: x.ngrok.app\nnumbers:\n  \"+15550009999\":\n    tts:\n"
        "      provider: edge\n      timeoutMs: 100\n")
    result = run("w.yaml")
    assert result.exit_code == 0
    assert result.output.splitlines() == [
        "w.yaml:2: $.tunnel.ngrokDomain: warning: has no effect unless tunnel.provider is "
        "'ngrok'",
        'w.yaml:6: $.numbers["+15550009999"].tts.provider: warning: tts provider \'edge\' is '
        "ignored for calls (telephony needs PCM audio); calls use the carrier's voice",
        'w.yaml:7: $.numbers["+15550009999"].tts.timeoutMs: warning: core TTS key '
        "'timeoutMs' is ignored for calls",
        ok_line("w.yaml", "mock"),
    ]
