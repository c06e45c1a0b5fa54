"""Responders: reply extraction, prompting, and the real openai client against a
loopback fake of the chat-completions endpoint."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from voicecall.engine.config.settings import Settings
from voicecall.engine.errors import VoiceCallError
from voicecall.engine.responder import (
    OfflineResponder,
    OpenAIResponder,
    ReplyRequest,
    ResponderError,
    Turn,
    extract_spoken,
    make_responder,
)

try:
    from tests.fakes.openai_server import FakeOpenAI, Scripted
except ImportError:  # tests/ is on sys.path itself (rootdir without __init__)
    from fakes.openai_server import FakeOpenAI, Scripted  # type: ignore[no-redef]


def request(*turns: tuple[str, str], **kw: Any) -> ReplyRequest:
    fields: dict[str, Any] = dict(
        call_id="c1", from_number="+15550001111", to_number="+15550002222", direction="inbound",
        transcript=[Turn(role, text) for role, text in turns], system_prompt=None, model=None,
        agent_id=None, session_key=None)
    fields.update(kw)
    return ReplyRequest(**fields)


# ---- extract_spoken -----------------------------------------------------------

SPOKEN_TABLE = [
    ('{"spoken": "Hello there."}', "Hello there."),
    ('  {"spoken":"Two  spaces\\nand a line"}  ', "Two spaces and a line"),
    ('```json\n{"spoken": "From a fence."}\n```', "From a fence."),
    ('Sure!\n```json\n{"spoken": "Fenced after text."}\n```', "Fenced after text."),
    ('Here you go: {"spoken": "Sliced out."} hope that helps', "Sliced out."),
    ('{"spoken": "Broken json", oops', "Broken json"),
    ('{"spoken": "Say \\"hi\\" to Ann"}', 'Say "hi" to Ann'),
    ('{"spoken": ""}', ""),
    ('{"spoken": null}', ""),
    ('{"text": "A text key."}', "A text key."),
    ("Just plain words.", "Just plain words."),
    ('"Quoted plain words."', "Quoted plain words."),
    ("Thinking: the caller wants a table.\n\nWe have a table at seven.", "We have a table at seven."),
    ("Reasoning: short.\n\nAnalysis: fine.\n\nSee you then.", "See you then."),
    ("The user asked for hours. I should answer briefly.\n\nWe open at nine.", "We open at nine."),
    ("<think>they want hours</think>We open at nine.", "We open at nine."),
    ("```\nFenced plain text.\n```", "Fenced plain text."),
    ('{"spoken": "nested \\"spoken\\" word"}', "nested spoken word"),
    ("", ""),
    ("   \n ", ""),
]


@pytest.mark.parametrize(("raw", "spoken"), SPOKEN_TABLE)
def test_extract_spoken(raw: str, spoken: str) -> None:
    assert extract_spoken(raw) == spoken


@pytest.mark.parametrize("raw", [
    '{"error": {"message": "model overloaded", "type": "server_error"}}',
    '{"error": "rate limited"}',
    '```json\n{"error": "bad"}\n```',
    '{"reasoning": "the caller wants X, so I will say Y"}',
    '{"analysis": "..."}',
    '{"foo": 1}',
    '{"spoken": 42}',
    "Thinking process: the user wants hours.\n\nAnalysis: answer with hours.",
])
def test_extract_spoken_refuses_non_speech(raw: str) -> None:
    with pytest.raises(ResponderError):
        extract_spoken(raw)
    assert issubclass(ResponderError, VoiceCallError)


FRAGMENTS = st.sampled_from([
    "{", "}", '"spoken"', '"spoken": "', ":", '"', "\\", "hi", " ", "\n\n", "```json\n", "```",
    "Thinking:", "The user wants", "I should", '"error"', ",", "null", "<think>", "</think>",
    '\\"spoken\\"', "[", "]",
])


@given(st.one_of(st.text(), st.lists(st.one_of(FRAGMENTS, st.text(max_size=5))).map("".join)))
def test_extract_spoken_never_crashes_nor_speaks_the_key(raw: str) -> None:
    try:
        out = extract_spoken(raw)
    except ResponderError:
        return  # the one failure it may report: nothing speakable
    assert isinstance(out, str)
    assert '"spoken"' not in out
    assert out == out.strip()


# ---- OfflineResponder ---------------------------------------------------------

async def test_offline_responder_is_deterministic() -> None:
    r = OfflineResponder()
    req = request(("bot", "Hi, how can I help?"), ("caller", "  I'd like   a table "))
    assert await r.reply(req) == 'You said: "I\'d like a table". (offline responder) Anything else?'
    assert await r.reply(req) == await OfflineResponder().reply(req)
    assert await r.reply(request()) == OfflineResponder.GREETING
    assert await r.reply(request(("caller", "That's all, thanks"))) == OfflineResponder.CLOSING
    assert await r.reply(request(("caller", "ok goodbye"))) == OfflineResponder.CLOSING
    long = await r.reply(request(("caller", "x" * 500)))
    assert len(long) < 300 and "offline responder" in long
    await r.close()


# ---- make_responder -----------------------------------------------------------

def test_make_responder_chooses_by_settings(caplog: pytest.LogCaptureFixture) -> None:
    assert isinstance(make_responder(Settings({})), OfflineResponder)
    assert isinstance(make_responder(Settings({"response": {"apiKey": "sk-x"}})), OfflineResponder)
    assert isinstance(make_responder(Settings({"responseModel": "openai/gpt-4o-mini"})),
                      OfflineResponder)
    assert "no API key" in caplog.text
    r = make_responder(Settings({"responseModel": "openai/gpt-4o-mini",
                                 "response": {"apiKey": "sk-secret-123",
                                              "baseUrl": "http://127.0.0.1:9/v1"},
                                 "responseTimeoutMs": 1500, "responseSystemPrompt": "Be terse."}))
    assert isinstance(r, OpenAIResponder)
    assert (r.model, r.timeout_s, r.base_url, r.system_prompt) == (
        "openai/gpt-4o-mini", 1.5, "http://127.0.0.1:9/v1", "Be terse.")
    assert "sk-secret" not in repr(r)


def test_make_responder_reuses_the_tts_openai_key_only_for_openai() -> None:
    tts = {"openai": {"apiKey": "sk-tts"}}
    r = make_responder(Settings({"responseModel": "gpt-4o", "tts": tts}))
    assert isinstance(r, OpenAIResponder) and r.base_url is None and r.timeout_s == 30.0
    elsewhere = Settings({"responseModel": "acme/m", "tts": tts,
                          "response": {"baseUrl": "https://llm.example.test/v1"}})
    assert isinstance(make_responder(elsewhere), OfflineResponder)


def test_openai_responder_refuses_bad_arguments() -> None:
    with pytest.raises(ResponderError, match="API key"):
        OpenAIResponder(api_key="")
    with pytest.raises(ResponderError, match="timeout"):
        OpenAIResponder(api_key="k", timeout_s=0)


# ---- OpenAIResponder through the real client ------------------------------------

@pytest.fixture
async def fake() -> AsyncIterator[FakeOpenAI]:
    server = await FakeOpenAI().start()
    yield server
    await server.close()


def responder(fake: FakeOpenAI, **kw: Any) -> OpenAIResponder:
    args: dict[str, Any] = dict(api_key=fake.api_key, base_url=fake.base_url,
                                model="openai/gpt-4o-mini", max_retries=0, timeout_s=10.0)
    args.update(kw)
    return OpenAIResponder(**args)


CONVERSATION = (("bot", "Hello, Bella's bistro."), ("caller", "A table for two?"),
                ("bot", "For when?"), ("caller", "Tonight at seven."))


async def test_request_carries_prompt_transcript_and_model(fake: FakeOpenAI) -> None:
    fake.script('{"spoken": "Booked for seven."}')
    r = responder(fake)
    try:
        assert await r.reply(request(*CONVERSATION)) == "Booked for seven."
    finally:
        await r.close()
    (sent,) = fake.requests
    assert sent.body["model"] == "gpt-4o-mini"
    assert sent.headers["Authorization"] == f"Bearer {fake.api_key}"
    messages = sent.body["messages"]
    assert messages[0]["role"] == "system"
    assert "The caller's phone number is +15550001111." in messages[0]["content"]
    assert "1-2 sentences" in messages[0]["content"]
    assert '{"spoken":' in messages[0]["content"]
    assert [(m["role"], m["content"]) for m in messages[1:]] == [
        ("assistant", "Hello, Bella's bistro."), ("user", "A table for two?"),
        ("assistant", "For when?"), ("user", "Tonight at seven.")]


async def test_per_call_prompt_and_model_win(fake: FakeOpenAI) -> None:
    fake.script("Plain words only.")
    r = responder(fake, system_prompt="Global prompt.")
    try:
        out = await r.reply(request(("caller", "hi"), system_prompt="Route prompt.",
                                    model="acme/llama-3", direction="outbound"))
    finally:
        await r.close()
    assert out == "Plain words only."
    body = fake.requests[0].body
    assert body["model"] == "acme/llama-3"  # not ours to rewrite: the baseUrl decides
    assert body["messages"][0]["content"].startswith("Route prompt.\n\n")
    assert "Global prompt." not in body["messages"][0]["content"]


@pytest.mark.parametrize(("content", "spoken"), [
    ('```json\n{"spoken": "Fenced."}\n```', "Fenced."),
    ("Thinking: they want seven.\n\nSeven works.", "Seven works."),
    ('{"spoken": ""}', ""),
])
async def test_reply_shapes(fake: FakeOpenAI, content: str, spoken: str) -> None:
    fake.script(content)
    r = responder(fake)
    try:
        assert await r.reply(request(("caller", "hi"))) == spoken
    finally:
        await r.close()


@pytest.mark.parametrize("content", [
    '{"reasoning": "I will tell them seven."}',
    '{"error": {"message": "upstream tool failed"}}',
    None,
])
async def test_unspeakable_replies_fail(fake: FakeOpenAI, content: str | None) -> None:
    fake.script(Scripted(content=content))
    r = responder(fake)
    try:
        with pytest.raises(ResponderError):
            await r.reply(request(("caller", "hi")))
    finally:
        await r.close()


async def test_server_error_fails_after_retries(fake: FakeOpenAI) -> None:
    fake.script(Scripted(status=500), Scripted(status=500))
    r = responder(fake, max_retries=1)
    try:
        with pytest.raises(ResponderError, match=r"HTTP 500 \(server_error\)"):
            await r.reply(request(("caller", "hi")))
    finally:
        await r.close()
    assert len(fake.requests) == 2  # the client retried once


async def test_slow_server_times_out(fake: FakeOpenAI) -> None:
    fake.script(Scripted(content='{"spoken": "too late"}', delay=30.0))
    r = responder(fake, timeout_s=0.3)
    try:
        with pytest.raises(ResponderError, match=r"timed out after 0\.3s"):
            await r.reply(request(("caller", "hi")))
    finally:
        await r.close()


async def test_wrong_key_is_refused_without_leaking_it(fake: FakeOpenAI,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    r = responder(fake, api_key="sk-wrong-key-98765")
    try:
        with pytest.raises(ResponderError, match=r"HTTP 401 \(invalid_api_key\)") as info:
            await r.reply(request(("caller", "hi")))
    finally:
        await r.close()
    assert "98765" not in str(info.value)
    assert info.value.__cause__ is None and info.value.__suppress_context__
    assert "98765" not in caplog.text
    assert fake.requests == []


async def test_unreachable_server_fails_cleanly(fake: FakeOpenAI) -> None:
    url = fake.base_url
    await fake.close()  # nothing listens on that loopback port any more
    r = OpenAIResponder(api_key="sk-x", base_url=url, max_retries=0, timeout_s=10.0)
    try:
        with pytest.raises(ResponderError, match="APIConnectionError"):
            await r.reply(request(("caller", "hi")))
    finally:
        await r.close()
