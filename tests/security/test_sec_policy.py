"""SecurityPolicy built from settings: defaults, the three-condition ngrok rule,
and clear errors for values the checks cannot use."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from voicecall.engine.errors import ConfigError
from voicecall.engine.security import SecurityPolicy

_MISSING = object()


class FakeSettings:
    """The part of Settings the policy uses: ``get(dotted, default)``."""

    def __init__(self, data: dict[str, Any]):
        self.data = data

    def get(self, dotted: str, default: Any = None) -> Any:
        node: Any = self.data
        for part in dotted.split("."):
            if not isinstance(node, dict) or part not in node:
                return default
            node = node[part]
        return node


def test_defaults() -> None:
    policy = SecurityPolicy.from_settings(FakeSettings({}))
    assert policy == SecurityPolicy(public_url=None, allowed_hosts=(),
                                    trust_forwarding_headers=False, trusted_proxy_ips=(),
                                    ngrok_loopback=False, webhook_path="/voice/webhook")
    assert (policy.max_body, policy.body_timeout_s, policy.max_in_flight_per_ip) == (65536, 5.0, 8)
    assert policy.skip_signature is False


def test_every_setting_is_read() -> None:
    policy = SecurityPolicy.from_settings(FakeSettings({
        "publicUrl": "https://hooks.example.com/voice/webhook",
        "serve": {"path": "/hooks/voice", "bind": "0.0.0.0", "port": 3334},
        "webhookSecurity": {"allowedHosts": ["Hooks.Example.com"],
                            "trustForwardingHeaders": True,
                            "trustedProxyIPs": ["10.0.0.0/8", "192.0.2.1"]},
        "skipSignatureVerification": True,
    }))
    assert policy.public_url == "https://hooks.example.com/voice/webhook"
    assert policy.webhook_path == "/hooks/voice"
    assert policy.allowed_hosts == ("hooks.example.com",)
    assert policy.trust_forwarding_headers is True
    assert policy.trusted_proxy_ips == ("10.0.0.0/8", "192.0.2.1")
    assert policy.skip_signature is True
    assert policy.peer_is_trusted_proxy("10.200.0.1")
    assert policy.peer_is_trusted_proxy("192.0.2.1")
    assert not policy.peer_is_trusted_proxy("192.0.2.2")


def test_empty_public_url_means_none() -> None:
    assert SecurityPolicy.from_settings(FakeSettings({"publicUrl": ""})).public_url is None


NGROK_ON = {"tunnel": {"provider": "ngrok", "allowNgrokFreeTierLoopbackBypass": True},
            "serve": {"bind": "127.0.0.1"}}


@pytest.mark.parametrize(("provider", "bind", "flag", "expected"), [
    ("ngrok", "127.0.0.1", True, True),
    ("ngrok", "::1", True, True),
    ("ngrok", "localhost", True, True),
    ("ngrok", "LocalHost", True, True),
    ("ngrok", _MISSING, True, True),            # serve.bind defaults to 127.0.0.1
    ("ngrok", "0.0.0.0", True, False),
    ("ngrok", "::", True, False),
    ("ngrok", "192.168.1.10", True, False),
    ("ngrok", "127.0.0.1", False, False),
    ("ngrok", "127.0.0.1", _MISSING, False),
    ("ngrok", "127.0.0.1", "true", False),      # only a real boolean turns it on
    ("none", "127.0.0.1", True, False),
    ("tailscale-funnel", "127.0.0.1", True, False),
    (_MISSING, "127.0.0.1", True, False),
])
def test_ngrok_loopback_needs_all_three_conditions(provider: Any, bind: Any, flag: Any,
                                                   expected: bool) -> None:
    tunnel: dict[str, Any] = {}
    if provider is not _MISSING:
        tunnel["provider"] = provider
    if flag is not _MISSING:
        tunnel["allowNgrokFreeTierLoopbackBypass"] = flag
    data: dict[str, Any] = {"tunnel": tunnel}
    if bind is not _MISSING:
        data["serve"] = {"bind": bind}
    assert SecurityPolicy.from_settings(FakeSettings(data)).ngrok_loopback is expected


@pytest.mark.parametrize(("data", "path", "found"), [
    ({"webhookSecurity": {"trustedProxyIPs": ["10.0.0.1", "10.0.0.0/33"]}},
     "$.webhookSecurity.trustedProxyIPs[1]", "10.0.0.0/33"),
    ({"webhookSecurity": {"trustedProxyIPs": ["proxy.internal"]}},
     "$.webhookSecurity.trustedProxyIPs[0]", "proxy.internal"),
    ({"webhookSecurity": {"allowedHosts": ["https://hooks.example.com"]}},
     "$.webhookSecurity.allowedHosts[0]", "https://hooks.example.com"),
    ({"publicUrl": "hooks.example.com/voice"}, "$.publicUrl", "hooks.example.com/voice"),
    ({"publicUrl": "ftp://hooks.example.com/voice"}, "$.publicUrl", "ftp://"),
    ({"serve": {"path": "voice/webhook"}}, "$.serve.path", "voice/webhook"),
    ({"webhookSecurity": {"allowedHosts": "hooks.example.com"}},
     "$.webhookSecurity.allowedHosts", "list of strings, found str"),
    ({"webhookSecurity": {"trustedProxyIPs": [10]}},
     "$.webhookSecurity.trustedProxyIPs", "list of strings, found list"),
])
def test_unusable_settings_are_config_errors(data: dict[str, Any], path: str,
                                             found: str) -> None:
    with pytest.raises(ConfigError) as info:
        SecurityPolicy.from_settings(FakeSettings(data))
    problems = info.value.problems
    assert [p.path for p in problems] == [path]
    assert found in problems[0].message


def test_every_problem_is_reported() -> None:
    with pytest.raises(ConfigError) as info:
        SecurityPolicy(public_url="nope", trusted_proxy_ips=("x", "y"), webhook_path="v",
                       max_body=0)
    assert len(info.value.problems) == 5


def test_replace_revalidates_and_keeps_networks() -> None:
    policy = SecurityPolicy(trusted_proxy_ips=("10.0.0.0/8",))
    tunnelled = dataclasses.replace(policy, public_url="https://ab12.ngrok-free.app/voice/webhook")
    assert tunnelled.peer_is_trusted_proxy("10.1.1.1")
    with pytest.raises(ConfigError):
        dataclasses.replace(policy, trusted_proxy_ips=("bad",))
    assert hash(policy) == hash(SecurityPolicy(trusted_proxy_ips=("10.0.0.0/8",)))
