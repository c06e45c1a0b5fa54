"""The URL a carrier signed (DESIGN §4 "Forwarding headers") and Twilio's port
variants, checked against the twilio SDK's own signer (protocols.md §1)."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlparse

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from voicecall.engine.errors import SignatureError
from voicecall.engine.security import (
    SecurityPolicy,
    constant_time_equals,
    forwarding_trusted,
    parse_ip,
    signed_url,
    url_variants,
    valid_host,
)

PQ = "/voice/webhook?callId=c1&type=gather&token=a%2Fb+c%20d"   # query kept verbatim
LOCAL = f"http://127.0.0.1:3334{PQ}"
HOOKS = f"https://hooks.example.com{PQ}"
XF = {"x-forwarded-host": "hooks.example.com", "x-forwarded-proto": "https"}

CASES: list[tuple[str, dict[str, Any], dict[str, str], str, str]] = [
    # (name, policy kwargs, headers, peer, expected URL); request is http://127.0.0.1:3334 + PQ
    ("no forwarding headers", {}, {}, "203.0.113.9", LOCAL),
    ("allowed forwarded host", {"allowed_hosts": ("hooks.example.com",)}, XF, "203.0.113.9",
     HOOKS),
    ("allowed host match ignores case", {"allowed_hosts": ("HOOKS.example.com",)},
     {"x-forwarded-host": "Hooks.Example.com", "x-forwarded-proto": "https"}, "203.0.113.9",
     f"https://Hooks.Example.com{PQ}"),
    ("allowed host listed with port", {"allowed_hosts": ("hooks.example.com:8443",)},
     {"x-forwarded-host": "hooks.example.com:8443", "x-forwarded-proto": "https"},
     "203.0.113.9", f"https://hooks.example.com:8443{PQ}"),
    ("forwarded host not allowed", {"allowed_hosts": ("hooks.example.com",)},
     {"x-forwarded-host": "evil.example.com", "x-forwarded-proto": "https"}, "203.0.113.9",
     LOCAL),
    ("allowedHosts binds even with the trust flag",
     {"allowed_hosts": ("hooks.example.com",), "trust_forwarding_headers": True},
     {"x-forwarded-host": "evil.example.com", "x-forwarded-proto": "https"}, "203.0.113.9",
     LOCAL),
    ("neither allowed nor trusted", {}, XF, "203.0.113.9", LOCAL),
    ("trust flag", {"trust_forwarding_headers": True}, XF, "203.0.113.9", HOOKS),
    ("trusted proxy IP matches", {"trust_forwarding_headers": True,
                                  "trusted_proxy_ips": ("10.0.0.5",)}, XF, "10.0.0.5", HOOKS),
    ("trusted proxy IP does not match", {"trust_forwarding_headers": True,
                                         "trusted_proxy_ips": ("10.0.0.5",)}, XF, "10.0.0.6",
     LOCAL),
    ("trusted proxy CIDR matches", {"trust_forwarding_headers": True,
                                    "trusted_proxy_ips": ("10.0.0.0/24",)}, XF, "10.0.0.77",
     HOOKS),
    ("trusted proxy CIDR misses", {"trust_forwarding_headers": True,
                                   "trusted_proxy_ips": ("10.0.0.0/24",)}, XF, "10.0.1.1",
     LOCAL),
    ("IPv4-mapped peer in CIDR", {"trust_forwarding_headers": True,
                                  "trusted_proxy_ips": ("10.0.0.0/24",)}, XF,
     "::ffff:10.0.0.77", HOOKS),
    ("IPv6 CIDR", {"trust_forwarding_headers": True, "trusted_proxy_ips": ("2001:db8::/32",)},
     XF, "2001:db8::1", HOOKS),
    ("peer not an IP never matches a proxy list",
     {"trust_forwarding_headers": True, "trusted_proxy_ips": ("10.0.0.0/8",)}, XF, "", LOCAL),
    ("spoofed allowed host from an untrusted IP",
     {"allowed_hosts": ("hooks.example.com",), "trusted_proxy_ips": ("10.0.0.5",)}, XF,
     "203.0.113.9", LOCAL),
    ("allowed host from the trusted proxy",
     {"allowed_hosts": ("hooks.example.com",), "trusted_proxy_ips": ("10.0.0.5",)}, XF,
     "10.0.0.5", HOOKS),
    ("ngrok loopback, 127.0.0.1", {"ngrok_loopback": True},
     {"x-forwarded-host": "ab12.ngrok-free.app", "x-forwarded-proto": "https"}, "127.0.0.1",
     f"https://ab12.ngrok-free.app{PQ}"),
    ("ngrok loopback, ::1", {"ngrok_loopback": True}, XF, "::1", HOOKS),
    ("ngrok loopback, ::ffff:127.0.0.1", {"ngrok_loopback": True}, XF, "::ffff:127.0.0.1",
     HOOKS),
    ("ngrok loopback, 127.8.9.10", {"ngrok_loopback": True}, XF, "127.8.9.10", HOOKS),
    ("ngrok loopback, remote peer", {"ngrok_loopback": True}, XF, "203.0.113.9", LOCAL),
    ("ngrok rule off, loopback peer", {}, XF, "127.0.0.1", LOCAL),
    ("ngrok loopback passes the proxy list",
     {"ngrok_loopback": True, "trusted_proxy_ips": ("10.0.0.5",)}, XF, "127.0.0.1", HOOKS),
    ("ngrok loopback still bound by allowedHosts",
     {"ngrok_loopback": True, "allowed_hosts": ("other.example.com",)}, XF, "127.0.0.1",
     LOCAL),
    ("X-Original-Host", {"trust_forwarding_headers": True},
     {"x-original-host": "hooks.example.com", "x-forwarded-proto": "https"}, "203.0.113.9",
     HOOKS),
    ("ngrok-forwarded-host", {"trust_forwarding_headers": True},
     {"ngrok-forwarded-host": "hooks.example.com", "x-forwarded-proto": "https"},
     "203.0.113.9", HOOKS),
    ("X-Forwarded-Host wins over the others", {"trust_forwarding_headers": True},
     {"x-original-host": "other.example.com", "x-forwarded-host": "hooks.example.com",
      "x-forwarded-proto": "https"}, "203.0.113.9", HOOKS),
    ("first comma element", {"trust_forwarding_headers": True},
     {"x-forwarded-host": "hooks.example.com, proxy.internal", "x-forwarded-proto": "https,http"},
     "203.0.113.9", HOOKS),
    ("X-Forwarded-Port added", {"trust_forwarding_headers": True},
     {**XF, "x-forwarded-port": "8443"}, "203.0.113.9", f"https://hooks.example.com:8443{PQ}"),
    ("default X-Forwarded-Port dropped", {"trust_forwarding_headers": True},
     {**XF, "x-forwarded-port": "443"}, "203.0.113.9", HOOKS),
    ("port 80 is not default for https", {"trust_forwarding_headers": True},
     {**XF, "x-forwarded-port": "80"}, "203.0.113.9", f"https://hooks.example.com:80{PQ}"),
    ("host's own port wins", {"trust_forwarding_headers": True},
     {"x-forwarded-host": "hooks.example.com:9000", "x-forwarded-proto": "https",
      "x-forwarded-port": "8443"}, "203.0.113.9", f"https://hooks.example.com:9000{PQ}"),
    ("bad X-Forwarded-Port ignored", {"trust_forwarding_headers": True},
     {**XF, "x-forwarded-port": "443abc"}, "203.0.113.9", HOOKS),
    ("out-of-range X-Forwarded-Port ignored", {"trust_forwarding_headers": True},
     {**XF, "x-forwarded-port": "70000"}, "203.0.113.9", HOOKS),
    ("no X-Forwarded-Proto keeps the request scheme", {"trust_forwarding_headers": True},
     {"x-forwarded-host": "hooks.example.com"}, "203.0.113.9", f"http://hooks.example.com{PQ}"),
    ("unknown X-Forwarded-Proto ignored", {"trust_forwarding_headers": True},
     {"x-forwarded-host": "hooks.example.com", "x-forwarded-proto": "ftp"}, "203.0.113.9",
     f"http://hooks.example.com{PQ}"),
    ("X-Forwarded-Proto case", {"trust_forwarding_headers": True},
     {"x-forwarded-host": "hooks.example.com", "x-forwarded-proto": "HTTPS"}, "203.0.113.9",
     HOOKS),
    ("proto and port alone, trusted", {"trust_forwarding_headers": True},
     {"x-forwarded-proto": "https", "x-forwarded-port": "8443"}, "203.0.113.9",
     f"https://127.0.0.1:3334{PQ}"),
    ("proto alone needs trust, not allowedHosts", {"allowed_hosts": ("hooks.example.com",)},
     {"x-forwarded-proto": "https"}, "203.0.113.9", LOCAL),
    ("IPv6 forwarded host", {"trust_forwarding_headers": True},
     {"x-forwarded-host": "[2001:db8::1]:8443", "x-forwarded-proto": "https"}, "203.0.113.9",
     f"https://[2001:db8::1]:8443{PQ}"),
]


@pytest.mark.parametrize(("policy_kw", "headers", "peer", "expected"),
                         [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_signed_url(policy_kw: dict[str, Any], headers: dict[str, str], peer: str,
                    expected: str) -> None:
    policy = SecurityPolicy(**policy_kw)
    got = signed_url(policy, scheme="http", host="127.0.0.1:3334", path_qs=PQ, headers=headers,
                     peer=peer)
    assert got == expected


@pytest.mark.parametrize("bad", [
    "evil.example.com@hooks.example.com", "hooks.example.com/x", "hooks example.com",
    "hooks.example.com\\x", "", "   ", "-bad.example.com", "bad-.example.com", "a..b",
    "hooks.example.com.", "exa_mple.com", "[::1", "[::1]x", "[zz::1]", "::1", "host:0",
    "host:99999", "host:80:80", "host:", "host:+80", "a" * 64 + ".com", "hooks.example.com?x",
    "hooks.example.com#x", "ex\u212aample.com", "h\u00f6oks.example.com",
])
def test_bad_forwarded_hosts_are_ignored(bad: str) -> None:
    assert valid_host(bad) is None
    policy = SecurityPolicy(trust_forwarding_headers=True)
    headers = {"x-forwarded-host": bad, "x-forwarded-proto": "https",
               "x-original-host": "hooks.example.com"}
    # An invalid forwarded host voids the forwarding headers altogether: the
    # request's own Host is used (and its scheme), not the next header.
    assert signed_url(policy, scheme="http", host="127.0.0.1:3334", path_qs=PQ, headers=headers,
                      peer="203.0.113.9") == LOCAL


@pytest.mark.parametrize("good", ["hooks.example.com", "HOOKS.example.com:443", "10.0.0.1:80",
                                  "[::1]", "[2001:db8::1]:8443", "localhost", "xn--caf-dma.fr",
                                  "a" * 63 + ".com"])
def test_valid_hosts(good: str) -> None:
    assert valid_host(good) == good


@pytest.mark.parametrize("public_url, path_qs, expected", [
    ("https://pub.example.com/hooks/voice", PQ, "https://pub.example.com/hooks/voice"
     "?callId=c1&type=gather&token=a%2Fb+c%20d"),
    ("https://pub.example.com/hooks/voice", "/voice/webhook", "https://pub.example.com/hooks/voice"),
    ("https://pub.example.com/hooks/voice", "/voice/webhook?", "https://pub.example.com/hooks/voice?"),
    ("https://pub.example.com:8443/v?ignored=1#frag", "/voice/webhook?ignored=1&callId=c1",
     "https://pub.example.com:8443/v?ignored=1&callId=c1"),
    ("http://Pub.Example.com/v", "/voice/webhook?q=%E2%82%AC&q=%e2%82%ac",
     "http://Pub.Example.com/v?q=%E2%82%AC&q=%e2%82%ac"),
])
def test_public_url_wins(public_url: str, path_qs: str, expected: str) -> None:
    policy = SecurityPolicy(public_url=public_url, trust_forwarding_headers=True)
    headers = {"x-forwarded-host": "evil.example.com", "x-forwarded-proto": "http"}
    assert signed_url(policy, scheme="http", host="127.0.0.1:3334", path_qs=path_qs,
                      headers=headers, peer="127.0.0.1") == expected


def test_plain_host_header_is_not_constrained_by_allowed_hosts() -> None:
    policy = SecurityPolicy(allowed_hosts=("hooks.example.com",))
    assert signed_url(policy, scheme="https", host="other.example.com", path_qs=PQ, headers={},
                      peer="203.0.113.9") == f"https://other.example.com{PQ}"


@pytest.mark.parametrize("host", ["evil.example.com/x", "a@b", "", "bad host"])
def test_unusable_host_header(host: str) -> None:
    with pytest.raises(SignatureError, match="invalid Host header"):
        signed_url(SecurityPolicy(), scheme="http", host=host, path_qs=PQ, headers={},
                   peer="203.0.113.9")


def test_caller_mistakes() -> None:
    with pytest.raises(ValueError, match="raw request target"):
        signed_url(SecurityPolicy(), scheme="http", host="h", path_qs="voice", headers={},
                   peer="")
    with pytest.raises(ValueError, match="http or https"):
        signed_url(SecurityPolicy(), scheme="ftp", host="h", path_qs="/", headers={}, peer="")


def test_forwarding_trusted_truth_table() -> None:
    p = SecurityPolicy
    assert not forwarding_trusted(p(), "h.example.com", "10.0.0.1")
    assert forwarding_trusted(p(trust_forwarding_headers=True), "h.example.com", "10.0.0.1")
    assert forwarding_trusted(p(allowed_hosts=("h.example.com",)), "h.example.com", "10.0.0.1")
    assert forwarding_trusted(p(allowed_hosts=("h.example.com",)), "h.example.com:8443", "x")
    assert not forwarding_trusted(p(allowed_hosts=("h.example.com",)), None, "10.0.0.1")
    assert forwarding_trusted(p(trust_forwarding_headers=True), None, "10.0.0.1")


# ---------------------------------------------------------------- url_variants

TOKEN = "12345"
PARAMS = {"CallSid": "CA1234567890ABCDE", "Caller": "+14158675309", "Digits": "1234",
          "From": "+14158675309", "To": "+18005551212"}


def _sign(token: str, url: str, params: dict[str, str]) -> str:
    from twilio.request_validator import RequestValidator
    return RequestValidator(token).compute_signature(url, params)


def test_url_variants_reproduce_the_sdk_suite_vectors() -> None:
    variants = url_variants("https://mycompany.com/myapp.php?foo=1&bar=2")
    assert variants == ("https://mycompany.com/myapp.php?foo=1&bar=2",
                        "https://mycompany.com:443/myapp.php?foo=1&bar=2")
    assert [_sign(TOKEN, v, PARAMS) for v in variants] == [
        "RSOYDt4T1cUTdK1PDd93/VVr8B8=", "kvajT1Ptam85bY51eRf/AJRuM3w="]
    http80 = url_variants("http://mycompany.com:80/myapp.php?foo=1&bar=2")
    assert http80[1] == "http://mycompany.com/myapp.php?foo=1&bar=2"
    assert _sign(TOKEN, http80[0], PARAMS) == "0ZXoZLH/DfblKGATFgpif+LLRf4="
    port1234 = url_variants("http://mycompany.com:1234/myapp.php?foo=1&bar=2")
    assert _sign(TOKEN, port1234[0], PARAMS) == "Zmvh+3yNM1Phv2jhDCwEM3q5ebU="


def test_url_variants_reproduce_the_new_vectors() -> None:
    token = "0123456789abcdef0123456789abcdef"
    gather = {"CallSid": "CA22222222222222222222222222222222",
              "SpeechResult": "Yes, I'd like to book — café", "Confidence": "0.9123",
              "Digits": ""}
    variants = url_variants("https://example.com:8443/twilio/gather?step=2&flow=abc")
    assert [_sign(token, v, gather) for v in variants] == [
        "givn9bTarhNC6cEGsvmw/mUkKb8=", "I4747j6qIdewXoVdAtff8VACulw="]
    voice = url_variants("https://example.com/twilio/voice")
    assert [_sign(token, v, {}) for v in voice] == [
        "UxXLccc1xIjcWihtaZjdJvQyruU=", "ApmkwytvAqtUm10B3svbxri6ooc="]


@pytest.mark.parametrize("url", [
    "https://example.com/a?b=1", "https://example.com:443/a", "http://example.com/a",
    "http://example.com:8080/a?x=%2F", "https://example.com", "https://example.com?x=1",
])
def test_url_variants_agree_with_the_sdk_port_helpers(url: str) -> None:
    from twilio.request_validator import add_port, remove_port
    parsed = urlparse(url)
    assert set(url_variants(url)) == {url, add_port(parsed), remove_port(parsed)}


@pytest.mark.parametrize("url, other", [
    ("https://[2001:db8::1]:8443/x", "https://[2001:db8::1]/x"),
    ("http://[::1]/x", "http://[::1]:80/x"),
    ("https://user@example.com/x", "https://user@example.com:443/x"),
])
def test_url_variants_ipv6_and_userinfo(url: str, other: str) -> None:
    assert url_variants(url) == (url, other)


def test_url_variants_of_a_non_http_url() -> None:
    assert url_variants("wss://example.com/s") == ("wss://example.com/s",)


def test_constant_time_equals() -> None:
    assert constant_time_equals("abc", "abc")
    assert constant_time_equals(b"abc", "abc")
    assert constant_time_equals("café", "café".encode())
    assert not constant_time_equals("abc", "abd")
    assert not constant_time_equals("abc", "abcd")
    assert not constant_time_equals("", "a")


@pytest.mark.parametrize(("text", "expected"), [
    ("203.0.113.9", "203.0.113.9"), ("[::1]", "::1"), ("fe80::1%eth0", "fe80::1"),
    ("::ffff:127.0.0.1", "127.0.0.1"), ("", None), (None, None), ("/run/voicecall.sock", None),
    ("localhost", None),
])
def test_parse_ip(text: str | None, expected: str | None) -> None:
    ip = parse_ip(text)
    assert (None if ip is None else str(ip)) == expected


_header_text = st.text(st.characters(codec="latin-1"), max_size=40)


@settings(max_examples=300, deadline=None)
@given(headers=st.dictionaries(
           st.sampled_from(["x-forwarded-host", "x-original-host", "ngrok-forwarded-host",
                            "x-forwarded-proto", "x-forwarded-port"]),
           st.one_of(_header_text, st.sampled_from(["hooks.example.com", "https", "8443",
                                                    "a.example.com:1", "[::1]:9"]))),
       trust=st.booleans(), ngrok=st.booleans(),
       peer=st.sampled_from(["127.0.0.1", "::1", "10.0.0.5", "203.0.113.9", ""]))
def test_signed_url_is_always_well_formed(headers: dict[str, str], trust: bool, ngrok: bool,
                                          peer: str) -> None:
    policy = SecurityPolicy(trust_forwarding_headers=trust, ngrok_loopback=ngrok,
                            trusted_proxy_ips=("10.0.0.0/8",) if not ngrok else ())
    url = signed_url(policy, scheme="http", host="127.0.0.1:3334", path_qs=PQ, headers=headers,
                     peer=peer)
    scheme, _, rest = url.partition("://")
    assert scheme in ("http", "https")
    assert rest.endswith(PQ)
    assert valid_host(rest[: -len(PQ)]) is not None
    if not trust and not (ngrok and peer in ("127.0.0.1", "::1")):
        assert url == LOCAL                    # untrusted forwarding headers change nothing
