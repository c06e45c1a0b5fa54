"""The built-in mock carrier: ``MockProvider`` (the engine's side) and
``MockCarrier`` (the far side, a loopback server that places, answers and
scripts calls). The engine cannot tell it from a real carrier: documents in,
signed webhooks out.

``MockCarrier`` is imported on first use: it pulls in the aiohttp server,
which CLI paths that only need the provider class should not pay for."""

from typing import Any

from voicecall.providers.mock.calls import Chaos, LogEntry, MockCall
from voicecall.providers.mock.provider import MockProvider, MockRenderError, MockWebhookError

__all__ = ["Chaos", "LogEntry", "MockCall", "MockCarrier", "MockProvider", "MockRenderError", "MockWebhookError"]


def __getattr__(name: str) -> Any:
    if name == "MockCarrier":
        from voicecall.providers.mock.carrier import MockCarrier

        return MockCarrier
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
