"""Properties: our signature equals the SDK's for any form, and the parser
answers any input with events or a clear 400, never another exception."""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import urlencode

from hypothesis import given, settings
from hypothesis import strategies as st
from twilio.request_validator import RequestValidator
from twilio_support import make_settings

from voicecall.engine.errors import SignatureError
from voicecall.engine.security import Rejection
from voicecall.providers.base import WebhookRequest
from voicecall.providers.twilio import TwilioProvider
from voicecall.providers.twilio.signature import canonical_params, compute_signature, verify

TOKEN = "0123456789abcdef0123456789abcdef"
names = st.text(st.characters(exclude_categories=["Cs"]), min_size=1, max_size=12)
values = st.text(st.characters(exclude_categories=["Cs"]), max_size=30)
forms = st.lists(st.tuples(names, values), max_size=8)
urls = st.sampled_from(["https://example.com/voice/webhook?callId=c1&type=status",
                        "https://example.com:8443/hook?type=gather&token=a%2Fb", "http://127.0.0.1:3334/voice/webhook"])


class MultiDict:
    """What the SDK's validator reads repeated fields from (Flask's ``getall``)."""

    def __init__(self, pairs: list[tuple[str, str]]):
        self.pairs = pairs

    def __iter__(self) -> Iterator[str]:
        return iter(k for k, _ in self.pairs)

    def __bool__(self) -> bool:
        return bool(self.pairs)

    def getall(self, name: str) -> list[str]:
        return [v for k, v in self.pairs if k == name]


@settings(max_examples=150, deadline=None)
@given(url=urls, form=forms)
def test_signature_matches_the_sdk_and_verifies(url: str, form: list[tuple[str, str]]) -> None:
    ours = compute_signature(TOKEN, url, form)
    assert ours == RequestValidator(TOKEN).compute_signature(url, MultiDict(form))
    req = WebhookRequest("POST", url, "/", (), {"x-twilio-signature": ours}, b"x" if form else b"", tuple(form))
    assert verify(TOKEN, req)
    if form:
        tampered = (*form[1:], (form[0][0], form[0][1] + "!"))
        bad = WebhookRequest("POST", url, "/", (), {"x-twilio-signature": ours}, b"x", tampered)
        try:
            verify(TOKEN, bad)
        except SignatureError:
            pass
        else:   # only possible when the signed strings collide (no separators in Twilio's scheme)
            assert canonical_params(tampered) == canonical_params(form)


provider = TwilioProvider(make_settings())
fields = st.sampled_from(["CallSid", "CallStatus", "SequenceNumber", "SpeechResult", "Confidence", "Digits",
                          "Direction", "AnsweredBy", "From", "To", "CallDuration"])
status_values = st.one_of(values, st.sampled_from(["ringing", "in-progress", "completed", "canceled", "queued"]))


@settings(max_examples=300, deadline=None)
@given(form=st.lists(st.tuples(fields, status_values), max_size=8),
       kind=st.sampled_from(["voice", "status", "gather", "noinput", "resume", "machine", "nonsense"]),
       call_id=st.sampled_from([None, "c1"]))
def test_parser_never_crashes(form: list[tuple[str, str]], kind: str, call_id: str | None) -> None:
    query = (("type", kind),) + ((("callId", call_id),) if call_id else ())
    req = WebhookRequest("POST", "https://e.com/h?" + urlencode(query), "/h", query, {},
                         urlencode(form).encode(), tuple(form))
    try:
        events = provider.parse(req)
    except Rejection as exc:
        assert exc.http_status == 400
    else:
        assert all(e.provider_call_id for e in events)
