"""load_settings / check_config / default_settings and the Settings object."""

from __future__ import annotations

import copy
import json
import pickle
from pathlib import Path

import pytest

from voicecall.engine.config import (
    ConfigError,
    ConfigFileError,
    FrozenDict,
    Settings,
    check_config,
    default_settings,
    load_settings,
)

REPO = Path(__file__).resolve().parents[2]

REAL_OPENCLAW = """\
// ~/.openclaw/openclaw.json as OpenClaw writes it: many sections we must ignore.
{
  gateway: { port: 18789, bind: "loopback", auth: { mode: "token" } },
  agents: {
    defaults: { model: { primary: "openai/gpt-5" }, workspace: "~/clawd" },
    list: [{ id: "main" }, { id: "support", name: "Support" }],
  },
  channels: { telegram: { enabled: true, botToken: "123:abc" }, whatsapp: { allowFrom: [] } },
  session: { scope: "per-sender" },
  models: { providers: {} },
  messages: {
    ackReaction: "eyes",
    tts: {
      auto: "always",
      mode: "final",
      provider: "elevenlabs",
      summaryModel: "openai/gpt-4.1-mini",
      providers: {
        elevenlabs: { apiKey: "el-secret", speakerVoiceId: "pMsXgVXv3BLzUgSXRplE",
                      modelId: "eleven_multilingual_v2" },
        openai: { speakerVoice: "coral" },
      },
    },
  },
  plugins: {
    allow: ["voice-call"],
    entries: {
      "voice-call": {
        enabled: true,
        config: {
          provider: "twilio",
          fromNumber: "+15550001234",
          agentId: "support",
          sessionScope: "per-call",
          twilio: { accountSid: "AC0123", authToken: "tw-secret", region: "ie1" },
          staleCallReaperSeconds: 120,
          numbers: {
            "+15550009999": {
              agentId: "main",
              inboundGreeting: "Silver Fox Cards, how can I help?",
              tts: { providers: { openai: { speakerVoice: "alloy" } } },
            },
          },
          tts: { provider: "openai", providers: { openai: { model: "gpt-4o-mini-tts" } } },
          realtime: { enabled: false, provider: "openai", providers: { openai: {} } },
        },
      },
      telegram: { enabled: true },
    },
  },
}
"""


def write(tmp_path: Path, name: str, text: str) -> str:
    (tmp_path / name).write_text(text)
    return name


def test_defaults_are_all_filled() -> None:
    settings = default_settings()
    assert settings.provider == "mock"
    assert settings.source is None
    assert settings.warnings == ()
    assert settings.get("serve.port") == 3334
    assert settings.get("serve.bind") == "127.0.0.1"
    assert settings.get("serve.path") == "/voice/webhook"
    assert settings.get("control.port") == 3335
    assert settings.get("outbound.defaultMode") == "notify"
    assert settings.get("outbound.notifyHangupDelaySec") == 3
    assert settings.get("outbound.allowTo") == ()
    assert settings.get("streaming.enabled") is False
    assert settings.get("streaming.providers.openai.model") == "gpt-4o-transcribe"
    assert settings.get("streaming.providers.openai.vadThreshold") == 0.5
    assert settings.get("tunnel.provider") == "none"
    assert settings.get("tailscale.port") == 443
    assert settings.get("twilio.region") == "us1"
    assert settings.get("maxDurationSeconds") == 300
    assert settings.get("staleCallReaperSeconds") == 0
    assert settings.get("transcriptTimeoutMs") == 180000
    assert settings.get("ringTimeoutMs") == 30000
    assert settings.get("silenceTimeoutMs") == 800
    assert settings.get("responseTimeoutMs") == 30000
    assert settings.get("maxConcurrentCalls") == 1
    assert settings.get("inboundPolicy") == "disabled"
    assert settings.get("sessionScope") == "per-phone"
    assert settings.get("flows.paths") == ()
    assert settings.get("nothing.here", "fallback") == "fallback"
    assert settings.store_dir == Path.home() / ".voicecall"


def test_settings_are_deeply_read_only() -> None:
    settings = default_settings()
    with pytest.raises(TypeError):
        settings.data["provider"] = "twilio"  # type: ignore[index]
    with pytest.raises(TypeError):
        settings.data["serve"]["port"] = 1  # type: ignore[index]
    with pytest.raises(TypeError):
        settings.data["serve"].update(port=1)
    with pytest.raises(AttributeError):
        settings.get("outbound.allowTo").append("+1")
    with pytest.raises(AttributeError):
        settings.source = "x"  # type: ignore[misc]
    assert isinstance(settings.data, FrozenDict)
    assert json.loads(json.dumps(settings.data))["serve"]["port"] == 3334
    assert copy.deepcopy(settings.data) is settings.data
    assert pickle.loads(pickle.dumps(settings.data)) == settings.data


def test_template_context_has_no_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = default_settings(provider="twilio", fromNumber="+15550001234",
                                twilio={"accountSid": "AC1", "authToken": "tok-xyz"},
                                control={"token": "ctl-xyz"})
    context = settings.template_context()
    assert set(context) == {"outbound", "inboundGreeting", "maxDurationSeconds",
                            "staleCallReaperSeconds", "transcriptTimeoutMs", "ringTimeoutMs",
                            "silenceTimeoutMs", "responseTimeoutMs"}
    assert "tok-xyz" not in json.dumps(context) and "ctl-xyz" not in json.dumps(context)
    context["outbound"]["allowTo"].append("+1")  # a plain copy, safe to change
    assert settings.get("outbound.allowTo") == ()
    assert sorted(settings.secrets()) == ["AC1", "ctl-xyz", "tok-xyz"]


def test_replace_merges_mappings_and_replaces_the_rest(tmp_path: Path) -> None:
    settings = default_settings()
    changed = settings.replace(store=tmp_path, serve={"port": 0}, inboundPolicy="open")
    assert changed.store_dir == tmp_path
    assert changed.get("serve.port") == 0 and changed.get("serve.bind") == "127.0.0.1"
    assert changed.get("inboundPolicy") == "open"
    assert settings.get("serve.port") == 3334  # the original is untouched
    assert isinstance(changed, Settings)


def test_default_settings_refuses_bad_overrides() -> None:
    with pytest.raises(ConfigError) as info:
        default_settings(provider="sms", serve={"prot": 1})
    messages = [p.message for p in info.value.problems]
    assert messages == ["'sms' is not one of: twilio, telnyx, plivo, mock",
                        "unknown key 'prot' (did you mean 'port'?)"]


def test_load_settings_raises_every_problem(tmp_path: Path) -> None:
    name = write(tmp_path, "c.yaml", "provider: twilio\nserve: {port: x}\n")
    with pytest.raises(ConfigError) as info:
        load_settings(name, env={})
    paths = [p.path for p in info.value.problems]
    # in file order: the missing credentials are reported at the provider line
    assert paths == ["$.twilio.accountSid", "$.twilio.authToken", "$.fromNumber", "$.serve.port"]
    assert all(not p.warning for p in info.value.problems)


def test_load_settings_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigFileError) as info:
        load_settings("absent.yaml", env={})
    assert isinstance(info.value, ConfigError)
    assert str(info.value) == "config file not found: absent.yaml"


def test_env_secrets_merge_without_overriding_the_file(tmp_path: Path) -> None:
    name = write(tmp_path, "c.yaml", "provider: twilio\ntwilio: {authToken: from-file}\n"
                                     "tts:\n  openai: {voice: alloy}\n"
                                     "  providers: {elevenlabs: {speakerVoiceId: v1}}\n")
    env = {"TWILIO_ACCOUNT_SID": "AC9", "TWILIO_AUTH_TOKEN": "from-env",
           "TWILIO_FROM_NUMBER": "+15550001234", "OPENAI_API_KEY": "sk-env",
           "ELEVENLABS_API_KEY": "el-env", "NGROK_AUTHTOKEN": "ng-env",
           "TELNYX_API_KEY": "tx-env", "VOICECALL_STATE_DIR": str(tmp_path / "state")}
    settings = load_settings(name, env=env)
    assert settings.get("twilio.accountSid") == "AC9"
    assert settings.get("twilio.authToken") == "from-file"
    assert settings.get("fromNumber") == "+15550001234"
    assert settings.get("response.apiKey") == "sk-env"
    assert settings.get("streaming.providers.openai.apiKey") == "sk-env"
    assert settings.get("tts.openai.apiKey") == "sk-env"
    assert settings.get("tts.providers.elevenlabs.apiKey") == "el-env"
    assert settings.get("tts.elevenlabs") is None  # env never invents a TTS block
    assert settings.get("tunnel.ngrokAuthToken") == "ng-env"
    assert settings.get("telnyx.apiKey") == "tx-env"
    assert settings.store_dir == tmp_path / "state"
    assert settings.source == "c.yaml"
    assert [w.path for w in settings.warnings] == ["$.staleCallReaperSeconds"]


def test_empty_env_values_count_as_unset(tmp_path: Path) -> None:
    name = write(tmp_path, "c.yaml", "provider: twilio\n")
    _, problems = check_config(name, env={"TWILIO_ACCOUNT_SID": "", "TWILIO_AUTH_TOKEN": "",
                                          "TWILIO_FROM_NUMBER": ""})
    assert [p.path for p in problems if not p.warning] == [
        "$.twilio.accountSid", "$.twilio.authToken", "$.fromNumber"]


def test_overrides_merge_before_validation(tmp_path: Path) -> None:
    name = write(tmp_path, "c.yaml", "serve: {port: 4000, path: /hook}\n")
    settings = load_settings(name, env={}, overrides={"serve": {"port": 0}})
    assert settings.get("serve.port") == 0 and settings.get("serve.path") == "/hook"
    with pytest.raises(ConfigError):
        load_settings(name, env={}, overrides={"serve": {"port": "zero"}})


def test_lookup_order(tmp_path: Path) -> None:
    assert load_settings(env={}).source is None
    write(tmp_path, "voicecall.yaml", "provider: mock\ninboundPolicy: open\n")
    assert load_settings(env={}).source == "voicecall.yaml"
    write(tmp_path, "other.yaml", "provider: mock\n")
    assert load_settings(env={"VOICECALL_CONFIG": "other.yaml"}).source == "other.yaml"
    assert load_settings("voicecall.yaml", env={"VOICECALL_CONFIG": "other.yaml"}).source \
        == "voicecall.yaml"


def test_relative_paths_follow_the_config_file(tmp_path: Path) -> None:
    conf = tmp_path / "conf"
    (conf / "flows").mkdir(parents=True)
    (conf / "c.yaml").write_text("store: state\nflows: {paths: [flows]}\n")
    settings = load_settings(conf / "c.yaml", env={})
    assert settings.store_dir == conf / "state"
    assert settings.get("flows.paths") == (str(conf / "flows"),)


def test_yaml_keeps_numbers_as_strings(tmp_path: Path) -> None:
    name = write(tmp_path, "c.yaml", "fromNumber: +15550001234\ninboundPolicy: allowlist\n"
                                     "allowFrom: [+15550001111]\n")
    settings = load_settings(name, env={})
    assert settings.get("fromNumber") == "+15550001234"
    assert settings.get("allowFrom") == ("+15550001111",)


def test_real_openclaw_document(tmp_path: Path) -> None:
    name = write(tmp_path, "openclaw.json", REAL_OPENCLAW)
    settings, problems = check_config(name, env={})
    assert [p.format() for p in problems] == []  # messages.tts core keys are OpenClaw's own
    assert settings is not None
    assert settings.provider == "twilio"
    assert settings.get("agentId") == "support"
    assert settings.get("sessionScope") == "per-call"
    assert settings.get("twilio.region") == "ie1"
    # plugin tts deep-merged over messages.tts: plugin scalars win, dicts merge
    assert settings.get("tts.provider") == "openai"
    assert settings.get("tts.providers.openai") == {"speakerVoice": "coral",
                                                    "model": "gpt-4o-mini-tts"}
    assert settings.get("tts.providers.elevenlabs.speakerVoiceId") == "pMsXgVXv3BLzUgSXRplE"
    assert settings.get("numbers")["+15550009999"]["agentId"] == "main"
    assert "gateway" not in settings.data and "channels" not in settings.data


def test_openclaw_disabled_entry(tmp_path: Path) -> None:
    name = write(tmp_path, "c.json5",
                 "{plugins: {entries: {'voice-call': {enabled: false, config: {provider: "
                 "'twilio'}}}}}")
    settings = load_settings(name, env={})
    assert settings.get("enabled") is False  # credentials are not required when disabled


def test_openclaw_messages_tts_warnings_point_at_messages(tmp_path: Path) -> None:
    name = write(tmp_path, "c.json5",
                 "{\n messages: {tts: {provider: 'edge'}},\n plugins: {entries: {'voice-call':"
                 " {config: {tts: {auto: 'off'}}}}},\n}\n")
    settings = load_settings(name, env={})
    assert [w.format() for w in settings.warnings] == [
        "c.json5:2: $.messages.tts.provider: warning: tts provider 'edge' is ignored for calls "
        "(telephony needs PCM audio); calls use the carrier's voice",
        'c.json5:3: $.plugins.entries["voice-call"].config.tts.auto: warning: core TTS key '
        "'auto' is ignored for calls",
    ]


@pytest.mark.parametrize("example", ["voicecall.yaml", "twilio.yaml", "openclaw.json5"])
def test_examples_validate_clean(example: str) -> None:
    env = {"TWILIO_ACCOUNT_SID": "AC0123", "TWILIO_AUTH_TOKEN": "tok",
           "TWILIO_FROM_NUMBER": "+15550001234", "OPENAI_API_KEY": "sk-test"}
    settings, problems = check_config(REPO / "examples" / example, env=env)
    assert problems == []
    assert settings is not None


def test_phone_numbers_are_normalised(tmp_path: Path) -> None:
    name = write(tmp_path, "c.yaml", "numbers:\n  '+15550009999': {inboundGreeting: hi}\n")
    settings = load_settings(name, env={})
    assert list(settings.get("numbers")) == ["+15550009999"]


def test_overrides_from_code_may_use_paths_and_tuples(tmp_path: Path) -> None:
    settings = default_settings(store=tmp_path / "state", allowFrom=("+15550001111",),
                                inboundPolicy="allowlist", serve={"port": 0},
                                control={"port": 0})
    assert settings.store_dir == tmp_path / "state"
    assert settings.get("allowFrom") == ("+15550001111",)
    assert settings.get("serve.port") == 0
