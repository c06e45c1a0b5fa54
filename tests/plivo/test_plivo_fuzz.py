"""Properties: our V3 signature equals the SDK's for any form, and the parser
answers any input with events or a clear 400, never another exception."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from plivo.utils.signature_v3 import construct_post_url, get_signature_v3, validate_v3_signature
from plivo_support import TOKEN, make_settings, request

from voicecall.engine.security import Rejection
from voicecall.providers.plivo import PlivoProvider
from voicecall.providers.plivo.signature import compute_v3, verify_v3

names = st.text(st.characters(exclude_categories=["Cs"]), min_size=1, max_size=12)
values = st.text(st.characters(exclude_categories=["Cs"]), max_size=30)
forms = st.dictionaries(names, values, max_size=8)
# Our own URLs: ASCII queries (callId, type, token). The SDK reads a query's
# bytes as Latin-1, so non-ASCII queries are outside what both agree on.
urls = st.sampled_from(["https://example.com/voice/webhook?callId=c1&type=status",
                        "https://example.com:8443/hook?type=gather&token=a%2Fb",
                        "http://127.0.0.1:3334/voice/webhook"])
nonces = st.text("0123456789", min_size=20, max_size=20)


@settings(max_examples=150, deadline=None)
@given(url=urls, form=forms, nonce=nonces)
def test_v3_matches_the_sdk_and_verifies(url: str, form: dict[str, str], nonce: str) -> None:
    ours = compute_v3(TOKEN, "POST", url, nonce, form.items())
    theirs = get_signature_v3(TOKEN.encode(), construct_post_url(url, dict(form)).decode("utf-8"), nonce)
    assert ours == theirs.decode("ascii")
    assert validate_v3_signature("POST", url, nonce, TOKEN, ours, dict(form))
    headers = {"X-Plivo-Signature-V3": ours, "X-Plivo-Signature-V3-Nonce": nonce}
    assert verify_v3(TOKEN, request(url, form, headers))


keys = st.sampled_from(["CallUUID", "CallStatus", "Direction", "From", "To", "Speech", "SpeechConfidenceScore",
                        "Digits", "Machine", "HangupCause", "Duration", "Event"])
kinds = st.sampled_from(["voice", "status", "gather", "noinput", "resume", "hangup", "machine", "other"])


@settings(max_examples=300, deadline=None)
@given(kind=kinds, form=st.dictionaries(keys, values, max_size=8), call_id=st.sampled_from(["c1", None]))
def test_parser_answers_events_or_400(kind: str, form: dict[str, str], call_id: str | None) -> None:
    query = f"type={kind}" + (f"&callId={call_id}" if call_id else "")
    try:
        events = PlivoProvider(make_settings()).parse(request(f"https://h.example/w?{query}", form))
    except Rejection as exc:
        assert exc.http_status == 400 and str(exc).startswith("Plivo webhook: ")
    else:
        assert all(e.provider_call_id == form["CallUUID"] for e in events)
